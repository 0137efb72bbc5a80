"""Shared argparse options of the stage CLIs: --params, --profile, --set KEY=VALUE."""

from __future__ import annotations

import argparse

from vremd.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add the options every stage CLI takes to choose and override its configuration."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="profile in params.yaml (default: its `profile:`)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one dotted key, e.g. --set model.bmd=false (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the `Config` the parsed options name."""
    return load_config(args.params, profile=args.profile, overrides=args.overrides)
