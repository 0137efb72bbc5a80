"""Training crops vs predict crops: one model's AP on the val split through both pixel paths.

Training and `evaluate` read the crops stage's stored crops: JPEG q95 (`crops.jpeg_quality`), cut from
frames that may have been decoded at 1/2 or 1/4 scale (libjpeg DCT scaling, vremd.data.crops).
`predict` (vremd.predict.inference) crops full-resolution decoded frames and feeds the raw pixels. Both
use the same pixel rectangle per person. This scores the same model on the same samples and boxes
through both paths and prints the per-joint AP of each, their difference, and the mean absolute
pixel difference of the crops. The figure is recorded in docs/pixel_path.md.

    python -m benchmarks.pixel_path --model models/final.pt --index data/index --raw data/raw [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from vremd.data.crops import crop_frames, neighbour_indices
from vremd.data.dataset import PoseTrackCrops
from vremd.data.posetrack import read_video
from vremd.model.checkpoint import load_trained
from vremd.model.heads import HEATMAP_STRIDE
from vremd.train.validate import validate

from benchmarks.result import Result, write_results

NAME, WHAT, COMMAND = ("pixel_path", "Total AP through predict's raw crops minus through the stored JPEG crops "
                       "(same model, samples, boxes)", "python -m benchmarks.pixel_path")


class PredictPathCrops(PoseTrackCrops):
    """The samples of an index, cropped as vremd.predict crops them: full-resolution decode, raw pixels."""

    def __init__(self, index_path: Path, dataset_dir: Path, crop_wh: tuple[int, int], num_joints: int, stride: int):
        super().__init__(index_path, None, num_joints, heatmap_stride=stride)
        self.dataset_dir, self.crop_wh = Path(dataset_dir), crop_wh
        self._names: dict[str, list[str]] = {}  # GT json -> frame file names

    def _crops(self, i: int) -> np.ndarray:
        row = self.index.iloc[i]
        json_path = str(row["json_path"])
        if json_path not in self._names:
            self._names[json_path] = [f.file_name for f in read_video(Path(json_path), "val").frames]
        names = self._names[json_path]
        idx, _clamped = neighbour_indices(int(row["frame_index"]), len(names))
        frames = [cv2.cvtColor(cv2.imread(str(self.dataset_dir / names[k])), cv2.COLOR_BGR2RGB) for k in idx]
        x, y, w, h = (float(v) for v in row["box_xywh"])  # the stored crop box lies on pixel boundaries
        rect = (round(x + 0.5), round(y + 0.5), round(w), round(h))
        return crop_frames(frames, rect, self.crop_wh)  # (T, H, W, 3) RGB, as vremd.predict.inference.person_crop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/final.pt"))
    parser.add_argument("--index", type=Path, default=Path("data/index"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in (args.model, args.index / "val.parquet") if not p.is_file()]
    if missing:  # `make bench` runs every benchmark; this one measures a trained model
        print(f"pixel_path: not measured, needs a trained model and its val index ({', '.join(missing)} missing): "
              "run `make demo` first")
        if args.json:
            write_results(args.json, [Result(NAME, WHAT, "stored JPEG crops (train, evaluate)", None, "AP", COMMAND,
                                             note=f"needs a trained model and its val index: run `make demo` first "
                                                  f"({', '.join(missing)} missing)")])
        return 0
    model, cfg = load_trained(args.model)
    index_path = args.index / "val.parquet"
    dataset_dir = args.raw / cfg.data.source
    gt_dir = dataset_dir / "annotations" / "val"
    stride = HEATMAP_STRIDE
    stored = PoseTrackCrops(index_path, None, cfg.model.num_joints, heatmap_stride=stride)
    predict_path = PredictPathCrops(index_path, dataset_dir, (cfg.crops.width, cfg.crops.height),
                                    cfg.model.num_joints, stride)
    diffs = [np.abs(stored.raw_crops(i).astype(np.int16) - predict_path.raw_crops(i).astype(np.int16)).mean()
             for i in range(0, len(stored), max(1, len(stored) // 64))]
    index = pd.read_parquet(index_path)
    tables = {}
    with tempfile.TemporaryDirectory(prefix="vremd-pixel-path-") as tmp:
        for name, dataset in (("stored JPEG crops (train, evaluate)", stored), ("raw crops (predict)", predict_path)):
            result = validate(model, dataset, index, gt_dir, Path(tmp) / name.split()[0], batch_size=args.batch_size,
                              device=torch.device("cpu"), stride=stride, protocol=cfg.eval.protocol, progress=True)
            tables[name] = result.ap.table
    columns = list(next(iter(tables.values())))
    print(f"{len(stored)} val samples; mean |pixel difference| of the crops {np.mean(diffs):.2f} / 255 "
          f"(max per crop {np.max(diffs):.2f}, over {len(diffs)} samples)")
    print("| path | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, table in tables.items():
        print(f"| {name} | " + " | ".join(f"{table[c]:.1f}" for c in columns) + " |")
    a, b = tables.values()
    print("| difference | " + " | ".join(f"{b[c] - a[c]:+.1f}" for c in columns) + " |")
    if args.json:
        write_results(args.json, [Result(
            NAME, WHAT, "stored JPEG crops (train, evaluate)", b["Total"] - a["Total"], "AP", COMMAND,
            details=f"{len(stored)} val samples; Total AP {a['Total']:.1f} stored vs {b['Total']:.1f} raw; mean "
                    f"pixel difference {np.mean(diffs):.2f} / 255")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
