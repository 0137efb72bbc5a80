"""Print the demo's per-joint AP table (metrics/ap.json) and how to browse the runs in MLflow.

    python -m pipeline.show_results [--metrics metrics/ap.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vremd.eval.tables import COLUMNS

UI_COMMAND = "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"


def format_table(metrics: dict) -> str:
    """Markdown table of the 7 joint groups and Mean, then the 15 poseval joints."""
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS),
             "| " + " | ".join(fmt(metrics.get(c)) for c in COLUMNS) + " |"]
    per_joint = metrics.get("per_joint") or {}
    if per_joint:
        lines += ["", "| joint | AP |", "|---|---:|"] + [f"| {k} | {fmt(v)} |" for k, v in per_joint.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=Path, default=Path("metrics/ap.json"), help="AP metrics json")
    args = parser.parse_args(argv)
    try:
        metrics = json.loads(args.metrics.read_text())
    except FileNotFoundError:
        print(f"show_results: {args.metrics} not found: run `dvc repro` (or `make demo`) first", file=sys.stderr)
        return 1
    except json.JSONDecodeError as exc:
        print(f"show_results: {args.metrics}: not valid json ({exc})", file=sys.stderr)
        return 1
    print(f"Per-joint AP on the val split ({args.metrics}):\n")
    print(format_table(metrics))
    print(f"\nBrowse runs, curves and artifacts:  {UI_COMMAND}   (then open http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
