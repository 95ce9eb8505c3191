"""Distributions: class, attribute, age and person counts, original vs current; click a bar to see its images."""

from __future__ import annotations

import streamlit as st

from app import charts, ui

store = ui.get_store()
st.title("Distributions")
if not ui.require_data(store):
    st.stop()
schema = store.schema

numbers = ui.stat(store, "overview")
cells = st.columns(6)
for cell, (label, name) in zip(cells, [("images", "images"), ("labelled", "labelled"), ("eval", "eval"),
                                       ("people", "people"), ("corrections", "corrections"),
                                       ("labels changed", "changed_labels")]):
    cell.metric(label, f"{numbers[name]:,}")
st.caption("Click a bar or cell to open exactly those images in Browse.")

if schema.class_attributes and len(schema.class_attributes) > 1:
    classes = ui.stat(store, "class_counts")
    figure, filters = charts.original_vs_current(classes, "name", f"{len(classes)} classes: current vs original")
    figure.update_layout(xaxis_tickangle=-45, height=380)
    charts.clickable(figure, filters, "classes")

targets = schema.targets
for column, target in zip(st.columns(min(len(targets), 3)), targets[:3]):
    with column:
        figure, filters = charts.original_vs_current(ui.stat(store, "target_counts", target), "value", target)
        charts.clickable(figure, filters, f"target_{target}")
for column, target in zip(st.columns(3), targets[3:]):
    with column:
        figure, filters = charts.original_vs_current(ui.stat(store, "target_counts", target), "value", target)
        charts.clickable(figure, filters, f"target_{target}")

integers = [a.name for a in schema.attributes if a.kind == "integer"]
person_targets = [t for t in targets if schema.scope(schema.target_source(t)) == "person"]
left, right = st.columns([3, 2])
with left:
    for attribute in integers:
        binned = [b for b in schema.binned if b.source == attribute]
        names = list(binned[0].classes) if binned else []
        figure, filters = charts.age_histogram(ui.stat(store, "integer_histogram", attribute),
                                               ui.stat(store, "bin_edges", attribute), names, attribute)
        charts.clickable(figure, filters, f"histogram_{attribute}")
with right:
    if len(person_targets) >= 2:
        figure, filters = charts.heatmap(ui.stat(store, "heatmap", person_targets[0], person_targets[1]),
                                         person_targets[0], person_targets[1])
        charts.clickable(figure, filters, "heatmap")

left, right = st.columns([3, 2])
with left:
    if schema.class_attributes:
        figure, filters = charts.people_vs_images(ui.stat(store, "class_counts"))
        charts.clickable(figure, filters, "people_vs_images")
with right:
    figure, filters = charts.corrections(ui.stat(store, "corrections_by_attribute"))
    charts.clickable(figure, filters, "corrections")
    per_person = ui.stat(store, "images_per_person")
    if len(per_person):
        st.caption("Images per person: " + ", ".join(f"{int(r.persons):,} people have {int(r.images)}"
                                                      for r in per_person.itertuples(index=False)))
