"""The Train page's job controls: the retrain/rescore form, live progress with Cancel, the rescore outcome.

Jobs start through ``train.jobs.start(store, command, TrainConfig)`` (a detached ``python -m train ...``
process recorded in the runs table, one at a time under the store's job lock) from button callbacks; their
state is read back from the database every ``REFRESH_S`` seconds, so a reload or a second tab sees the same
job. Nothing here imports torch or timm (``train.config`` holds the settings; a test renders every page and
checks): a model's pretrained input size comes from ``PRETRAINED_SIZES`` for the listed models, else from
``python -m train model-info`` in a subprocess, cached.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import train_charts, ui
from app.journal_views import ACTIVE, flag_changes, group_eta, progress_view
from core.store import LabelStore, StoreError
from train import config as train_config
from train import jobs
from train.config import DEFAULT_FOLDS, SCORE_DEFAULTS, TrainConfig, defaults

REFRESH_S = 2
REPEATS = (1, 3, 5)  # the Train form's "× N" choice (fit --repeats N)
# The curated model list: timm names with what to expect on this hardware (any timm name works under "Other").
MODELS = {
    "test_resnet": "default: timm's 0.4 M-parameter ResNet, ~1.5 min on the demo with 2 CPU cores (64x80)",
    "resnet10t": "a real small ResNet: ~4x slower on a CPU; for real photos at 96x128 and up",
    "resnet18d": "stronger: slow on a CPU, comfortable on a GPU",
    "efficientnet_b0": "GPU recommended: the most accurate of these at larger image sizes",
}
# timm's pretrained input size (W, H) of the listed models (their pretrained_cfg; a test checks it against timm),
# so that ticking "pretrained" sets the sizes without a subprocess.
PRETRAINED_SIZES = {"test_resnet": (160, 160), "resnet10t": (176, 176), "resnet18d": (224, 224),
                    "efficientnet_b0": (224, 224)}
OTHER = "other (type a timm name)"
# Form widget key -> TrainConfig field; img_size comes from two widgets, model from two (list or typed name).
FIELDS = {"train_epochs": "epochs", "train_lr": "lr", "train_batch_size": "batch_size", "train_loss": "loss",
          "train_age_threshold": "age_threshold", "train_seed": "seed", "train_heads": "heads",
          "train_threads": "threads", "train_device": "device", "train_val_folds": "val_folds",
          "train_keep_top": "keep_top", "train_augment": "augment", "train_balanced": "balanced",
          "train_pretrained": "pretrained"}


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """Form widget values (session-state keys) for a TrainConfig dict (a run's config or the defaults)."""
    values = {**defaults(), **{k: v for k, v in config.items() if k in defaults()}}
    out = {key: values[name] for key, name in FIELDS.items()}
    model = str(values["model"])
    out["train_model"] = model if model in MODELS else OTHER
    out["train_custom_model"] = "" if model in MODELS else model
    out["train_width"], out["train_height"] = (int(v) for v in values["img_size"])
    return out


def form_values(state: Any) -> dict[str, Any]:
    """The TrainConfig fields the form's widgets (in ``state``, e.g. ``st.session_state``) describe."""
    values = {name: state[key] for key, name in FIELDS.items() if key in state}
    custom = str(state.get("train_custom_model", "")).strip()
    values["model"] = custom if state.get("train_model") == OTHER or custom else state.get("train_model")
    values["img_size"] = (int(state["train_width"]), int(state["train_height"]))
    return values


@st.cache_data(show_spinner="Asking timm for the model's input size…", max_entries=64)
def _model_info(model: str) -> dict[str, Any]:
    return jobs.model_info(model)


def pretrained_size(model: str) -> tuple[int, int]:
    """The input size (W, H) ``model``'s pretrained weights expect; ValueError when timm does not know the name."""
    if model in PRETRAINED_SIZES:
        return PRETRAINED_SIZES[model]
    return tuple(_model_info(model)["img_size"])


def _follow_model_size() -> None:
    """Callback of the model and pretrained widgets: with pretrained on, the sizes become the model's own."""
    model = form_values(st.session_state)["model"]
    if not st.session_state.get("train_pretrained") or not model:
        return
    try:
        st.session_state["train_width"], st.session_state["train_height"] = pretrained_size(model)
    except ValueError as error:
        ui.flash(ui.Flash(False, f"Image size left as it is: {error}"))


def _load_settings(run_id: int) -> None:
    """Callback of "Use these settings": copy a run's config into the form widgets."""
    for key, value in settings_of(ui.get_store().run(run_id)["config"] or {}).items():
        st.session_state[key] = value
    ui.flash(ui.Flash(True, f"Form filled with the settings of run #{run_id}; change what you want to test."))


def start_job(command: str, config: TrainConfig | None, what: str,
              options: dict[str, Any] | None = None) -> int | None:
    """Start a background job (``jobs.start``), flash what happened (or why not); returns its run id or None."""
    try:
        run_id = jobs.start(ui.get_store(), command, config, options=options)
    except jobs.JobBusy as error:
        ui.flash(ui.Flash(False, f"Not started: {error}."))
        return None
    except (StoreError, OSError) as error:
        ui.flash(ui.Flash(False, f"Could not start {what}: {error}"))
        return None
    ui.flash(ui.Flash(True, f"Started {what} as run #{run_id}; progress shows below and in every tab."))
    return run_id


def _start_from_form(command: str) -> None:
    values = form_values(st.session_state)
    if not values["model"]:
        ui.flash(ui.Flash(False, "Not started: type a timm model name (or pick one from the list)."))
        return
    from train.model import check_model_name

    try:  # a typed name is checked against timm's registry: no hub download or local folder without a request
        check_model_name(values["model"], allow_hub=False)
    except ValueError as error:
        ui.flash(ui.Flash(False, f"Not started: {error}"))
        return
    if command == "score":
        own = st.session_state.get("score_own_defaults", True)  # the scorer's cheap defaults, or the form's model
        config = None if own else TrainConfig.from_dict(values)
        start_job("score", config, "rescoring", options={"folds": int(st.session_state["score_folds"])})
    else:
        repeats = int(st.session_state.get("train_repeats", 1))
        start_job("fit", TrainConfig.from_dict(values),
                  f"training ({values['model']}" + (f", × {repeats} seeds)" if repeats > 1 else ")"),
                  options={"repeats": repeats} if repeats > 1 else None)


def _cancel(run_id: int) -> None:
    store = ui.get_store()
    message = jobs.cancel(store, run_id)
    kept = " (the last finished epoch's checkpoint is kept)" if store.run(run_id)["kind"] == "train" else ""
    ui.flash(ui.Flash(True, message + kept))


def retrain_form(store: LabelStore) -> None:
    """"Same settings as run X", then the model form with its Retrain and Rescore buttons."""
    # First visit: the image size follows the dataset's images (32×32 digits train at 32×32, photos at 64×80).
    sized = {} if "train_width" in st.session_state else {"img_size": train_config.suggested_img_size(store)}
    for key, value in settings_of(sized).items():
        st.session_state.setdefault(key, value)
    st.session_state.setdefault("score_folds", DEFAULT_FOLDS)
    st.session_state.setdefault("score_own_defaults", True)
    train_runs = store.runs("train")
    if len(train_runs):
        labels = {int(r["id"]): run_label(r) for r in train_runs.to_dict("records")}
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        chosen = left.selectbox("Same settings as run", list(labels), format_func=labels.get, key="train_same_as")
        right.button("Use these settings", key="train_load", on_click=_load_settings, args=(chosen,))
    has_age = any(b.name == "age_group" for b in store.schema.binned)
    # Outside the form: changing the model or ticking pretrained reruns at once, so the sizes follow the model.
    top = st.columns([3, 2, 1], vertical_alignment="bottom")
    top[0].selectbox("Model", [*MODELS, OTHER], key="train_model", on_change=_follow_model_size)
    top[1].text_input("Other timm model name", key="train_custom_model", placeholder="e.g. convnext_nano",
                      on_change=_follow_model_size, help="Used when filled in; any name timm.create_model knows.")
    top[2].checkbox("Pretrained", key="train_pretrained", on_change=_follow_model_size,
                    help="Start from timm's pretrained weights for this model (downloaded once into the Hugging "
                         "Face cache; offline, the job fails and says so). Sets the image size to the model's own.")
    chosen = form_values(st.session_state)["model"]
    about = (f"{chosen}: {MODELS[chosen]}" if chosen in MODELS else f"{chosen or 'no model'}: any timm "
             "name; expect it to want a GPU unless it is small")
    if st.session_state.get("train_pretrained") and chosen in PRETRAINED_SIZES:  # the size above is not the form's
        about += " · pretrained: its weights expect {}x{}".format(*PRETRAINED_SIZES[chosen])
    st.caption(ui.plain(about))
    with st.form("train_form", border=True):
        first = st.columns(4)
        first[0].number_input("Image width", 16, 1024, step=8, key="train_width")
        first[1].number_input("Image height", 16, 1024, step=8, key="train_height")
        first[2].number_input("Epochs", 1, 500, step=1, key="train_epochs")
        first[3].number_input("Batch size", 1, 4096, step=8, key="train_batch_size")
        second = st.columns(4)
        second[0].number_input("Learning rate", 1e-6, 1.0, format="%.5f", step=1e-4, key="train_lr")
        second[1].selectbox("Loss", ["ce", "smooth", "focal"], key="train_loss",
                            help="ce: cross-entropy · smooth: label smoothing · focal: focuses on hard images")
        second[2].number_input("Seed", 0, 2**31 - 1, step=1, key="train_seed")
        if has_age:
            st.number_input("Age threshold for the oldest group (empty: the schema's edge)", 1, 120, value=None,
                            step=1, key="train_age_threshold",
                            help="Train with the old-age group starting at this age (e.g. 58); validation "
                                 "keeps the schema's groups.")
        with st.expander("Advanced"):
            extra = st.columns(4)
            extra[0].selectbox("Heads", ["multi", "single"], key="train_heads")
            extra[1].number_input("CPU threads", 1, 64, step=1, key="train_threads")
            extra[2].selectbox("Device", ["auto", "cpu", "cuda"], key="train_device")
            extra[3].number_input("Validation folds", 2, 20, step=1, key="train_val_folds")
            more = st.columns(4)
            more[0].number_input("Best checkpoints kept", 1, 20, step=1, key="train_keep_top",
                                 help="Epoch checkpoints kept per run besides last; best is a link, not a copy.")
            more[1].checkbox("Augmentation", key="train_augment")
            more[2].checkbox("Balanced sampling", key="train_balanced")
            more[3].number_input("Rescore folds", 2, 10, step=1, key="score_folds")
            scorer = ", ".join(f"{k} {' x '.join(map(str, v)) if isinstance(v, tuple) else v}"
                               for k, v in SCORE_DEFAULTS.items())
            st.checkbox("Rescore with the scorer's own settings", key="score_own_defaults",
                        help=f"{scorer}: k small models train in minutes on a CPU. Off: the model settings above.")
        buttons = st.columns([2, 1, 2, 3], vertical_alignment="bottom")
        buttons[0].form_submit_button("Retrain on cleaned labels", type="primary", on_click=_start_from_form,
                                      args=("fit",), key="train_start")
        buttons[1].selectbox("Seeds", REPEATS, key="train_repeats", format_func=lambda n: f"× {n}",
                             help="× N trains these settings N times on one snapshot (seeds seed … seed+N-1), one "
                                  "repeat group: its spread tells Compare which differences are run-to-run noise.")
        buttons[2].form_submit_button("Rescore", on_click=_start_from_form, args=("score",), key="score_start",
                                      help="Cross-validated label-issue scores of the current labels (settings "
                                           "under Advanced): the review queue then uses them.")
        buttons[3].caption("Retrain takes a snapshot of the current (corrected) labels and trains on it. "
                           "One job at a time.")
        from app.experiment_views import ask_controls  # "Did cleaning help?": the same settings, both labellings

        ask_controls()
    if not has_age:
        st.session_state["train_age_threshold"] = None


def run_label(run: dict[str, Any]) -> str:
    config, metrics = run.get("config") or {}, run.get("metrics") or {}
    f1 = metrics.get("best_macro_f1")
    note = str(run.get("note") or "")
    group = run.get("repeat_group")
    group = None if group is None or group != group else int(group)  # NaN: no group
    epochs = config.get("epochs", "?")
    return (f"#{run['id']} · {config.get('model', '?')} · {epochs} epoch{'' if epochs == 1 else 's'} · "
            f"{run['status']}" + (f" · F1 {f1:.3f}" if f1 is not None else "")
            + (f" · repeat group #{group}" if group is not None else "") + (f" · {note[:40]}" if note else ""))


def _latest_job(store: LabelStore) -> dict[str, Any] | None:
    """The running job, else the newest run of any kind (what the progress area shows)."""
    running = jobs.running_job(store)
    if running is not None:
        return running
    runs = store.runs()
    return runs.iloc[0].to_dict() if len(runs) else None


@st.fragment(run_every=REFRESH_S)
def live_progress() -> None:
    """The current job's progress bar, curves and Cancel; the last job's outcome when none runs.

    Re-reads the database every ``REFRESH_S`` seconds; when the job it watched ends, the whole page
    reruns once so the runs table and detail views pick up the result.
    """
    store = ui.get_store()
    # Any run finished (a repeat group's run, another tab's job): the whole page reruns once, so option texts
    # ("#3 · ... · done"), the runs table and Compare are never stale.
    finished = tuple(state for state in store.run_states() if state[1] not in ACTIVE)
    seen = st.session_state.get("train_finished_runs")
    st.session_state["train_finished_runs"] = finished
    if seen is not None and seen != finished:
        st.session_state.pop("train_watching", None)  # this rerun is the watcher's too
        st.rerun()
    run = _latest_job(store)
    if run is None:
        st.caption("No runs yet: Retrain below starts the first.")
        return
    active = run["status"] in ACTIVE
    watching = st.session_state.get("train_watching")
    if active:
        st.session_state["train_watching"] = int(run["id"])
    elif watching is not None:
        del st.session_state["train_watching"]
        st.rerun()  # the job ended: refresh the whole page once
    fraction, text = progress_view(run)
    if run.get("repeat_group") is not None and not pd.isna(run.get("repeat_group")):  # × N: the whole group's ETA
        group = group_eta(run, store.repeat_group(int(run["repeat_group"])))
        text += f" · {group}" if group else ""
    st.progress(fraction, text=ui.plain(text))
    if active and run["kind"] == "experiment":  # the experiment's training run in progress, under its pair
        members = store.experiment_runs(int(run["id"]))
        training = members[members["status"].isin(ACTIVE)]
        if len(training):
            child_fraction, child_text = progress_view(store.run(int(training["run_id"].iloc[-1])))
            st.progress(child_fraction, text=ui.plain(child_text))
    if active:
        st.button(f"Cancel run #{run['id']}", key="train_cancel", on_click=_cancel, args=(int(run["id"]),),
                  help="Stops the job cleanly: status cancelled, the last finished epoch's checkpoint kept.")
    elif run["status"] == "failed":
        st.error(ui.plain(f"{run['kind']} run #{run['id']} failed. The end of its log:"))
        st.code(str(run.get("error_tail") or "no error text recorded"), language=None, wrap_lines=True)
    elif run["status"] == "cancelled":
        st.warning(ui.plain(f"{run['kind']} run #{run['id']} was cancelled."))
    if run["kind"] == "train":
        epochs = store.epochs(int(run["id"]))
        if len(epochs):
            st.plotly_chart(train_charts.curves(epochs, f"Run #{run['id']}: loss and macro F1"),
                            key="train_live_curves", width="stretch")
    elif run["kind"] == "score" and run["status"] == "done":
        rescore_outcome(store, int(run["id"]))


def rescore_outcome(store: LabelStore, run_id: int) -> None:
    """How many flags appeared or cleared with score run ``run_id`` versus the score run before it."""
    run = store.run(run_id)
    previous = (run.get("metrics") or {}).get("compared_with")
    if previous is None:
        done = store.runs("score")
        earlier = done[(done["status"] == "done") & (done["id"] < run_id)]
        previous = int(earlier["id"].max()) if len(earlier) else None
    changes = flag_changes(ui.queue(store, run_id), ui.queue(store, int(previous)) if previous else None)
    if previous:
        text = (f"Rescore #{run_id}: {changes['flagged']} flagged unit(s); {changes['appeared']} flag(s) appeared "
                f"and {changes['cleared']} cleared versus score run #{previous}.")
    else:
        text = f"Rescore #{run_id}: {changes['flagged']} flagged unit(s) (the first score run: nothing to compare)."
    current = store.current_score_run() == run_id
    st.success(ui.plain(text + (" The Review queue now uses these scores." if current else "")))
    if len(changes["by_attribute"]):
        st.dataframe(changes["by_attribute"], hide_index=True)
