"""Stage `evaluate`: predict the val split with models/final.pt and score it with poseval-exact AP.

    python pipeline/evaluate.py --model models/final.pt --index data/index --raw data/raw \
                                --out reports --metrics metrics/ap.json [--untrained]

Writes reports/predictions/<video>.json (PoseTrack-2018), reports/per_joint.{md,csv,html},
reports/ap_bar.png, reports/sample_masks.png (heatmaps, masks and sampling
points of one val person), reports/unpredicted_persons.txt and metrics/ap.json ({"Head": .., ...,
"Mean": .., "per_joint": {..}, "unpredicted_persons": n}). A GT person poseval counts that got no
prediction (its crop skipped under `data.on_bad_input: skip`) still costs recall: it is counted in
the json and named on stdout and in unpredicted_persons.txt.
`--untrained` scores the same architecture with random weights: the floor a trained model must beat.
`--also-index DIR` scores a second index of the same val frames cut with other boxes (GT beside detector
boxes) and prints both side by side; metrics/ap.json then holds both under `by_boxes`, and always names
the boxes of its own AP under `boxes` ("gt" or "det").
The checkpoint's own config builds the model and decodes its heatmaps (model.*, crops.*, augment.*); a
`--set` that would change one of those is refused, as is an index whose crops were cut with other crop settings
(crops.enlarge, size, JPEG quality) than the checkpoint's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import pandas as pd
import torch

from pipeline.cli_config import (REPO_DIR, add_config_args, add_data_args, check_gt_dir, config_from_args, index_file,
                                 refuse_checkpoint_overrides)
from vremd.atomic import AtomicBatch, atomic_write_text
from vremd.data.dataset import PoseTrackCrops
from vremd.data.dataset_record import check_index
from vremd.data.index_check import check_index_fits
from vremd.errors import InputError
from vremd.eval.posetrack_ap import MEAN, as_columns
from vremd.eval.predictions import describe_unpredicted
from vremd.eval.tables import (ap_table_csv, ap_table_html, ap_table_markdown, load_paper_numbers, paper_row,
                               per_joint_bar_png)
from vremd.model.checkpoint import load_trained
from vremd.model.heads import HEATMAP_STRIDE
from vremd.model.vremd import HEADS, HeadAlone, build_model
from vremd.predict.reports import sample_report
from vremd.train.validate import validate

PAPER_TABLE = {"posetrack17": "table1", "posetrack18": "table2", "posetrack21": "table3"}
PAPER_NUMBERS = REPO_DIR / "experiments" / "paper_numbers.yaml"  # part of the repo: missing is an error


def _paper_row(source: str) -> dict[str, float] | None:
    """The paper's row for `source` from the repo's experiments/paper_numbers.yaml (any cwd), or None."""
    return paper_row(load_paper_numbers(PAPER_NUMBERS), PAPER_TABLE[source]) if source in PAPER_TABLE else None


def _boxes_label(rows: pd.DataFrame) -> str:
    """Which boxes cut an index's val crops: "gt", "det" (detector boxes) or "mixed"."""
    sources = set(rows["source"]) if "source" in rows else {"gt"}
    return sources.pop() if len(sources) == 1 else "mixed"


def _boxes_table(by_boxes: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per box source, the per-joint AP columns."""
    columns = [c for c in next(iter(by_boxes.values())) if c != MEAN] + [MEAN]
    names = {"gt": "GT boxes", "det": "detector boxes"}
    lines = ["| Boxes | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {names.get(label, label)} | " + " | ".join(f"{table[c]:.1f}" for c in columns) + " |"
              for label, table in by_boxes.items()]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--model", type=Path, default=Path("models/final.pt"), help="trained model file")
    add_data_args(parser)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports dir")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/ap.json"), help="AP metrics json")
    parser.add_argument("--untrained", action="store_true", help="score random weights of the same model")
    parser.add_argument("--also-index", type=Path, default=None, metavar="DIR",
                        help="a second index of the same val frames cut with other boxes (e.g. GT beside detector "
                             "boxes): both APs side by side, and under by_boxes in the metrics json")
    parser.add_argument("--head", choices=("both", *HEADS), default="both",
                        help="score H = (H_k + H_m) / 2 (both), or one head alone: motion (H_m) or keypoint (H_k)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)  # eval settings (protocol, flip test, dataset, batch) come from params.yaml
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, saved_cfg = load_trained(args.model)  # the checkpoint's own config builds and decodes its model
        refuse_checkpoint_overrides(args.overrides, saved_cfg, args.model)
        index_path = index_file(args.index, "val")
        also_path = index_file(args.also_index, "val") if args.also_index else None
        for index in filter(None, (index_path, also_path)):  # before any output is touched:
            check_index(index, cfg.data.source, "val", f"{args.params} (profile {cfg.profile})")  # its dataset
            check_index_fits(index, saved_cfg, str(args.model))  # and its crops fit the checkpoint
        gt_dir = check_gt_dir(args.raw / cfg.data.source / "annotations" / "val")
        if args.untrained:  # the same architecture with random weights: the floor to beat
            torch.manual_seed(cfg.train.seed)
            model = build_model(dataclasses.replace(saved_cfg.model, pretrained="")).eval()
        model = model.to(device)
        scored = model if args.head == "both" else HeadAlone(model, args.head)  # what the AP is of

        def score(index: Path, pred_dir: Path):
            """Predictions of `index`'s val crops written to `pred_dir`, scored; and which boxes cut them."""
            rows = pd.read_parquet(index)
            dataset = PoseTrackCrops(index, None, saved_cfg.model.num_joints, sigma_px=saved_cfg.augment.sigma_px,
                                     heatmap_stride=HEATMAP_STRIDE)
            result = validate(scored, dataset, rows, gt_dir, pred_dir, batch_size=cfg.train.batch_size, device=device,
                              stride=HEATMAP_STRIDE, flip_test=cfg.train.flip_test,
                              protocol=cfg.eval.protocol, progress=not args.no_progress,
                              detect=cfg.detect, joint_slots=saved_cfg.model.annotated_joints)
            return result, dataset, _boxes_label(rows)

        # every output goes to a temp file or folder first and all are renamed into place together at the end:
        # an unwritable --out or --metrics is refused before the work, a failed write leaves the old ones whole
        with AtomicBatch() as batch:
            batch.reserve(args.metrics)
            result, dataset, boxes = batch.fill(args.out / "predictions", lambda tmp: score(index_path, tmp))
            also = batch.fill(args.out / "predictions-also", lambda tmp: score(also_path, tmp)) if also_path else None
            ours, by_boxes = _write_reports(batch, args, cfg, model, device, result, dataset, boxes, also)
            batch.commit()
    except (InputError, OSError) as exc:  # CheckpointError is an InputError
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    print(ap_table_markdown(ours, _paper_row(cfg.data.source)), end="")
    if by_boxes is not None:
        print(_boxes_table(by_boxes), end="")
    if result.unpredicted:
        print(describe_unpredicted(result.unpredicted))
    print(f"{args.metrics}: Mean AP {ours['Mean']:.1f} over {result.ap.n_frames} frames, "
          f"{len(result.unpredicted)} GT person(s) without a prediction; reports in {args.out}")
    return 0


def _write_reports(batch: AtomicBatch, args: argparse.Namespace, cfg, model, device, result, dataset, boxes: str,
                   also) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
    """Stage every report and the metrics json (last) in `batch`; return our AP columns and, with --also-index,
    the AP columns by box source."""
    ours = as_columns(result.ap.table)
    paper = _paper_row(cfg.data.source)
    title = (f"Per-joint AP, {cfg.data.source} val" + (" (untrained)" if args.untrained else "")
             + (f" ({args.head} head alone)" if args.head != "both" else ""))
    texts = {"per_joint.md": ap_table_markdown(ours, paper), "per_joint.csv": ap_table_csv(ours, paper),
             "per_joint.html": ap_table_html(ours, paper, title=title),
             "unpredicted_persons.txt": describe_unpredicted(result.unpredicted, limit=len(result.unpredicted)) + "\n"}
    for name, text in texts.items():
        batch.write(args.out / name, lambda tmp, text=text: atomic_write_text(tmp, text))
    batch.write(args.out / "ap_bar.png", lambda tmp: per_joint_bar_png(tmp, ours, paper, title=title))
    if len(dataset):  # heatmaps, human/keypoint masks and DCA sampling points of one val person
        batch.write(args.out / "sample_masks.png",
                    lambda tmp: sample_report(model, dataset.raw_crops(0), tmp, device=str(device)))
    clean = lambda v: None if math.isnan(v) else round(float(v), 4)  # noqa: E731
    metrics = {k: clean(v) for k, v in ours.items()}
    metrics["per_joint"] = {k: clean(v) for k, v in result.ap.per_joint.items()}
    metrics["unpredicted_persons"] = len(result.unpredicted)
    metrics["boxes"] = boxes
    metrics["head"] = args.head
    by_boxes = None
    if also is not None:  # the same model on the same frames with other boxes, side by side
        by_boxes = {boxes: ours, also[2]: as_columns(also[0].ap.table)}
        metrics["by_boxes"] = {label: {k: clean(v) for k, v in table.items()} for label, table in by_boxes.items()}
    batch.write(args.metrics, lambda tmp: atomic_write_text(tmp, json.dumps(metrics, indent=2) + "\n"))
    return ours, by_boxes


if __name__ == "__main__":
    sys.exit(main())
