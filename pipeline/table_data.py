"""Stage `data-<source>` (experiments/dvc.yaml): the dataset a paper table is measured on, when it is not the profile's.

    python pipeline/table_data.py --source posetrack17 [--profile paper] [--out data/tables/posetrack17]
                                  [--cache data/downloads] [--device cpu] [--no-progress]

On real data each table runs on the paper's dataset (`dataset` in experiments/paper_numbers.yaml: tables 1 and 4-6
PoseTrack2017, table 2 PoseTrack2018, table 3 PoseTrack21). The profile's own `data.source` is the main pipeline's
(data/raw, data/crops, data/index). For another one this runs the main pipeline's data stages, with the profile's
settings and `data.source` set to it, into <out> (default data/tables/<source>/), where ablate.py looks for it:
  download    raw/<source>/ from the archives in `data.table_archives.<source>`
  detect      detected/val.json when `data.val_boxes` is `detect` (the profile's boxes are of its own dataset)
  crops       crops/, cut with the profile's crops.* settings
  preprocess  index/ (each file records its dataset and split) and dataset.json
Each step is the stage's own code and skips what is up to date (the download step reads `data.urls` and
`data.sha256`, set to this dataset's archives). Where the profile's `data.source` is synthetic, or is this dataset,
its tables read data/index: the stage only writes <out>/record.json saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import get_args

from pipeline import crops, detect, download, preprocess
from pipeline.cli_config import TABLE_DATA, add_config_args, config_from_args
from vremd.atomic import atomic_write_text
from vremd.config import Archives, Config, ConfigError, DataSource, TableArchives, resolve_path_value
from vremd.errors import InputError

RECORD = "record.json"


def _archives(table_archives: TableArchives, source: str) -> Archives:
    return {"posetrack17": table_archives.posetrack17, "posetrack18": table_archives.posetrack18,
            "posetrack21": table_archives.posetrack21}[source]


def _download_sets(archives: Archives, source: str, profile: str) -> list[str]:
    """The `--set`s that point the download stage at `source`'s archives."""
    if not archives.urls:
        raise ConfigError(f"data.table_archives.{source}.urls: empty, but the tables of profile {profile} on {source} "
                          "need its archives (URLs or local paths you are licensed to use)")
    return [f"data.source={source}", f"data.urls={json.dumps(list(archives.urls))}",
            f"data.sha256={json.dumps(list(archives.sha256))}"]


def _dataset_overrides(cfg: Config, source: str, boxes: Path, params: Path) -> list[str]:
    """The `--set`s that turn the profile's data stages to `source`: its archives, and its own detector boxes at
    `boxes` where the profile crops with the detector's."""
    sets = _download_sets(_archives(cfg.data.table_archives, source), source, cfg.profile)
    if cfg.data.val_boxes == "gt":
        return sets
    if cfg.data.val_boxes != resolve_path_value("data.val_boxes", "detect", params.resolve().parent):
        raise ConfigError(f"data.val_boxes {cfg.data.val_boxes}: boxes of {cfg.data.source} val, not of {source}'s; "
                          f"set gt or detect (the detector's boxes on {source} val)")
    return [*sets, f"data.val_boxes={boxes}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--source", required=True, choices=[s for s in get_args(DataSource) if s != "synthetic"])
    parser.add_argument("--out", type=Path, default=None, help=f"the dataset's folder (default: {TABLE_DATA}/<source>)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"), help="downloaded archives' folder")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the detector runs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    out = args.out or TABLE_DATA / args.source
    boxes = out / "detected" / "val.json"  # the detector's boxes on this dataset's val frames
    try:
        cfg = config_from_args(args)
        own = cfg.data.source  # the profile's own dataset: the main pipeline's (data/index)
        if own in ("synthetic", args.source):
            atomic_write_text(out / RECORD, json.dumps({"needed": False, "source": args.source, "profile": cfg.profile,
                                                        "profile_source": own}) + "\n")
            print(f"{args.source}: not needed, the tables of profile {cfg.profile} ({own} data) read data/index")
            return 0
        sets = _dataset_overrides(cfg, args.source, boxes, Path(args.params))
    except (InputError, OSError) as exc:
        print(f"table_data: error: {exc}", file=sys.stderr)
        return 1
    common = ["--params", str(args.params), "--profile", cfg.profile,
              *(word for text in [*args.overrides, *sets] for word in ("--set", text))]
    quiet = ["--no-progress"] if args.no_progress else []
    steps = [(download.main, [*common, "--out", str(out / "raw"), "--cache", str(args.cache), *quiet]),
             (detect.main, [*common, "--raw", str(out / "raw"), "--out", str(boxes), "--device", args.device, *quiet]),
             (crops.main, [*common, "--raw", str(out / "raw"), "--out", str(out / "crops"),
                           "--tracked", str(out.resolve()), *quiet]),
             (preprocess.main, ["--crops", str(out / "crops"), "--out", str(out / "index"),
                                "--stats", str(out / "dataset.json")])]
    for step, step_argv in steps:
        if step(step_argv) != 0:  # the step printed its one-line error
            return 1
    atomic_write_text(out / RECORD, json.dumps({"needed": True, "source": args.source, "profile": cfg.profile,
                                                "profile_source": own, "index": str(out / "index")}) + "\n")
    print(f"{out / 'index'}: the {args.source} index of profile {cfg.profile}'s tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
