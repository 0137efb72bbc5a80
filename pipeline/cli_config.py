"""Shared argparse options of the stage CLIs: --params, --profile, --set KEY=VALUE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vremd.config import Config, load_config

REPO_DIR = Path(__file__).resolve().parents[1]  # experiments/*.yaml are found here, whatever the cwd


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
    parser.add_argument("--index", type=Path, default=Path("data/index"), help="sample index dir")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw data root (val GT json)")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the `Config` the parsed options name."""
    return load_config(args.params, profile=args.profile, overrides=args.overrides)


def warn_if_untracked(path: str, folder: str, key: str, stage: str) -> None:
    """One stderr line when the file `path` lies outside `<repo>/<folder>`, the folder dvc.yaml tracks for it."""
    if path and not Path(path).resolve().is_relative_to((REPO_DIR / folder).resolve()):
        print(f"{stage}: warning: {key} {path} lies outside {folder}/, so dvc repro cannot see its content change",
              file=sys.stderr)
