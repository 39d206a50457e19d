#!/usr/bin/env python
"""Patch-forward throughput on the CPU, and the logit error each speed-up introduces against nnU-Net's forward.

For each model, real patches of the sample CT (nnU-Net's own preprocessing and sliding-window patches,
``inference.cached_inference.SlidingWindowLayout``) go through the network the way the cached engine sends them
(``nnunet_private.mirror_and_predict``, i.e. nnU-Net's ``_internal_maybe_mirror_and_predict``) under each setting:

    reference         batch 1, float32, contiguous memory, torch's default threads: nnU-Net's own forward
    batch B           B patches per forward (the engine's --batch-size)
    channels_last     the network and input in torch.channels_last_3d memory format
    bf16 autocast     torch.autocast("cpu", dtype=torch.bfloat16) (the CPU analogue of nnU-Net's CUDA autocast)
    torch.compile     the network compiled (inductor), compile time reported apart (--compile)
    threads T         torch.set_num_threads(T)

Columns: wall-clock and CPU seconds per patch (medians over --repeats timed forwards after one warm-up, divided
by the batch), the speed-up in CPU seconds over the reference, the max |logit difference| to the reference
logits over all patches, and the share of voxels whose argmax changes. On a shared machine the wall-clock
figure depends on the other jobs; the CPU seconds (all threads summed) are the steadier measure of work; the
errors are exact.

Models: the demo model (patch 16 x 48 x 48, 2 classes) and the zoo's published-scale model
(SegSHAP/Testing/model_zoo.py ``published_scale_model``: patch 128^3, 1.5 mm, 118 classes, nnU-Net's default
width 32..320, random weights).

Run: .venv/bin/python benchmarks/bench_throughput.py [--models demo published] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTING = REPO / "SegSHAP" / "Testing"
PATCHES = {"demo": 8, "published": 2}      # distinct real patches per model (the largest batch)


def real_patches(predictor, ct, count: int) -> np.ndarray:
    """``count`` of nnU-Net's sliding-window patches of the preprocessed CT, float32 (count, 1, pz, py, px), the
    ones with the most body voxels first (the middle of the CT)."""
    from SegSHAPLib.inference.cached_inference import SlidingWindowLayout
    from SegSHAPLib.inference.model import preprocess

    layout = SlidingWindowLayout(predictor, preprocess(predictor, ct).data)
    patches = [layout.padded[patch.slices] for patch in layout.patches]
    order = np.argsort([-float((p > p.min()).mean()) for p in patches], kind="stable")
    return np.stack([patches[i] for i in order[:count]])[:, None].astype(np.float32)


def forward(predictor, x: np.ndarray, batch: int, channels_last: bool = False, bf16: bool = False) -> np.ndarray:
    """Logits (n, C, pz, py, px) float32 of patches x (n, 1, ...) in batches of ``batch`` under the settings."""
    import torch

    from SegSHAPLib.inference import nnunet_private

    outputs = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for start in range(0, len(x), batch):
        chunk = torch.from_numpy(x[start:start + batch])
        if channels_last:
            chunk = chunk.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), autocast:
            outputs.append(nnunet_private.mirror_and_predict(predictor, chunk).float().numpy())
    return np.concatenate(outputs)


def timed(predictor, x: np.ndarray, batch: int, repeats: int, **settings) -> tuple[float, float, np.ndarray]:
    """(wall seconds per patch, CPU seconds per patch, logits of all patches): the first batch once as a warm-up
    (its logits kept), then the medians of ``repeats`` timed forwards of it, then the other patches."""
    first = forward(predictor, x[:batch], batch, **settings)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        forward(predictor, x[:batch], batch, **settings)
        walls.append((time.perf_counter() - wall) / batch)
        cpus.append((time.process_time() - cpu) / batch)
    rest = forward(predictor, x[batch:], batch, **settings) if len(x) > batch else first[:0]
    return float(np.median(walls)), float(np.median(cpus)), np.concatenate([first, rest])


def bench_model(name: str, predictor, x: np.ndarray, repeats: int, compile_network: bool) -> None:
    import torch

    default_threads = torch.get_num_threads()
    largest = len(x)
    print(f"\n### {name}: patch {' x '.join(map(str, x.shape[2:]))}, "
          f"{predictor.label_manager.num_segmentation_heads} classes, {largest} real patches\n")
    print("| setting | wall s / patch | CPU s / patch | speed-up (CPU s) | max \\|logit diff\\| | argmax changed |")
    print("|---|---|---|---|---|---|")
    reference_wall, reference_cpu, reference = timed(predictor, x, 1, repeats)
    reference_class = reference.argmax(axis=1)

    def row(label: str, wall: float, cpu: float, logits: np.ndarray) -> None:
        diff = float(np.abs(logits - reference).max())
        changed = float((logits.argmax(axis=1) != reference_class).mean())
        print(f"| {label} | {wall:.4f} | {cpu:.4f} | {reference_cpu / cpu:.2f} | {diff:.3g} | "
              f"{100 * changed:.4f}% |", flush=True)

    row(f"reference (batch 1, float32, {default_threads} threads)", reference_wall, reference_cpu, reference)
    for batch in (b for b in (2, 4, 8) if b <= largest):
        row(f"batch {batch}", *timed(predictor, x, batch, repeats))
    network = predictor.network
    network.to(memory_format=torch.channels_last_3d)
    row("channels_last, batch 1", *timed(predictor, x, 1, repeats, channels_last=True))
    row(f"channels_last, batch {largest}", *timed(predictor, x, largest, repeats, channels_last=True))
    network.to(memory_format=torch.contiguous_format)
    row("bf16 autocast, batch 1", *timed(predictor, x, 1, repeats, bf16=True))
    row(f"bf16 autocast, batch {largest}", *timed(predictor, x, largest, repeats, bf16=True))
    for threads in sorted({1, default_threads} - {default_threads}):
        torch.set_num_threads(threads)
        row(f"threads {threads}, batch 1", *timed(predictor, x, 1, repeats))
        row(f"threads {threads}, batch {largest}", *timed(predictor, x, largest, repeats))
    torch.set_num_threads(default_threads)
    if compile_network:
        started = time.perf_counter()
        predictor.network = torch.compile(network, dynamic=False)     # one patch shape: no symbolic shapes
        try:
            forward(predictor, x[:1], 1)
            print(f"| torch.compile: first forward (compiling) {time.perf_counter() - started:.1f} s | | | | | |")
            row("torch.compile, batch 1", *timed(predictor, x, 1, repeats))
        except Exception as err:                      # noqa: BLE001 - a benchmark reports what failed, then goes on
            print(f"| torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:120]} | | | | | |")
        finally:
            predictor.network = network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=tuple(PATCHES), default=list(PATCHES))
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per setting (the published-scale "
                        "model: at most 1, about 12 CPU seconds per forward)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTING))
    import torch
    from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS
    from model_zoo import published_scale_model

    from SegSHAPLib.inference.model import load_predictor
    from SegSHAPLib.io.image_io import read_volume
    from SegSHAPLib.units.organs import organ_class_names

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, MKLDNN "
          f"{torch.backends.mkldnn.is_available()}")
    ct = read_volume(SAMPLE_CT)
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        for name in args.models:
            model = DEMO_MODEL if name == "demo" else published_scale_model(
                Path(tmp) / "published", organ_class_names(SAMPLE_ORGANS), base_features=32)
            predictor = load_predictor(model)
            repeats = args.repeats if name == "demo" else min(args.repeats, 1)
            bench_model(name, predictor, real_patches(predictor, ct, PATCHES[name]), repeats, args.compile)


if __name__ == "__main__":
    main()
