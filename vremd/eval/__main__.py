"""CLI: `python -m vremd.eval GT_DIR PRED_DIR [--json] [--protocol ...] [--coco] [--strict]`.

Prints poseval's 8-column table (%1.1f) and the per-joint AP, or with --json one object
{"table": {...}, "per_joint_ap": {...}} (null for NaN; "coco" added with --coco). Bad input exits
with status 2 and a message naming the file and field.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from vremd.eval.coco_oks import evaluate_coco_dirs
from vremd.errors import InputError
from vremd.eval.posetrack_ap import PROTOCOLS, TABLE_KEYS, APResult, evaluate_dirs


def format_table(result: APResult) -> str:
    """Return the poseval-style summary row plus one line per joint, as readable text."""
    cell = lambda v: "{:>5}".format("nan" if math.isnan(v) else "%1.1f" % v)  # noqa: E731
    lines = [f"Average Precision (AP), {result.protocol}, {result.n_frames} frames",
             "& " + " & ".join(f"{k[:5]:>5}" for k in TABLE_KEYS) + " \\\\",
             "& " + " & ".join(cell(result.table[k]) for k in TABLE_KEYS) + " \\\\", "", "per joint:"]
    lines += [f"  {name:<15} {cell(ap)}   (GT joints {result.n_gt[name]})" for name, ap in result.per_joint.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vremd.eval", description="PoseTrack per-joint AP (poseval-exact).")
    parser.add_argument("gt_dir", type=Path, help="folder of GT PoseTrack json files, one per video")
    parser.add_argument("pred_dir", type=Path, help="folder of prediction json files with the same names")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="posetrack18")
    parser.add_argument("--coco", action="store_true", help="also report COCO-style OKS AP/AR (pycocotools)")
    parser.add_argument("--strict", action="store_true",
                        help="reject repeated track_ids in a prediction frame (upstream poseval; DCPose's copy allows them)")
    args = parser.parse_args(argv)
    try:
        result = evaluate_dirs(args.gt_dir, args.pred_dir, protocol=args.protocol, strict=args.strict,
                               progress=not args.json)
        coco = None
        if args.coco:
            coco = evaluate_coco_dirs(args.gt_dir, args.pred_dir)
    except (InputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = result.to_json()
        if coco is not None:
            out["coco"] = {k: (None if math.isnan(v) else v) for k, v in coco.items()}
        print(json.dumps(out))
    else:
        print(format_table(result))
        if coco is not None:
            print("\nCOCO OKS: " + ", ".join(f"{k} {v:.3f}" for k, v in coco.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
