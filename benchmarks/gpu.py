"""Every `--device cuda` figure in one run, written to one JSON (`bash benchmarks/gpu.sh` runs it on a GPU).

    python -m benchmarks.gpu --device cuda --out gpu_results.json [--peak-tflops 989]
    python -m benchmarks.gpu --device cpu --tiny --out /tmp/gpu.json      # dry run of the same code on CPU

Figures (paper profile unless `--tiny`, which uses the demo profile's small model and tiny sizes):
  vit_forward    the frozen ViT backbone's forward, crops/s and MFU, bf16 autocast, inference mode
  train_step     `vremd.train.loop.train_step` of the model (frozen backbone) on real loader batches:
                 samples/s and MFU (FLOPs: 3x the trainable parts' forward + 1x the frozen backbone's)
  dca            DCA vs dense cross-attention, forward+backward, paper size, K=4 (cost multiple)
  predict        `vremd.predict` person-crops/s, batched vs DCPose-style batch 1 (benchmarks/predict.py)
  determinism    the training step with deterministic algorithms on vs off (samples/s of each, and the ops
                 that have no deterministic CUDA kernel, which then warn instead of failing)
MFU = achieved FLOP/s / the device's dense bf16 peak (`--peak-tflops`, else known from the device name;
null when unknown, e.g. on CPU). The JSON is rewritten after each figure, so a run stopped by the time
limit keeps what it measured; a figure that fails records its error and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from vremd.atomic import atomic_write_text
from vremd.config import load_config
from vremd.ablation.cost import module_flops
from vremd.model.vremd import build_model
from vremd.train.tracking import LOCK_TAG, lock_sha256

from benchmarks import deformable, predict
from benchmarks.timing import interleaved, wall_clock
from benchmarks.train_throughput import build_data, step_timing

SCHEMA = "vremd-gpu-bench/1"
FIGURES = ("vit_forward", "train_step", "dca", "predict", "determinism")
# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}
ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Batch sizes and repeats of one run."""

    profile: str
    vit_batch: int
    train_batch: int
    repeats: int
    warmup: int
    predict_frames: int
    data_videos: int
    data_frames: int


FULL = Sizes("paper", vit_batch=64, train_batch=32, repeats=10, warmup=3, predict_frames=40, data_videos=3,
             data_frames=16)
TINY = Sizes("demo", vit_batch=2, train_batch=2, repeats=1, warmup=1, predict_frames=4, data_videos=1, data_frames=6)


def mfu(flops_per_item: float, items_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (None without a peak)."""
    if peak_tflops is None:
        return None
    if peak_tflops <= 0:
        raise ValueError(f"peak TFLOP/s must be positive, got {peak_tflops}")
    return flops_per_item * items_per_s / (peak_tflops * 1e12)


def peak_tflops_for(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU name, else None."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def vit_forward(cfg, sizes: Sizes, device: torch.device, peak: float | None) -> dict[str, Any]:
    """Forward crops/s of the backbone alone (one frame per crop), bf16 autocast on CUDA."""
    model_cfg = dataclasses.replace(cfg.model, pretrained="")
    torch.manual_seed(0)
    backbone = build_model(model_cfg).backbone.eval()
    one = torch.zeros(1, 1, 3, model_cfg.img_height, model_cfg.img_width)  # (B, T, 3, H, W)
    flops, _ = module_flops(backbone, one)
    backbone = backbone.to(device)
    x = torch.randn(sizes.vit_batch, 1, 3, model_cfg.img_height, model_cfg.img_width, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def forward() -> None:
        with torch.inference_mode(), autocast:
            backbone(x)
        _sync(device)

    t = interleaved({"forward": forward}, sizes.repeats, sizes.warmup, clock=wall_clock)["forward"]
    rate = sizes.vit_batch / t.median
    return {"batch": sizes.vit_batch, "img_hw": [model_cfg.img_height, model_cfg.img_width],
            "embed_dim": model_cfg.embed_dim, "depth": model_cfg.depth, "flops_per_crop": flops,
            "crops_per_s": rate, "median_s": t.median, "min_s": t.min, "mfu": mfu(flops, rate, peak)}


def train_step_figure(cfg, index_path: Path, sizes: Sizes, device: torch.device, peak: float | None) -> dict[str, Any]:
    t, flops, model = step_timing(cfg, index_path, sizes.train_batch, sizes.repeats, device)
    rate = sizes.train_batch / t.median
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"batch": sizes.train_batch, "flops_per_sample": flops, "samples_per_s": rate, "median_s": t.median,
            "min_s": t.min, "frozen_params": frozen, "mfu": mfu(flops, rate, peak)}


def dca_figure(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    size = deformable.sizes_from_params(str(ROOT / "params.yaml"))[0 if sizes is TINY else 1]
    t = deformable.run(size, 4, device, sizes.warmup, sizes.repeats)
    return {"size": dataclasses.asdict(size), "num_points": 4,
            **{f"{k}_ms": v.median * 1e3 for k, v in t.items()}, "dca_cost_multiple": t["dca"].median / t["dense"].median}


def predict_figure(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    cfg = load_config(str(ROOT / "params.yaml"), profile="demo")
    with tempfile.TemporaryDirectory(prefix="vremd-gpu-predict-") as tmp:
        m = predict.measure(Path(tmp), cfg, device.type, 32, sizes.predict_frames, sizes.repeats)
    t, persons = m["timings"], m["persons"]
    return {"model": "demo", "frames": sizes.predict_frames, "persons": persons,
            **{f"{k}_person_crops_per_s": persons / v.median for k, v in t.items()},
            "batching_factor": t["dcpose"].median / t["vremd"].median,
            "decode_once_factor": t["seek"].median / t["dcpose"].median}


def set_determinism(on: bool) -> None:
    """Deterministic kernels where they exist (ops without one warn), and cuDNN's fixed algorithms."""
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def determinism_figure(cfg, index_path: Path, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        for on in (False, True):
            set_determinism(on)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t, _, _ = step_timing(cfg, index_path, sizes.train_batch, sizes.repeats, device)
            key = "on" if on else "off"
            out[f"{key}_samples_per_s"] = sizes.train_batch / t.median
            if on:
                out["nondeterministic_ops"] = sorted({str(w.message).split(" does not have")[0] for w in caught
                                                      if "deterministic" in str(w.message)})
    finally:
        set_determinism(False)
    out["slowdown"] = out["off_samples_per_s"] / out["on_samples_per_s"]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def validate_report(doc: dict[str, Any]) -> None:
    """Raise ValueError if `doc` does not follow the schema (every figure present, a dict or an error)."""
    for key, kind in (("schema", str), ("device", str), ("device_name", str), ("tiny", bool), ("figures", dict),
                      ("complete", bool), ("seconds", (int, float)), (LOCK_TAG, str), ("torch", str)):
        if not isinstance(doc.get(key), kind):
            raise ValueError(f"gpu report: field {key!r} missing or not {kind}")
    if doc["schema"] != SCHEMA:
        raise ValueError(f"gpu report: schema {doc['schema']!r}, expected {SCHEMA!r}")
    unknown = set(doc["figures"]) - set(FIGURES)
    if unknown:
        raise ValueError(f"gpu report: unknown figures {sorted(unknown)}")
    if doc["complete"] and set(doc["figures"]) != set(FIGURES):
        raise ValueError(f"gpu report: complete but figures {sorted(set(FIGURES) - set(doc['figures']))} missing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--tiny", action="store_true", help="demo-profile model, tiny sizes: a dry run")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak for MFU (default: known from the GPU name)")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    if unknown := [f for f in only if f not in FIGURES]:
        parser.error(f"--only: unknown {unknown}; choose from {list(FIGURES)}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    if not args.tiny and args.device == "cpu":
        parser.error("the full sizes (ViT-L, batch 32-64) are for a GPU: use --tiny with --device cpu")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU {platform.processor() or platform.machine()}"
    peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops_for(name)
    sizes = TINY if args.tiny else FULL
    cfg = load_config(str(ROOT / "params.yaml"), profile=sizes.profile)
    doc: dict[str, Any] = {"schema": SCHEMA, "device": device.type, "device_name": name, "tiny": args.tiny,
                           "peak_bf16_tflops": peak, "torch": torch.__version__, LOCK_TAG: lock_sha256(ROOT),
                           "profile": sizes.profile, "sizes": dataclasses.asdict(sizes), "figures": {},
                           "complete": False, "seconds": 0.0}
    start, failed = time.perf_counter(), []

    def write() -> None:
        doc["seconds"] = time.perf_counter() - start
        validate_report(doc)
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="vremd-gpu-") as tmp:
        index: list[Path] = []

        def index_path() -> Path:  # the training figures' data, built once on first use
            if not index:
                synthetic = load_config(str(ROOT / "params.yaml"), profile="demo").data.synthetic
                index.append(build_data(Path(tmp), cfg, synthetic, sizes.data_videos, sizes.data_frames)[0])
            return index[0]

        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "vit_forward": lambda: vit_forward(cfg, sizes, device, peak),
            "train_step": lambda: train_step_figure(cfg, index_path(), sizes, device, peak),
            "dca": lambda: dca_figure(sizes, device),
            "predict": lambda: predict_figure(sizes, device),
            "determinism": lambda: determinism_figure(cfg, index_path(), sizes, device),
        }
        for figure in only:
            t0 = time.perf_counter()
            try:
                doc["figures"][figure] = runs[figure]() | {"seconds": time.perf_counter() - t0}
            except Exception as exc:  # record it, go on with the other figures, fail at the end
                traceback.print_exc()
                doc["figures"][figure] = {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
                failed.append(figure)
            print(f"{figure}: {json.dumps(doc['figures'][figure])}", flush=True)
            write()
    doc["complete"] = set(doc["figures"]) == set(FIGURES)
    write()
    print(f"wrote {args.out} in {doc['seconds']:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before CUDA starts)
    sys.exit(main())
