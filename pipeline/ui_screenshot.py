"""Screenshot the MLflow UI's view of an ablation table's trial runs (headless Chromium).

    python pipeline/ui_screenshot.py --table 5 --out docs/images/table5_ap.png [--view ap|compare]

Reads the newest parent run of `pipeline/ablate.py --table N` in the tracking store (MLFLOW_TRACKING_URI,
else the profile's `tracking.tracking_uri`) and its nested trial runs. `--view ap` (the default) stores a
shared view on the experiment (tag `mlflow.sharedViewState.table<N>-ap`): the model-training view of the
table's trial runs, charts of Mean AP and the per-joint AP, the runs table with those columns and each
trial's row and seed; it prints the link that opens it in `make mlflow-ui`. `--view compare` is the UI's
compare page of the trial runs. A SQLite store is served for the duration by a private `mlflow server` on
--port; an http(s) store is used as it is. Needs the Debian package `chromium` (installed when missing and
run as root).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from pipeline.cli_config import add_config_args, config_from_args
from vremd.errors import InputError
from vremd.eval.posetrack_ap import COLUMNS, METRIC_NAMES, MEAN
from vremd.train.tracking import resolve_tracking_uri
from vremd.tracking_server.server import TrackingServerError, mlflow_server
from vremd.tracking_server.ui_snapshot import (UISnapshotError, ablation_runs, compare_url, metrics_view_state,
                                               screenshot, share_view, shared_view_url)

UI = "http://127.0.0.1:5000"  # where `make mlflow-ui` serves the store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--table", type=int, required=True, help="the ablation table whose trial runs to compare")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--port", type=int, default=5055, help="port of the private server for a SQLite store")
    parser.add_argument("--size", default="1600,1200", help="browser window, width,height")
    parser.add_argument("--view", choices=("ap", "compare"), default="ap",
                        help="ap: a shared view of Mean AP and per-joint AP (stored on the experiment); compare: the "
                             "UI's compare page")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri, Path.cwd())
        with tempfile.TemporaryDirectory(prefix="vremd-ui-") as tmp:
            served = (mlflow_server(uri, Path(tmp) / "artifacts", args.port, log=Path(tmp) / "server.log")
                      if uri.startswith("sqlite:") else nullcontext(uri))
            with served as server:  # queried through the server: a second SQLite reader would stall its start
                exp_id, parent, runs = ablation_runs(server, cfg.tracking.experiment, args.table, store=uri)
                key, url = f"table{args.table}-ap", compare_url(server, exp_id, runs)
                if args.view == "ap":  # Mean AP first, then the joint groups
                    metrics = [METRIC_NAMES[MEAN]] + [METRIC_NAMES[c] for c in COLUMNS if c != MEAN]
                    share_view(server, exp_id, key, metrics_view_state(parent, metrics, "ap/",
                                                                       ["ablation.row", "ablation.seed"]))
                    url = shared_view_url(server, exp_id, key)
                screenshot(url, args.out, size=args.size)
    except (InputError, OSError, UISnapshotError, TrackingServerError, subprocess.SubprocessError) as exc:
        print(f"ui_screenshot: error: {exc}", file=sys.stderr)
        return 1
    what = "Mean AP and per-joint AP" if args.view == "ap" else "compare view"
    print(f"{args.out}: {what} of table {args.table}'s {len(runs)} trial runs (parent run {parent})")
    if args.view == "ap":
        print(f"In `make mlflow-ui`, open {shared_view_url(UI, exp_id, key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
