"""Print the demo's per-joint AP table (metrics/ap.json), the AP it is expected to reach, and how to browse the runs.

    python -m pipeline.show_results [--metrics metrics/ap.json] [--record]

The expected Mean AP and its tolerance (`pipeline/demo_expected.json`, measured across seeds and machines:
docs/determinism.md) hold for the committed demo settings: a run of other settings is shown, not compared.
Outside the tolerance it exits 1. `--record` writes this run's APs as the new expectation (tolerances kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vremd.atomic import atomic_write_text
from vremd.config import PATH_KEYS, flatten, load_config
from vremd.errors import InputError
from vremd.eval.expectation import load_expected, settings_digest, verdict_line
from vremd.eval.tables import COLUMNS

UI_COMMAND = "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"
EXPECTED = Path(__file__).with_name("demo_expected.json")
SOURCES = {"Mean AP": ("metrics/ap.json", ()), "single-frame pretrained Mean AP": (
    "pretrain/manifest.json", ("single_frame_val_ap",))}  # result -> (json file, keys down to its AP table)


def format_table(metrics: dict) -> str:
    """Markdown table of the 7 joint groups and Mean, then the 15 poseval joints."""
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS),
             "| " + " | ".join(fmt(metrics.get(c)) for c in COLUMNS) + " |"]
    per_joint = metrics.get("per_joint") or {}
    if per_joint:
        lines += ["", "| joint | AP |", "|---|---:|"] + [f"| {k} | {fmt(v)} |" for k, v in per_joint.items()]
    return "\n".join(lines)


def measured(name: str, metrics_path: Path) -> float | None:
    """This checkout's Mean AP of the result `name` (`SOURCES`), None when its file does not exist yet."""
    path, keys = SOURCES[name]
    path = metrics_path if path == "metrics/ap.json" else Path(path)
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid json ({exc})") from None
    for key in keys:
        table = table.get(key) or {}
    return table.get("Mean")


def record(path: Path, profile: str, digest: str, metrics_path: Path) -> None:
    """Write this run's APs (and settings digest) as the expectation at `path`, keeping the tolerances."""
    data = json.loads(path.read_text())
    for name, entry in data["results"].items():
        value = measured(name, metrics_path)
        if value is None:
            raise InputError(f"--record: {SOURCES[name][0]} not found: run `dvc repro` first")
        entry["expected"] = round(value, 1)
    atomic_write_text(path, json.dumps({**data, "profile": profile, "settings_digest": digest}, indent=2) + "\n")


def expectation(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The lines comparing this run with the expectation, and whether every compared result holds."""
    cfg = load_config(args.params)
    ours = settings_digest({k: Path(v).name if k in PATH_KEYS and isinstance(v, str) else v  # clone-independent
                            for k, v in flatten(cfg).items()})
    if args.record:
        record(args.expected, cfg.profile, ours, args.metrics)
    profile, digest, expected = load_expected(args.expected)
    if cfg.profile != profile or ours != digest:
        listed = "; ".join(f"{e.name} {e.value:.1f} ± {e.tolerance:.1f}" for e in expected.values())
        return [f"Expected ({args.expected.name}): {listed}, for the {profile} profile's settings {digest}; this run's "
                f"are profile {cfg.profile}, settings {ours}: not compared (`--record` makes this run the expected "
                "one, once checked)."], True
    values = {name: measured(name, args.metrics) for name in expected}
    return ([verdict_line(e, values[n]) for n, e in expected.items()],
            all(values[n] is None or e.holds(values[n]) for n, e in expected.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=Path, default=Path("metrics/ap.json"), help="AP metrics json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the settings the run was made with")
    parser.add_argument("--expected", type=Path, default=EXPECTED, help="expected APs and their tolerances")
    parser.add_argument("--record", action="store_true", help="write this run's APs as the expected values")
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
    print(format_table(metrics) + "\n")
    try:
        lines, holds = expectation(args)
    except (InputError, OSError) as exc:
        print(f"show_results: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines), file=sys.stdout if holds else sys.stderr)
    print(f"\nBrowse runs, curves and artifacts:  {UI_COMMAND}   (then open http://127.0.0.1:5000)")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
