"""Shared argparse options of the stage CLIs (--params, --profile, --set KEY=VALUE, --index, --raw) and the
input checks every stage runs before it starts work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vremd.config import Config, ConfigError, flatten, load_config, parse_override

REPO_DIR = Path(__file__).resolve().parents[1]  # experiments/*.yaml are found here, whatever the cwd
# Where each dataset's data lies (relative to the working directory, the repo root for DVC stages). The profile's own
# `data.source` goes through the main pipeline (dvc.yaml): data/raw/<source>, data/crops, data/index. A dataset a paper
# table is measured on besides it (experiments/dvc.yaml's `data-<source>`, pipeline/table_data.py) lies whole in
# data/tables/<source>/: raw/<source>, detected/, crops/, index/.
MAIN_INDEX, MAIN_RAW = Path("data/index"), Path("data/raw")
TABLE_DATA = Path("data/tables")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add the options every stage CLI takes to choose and override its configuration."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="profile in params.yaml (default: its `profile:`)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one dotted key, e.g. --set model.bmd=false (repeatable)",
    )


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Add --index (the sample index folder) and --raw (the raw data root holding the val GT json)."""
    parser.add_argument("--index", type=Path, default=MAIN_INDEX, help=f"sample index dir (default: {MAIN_INDEX})")
    parser.add_argument("--raw", type=Path, default=MAIN_RAW, help=f"raw data root (val GT json; default: {MAIN_RAW})")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the `Config` the parsed options name."""
    return load_config(args.params, profile=args.profile, overrides=args.overrides)


def dataset_dirs(source: str, main: str) -> tuple[Path, Path]:
    """(index dir, raw root) of `source`'s data: the main pipeline's when it is the profile's own dataset `main`,
    else its table data folder's (data/tables/<source>/index, .../raw); the val GT is `<raw root>/<source>`."""
    if source == main:
        return MAIN_INDEX, MAIN_RAW
    return TABLE_DATA / source / "index", TABLE_DATA / source / "raw"


def index_file(index_dir: Path, split: str) -> Path:
    """`<index_dir>/<split>.parquet`, or FileNotFoundError saying which stage writes it."""
    path = Path(index_dir) / f"{split}.parquet"
    if not path.is_file():
        state = "has no" if Path(index_dir).is_dir() else "does not exist, so it has no"
        raise FileNotFoundError(f"--index {index_dir}: the folder {state} {split}.parquet "
                                "(the preprocess stage writes it: python pipeline/preprocess.py --out DIR)")
    return path


def check_gt_dir(gt_dir: Path) -> Path:
    """The val GT annotation folder, or FileNotFoundError naming --raw."""
    if not Path(gt_dir).is_dir():
        raise FileNotFoundError(f"--raw: no val annotation folder {gt_dir} (the download stage writes it)")
    return Path(gt_dir)


def refuse_checkpoint_overrides(overrides: list[str], checkpoint_cfg: Config, checkpoint: Path,
                                sections: tuple[str, ...] = ("model", "crops", "augment")) -> None:
    """Refuse a `--set` of a key the checkpoint's own config decides (`sections`) to a different value."""
    saved = flatten(checkpoint_cfg)
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] in sections and key in saved and saved[key] != value:
            raise ConfigError(f"--set {text}: {checkpoint} was trained with {key} = {saved[key]!r}, and its own config "
                              f"decides {', '.join(s + '.*' for s in sections)}; drop the --set or use another checkpoint")


def warn_if_untracked(path: str, folder: str, key: str, stage: str) -> None:
    """One stderr line when the file `path` lies outside `<repo>/<folder>`, the folder dvc.yaml tracks for it."""
    if path and not Path(path).resolve().is_relative_to((REPO_DIR / folder).resolve()):
        print(f"{stage}: warning: {key} {path} lies outside {folder}/, so dvc repro cannot see its content change",
              file=sys.stderr)
