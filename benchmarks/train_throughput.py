"""Training throughput through the real path: the loader's samples/s per core, and the model step's samples/s.

    python -m benchmarks.train_throughput [--device cpu|cuda] [--loader-profiles demo,paper] [--step-profiles demo]
                                          [--samples 64] [--repeats 3] [--json PATH]

Builds a small PoseTrack-layout dataset in a temp folder (the synthetic generator at PoseTrack's 1280x720),
runs the real crops stage and index at each profile's crop size, then measures, in this one process:

- the loader: the real `PoseTrackCrops` Dataset with the profile's augmentation and heatmap targets, read
  through the real training `DataLoader` (`vremd.train.loop.train_loader`, no worker processes, so the
  figure is per core: this process's CPU seconds, torch and OpenCV on one thread), against the
  DCPose-style per-sample loader at the same augmentation: per sample, decode frames t-1, t, t+1 at full
  size and warp each once, straight to the augmented crop (3 decodes + 3 warps), and against the loader as
  before issue 28 (`OLD_AUGMENTATION`: the same magnitudes sampled uniformly, warping the stored crop alone,
  from crops stored without a margin). Interleaved rounds of `--samples` samples, median and min.
- the model step: `vremd.train.loop.train_step` (the step training runs) on batches from that loader, at
  the profile's model (random weights, the same cost), median and min over `--repeats` steps after one
  warm-up; FLOPs per sample from `vremd.ablation.cost` (3x the forward of trainable parts + 1x frozen ones).

A GPU training the frozen ViT-L at 256x192 needs about 300 samples/s, so at paper size it also prints how
many loader cores feed that.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from vremd.config import Config, SyntheticConfig, load_config
from vremd.data.augment import augment_joints
from vremd.data.boxes import compose_affine, invert_affine
from vremd.data.crop_store import build_crops
from vremd.data.crops import neighbour_indices
from vremd.data.dataset import PoseTrackCrops
from vremd.data.index import build_index
from vremd.data.sources.download import prepare_synthetic
from vremd.data.posetrack import read_video
from vremd.ablation.cost import module_flops
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import build_model
from vremd.train.loop import train_loader, train_step

from benchmarks.result import Result, write_results
from benchmarks.timing import Timing, cpu_clock, interleaved, wall_clock

GPU_SAMPLES_PER_S = 300.0  # a GPU training the frozen ViT-L at 256x192
FRAME_WH = (1280, 720)  # PoseTrack's resolution
OLD_AUGMENTATION = {"sampling": "uniform", "borders": "crop"}  # with crops.train_context_scale 0: before issue 28


class PerSampleLoader(PoseTrackCrops):
    """DCPose-style baseline: per sample, decode t-1, t, t+1 from the raw JPEGs at full size and warp each
    once, straight to the augmented crop (the same affine and flip the real loader draws)."""

    def __init__(self, index_path: Path, augment, num_joints: int, seed: int, crop_wh: tuple[int, int]) -> None:
        super().__init__(index_path, augment, num_joints, seed, heatmap_stride=HEATMAP_STRIDE)
        self.crop_wh = crop_wh
        self._names: dict[str, list[Path]] = {}  # GT json -> frame files

    def _augmented(self, epoch: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        row = self.index.iloc[i]
        json_path = Path(row["json_path"])
        if str(json_path) not in self._names:
            root = json_path.parents[2]  # <dataset>/annotations/<split>/<video>.json
            self._names[str(json_path)] = [root / f.file_name for f in read_video(json_path, str(row["split"])).frames]
        names = self._names[str(json_path)]
        idx, _ = neighbour_indices(int(row["frame_index"]), len(names))
        W, H = self.crop_wh
        joints_xy, visible = self.joints[i, :, :2].copy(), (self.joints[i, :, 2] > 0).astype(np.float64)
        affine, flip = self.augmentation(epoch, i, joints_xy, visible, (W, H))  # crop -> augmented crop
        image_to_out = compose_affine(affine, invert_affine(self.crop_to_image[i]))
        frames = np.stack([
            cv2.warpAffine(cv2.cvtColor(cv2.imread(str(names[k])), cv2.COLOR_BGR2RGB), image_to_out, (W, H),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for k in idx])  # (T, H, W, 3) RGB
        joints_xy, visible = augment_joints(joints_xy, visible, affine, flip, (W, H))
        return frames, joints_xy, visible, compose_affine(self.crop_to_image[i], invert_affine(affine))


def build_data(root: Path, cfg: Config, synthetic: SyntheticConfig, videos: int, frames: int) -> tuple[Path, Path]:
    """`synthetic`'s generator at 1280x720 -> the real crops stage at `cfg.crops` -> index; returns (train
    index, raw dir)."""
    syn = dataclasses.replace(synthetic, train_videos=videos, val_videos=1, min_frames=frames, max_frames=frames,
                              image_width=FRAME_WH[0], image_height=FRAME_WH[1])
    dataset_dir = root / "raw" / "synthetic"
    prepare_synthetic(syn, dataset_dir, progress=False)
    build_crops(dataset_dir, root / "crops", dataclasses.replace(cfg.crops, workers=1), "error", progress=False)
    build_index(root / "crops", root / "index")
    return root / "index" / "train.parquet", dataset_dir


def build_old_index(root: Path, cfg: Config, dataset_dir: Path) -> Path:
    """The crops stage as before issue 28 (train crops without a margin) on `dataset_dir` -> index; returns the
    train index."""
    crops = dataclasses.replace(cfg.crops, workers=1, train_context_scale=0.0)
    build_crops(dataset_dir, root / "crops-old", crops, "error", progress=False)
    build_index(root / "crops-old", root / "index-old")
    return root / "index-old" / "train.parquet"


def loader_timings(cfg: Config, index_path: Path, samples: int, repeats: int,
                   old_index: Path | None = None) -> tuple[dict[str, Timing], int]:
    """CPU seconds of `samples` samples through the real loader and the per-sample baseline (and, given the
    `build_old_index` of the same data, the loader with `OLD_AUGMENTATION`), interleaved."""
    t = dataclasses.replace(cfg.train, loader_workers=0, max_train_samples=samples, batch_size=8)
    real = PoseTrackCrops(index_path, cfg.augment, cfg.model.num_joints, t.seed, heatmap_stride=HEATMAP_STRIDE)
    base = PerSampleLoader(index_path, cfg.augment, cfg.model.num_joints, t.seed, (cfg.crops.width, cfg.crops.height))
    datasets = [("vremd", real), ("per-sample", base)]
    if old_index is not None:
        old = dataclasses.replace(cfg.augment, **OLD_AUGMENTATION)
        datasets.append(("old-augmentation", PoseTrackCrops(old_index, old, cfg.model.num_joints, t.seed,
                                                            heatmap_stride=HEATMAP_STRIDE)))
    loaders = {name: train_loader(ds, t, 0, 1)[0] for name, ds in datasets}
    check_same_targets(real, base)
    seen = {}

    def drain(name: str) -> None:
        seen[name] = sum(len(b["frames"]) for b in loaders[name])

    timings = interleaved({name: (lambda n=name: drain(n)) for name in loaders}, repeats, clock=cpu_clock)
    return timings, seen["vremd"]


def check_same_targets(real: PoseTrackCrops, base: PerSampleLoader) -> None:
    """Both loaders draw the same augmentation: the same heatmap targets for a few samples."""
    for i in range(0, len(real), max(1, len(real) // 4)):
        a, b = real[(1, i)], base[(1, i)]
        if not (torch.equal(a["target_weight"], b["target_weight"]) and torch.allclose(a["heatmaps"], b["heatmaps"])):
            raise RuntimeError(f"train_throughput: the per-sample baseline's targets differ from the loader's at sample {i}")


def training_flops_per_sample(model: torch.nn.Module, cfg) -> int:
    """3x forward FLOPs of trainable children + 1x forward FLOPs of frozen ones (batch 1, CPU fp32 count)."""
    frames = torch.zeros(1, 3, 3, cfg.img_height, cfg.img_width)
    _, per_child = module_flops(model, frames)
    total = 0
    for name, flops in per_child.items():
        trainable = any(p.requires_grad for p in getattr(model, name).parameters())
        total += (3 if trainable else 1) * flops
    return total


def step_timing(cfg: Config, index_path: Path, batch: int, repeats: int, device: torch.device
                ) -> tuple[Timing, int, torch.nn.Module]:
    """Seconds of `vremd.train.loop.train_step` at batch `batch` on real loader batches (after one warm-up)."""
    model_cfg = dataclasses.replace(cfg.model, pretrained="")  # same architecture and cost, random weights
    torch.manual_seed(0)
    model = build_model(model_cfg)
    flops = training_flops_per_sample(model, model_cfg)
    model = model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    t = dataclasses.replace(cfg.train, loader_workers=0, max_train_samples=0, batch_size=batch)
    loader, _ = train_loader(PoseTrackCrops(index_path, cfg.augment, cfg.model.num_joints, t.seed, heatmap_stride=HEATMAP_STRIDE), t, 0, 1)
    batches = iter(loader)
    batch_data = next(batches)
    if len(batch_data["frames"]) != batch:
        raise ValueError(f"train_throughput: the index holds fewer than {batch} samples")

    def step() -> None:
        train_step(model, batch_data, optimizer, cfg.train.grad_clip, trainable, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return interleaved({"step": step}, repeats, warmup=1, clock=wall_clock)["step"], flops, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the model step")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--loader-profiles", default="demo,paper")
    parser.add_argument("--step-profiles", default="demo", help="profiles whose model step is timed ('' for none)")
    parser.add_argument("--batch", type=int, default=0, help="model step batch (0: 16 on CPU, the profile's on CUDA)")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--samples", type=int, default=64, help="samples per loader round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_throughput: --device cuda but no CUDA device is available", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    step_profiles = [p for p in args.step_profiles.split(",") if p]
    synthetic = load_config(args.params, profile="demo").data.synthetic  # the generator's settings
    threads = torch.get_num_threads()
    command = "python -m benchmarks.train_throughput" + (f" --device {args.device}" if args.device != "cpu" else "")
    results = []
    with tempfile.TemporaryDirectory(prefix="vremd-bench-train-") as tmp:
        for profile in dict.fromkeys(args.loader_profiles.split(",") + step_profiles):
            cfg = load_config(args.params, profile=profile)
            index_path, dataset_dir = build_data(Path(tmp) / profile, cfg, synthetic, args.videos, args.frames)
            crop = f"{cfg.crops.width}x{cfg.crops.height}"
            if profile in args.loader_profiles.split(","):
                torch.set_num_threads(1)
                cv2.setNumThreads(1)
                old_index = build_old_index(Path(tmp) / profile, cfg, dataset_dir)
                t, n = loader_timings(cfg, index_path, args.samples, args.repeats, old_index)
                rate, base_rate = n / t["vremd"].median, n / t["per-sample"].median
                old_rate = n / t["old-augmentation"].median
                cores = GPU_SAMPLES_PER_S / rate
                print(f"{profile} loader, crop {crop}: {rate:.0f} samples/s per core ({t['vremd'].text()} per {n}), "
                      f"DCPose-style per-sample {base_rate:.0f}/s ({t['per-sample'].text()}): "
                      f"{rate / base_rate:.2f}x; {GPU_SAMPLES_PER_S:.0f} samples/s needs {cores:.1f} cores; "
                      f"before issue 28 (no margin, uniform) {old_rate:.0f}/s ({t['old-augmentation'].text()}): "
                      f"{rate / old_rate:.2f}x", flush=True)
                where = f"{profile} profile, crop {crop}, its augmentation and heatmap targets, 1280x720 frames"
                results += [
                    Result(f"train.loader.{profile}", f"training loader samples/s per core ({where})", "", rate,
                           "samples/s", command, details=f"real PoseTrackCrops + DataLoader, CPU {t['vremd'].text()} "
                           f"per {n} samples; {cores:.1f} cores feed {GPU_SAMPLES_PER_S:.0f} samples/s"),
                    Result(f"train.loader_vs_per_sample.{profile}", f"training loader vs the per-sample peer ({where})",
                           "DCPose-style per-sample loader (3 full decodes + 3 warps per sample, same augmentation)",
                           rate / base_rate, "x", command,
                           details=f"CPU s per {n} samples: per-sample {t['per-sample'].text()}, vremd {t['vremd'].text()}"),
                    Result(f"train.loader_vs_old_augmentation.{profile}", f"training loader vs the loader before issue "
                           f"28 ({where})", "the same magnitudes sampled uniformly, warping train crops stored without "
                           "a margin (augment.sampling uniform, borders crop, crops.train_context_scale 0)",
                           rate / old_rate, "x", command, details=f"CPU s per {n} samples: before "
                           f"{t['old-augmentation'].text()}, vremd {t['vremd'].text()}"),
                ]
                if profile == "paper":
                    results.append(Result(
                        "train.loader_cores_for_300", f"loader cores that feed {GPU_SAMPLES_PER_S:.0f} samples/s "
                        f"(a GPU on the frozen ViT-L at 256x192), paper crop", "", cores, "cores", command,
                        details=f"{GPU_SAMPLES_PER_S:.0f} / {rate:.0f} samples/s per core"))
            if profile in step_profiles:
                torch.set_num_threads(threads)
                batch = args.batch or (16 if device.type == "cpu" else cfg.train.batch_size)
                step, flops, _ = step_timing(cfg, index_path, batch, args.repeats, device)
                rate = batch / step.median
                print(f"{profile} model step (vremd.train.loop.train_step), batch {batch} on {device}: {rate:.2f} "
                      f"samples/s ({step.text()} per step), {flops / 1e9:.2f} GFLOP/sample", flush=True)
                results.append(Result(
                    f"train.step.{profile}.{device.type}", f"model training step samples/s ({profile} model, batch "
                    f"{batch}, {device.type}, {torch.get_num_threads()} threads)", "", rate, "samples/s", command,
                    details=f"vremd.train.loop.train_step on loader batches: {step.text()} per step; "
                            f"{flops / 1e9:.2f} GFLOP per training sample"))
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
