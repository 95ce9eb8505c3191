"""Procedural face-mask demo dataset in exactly the competition layout (see MASK_DATASET.md).

``generate(out, persons=480, noise=0.05, seed=0)`` draws people with PIL and writes::

    OUT/train/train.csv                      id,gender,race,age,path   (the *given*, possibly noisy labels)
    OUT/train/images/<id>_<gender>_Asian_<age>/mask1..mask5, incorrect_mask, normal  (.jpg, a few .png/.jpeg)
    OUT/eval/info.csv, OUT/eval/images/<40 hex>.jpg                     (unlabelled people)
    OUT/truth.csv, OUT/truth_eval.csv                                   (the true labels, for benchmarks)

Cues a small CNN can learn at 96x128 px: *mask* position (over the nose / under the nose or on the
chin / none); *gender* from several imperfect cues (hair length, brow thickness, jaw shape, face and
neck width, beard or stubble, eyeliner, lipstick, earrings); *age* from cues that grow continuously
with an "apparent age" (grey-hair fraction, forehead wrinkles, crow's feet, eye bags, sagging jaw,
skin tone), so people near 30 and 60 are genuinely ambiguous. Noise corrupts whole people. Two noise
profiles (``NOISE_PROFILES``): ``random`` (the default) flips genders (folder and csv agree, like the real
data), swaps incorrect_mask/normal and gives wrong age groups to random people, errors a model averages
away; ``systematic`` repeats patterns, as the real data's errors did, which a model learns:

* ``mask_batch``: one batch of consecutive ids (noise/2 of the people) with incorrect_mask and normal swapped;
* ``age_rounded``: ages 27-29 entered as 30 and 57-59 as 60 (people in their late 50s land in >= 60) for a
  share min(0.8, 4 x noise) of the people;
* ``gender_lookalike``: one annotator, labelling a share min(0.8, 4 x noise) of the people, gives women without
  long hair the male label and long-haired beardless men the female one.

Shares stop at 0.8 so every pattern leaves people it did not touch (a contrast). train.csv also carries what a
real export has beside the labels: each person's ``annotator`` (the look-alike one is ``dee``) and upload
``batch`` (runs of consecutive ids; the swapped batch is one upload), drawn from their own random stream.

truth.csv's ``noise_kind`` names every pattern that changed a person (``+``-joined), and its given_* and
true_* columns record every change.
Output is byte-identical for a seed whatever ``workers`` is: every person has its own RNG stream.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageDraw

from core.schema import COMPETITION, MASK_FILES

MARKER = ".labelfix-demo"  # marks a folder this module wrote, so it may be overwritten
DESIGN = (384, 512)  # drawing canvas (w, h) in px; each photo is warped from it to image_size
ZOOM = 1.12  # photos are framed a little tighter than the drawing, so the face is large
NOISE_KINDS = ("gender_flip", "mask_swap", "age")  # the random profile's kinds
SYSTEMATIC_KINDS = ("mask_batch", "age_rounded", "gender_lookalike")
NOISE_PROFILES = {
    "random": "independent errors on randomly chosen people: gender flips, incorrect_mask/normal swaps, a wrong "
              "age group (about 45 / 45 / 10 %); `noise` is the fraction of people",
    "systematic": "errors that repeat a pattern, as this dataset's did: (mask_batch) one upload batch of "
                  "consecutive ids, noise/2 of the people, with incorrect_mask and normal swapped; (age_rounded) "
                  "ages 27-29 entered as 30 and 57-59 as 60 for a share min(0.8, 4 x noise) of the people; "
                  "(gender_lookalike) one annotator, labelling a share min(0.8, 4 x noise) of the people, who gives "
                  "women without long hair the male label and long-haired beardless men the female one",
}
SYSTEMATIC_SHARE = 4.0  # share of people under the age-rounding / look-alike annotator = min(0.8, 4 x noise)
# Below 1, so a pattern leaves a contrast in the data (people it did not touch); noise <= 0.2 is unchanged by it.
SYSTEMATIC_MAX_SHARE = 0.8
ANNOTATORS = ("ana", "bo", "chen", "dee", "eli")  # train.csv's annotator column (the look-alike one: LOOKALIKE)
LOOKALIKE = "dee"
UPLOADS = 10  # upload batches of consecutive ids (train.csv's batch column)
FEMALE_SHARE = 1658 / 2700  # the real training set's proportions
OLD_SHARE = 192 / 2700  # people aged exactly 60
OWNED = ("train", "eval", "truth.csv", "truth_eval.csv")  # what an overwrite may delete

SKINS = ((242, 208, 182), (232, 192, 160), (218, 174, 140), (200, 154, 118), (180, 132, 100))
HAIRS = ((24, 22, 22), (36, 28, 24), (52, 38, 30), (70, 50, 36))
MASKS = ((240, 240, 242), (160, 200, 232), (34, 34, 40), (150, 150, 156), (40, 52, 92),
         (240, 150, 190), (120, 100, 170), (92, 122, 82))  # no skin-like colours: a chin mask must show
JEWELS = ((232, 190, 60), (215, 215, 228), (246, 240, 228), (200, 40, 60))
LIPSTICKS = ((196, 34, 56), (214, 82, 112), (150, 40, 72))


@dataclass(frozen=True)
class DemoInfo:
    """What ``generate`` wrote: counts, and corrupted *people* per noise kind."""

    out: Path
    persons: int
    images: int
    eval_images: int
    corrupted: dict[str, int] = field(default_factory=dict)
    noise: float = 0.0
    seed: int = 0
    seconds: float = 0.0
    profile: str = "random"

    def summary(self) -> str:
        total = sum(self.corrupted.values())  # systematic: a person with two patterns counts twice
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.corrupted.items())
        return (f"demo dataset in {self.out}: {self.persons:,} people, {self.images:,} train images, "
                f"{self.eval_images:,} eval images; label noise {self.noise:.0%} ({self.profile}): {total} people corrupted "
                f"({kinds}); true labels in truth.csv; seed {self.seed}, {self.seconds:.1f} s")


def _age_group(age: int) -> int:
    return int(COMPETITION.binned[0].codes([age])[0])


def _sample_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ages 18-60 skewed like the real data: many under 25 and in the 50s, few 30-44, age 60 rarest."""
    ages = np.arange(18, 60)
    weights = np.where(ages < 30, 3.5 - 0.1 * (ages - 18), np.where(ages < 45, 0.8, 1.0 + 0.1 * (ages - 45)))
    n_old = int(round(OLD_SHARE * n))
    out = np.concatenate([np.full(n_old, 60), rng.choice(ages, n - n_old, p=weights / weights.sum())])
    return rng.permutation(out)


def _systematic(plan: pd.DataFrame, noise: float, seed: int) -> pd.DataFrame:
    """Rewrite a clean plan's given labels with the ``systematic`` profile's three patterns (see
    ``NOISE_PROFILES``); ``noise_kind`` lists every pattern that changed a person, joined by ``+``."""
    persons = len(plan)
    rng = np.random.default_rng([seed, 3])  # its own stream: the people and their photos stay those of random
    share = min(SYSTEMATIC_MAX_SHARE, SYSTEMATIC_SHARE * noise)
    kinds: list[list[str]] = [[] for _ in range(persons)]
    # 1. one upload batch (consecutive ids) whose incorrect_mask and normal files were swapped
    batch = int(round(noise / 2 * persons))
    start = int(rng.integers(0, max(1, persons - batch + 1)))
    for i in range(start, start + batch):
        kinds[i].append("mask_batch")
    # 2. ages rounded up to the next round number by the intake staff of most sites: 27-29 -> 30, 57-59 -> 60
    given_age = plan["age"].to_numpy().copy()
    rounds = rng.random(persons) < share
    for i in np.flatnonzero(rounds).tolist():
        for low, to in ((27, 30), (57, 60)):
            if low <= given_age[i] < to:
                given_age[i] = to
                kinds[i].append("age_rounded")
    # 3. one annotator (most people) who goes by hair: short-haired women -> male, long-haired beardless men -> female
    given_gender = plan["gender"].to_numpy().copy()
    annotated = rng.random(persons) < share
    for i in np.flatnonzero(annotated).tolist():
        _, face = _draw_person(np.random.default_rng((seed, 1, int(plan["id"].iat[i]))), plan["gender"].iat[i],
                               int(plan["age"].iat[i]))  # the very draw _render_person makes
        female = given_gender[i] == "female"
        if (female and face.style != "long") or (not female and face.style != "short" and not face.beard):
            given_gender[i] = "male" if female else "female"
            kinds[i].append("gender_lookalike")
    plan = plan.copy()
    plan["given_gender"], plan["given_age"] = given_gender, given_age
    plan["noise_kind"] = np.array(["+".join(k) for k in kinds], dtype=object)
    plan["folder"] = [f"{i}_{g}_Asian_{a}" for i, g, a in zip(plan["id"], given_gender, given_age)]
    plan["_lookalike"] = annotated
    plan.attrs["upload"] = (start, batch)  # the swapped batch: one upload of its own
    return plan


def _metadata(plan: pd.DataFrame, seed: int) -> tuple[list[str], list[str]]:
    """The annotator and upload batch of each person, as a real export has them (train.csv's extra columns).

    Their own random stream: labels and images are those of the same seed without metadata. Uploads are runs of
    consecutive ids (the systematic profile's swapped batch is one of them); annotators are drawn per person, the
    systematic profile's look-alike annotator (``LOOKALIKE``) labelling exactly the people it labelled."""
    rng = np.random.default_rng([seed, 4])
    n = len(plan)
    others = [a for a in ANNOTATORS if a != LOOKALIKE]
    if "_lookalike" in plan:
        annotator = np.where(plan["_lookalike"].to_numpy(), LOOKALIKE, rng.choice(others, n)).tolist()
        start, size = plan.attrs.get("upload", (0, 0))
    else:
        annotator = rng.choice(list(ANNOTATORS), n).tolist()
        start, size = 0, 0
    size = max(1, size or int(round(n / UPLOADS)))
    edges = sorted({0, n, start, min(n, start + size)} | set(range(start % size or size, n, size)))
    edges = [e for e in edges if 0 <= e <= n]
    batch = np.zeros(n, dtype=int)
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        batch[a:b] = k + 1
    return annotator, [f"upload-{b:02d}" for b in batch]


def _plan(persons: int, noise: float, seed: int, profile: str = "random") -> pd.DataFrame:
    """One row per person: true and given labels, noise kind, file extension, AppleDouble junk."""
    if profile not in NOISE_PROFILES:
        raise ValueError(f"noise profile must be one of {', '.join(NOISE_PROFILES)}, got {profile!r}")
    if profile == "systematic":
        return _systematic(_plan(persons, 0.0, seed), noise, seed)
    rng = np.random.default_rng([seed, 0])
    n_female = int(round(FEMALE_SHARE * persons))
    gender = rng.permutation(np.array(["female"] * n_female + ["male"] * (persons - n_female)))
    age = _sample_ages(rng, persons)
    n_bad = int(round(noise * persons))
    n_age = int(round(0.1 * n_bad))
    n_flip = (n_bad - n_age + 1) // 2
    kind = np.full(persons, "", dtype=object)
    chosen = rng.permutation(persons)[:n_bad]
    kind[chosen[:n_flip]], kind[chosen[n_flip:n_bad - n_age]], kind[chosen[n_bad - n_age:]] = NOISE_KINDS
    given_gender = np.where(kind == "gender_flip", np.where(gender == "male", "female", "male"), gender)
    given_age = age.copy()
    for i in np.flatnonzero(kind == "age"):
        other = [a for a in range(18, 61) if _age_group(a) != _age_group(age[i])]
        given_age[i] = rng.choice(other)
    few = max(1 if persons >= 10 else 0, int(round(0.03 * persons)))  # a few odd files even in tiny demos
    order = rng.permutation(persons)
    ext = np.full(persons, "jpg", dtype=object)
    ext[order[:few]], ext[order[few:2 * few]] = "png", "jpeg"
    junk = np.zeros(persons, dtype=bool)
    junk[rng.permutation(persons)[:few]] = True
    ids = [f"{i + 1:06d}" for i in range(persons)]
    folder = [f"{i}_{g}_Asian_{a}" for i, g, a in zip(ids, given_gender, given_age)]
    return pd.DataFrame({"id": ids, "folder": folder, "gender": gender, "age": age, "given_gender": given_gender,
                         "given_age": given_age, "noise_kind": kind, "ext": ext, "junk": junk})


# ---- drawing (design canvas 384x512 px; face centre near (192, 222)) --------------------------------------
def _rgb(color: np.ndarray | tuple, k: float = 1.0) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in np.clip(np.asarray(color, dtype=float) * k, 0, 255))
    return red, green, blue


def _mix(a: np.ndarray | tuple, b: np.ndarray | tuple, t: float) -> np.ndarray:
    return np.asarray(a, dtype=float) * (1 - t) + np.asarray(b, dtype=float) * t


@dataclass(frozen=True)
class _Face:
    """Landmarks of a drawn face in design px, so masks can be placed on it per photo."""

    cx: float
    cy: float
    a: float  # half width at the cheekbones
    eye_y: float
    nose_y: float
    mouth_y: float
    chin_y: float
    side_y: np.ndarray  # right half of the outline: y ascending ...
    side_x: np.ndarray  # ... and its x
    style: str = ""  # hair: long, bob or short (what a look-alike annotator goes by)
    beard: str = ""  # full, stubble, goatee or ""

    def half_width(self, y: float) -> float:
        return float(np.interp(y, self.side_y, self.side_x)) - self.cx


def _draw_person(rng: np.random.Generator, gender: str, age: int) -> tuple[Image.Image, _Face]:
    """Draw one identity without a mask in front of a textured wall: RGB design canvas and landmarks."""
    male = gender == "male"
    look = age + rng.normal(0, 1.0)  # apparent age: people of one age look a little different
    t = float(np.clip((look - 18) / 42, 0, 1))  # 0 looks 18, 1 looks 60
    grey = float(np.clip((look - 27) / 33, 0, 1)) ** 1.8  # fraction of grey hair, faster late in life
    cx, cy = 192 + rng.normal(0, 4), 222 + rng.normal(0, 5)
    a, b = (90 if male else 76) + rng.normal(0, 3), 104 + rng.normal(0, 4)
    a_low = a * (1 + 0.12 * t + (0.04 if male else -0.04))  # jowls widen the lower face with age
    b_low = b * (1 + 0.06 * t)  # and the chin drops
    n_low = rng.uniform(2.8, 3.4) if male else rng.uniform(1.7, 2.1)  # square jaw vs pointed chin
    skin = _mix(np.array(SKINS[rng.integers(len(SKINS))]) + rng.normal(0, 5, 3), (150, 118, 80), 0.22 * t)
    hair0 = np.array(HAIRS[rng.integers(len(HAIRS))]) + rng.normal(0, 4, 3)
    silver = _mix((168, 168, 174), (238, 238, 240), np.clip((look - 50) / 10, 0, 1)) + rng.normal(0, 5)  # whitens
    hair = _mix(hair0, silver, grey)
    eye_y, nose_y, mouth_y = cy - 0.05 * b, cy + 0.32 * b, cy + 0.6 * b
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    low = s > 0
    n = np.where(low, n_low, 2.2)
    xs = cx + np.where(low, a + (a_low - a) * np.sqrt(np.abs(s)), a) * np.sign(c) * np.abs(c) ** (2 / n)
    ys = cy + np.where(low, b_low, b) * np.sign(s) * np.abs(s) ** (2 / n)
    right = np.argsort(ys[c >= 0])
    face = _Face(cx, cy, a, eye_y, nose_y, mouth_y, cy + b_low, ys[c >= 0][right], xs[c >= 0][right])

    wall = _mix(rng.uniform(90, 240, 3), (180, 180, 180), 0.55)
    texture = np.clip(wall + rng.normal(0, 10, (5, 4, 3)), 0, 255).astype(np.uint8)  # smooth blotches
    canvas = Image.fromarray(texture).resize(DESIGN, Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(canvas)
    shoulders = (186 if male else 150) + rng.normal(0, 6)
    d.ellipse((cx - shoulders, cy + b + 45, cx + shoulders, cy + b + 340), fill=_rgb(rng.integers(30, 230, 3)))
    style = rng.choice(["long", "bob", "short"], p=[0.84, 0.14, 0.02] if not male else [0.04, 0.04, 0.92])
    if style != "short":  # hair behind the head, down to the shoulders or the jaw
        bottom = cy + b + rng.uniform(60, 120) if style == "long" else cy + 0.55 * b
        d.rounded_rectangle((cx - a - 30, cy - b - 16, cx + a + 30, bottom), radius=45, fill=_rgb(hair))
        for _ in range(24):  # strands: grey ones in proportion to the grey fraction
            x = cx + rng.choice([-1, 1]) * rng.uniform(a + 4, a + 26)
            d.line([(x, cy - 0.3 * b), (x + rng.normal(0, 5), bottom - 8)], width=3,
                   fill=_rgb(silver if rng.random() < grey else hair0))
    neck = 42 if male else 31
    d.rectangle((cx - neck, cy + 0.5 * b, cx + neck, cy + b + 75), fill=_rgb(skin, 0.88))
    for side in (-1, 1):
        ex = cx + side * (a + 3)
        d.ellipse((ex - 11, eye_y - 6, ex + 11, eye_y + 34), fill=_rgb(skin, 0.93))
    d.polygon(list(zip(xs, ys)), fill=_rgb(skin))

    # age lines: forehead wrinkles, crow's feet, eye bags, nasolabial folds; each fades in over years
    def line(start: float, years: float) -> tuple[int, int, int]:
        return _rgb(_mix(skin, skin * (0.78 - 0.12 * t), float(np.clip((look - start) / years, 0, 1))))

    for k in range(5):
        y = eye_y - 34 - 7 * k
        d.arc((cx - 0.5 * a, y - 8, cx + 0.5 * a, y + 8), 200, 340, fill=line(24 + 7 * k, 7), width=3)
    for side in (-1, 1):
        ex = cx + side * 0.4 * a
        for k in range(3):
            d.line([(ex + side * 15, eye_y - 2 + 4 * k), (ex + side * 25, eye_y - 6 + 7 * k)],
                   fill=line(28 + 8 * k, 8), width=2)
        d.arc((ex - 13, eye_y - 2, ex + 13, eye_y + 13), 20, 160, fill=line(32, 12), width=2)
        d.line([(cx + side * 16, nose_y + 4), (cx + side * 27, mouth_y + 8)], fill=line(28, 14), width=2)

    # eyes, brows (thick and low for most men, thin and arched for women), eyeliner for most women
    liner = not male and rng.random() < 0.9
    brow = rng.uniform(9, 13) if male else rng.uniform(3, 5)
    brow_color = _rgb(_mix(hair0, silver, 0.5 * grey), 0.9)
    for side in (-1, 1):
        ex = cx + side * 0.4 * a
        d.ellipse((ex - 13, eye_y - 6, ex + 13, eye_y + 6), fill=(238, 236, 230), outline=(30, 24, 22),
                  width=4 if liner else 1)
        d.ellipse((ex - 5, eye_y - 5, ex + 5, eye_y + 5), fill=(45, 32, 25))
        if liner:
            d.line([(ex + side * 11, eye_y - 3), (ex + side * 22, eye_y - 10)], fill=(20, 16, 16), width=4)
        by = eye_y - (16 if male else 21)
        arch = 0 if male else 6
        d.line([(ex - side * 14, by), (ex + side * 2, by - arch), (ex + side * 17, by + 2)], fill=brow_color,
               width=int(round(brow)), joint="curve")

    # beard (drawn before the mouth so lips stay on top): full, stubble or goatee for many men
    beard = rng.choice(["full", "stubble", "goatee", ""], p=[0.27, 0.23, 0.15, 0.35]) if male else ""
    if beard in ("full", "stubble"):
        keep = low & (ys > nose_y + 8)
        drop = 22 * s[keep] ** 6 if beard == "full" else 0  # a full beard hangs below the chin, past a mask
        pts = list(zip(cx + (xs[keep] - cx) * 1.05, ys[keep] + 4 + drop))
        d.polygon(pts, fill=_rgb(_mix(hair, skin, 0.1 if beard == "full" else 0.6)))
    elif beard == "goatee":
        d.ellipse((cx - 26, mouth_y + 4, cx + 26, cy + b_low + 10), fill=_rgb(hair))
        d.rounded_rectangle((cx - 26, mouth_y - 15, cx + 26, mouth_y - 6), radius=4, fill=_rgb(hair))

    # nose and mouth
    d.line([(cx - 3, eye_y + 10), (cx - 6, nose_y - 6)], fill=_rgb(skin, 0.8), width=3)
    d.ellipse((cx - 16, nose_y - 10, cx + 16, nose_y + 6), fill=_rgb(skin, 0.9))
    for side in (-1, 1):  # dark nostrils: what shows that a mask sits below the nose
        d.ellipse((cx + side * 8 - 5, nose_y - 2, cx + side * 8 + 5, nose_y + 4), fill=_rgb(skin, 0.35))
    lips = LIPSTICKS[rng.integers(3)] if not male and rng.random() < 0.65 else _rgb(skin * (0.85, 0.62, 0.62))
    half = 20 if male else 18
    d.ellipse((cx - half, mouth_y - 6, cx + half, mouth_y + 6), fill=lips)
    d.line([(cx - half, mouth_y), (cx + half, mouth_y)], fill=_rgb(lips, 0.55), width=2)

    # hair on top: hairline at the temples and forehead, receding for some older men; sideburns for men
    temple, top = cy - 0.15 * b, cy - (0.88 if male and look > 40 and rng.random() < 0.4 else 0.62) * b
    phi = np.linspace(0, np.pi, 24)
    cap = list(zip(cx - (a + 8) * np.cos(phi), cy - 0.04 * b - (b + 22) * np.sin(phi)))
    cap += list(zip(cx + (a + 1) * np.cos(phi), temple - (temple - top) * np.sin(phi)))
    d.polygon(cap, fill=_rgb(hair))
    for _ in range(30):
        x = cx + rng.uniform(-0.75, 0.75) * a
        d.line([(x, cy - b - 12), (x + rng.normal(0, 3), top - 6)], width=3,
               fill=_rgb(silver if rng.random() < grey else hair0))
    if style == "short":
        for side in (-1, 1):
            x0, x1 = sorted((cx + side * (a - 11), cx + side * (a + 1)))
            d.rectangle((x0, temple - 4, x1, eye_y + 24), fill=_rgb(hair))
    if rng.random() < (0.6 if not male else 0.04):  # earrings: stud, hoop or drop
        jewel, kind = JEWELS[rng.integers(len(JEWELS))], rng.integers(3)
        for side in (-1, 1):
            ex, ly = cx + side * (a + 5), eye_y + 32
            if kind == 0:
                d.ellipse((ex - 6, ly - 6, ex + 6, ly + 6), fill=jewel)
            elif kind == 1:
                d.ellipse((ex - 10, ly - 2, ex + 10, ly + 22), outline=jewel, width=4)
            else:
                d.line([(ex, ly), (ex, ly + 14)], fill=jewel, width=3)
                d.ellipse((ex - 7, ly + 12, ex + 7, ly + 26), fill=jewel)
    if rng.random() < 0.12:  # glasses, any gender: a distractor that hides some eye cues
        for side in (-1, 1):
            ex = cx + side * 0.4 * a
            d.ellipse((ex - 19, eye_y - 14, ex + 19, eye_y + 14), outline=(40, 40, 44), width=3)
        d.line([(cx - 0.4 * a + 19, eye_y - 2), (cx + 0.4 * a - 19, eye_y - 2)], fill=(40, 40, 44), width=3)
    return canvas, replace(face, style=str(style), beard=str(beard))


def _draw_mask(canvas: Image.Image, face: _Face, state: str, rng: np.random.Generator) -> None:
    """Draw a mask on a person's canvas: over the nose (wear), under it or on the chin (incorrect)."""
    if state == "not_wear":
        return
    d = ImageDraw.Draw(canvas)
    color = np.array(MASKS[rng.integers(len(MASKS))]) + rng.normal(0, 6, 3)
    if state == "wear":
        top, bump = face.eye_y + 17 + rng.uniform(-3, 4), 8  # the nose bridge pushes the edge up
    else:  # under the nose (nostrils show) or down on the chin (lips show)
        top, bump = (face.nose_y + 12 if rng.random() < 0.6 else face.mouth_y + 10) + rng.uniform(-1, 3), 0
    bottom = face.chin_y + 9 + (8 if top > face.mouth_y else 0)
    mid = (top + bottom) / 2
    w_top, w_mid = face.half_width(top) + 6, face.half_width(mid) + 4
    w_low = 0.6 * face.half_width(bottom - 12) + 6
    cx = face.cx
    pts = [(cx - w_top, top + 8), (cx - 0.5 * w_top, top - 1), (cx, top - bump), (cx + 0.5 * w_top, top - 1),
           (cx + w_top, top + 8), (cx + w_mid, mid), (cx + w_low, bottom - 6), (cx, bottom + 4),
           (cx - w_low, bottom - 6), (cx - w_mid, mid)]
    d.polygon(pts, fill=_rgb(color))
    pattern, shade = rng.integers(4), _rgb(color, 0.75)
    if pattern == 1:  # pleats
        for k in (1, 2, 3):
            y = top + (bottom - top) * k / 4
            d.line([(cx - 0.8 * face.half_width(y), y), (cx + 0.8 * face.half_width(y), y)], fill=shade, width=3)
    elif pattern == 2:  # a centre seam
        d.line([(cx, top - bump), (cx, bottom + 4)], fill=shade, width=3)
    elif pattern == 3:  # dots
        for _ in range(14):
            y = rng.uniform(top + 6, bottom - 8)
            x = cx + rng.uniform(-0.7, 0.7) * face.half_width(y)
            d.ellipse((x - 4, y - 4, x + 4, y + 4), fill=_rgb(rng.integers(0, 256, 3)))
    loop = _rgb(color, 0.9)
    for side in (-1, 1):  # ear loops
        ear = cx + side * (face.a + 6)
        d.line([(cx + side * w_top, top + 8), (ear, face.eye_y + 4)], fill=loop, width=3)
        d.line([(cx + side * w_mid, mid), (ear, face.eye_y + 28)], fill=loop, width=3)


def _photograph(rng: np.random.Generator, canvas: Image.Image, face: _Face, size: tuple[int, int]) -> Image.Image:
    """Pose jitter (rotation, zoom, shift) about the face and uneven coloured lighting; RGB at ``size``."""
    width, height = size
    angle, scale = np.radians(rng.uniform(-7, 7)), ZOOM * rng.uniform(0.93, 1.07)
    tx, ty = rng.uniform(-0.04, 0.04) * DESIGN[0], rng.uniform(-0.04, 0.04) * DESIGN[1]
    kx, ky = DESIGN[0] / width, DESIGN[1] / height
    cos, sin, cx, cy = np.cos(angle), np.sin(angle), face.cx, face.cy
    # PIL's AFFINE maps each output pixel (u, v) back to a design point: the inverse of rotate-zoom-shift
    # about the face centre, which lands a little above the middle of the photo.
    ox, oy = DESIGN[0] / 2 + tx, 0.44 * DESIGN[1] + ty
    coeffs = (cos * kx / scale, sin * ky / scale, cx - (cos * ox + sin * oy) / scale,
              -sin * kx / scale, cos * ky / scale, cy - (-sin * ox + cos * oy) / scale)
    corner = canvas.getpixel((2, 2))  # rotated-in corners show the wall colour
    photo = canvas.transform(size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                             fillcolor=corner)
    gain = rng.uniform(0.9, 1.14) * (1 + rng.normal(0, 0.025, 3))  # exposure and colour cast
    photo = photo.point([int(min(255, i * g)) for g in gain for i in range(256)])
    side = 255 * (1 - rng.uniform(0, 0.2) * np.linspace(0, 1, width)[:: rng.choice([-1, 1])])  # light from a side
    shade = Image.fromarray(np.repeat(side.astype(np.uint8)[None, :, None], 3, axis=2)).resize(size)
    return ImageChops.multiply(photo, shade)


def _render_person(task: tuple) -> None:
    """Worker: draw one identity and write each of its photos (``shots`` = [(mask state, path)])."""
    key, gender, age, shots, size, junk = task
    rng = np.random.default_rng(key)
    canvas, face = _draw_person(rng, gender, age)
    for state, path in shots:
        photo = canvas.copy()
        _draw_mask(photo, face, state, rng)
        image, quality = _photograph(rng, photo, face, size), int(rng.integers(72, 96))
        if path.endswith(".png"):
            image.save(path, format="PNG", compress_level=1)
        else:
            image.save(path, format="JPEG", quality=quality)
        if junk:  # macOS AppleDouble companion: magic, version, then garbage
            name = Path(path)
            (name.parent / f"._{name.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + rng.bytes(74))


def _classes(mask: pd.Series, gender: pd.Series, age: pd.Series) -> np.ndarray:
    frame = pd.DataFrame({"mask": mask.to_numpy(), "gender": gender.to_numpy(), "age": age.to_numpy()})
    return COMPETITION.encode_class(COMPETITION.codes(frame))


def _prepare(out: Path, settings: dict) -> None:
    """Create ``out`` or clear a previous demo in it; refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(f"{out} is not empty and holds no demo written by this generator (no {MARKER} "
                             f"file); refusing to overwrite it: choose a new or empty folder")
        for name in OWNED:  # only what the demo writes: anything else a user put there stays
            path = out / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
    (out / "train" / "images").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "images").mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(settings, sort_keys=True) + "\n")


def _check_options(persons: Any, noise: Any, eval_images: Any, image_size: Any, workers: Any, profile: Any) -> None:
    """``generate``'s arguments, refused with a ValueError naming the bad one."""
    if isinstance(persons, bool) or not isinstance(persons, int) or persons < 1:
        raise ValueError(f"persons must be a whole number >= 1, got {persons!r}")
    if not isinstance(noise, int | float) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be a fraction of people between 0 and 1, got {noise!r}")
    if isinstance(eval_images, bool) or not isinstance(eval_images, int) or eval_images < 0:
        raise ValueError(f"eval_images must be a whole number >= 0, got {eval_images!r}")
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"image_size must be (width, height) with both >= 16 px, got {image_size!r}")
    if profile not in NOISE_PROFILES:
        raise ValueError(f"noise profile must be one of {', '.join(NOISE_PROFILES)}, got {profile!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")


def generate(out: Path, persons: int = 480, noise: float = 0.05, seed: int = 0, eval_images: int | None = None,
             image_size: tuple[int, int] = (384, 512), workers: int = 2, profile: str = "random") -> DemoInfo:
    """Write the demo dataset to ``out`` (see the module docstring); ``image_size`` is (width, height) px.

    ``noise`` is the fraction of people with a corrupted label (about 45% gender flips, 45%
    incorrect_mask/normal swaps, 10% wrong age group) with ``profile="random"``; ``profile="systematic"``
    applies the patterns of ``NOISE_PROFILES["systematic"]`` instead (a person may carry several; every
    change is in truth.csv). ``eval_images`` defaults to persons // 2.
    Raises ValueError for bad arguments or a non-empty ``out`` that is not a previous demo.
    """
    started = time.perf_counter()
    out = Path(out)
    eval_images = persons // 2 if eval_images is None and isinstance(persons, int) else eval_images
    _check_options(persons, noise, eval_images, image_size, workers, profile)
    assert isinstance(eval_images, int)
    size = (int(image_size[0]), int(image_size[1]))
    settings = {"persons": persons, "noise": noise, "seed": seed, "eval_images": eval_images, "size": size}
    if profile != "random":  # the random profile's marker stays as it was
        settings["profile"] = profile
    _prepare(out, settings)

    plan = _plan(persons, noise, seed, profile)
    rows, tasks = [], []
    for p in plan.itertuples(index=False):
        shots = []
        for stem, given_mask in MASK_FILES.items():
            shown = given_mask
            if {"mask_swap", "mask_batch"} & set(p.noise_kind.split("+")) and stem in ("incorrect_mask", "normal"):
                shown = "not_wear" if stem == "incorrect_mask" else "incorrect"
            relative = f"train/images/{p.folder}/{stem}.{p.ext}"
            shots.append((shown, str(out / relative)))
            rows.append((relative, p.folder, shown, p.gender, p.age, given_mask, p.given_gender, p.given_age,
                         p.noise_kind))
        (out / "train" / "images" / p.folder).mkdir()
        tasks.append(((seed, 1, int(p.id)), p.gender, int(p.age), shots, size, bool(p.junk)))
    truth = pd.DataFrame(rows, columns=["path", "person", "true_mask", "true_gender", "true_age", "given_mask",
                                        "given_gender", "given_age", "noise_kind"])
    truth.insert(8, "true_class", _classes(truth.true_mask, truth.true_gender, truth.true_age))
    truth.insert(9, "given_class", _classes(truth.given_mask, truth.given_gender, truth.given_age))

    rng = np.random.default_rng([seed, 2])
    eval_gender = np.where(rng.random(eval_images) < FEMALE_SHARE, "female", "male")
    eval_age = _sample_ages(rng, eval_images)
    eval_mask = rng.choice(list(MASK_FILES.values()), eval_images)  # 5/7 wear, like a person's 7 photos
    eval_ids = [hashlib.sha1(f"labelfix-demo:{seed}:{j}".encode()).hexdigest() + ".jpg" for j in range(eval_images)]
    for j, image_id in enumerate(eval_ids):
        shot = [(str(eval_mask[j]), str(out / "eval" / "images" / image_id))]
        tasks.append(((seed, 2, j), str(eval_gender[j]), int(eval_age[j]), shot, size, False))
    truth_eval = pd.DataFrame({"ImageID": eval_ids, "true_mask": eval_mask, "true_gender": eval_gender,
                               "true_age": eval_age})
    truth_eval["true_class"] = _classes(truth_eval.true_mask, truth_eval.true_gender, truth_eval.true_age)

    if workers == 1 or multiprocessing.current_process().daemon:  # a daemonic worker may not start a pool
        for task in tasks:
            _render_person(task)
    else:  # fork is safe (and needs no __main__ guard) only without other threads, e.g. not in the dashboard
        context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        with context.Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_person, tasks, chunksize=4):
                pass

    truth.to_csv(out / "truth.csv", index=False)
    truth_eval.to_csv(out / "truth_eval.csv", index=False)
    pd.DataFrame({"ImageID": eval_ids, "ans": 0}).to_csv(out / "eval" / "info.csv", index=False)
    annotator, batch = _metadata(plan, seed)
    csv = pd.DataFrame({"id": plan.id, "gender": plan.given_gender, "race": "Asian", "age": plan.given_age,
                        "path": plan.folder, "annotator": annotator, "batch": batch})
    csv.to_csv(out / "train" / "train.csv", index=False)  # last: its presence means the demo is complete
    kinds = NOISE_KINDS if profile == "random" else SYSTEMATIC_KINDS
    corrupted = {kind: int(plan.noise_kind.map(lambda k, kind=kind: kind in k.split("+")).sum()) for kind in kinds}
    return DemoInfo(out=out, persons=persons, images=len(truth), eval_images=eval_images, corrupted=corrupted,
                    noise=float(noise), seed=seed, seconds=time.perf_counter() - started, profile=profile)
