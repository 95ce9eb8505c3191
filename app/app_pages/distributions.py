"""Distributions: class, attribute, age and person counts, original vs current; click a bar to see its images."""

from __future__ import annotations

import streamlit as st

from app import charts, ui

store = ui.page_start("Distributions")
schema = store.schema

distributions = charts.cached(store)
numbers = distributions.overview
cells = st.columns(6)
for cell, (label, name) in zip(cells, [("images", "images"), ("labelled", "labelled"), ("eval", "eval"),
                                       ("people", "people"), ("corrections", "corrections"),
                                       ("labels changed", "changed_labels")]):
    cell.metric(label, f"{numbers[name]:,}")
st.caption("Click a bar or cell to open exactly those images in Browse.")

figures = distributions.figures


def draw(name: str) -> None:
    """Draw one chart of ``charts.build_all`` if this dataset has it."""
    if name in figures:
        charts.clickable(*figures[name], name)


draw("classes")
targets = schema.targets
for row in range(0, len(targets), 3):
    for column, target in zip(st.columns(3), targets[row:row + 3]):
        with column:
            draw(f"target_{target}")
left, right = st.columns([3, 2])
with left:
    for attribute in (a.name for a in schema.attributes if a.kind == "integer"):
        draw(f"histogram_{attribute}")
with right:
    draw("heatmap")
left, right = st.columns([3, 2])
with left:
    draw("people_vs_images")
with right:
    draw("corrections")
    per_person = distributions.images_per_person
    if len(per_person):
        st.caption("Images per person: " + ", ".join(f"{int(r.persons):,} people have {int(r.images)}"
                                                      for r in per_person.itertuples(index=False)))
