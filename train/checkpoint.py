"""Checkpoints: self-describing safetensors files, their metadata, resume state without pickle, and retention.

File format (``FORMAT``): one safetensors file. Tensors ``model.<name>`` are the weights; the
header's metadata holds ``format`` and ``meta`` (JSON: model name, heads and class names, image
size, normalisation, schema with age bins, snapshot hash, config, epoch, metric). ``last`` files
add ``optimizer.*`` and ``rng.*`` tensors plus JSON scalars under ``meta["resume"]``. Nothing in
the file is ever unpickled, so ``load_model(path)`` is safe on a file from anywhere.

Retention in a run folder (the timm checkpoint-saver idea): ``last.safetensors`` for resume, the
top-k epochs by validation macro F1 as ``epochNNN.safetensors``, and ``best.safetensors`` as a hard
link to the top one. Every write goes to a temp file and is moved into place with ``os.replace``;
a new best is complete on disk before the old one is removed, and cleanup never deletes the best.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import faults
from core.schema import Schema
from core.store import LabelStore, now
from train.logs import environment
from train.run_folder import LAST

if TYPE_CHECKING:
    import torch

    from train.model import Head, HeadsModel
# torch (and safetensors.torch) are imported inside the functions that move tensors: the dashboard's disk
# view reads checkpoint headers and retention (train.disk) without loading torch.

FORMAT = "labelfix-checkpoint/1"
SUFFIX = ".safetensors"
EPOCH_FILE = re.compile(r"^epoch(\d+)\.safetensors$")
MAX_CLASSES = 100_000  # metadata limits: a checkpoint from anywhere cannot ask for a gigantic model or image cache
MAX_SIDE = 4096


class CheckpointError(Exception):
    """A file is not a checkpoint this code can load safely; the message says why."""


# ---- writing and reading ------------------------------------------------------------------------------
def write_checkpoint(path: str | os.PathLike[str], model_state: dict[str, torch.Tensor], meta: dict[str, Any],
                     extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights (+ extra tensors) and JSON metadata atomically: temp file, fsync, ``os.replace``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model.{k}": v.detach().to("cpu").clone().contiguous() for k, v in model_state.items()}
    tensors.update({k: v.detach().to("cpu").contiguous() for k, v in (extra or {}).items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(meta, default=_json_default)})
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fault_point(path)
    os.replace(tmp, path)
    return path


def fault_point(path: Path) -> None:
    """Crash-safety test hook: ``LABELFIX_FAULT=replace:N`` SIGKILLs this process just before its
    N-th atomic replace (checkpoint or best link), i.e. with a complete temp file not yet in place."""
    faults.fault_point("replace", f"before replacing {path.name}")


def _json_default(value: Any) -> Any:
    torch = sys.modules.get("torch")  # no tensor can exist while torch is not loaded
    if isinstance(value, np.generic) or (torch is not None and isinstance(value, torch.Tensor)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file before a parser sees it (pickles run code)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or head[8:9] != b"{" or not 0 < header_len <= size - 8:
        kind = "a pickle" if head[:1] == b"\x80" else "a zip/torch.save archive" if head[:2] == b"PK" else "unknown data"
        raise CheckpointError(f"{path}: not a safetensors checkpoint (looks like {kind}); refusing to load it, "
                              "since pickled checkpoints can run arbitrary code")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (reads the header only, not the weights)."""
    path = Path(path)
    _check_safetensors(path)
    with open(path, "rb") as handle:  # the safetensors header is 8 bytes of length, then JSON: no torch needed
        size = int.from_bytes(handle.read(8), "little")
        if size <= 0 or size > min(path.stat().st_size - 8, 100_000_000):
            raise CheckpointError(f"{path}: damaged safetensors file (header length {size} does not fit the file)")
        try:
            header = json.loads(handle.read(size)).get("__metadata__") or {}
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: damaged safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors file (metadata is not an object)")
    if header.get("format") != FORMAT or "meta" not in header:
        raise CheckpointError(f"{path}: a safetensors file but not a labelfix checkpoint (format "
                              f"{str(header.get('format'))[:80]!r}); use --pretrained-file to load plain weights")
    try:
        meta = json.loads(header["meta"])
    except ValueError:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is not a JSON object")
    return meta


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def check_meta(path: str | os.PathLike[str], meta: dict[str, Any]) -> dict[str, Any]:
    """Refuse metadata of the wrong types or keys before anything is built from it (one line naming the key).

    The model name passes ``train.model.check_model_name`` without hub access: a checkpoint from anywhere can
    never make this process contact the network or read a folder outside the checkpoint.
    """
    from train.model import check_model_name

    def bad(key: str, wanted: str) -> CheckpointError:
        return CheckpointError(f"{path}: checkpoint metadata {key!r} must be {wanted}, not {str(meta.get(key))[:80]!r}")

    for key in ("model", "heads"):
        if key not in meta:
            raise CheckpointError(f"{path}: checkpoint metadata has no {key!r}")
    try:
        check_model_name(meta["model"], allow_hub=False)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    heads = meta["heads"]
    if not isinstance(heads, list) or not heads or not all(
            isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("classes"), list)
            and h["classes"] and all(isinstance(c, str) for c in h["classes"]) for h in heads):
        raise bad("heads", "a non-empty list of {name: text, classes: [text, ...]}")
    if sum(len(h["classes"]) for h in heads) > MAX_CLASSES:
        raise bad("heads", f"at most {MAX_CLASSES} classes in all")
    drop = meta.get("drop_rate", 0.0)
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0.0 <= drop < 1.0:
        raise bad("drop_rate", "a number in [0, 1)")
    size = meta.get("image_size", [1, 1])
    if not isinstance(size, list) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size):
        raise bad("image_size", "[width, height] in pixels")
    for key in ("mean", "std"):
        value = meta.get(key, [0.5, 0.5, 0.5])
        if not isinstance(value, list) or len(value) != 3 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise bad(key, "three numbers")
    return meta


def read_tensors(path: str | os.PathLike[str], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with ``prefix``, keyed without it (e.g. prefix ``model.``)."""
    from safetensors import safe_open

    _check_safetensors(Path(path))
    try:
        with safe_open(str(path), "pt") as handle:
            return {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}
    except Exception as error:  # truncated data, offsets outside the file, unknown dtypes
        raise CheckpointError(f"{path}: damaged safetensors file ({_first_line(error)})") from None


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from nothing but its checkpoint file.

    Returns ``(model, meta)``: the model is in eval mode on ``device``; ``model(x)`` takes float
    images (b, 3, h, w) with ``h, w = meta["image_size"][::-1]``, RGB scaled to [0, 1] then
    normalised by ``meta["mean"]`` / ``meta["std"]``, and returns {head: logits (b, k)} with class
    names in ``meta["heads"]``. Raises ``CheckpointError`` for pickles, foreign or damaged files and metadata of
    the wrong types or keys (``check_meta``); the model name never reaches the network.
    """
    from train.model import Head, HeadsModel

    meta = check_meta(path, read_meta(path))
    heads = [Head(h["name"], tuple(h["classes"])) for h in meta["heads"]]
    model = HeadsModel(meta["model"], heads, drop_rate=float(meta.get("drop_rate", 0.0)))
    state = read_tensors(path, "model.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit {meta['model']}: {_first_line(error)}") from None
    return model.to(device).eval(), meta


# ---- resume state (optimizer, scheduler, RNG) without pickle ------------------------------------------
def resume_state(optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON scalars) capturing optimizer, scheduler and every RNG the loop uses."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for param, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{key}"] = value
            else:
                scalars["state"].setdefault(str(param), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["rng.python"] = torch.tensor(internal, dtype=torch.int64)
    rng = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss_next]}
    return tensors, {"optimizer": scalars, "scheduler": scheduler.state_dict(), "rng": rng}


def restore_state(path: str | os.PathLike[str], optimizer: torch.optim.Optimizer, scheduler: Any,
                  resume: dict[str, Any]) -> None:
    """Put optimizer, scheduler and RNG state saved by ``resume_state`` back in place."""
    import torch

    tensors = read_tensors(path, "")
    scalars = resume["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            state.setdefault(int(param), {})[name] = value
    for param, values in scalars["state"].items():
        state.setdefault(int(param), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in scalars["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    # safetensors stores plain contiguous tensors; give moments their parameter's layout (channels_last)
    # back, or the update takes another kernel path and the resumed run drifts in the last bits.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    scheduler.load_state_dict(resume["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = resume["rng"]["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = resume["rng"]["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python"].tolist()), gauss_next))


# ---- retention ---------------------------------------------------------------------------------------
def top_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[float, int, Path]]:
    """(metric, epoch, path) of the run's epoch checkpoints, best first (earlier epoch wins ties)."""
    found = []
    for path in Path(run_dir).glob(f"epoch*{SUFFIX}"):
        match = EPOCH_FILE.match(path.name)
        if match:
            try:
                found.append((float(read_meta(path)["metric"]["value"]), int(match.group(1)), path))
            except (CheckpointError, KeyError, ValueError, OSError):
                continue  # a foreign or damaged file is not a candidate
    return sorted(found, key=lambda t: (-t[0], t[1]))


def _link_best(run_dir: Path, top: Path) -> Path:
    """Point ``best.safetensors`` at ``top``: a hard link (no second copy), atomically replaced."""
    best = run_dir / f"best{SUFFIX}"
    tmp = run_dir / f".best.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(top, tmp)
    except OSError:  # file systems without hard links: a copy is the safe fallback
        shutil.copyfile(top, tmp)
    fault_point(best)
    os.replace(tmp, best)
    return best


def keep_top_k(run_dir: str | os.PathLike[str], model_state: dict[str, torch.Tensor], meta: dict[str, Any],
               epoch: int, metric: float, k: int = 1) -> tuple[Path | None, list[Path]]:
    """Save this epoch if it is among the top ``k`` by ``metric``; returns (saved path or None, deleted).

    Order matters for safety: the new file is complete, then ``best`` is re-linked, and only then
    do files that fell out of the top k go; the top-1 file is never among them.
    """
    run_dir, k = Path(run_dir), max(int(k), 1)  # k=0 would lose the best: keep at least one
    metric = float(metric) if np.isfinite(metric) else -1.0  # a NaN metric ranks below any real one
    top = top_checkpoints(run_dir)
    if len(top) >= k and not metric > top[k - 1][0]:
        return None, []
    saved = write_checkpoint(run_dir / f"epoch{epoch:03d}{SUFFIX}", model_state,
                             {**meta, "metric": {**meta.get("metric", {}), "value": float(metric)}})
    top = top_checkpoints(run_dir)
    _link_best(run_dir, top[0][2])
    deleted = []
    for _, _, path in top[k:]:
        path.unlink(missing_ok=True)
        deleted.append(path)
    return saved, deleted


def protected_files(run_dir: Path) -> set[Path]:
    """Files cleanup must keep in a run folder: ``best`` and whatever file it is linked to."""
    best = run_dir / f"best{SUFFIX}"
    keep = {best}
    top = top_checkpoints(run_dir)
    if top:
        keep.add(top[0][2])
    if best.exists():
        inode = best.stat().st_ino
        keep |= {p for p in run_dir.glob(f"*{SUFFIX}") if p.stat().st_ino == inode}
    return keep


def enforce_budget(run_dirs: Iterable[str | os.PathLike[str]], budget_bytes: int,
                   protect: Iterable[str | os.PathLike[str]] = ()) -> tuple[list[Path], int]:
    """Delete non-best checkpoint files, oldest first, until the folders use at most ``budget_bytes``.

    ``protect`` adds files to keep (the running runs' ``last``). Hard links count once. Returns
    (deleted paths, bytes still used); the caller reports both, including when the budget cannot be met.
    """
    keep = {Path(p).resolve() for p in protect}
    files: dict[int, list[Path]] = {}  # inode -> paths, so a hard-linked best counts once
    sizes: dict[int, int] = {}
    for run_dir in map(Path, run_dirs):
        keep |= {p.resolve() for p in protected_files(run_dir)}
        for path in run_dir.glob(f"*{SUFFIX}"):
            stat = path.stat()
            files.setdefault(stat.st_ino, []).append(path)
            sizes[stat.st_ino] = stat.st_size
    used = sum(sizes.values())
    deleted: list[Path] = []
    candidates = [(min(p.stat().st_mtime for p in paths), inode) for inode, paths in files.items()
                  if not any(p.resolve() in keep for p in paths)]
    for _, inode in sorted(candidates):
        if used <= budget_bytes:
            break
        for path in files[inode]:
            path.unlink(missing_ok=True)
            deleted.append(path)
        used -= sizes[inode]
    return deleted, used


# ---- what a training run writes after each epoch ------------------------------------------------------
def checkpoint_meta(config: Any, model: HeadsModel, heads: list[Head], schema: Schema, train_schema: Schema,
                    snap: dict[str, Any], run_id: int, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to use a checkpoint without the code's config files (JSON-ready)."""
    import torch

    mean, std = model.mean_std
    value = metrics.get("macro_f1")
    if value is None:  # no combined class: mean per-target accuracy ranks checkpoints instead
        accs = [v for k, v in metrics.items() if k.startswith("acc_")]
        value = sum(accs) / len(accs) if accs else 0.0
    return {
        "model": config.model, "drop_rate": config.drop_rate, "head_mode": config.heads,
        "heads": [{"name": h.name, "classes": list(h.classes)} for h in heads],
        "image_size": list(config.img_size), "mean": list(mean), "std": list(std),
        "input": "RGB, resized to image_size (w, h) by core.images.load_rgb, /255, then (x - mean) / std; "
                 "NCHW float; the model returns {head: logits}",
        "schema": schema.to_dict(), "train_schema": train_schema.to_dict(),
        "snapshot_hash": snap["hash"], "n_corrections": snap.get("n_corrections"),
        "config": asdict(config), "run_id": run_id, "epoch": epoch,
        "metric": {"name": "val_macro_f1" if "macro_f1" in metrics else "val_mean_accuracy", "value": value},
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("confusion_")},
        "versions": environment()["packages"], "torch": torch.__version__, "created_at": now(),
    }


def retention(config: Any, store: LabelStore, model: HeadsModel, optimizer: torch.optim.Optimizer, scheduler: Any,
              meta: dict[str, Any], run_dir: Path, log: Any) -> None:
    """End of an epoch: write ``last`` (with resume state), keep the top-k, then apply disk budgets."""
    state = model.state_dict()
    tensors, resume = resume_state(optimizer, scheduler)
    write_checkpoint(run_dir / LAST, state, {**meta, "resume": resume}, extra=tensors)
    saved, deleted = keep_top_k(run_dir, state, meta, meta["epoch"], meta["metric"]["value"], config.keep_top)
    if saved is not None:
        top = top_checkpoints(run_dir)
        log.info(f"saved {saved.name} ({meta['metric']['name']} {meta['metric']['value']:.4f})"
                 + (" - new best" if top and top[0][2] == saved else ""))
    for path in deleted:
        log.info(f"removed {path.name}: no longer in the top {config.keep_top}")
    budgets = []
    if config.keep_mb is not None:
        budgets.append(("this run", [run_dir], config.keep_mb))
    if config.keep_mb_all is not None:
        out = run_dir.parent
        budgets.append((f"all runs in {out}", [p for p in out.iterdir() if p.is_dir()], config.keep_mb_all))
    if not budgets:
        return
    active = store.runs()  # any kind: a running score job's `last` files are as precious as ours
    protect = [run_dir / LAST] + [Path(d) / LAST for d, s in zip(active["run_dir"], active["status"])
                                  if d and s in ("running", "queued")]
    for label, dirs, megabytes in budgets:
        removed, used = enforce_budget(dirs, int(megabytes * 1e6), protect)
        for path in removed:
            log.info(f"disk budget ({label}, {megabytes} MB): deleted {path}")
        if used > megabytes * 1e6:
            log.info(f"disk budget ({label}): {used / 1e6:.1f} MB used > {megabytes} MB, but only best and "
                     "running runs' last checkpoints remain; nothing else to delete")
