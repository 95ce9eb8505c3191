"""Training input throughput: the trainer's uint8 cache against the organisers' per-epoch PIL pipeline.

    PYTHONPATH=. .venv/bin/python -m bench.train_throughput                 # builds the 480-person demo
    PYTHONPATH=. .venv/bin/python -m bench.train_throughput --db labels.db --fit

On the same images, model and threads, one after the other:
  (a) loader alone (no model): naive = torch DataLoader over the files (PIL open of the 384x512 JPEG,
      Resize, ToTensor, Normalize, every epoch; ``--threads`` workers) vs cached = memmap gather +
      flip/affine/colour augmentation + normalisation on the device (``train.data``). Target >= 5x.
  (b) end to end: each pipeline also trains the model one AdamW step per batch. Target >= 1.5x.
  (c) ``--fit``: the default demo configuration through ``train.fit``: wall time and validation accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.common import demo_store
from core.images import resolve_inside
from core.store import LabelStore
from train.data import CachedImages, EpochSampler, ImageCache, augment, keep_batch, normalise
from train.loop import TrainConfig
from train.model import HeadsModel, heads_for


class NaiveFiles(Dataset):
    """The organisers' baseline dataset: decode and resize the file on every access."""

    def __init__(self, files: list[Path], targets: np.ndarray, size: tuple[int, int], mean, std):
        self.files, self.targets = files, torch.as_tensor(targets)
        self.transform = transforms.Compose([transforms.Resize((size[1], size[0]), Image.BILINEAR),
                                             transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return self.transform(Image.open(self.files[index]).convert("RGB")), self.targets[index]


def naive_batches(loader: DataLoader, device: torch.device):
    for images, targets in loader:
        yield images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def cached_batches(loader: DataLoader, device: torch.device, mean, std, generator: torch.Generator, aug: bool):
    for images, targets, _ in loader:
        images = images.to(device, non_blocking=True)
        x = augment(images, generator, mean, std) if aug else normalise(images, mean, std)
        yield x, targets.to(device, non_blocking=True)


def timed(batches, limit: int, step=None, warmup: int = 0) -> float:
    """Images per second over ``limit`` batches (after ``warmup`` untimed ones); ``step`` trains on each."""
    count, started = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            started, count = time.perf_counter(), 0
        if step is not None:
            step(x, y)
        elif x.device.type == "cuda":
            torch.cuda.synchronize()
        count += len(x)
        if i + 1 >= warmup + limit:
            break
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def trainer(args: argparse.Namespace, device: torch.device, schema):
    torch.manual_seed(0)
    model = HeadsModel(args.model, heads_for(schema)).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x.contiguous(memory_format=torch.channels_last))
        loss = sum(torch.nn.functional.cross_entropy(out[n].float(), y[:, i]) for i, n in enumerate(out))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return model, step


def bench_store(args: argparse.Namespace) -> Path:
    """The 480-person demo (clean labels) ingested into a temporary store (``bench.common.demo_store``), unless
    --db names one."""
    if args.db:
        return Path(args.db)
    base = Path(tempfile.mkdtemp(prefix="train-bench-"))
    started = time.perf_counter()
    db = demo_store(base, persons=args.persons, noise=0, workers=args.workers, quiet=True)
    print(f"demo: {args.persons} people in {base} ({time.perf_counter() - started:.0f} s)")
    return db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="store with an ingested dataset (default: build the demo)")
    parser.add_argument("--persons", type=int, default=480, help="demo size when building it (default: 480)")
    demo = TrainConfig()  # the default demo configuration is the trainer's defaults
    parser.add_argument("--model", default=demo.model, help=f"timm model (default: {demo.model})")
    parser.add_argument("--img-size", type=int, nargs=2, default=demo.img_size,
                        help="W H (default: {} {})".format(*demo.img_size))
    parser.add_argument("--batch-size", type=int, default=demo.batch_size,
                        help=f"images per batch (default: {demo.batch_size})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads = naive loader workers (default: 2)")
    parser.add_argument("--workers", type=int, default=2, help="processes for building the demo (default: 2)")
    parser.add_argument("--loader-batches", type=int, default=30, help="batches timed in (a) (default: 30)")
    parser.add_argument("--train-batches", type=int, default=12, help="batches timed in (b) (default: 12)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--fit", action="store_true", help="also train the default demo configuration (c)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    db = bench_store(args)
    results: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                     "threads": args.threads, "model": args.model, "img_size": list(args.img_size),
                     "batch_size": args.batch_size}
    with LabelStore(db) as store:
        labels, schema, root = store.current_labels(), store.schema, store.root
        cache_dir = store.files_dir / "cache"
    targets = np.stack([schema.codes(labels)[h.name] for h in heads_for(schema)], 1)
    files = [resolve_inside(root, p) for p in labels["path"]]
    mean, std = HeadsModel(args.model, heads_for(schema)).mean_std
    size = tuple(args.img_size)
    pin = device.type == "cuda"

    started = time.perf_counter()
    cache = ImageCache.open(root, labels["path"].tolist(), labels["hash"].tolist(), size, cache_dir,
                            threads=args.threads, progress=False)
    results["cache_build_s"] = round(time.perf_counter() - started, 2)
    print(f"cache: {len(cache)} images at {size[0]}x{size[1]} ready in {results['cache_build_s']} s "
          f"(decoded once, reused by every later epoch and run)")

    def naive_loader() -> DataLoader:
        return DataLoader(NaiveFiles(files, targets, size, mean, std), batch_size=args.batch_size, shuffle=True,
                          num_workers=args.threads, drop_last=True, pin_memory=pin)

    def cached_loader() -> DataLoader:
        return DataLoader(CachedImages(cache, np.arange(len(cache)), targets), batch_size=args.batch_size,
                          sampler=EpochSampler(len(cache), seed=0), collate_fn=keep_batch, drop_last=True,
                          pin_memory=pin)

    generator = torch.Generator().manual_seed(0)
    n = args.loader_batches
    results["loader_naive"] = timed(naive_batches(naive_loader(), device), n)
    results["loader_cached"] = timed(cached_batches(cached_loader(), device, mean, std, generator, False), n)
    results["loader_cached_augment"] = timed(cached_batches(cached_loader(), device, mean, std, generator, True), n)
    print(f"(a) loader alone, {n} batches of {args.batch_size}: naive {results['loader_naive']:.0f} img/s | "
          f"cached {results['loader_cached']:.0f} img/s ({results['loader_cached'] / results['loader_naive']:.1f}x) | "
          f"cached + augmentation {results['loader_cached_augment']:.0f} img/s "
          f"({results['loader_cached_augment'] / results['loader_naive']:.1f}x; target >= 5x)")

    n = args.train_batches
    _, step = trainer(args, device, schema)
    results["train_naive"] = timed(naive_batches(naive_loader(), device), n, step, warmup=2)
    _, step = trainer(args, device, schema)
    results["train_cached_augment"] = timed(cached_batches(cached_loader(), device, mean, std, generator, True), n,
                                            step, warmup=2)
    print(f"(b) end to end, {args.model} {size[0]}x{size[1]}, {n} steps: naive {results['train_naive']:.0f} img/s | "
          f"cached + augmentation {results['train_cached_augment']:.0f} img/s "
          f"({results['train_cached_augment'] / results['train_naive']:.2f}x; target >= 1.5x)")

    if args.fit:
        from train import fit

        started = time.perf_counter()
        run = fit(db=str(db), device=args.device, threads=args.threads, echo=True)
        seconds = time.perf_counter() - started
        with LabelStore(db) as store:
            epochs = store.epochs(run["run_id"])
        last = epochs.iloc[-1]
        results["fit"] = {"seconds": round(seconds, 1), "epochs": int(last["epoch"]),
                          **{k: float(last[k]) for k in ("acc_mask", "acc_gender", "acc_age_group", "macro_f1")},
                          "best_macro_f1": float(epochs["macro_f1"].max()), "run_dir": run["run_dir"]}
        print(f"(c) default fit: {seconds:.0f} s for {int(last['epoch'])} epochs; validation people: mask "
              f"{last['acc_mask']:.3f}, gender {last['acc_gender']:.3f}, age group {last['acc_age_group']:.3f}, "
              f"macro F1 {last['macro_f1']:.3f} (bar: 0.97 / 0.95 / 0.85)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
