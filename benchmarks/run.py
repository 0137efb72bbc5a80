"""Run every benchmark, collect their results into `benchmarks/results.json`, print one summary table, and
exit non-zero at the end naming the targets missed (a benchmark that misses its target or crashes does not
stop the others). `make bench` runs this, then `python -m benchmarks.report` for the README table.

    python -m benchmarks.run [--only crops,deformable] [--poseval PATH] [--out benchmarks/results.json]

Each benchmark runs in its own process (`python -m benchmarks.NAME --json FILE ARGS`) with the arguments
below. The run is logged to MLflow (`sqlite:///mlflow.db`, experiment `benchmarks`) with the lock file's
sha256 as tag `lock_sha256`, and results.json records the same hash, so a figure names its environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vremd.train.tracking import LOCK_TAG, Tracker, library_versions, lock_sha256, resolve_tracking_uri

from benchmarks.report import summary_lines
from benchmarks.result import Result, read_results, write_results

ROOT = Path(__file__).resolve().parents[1]
CRASHED = ".crashed"  # name suffix of the row standing for a benchmark that wrote no results
# name -> the arguments `make bench` runs it with (sizes chosen to finish in minutes on 2 shared cores)
BENCHMARKS: dict[str, list[str]] = {
    "crops": [],
    "deformable": ["--points", "4"],  # the K of the figures (K=8 printed by the script alone)
    "eval_speed": [],
    "model_cost": [],
    "predict": ["--detector", "none"],
    "train_throughput": [],
    "pixel_path": [],
    "frozen_trial": [],
    "sweep_cost": ["--skip-paper-steps", "--demo-steps", "2"],  # the ViT-L CPU steps take tens of minutes
    "tracking_stores": [],
}


def run_one(name: str, args: list[str], out_dir: Path) -> list[Result]:
    """Run benchmark `name`; its results, or one failed row saying how it crashed."""
    json_path = out_dir / f"{name}.json"
    argv = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(json_path), *args]
    print(f"\n=== {' '.join(['python', *argv[1:3], *argv[5:]])}", flush=True)
    start = time.perf_counter()
    rc = subprocess.run(argv, cwd=ROOT).returncode
    print(f"=== {name}: exit {rc}, {time.perf_counter() - start:.0f} s", flush=True)
    if json_path.is_file():
        return read_results(json_path)
    return [Result(f"{name}{CRASHED}", f"benchmarks/{name}.py", "", None, "", f"python -m benchmarks.{name}",
                   note=f"exited {rc} without writing results")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmark names")
    parser.add_argument("--poseval", type=Path, help="checkout of the official poseval for eval_speed's baseline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {list(BENCHMARKS)}")
    extra = {"eval_speed": ["--poseval", str(args.poseval.resolve())]} if args.poseval else {}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vremd-bench-") as tmp:
        for name in names:
            results.extend(run_one(name, BENCHMARKS[name] + extra.get(name, []), Path(tmp)))
    write_results(args.out, results, **run_meta())
    _track(results, args.out, args.tracking_uri)
    print(f"\nbenchmarks on {os.cpu_count()} cores, lock {lock_sha256(ROOT)[:12]}: {args.out}")
    print("\n".join(summary_lines(results)))
    rc, message = verdict(results)
    print(message, file=sys.stderr if rc else sys.stdout)
    return rc


def run_meta() -> dict[str, str | int]:
    """Where the figures come from: date, cores, lock file hash, commit, torch."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count() or 0,
            LOCK_TAG: lock_sha256(ROOT),
            "git_commit": (commit.stdout.strip() or "unknown") + (" with uncommitted changes" if dirty else ""),
            "torch_version": library_versions()["torch_version"]}


def verdict(results: list[Result]) -> tuple[int, str]:
    """(exit status, the closing line): 1 naming the missed targets and the crashed benchmarks, else 0."""
    missed = [r.name for r in results if r.passed is False]
    crashed = [r.name for r in results if r.name.endswith(CRASHED)]
    unmeasured = [r.name for r in results if r.value is None and r.name not in crashed]
    tail = f" (not measured: {', '.join(unmeasured)})" if unmeasured else ""
    if missed or crashed:
        return 1, (f"bench: FAILED: targets missed: {', '.join(missed) or 'none'}; "
                   f"crashed: {', '.join(crashed) or 'none'}{tail}")
    return 0, f"bench: every target met{tail}"


def _track(results: list[Result], out: Path, tracking_uri: str) -> None:
    """One MLflow run per `make bench`: each value a metric, the lock hash and versions as tags."""
    uri = resolve_tracking_uri(tracking_uri, ROOT)
    tags = {LOCK_TAG: lock_sha256(ROOT), **library_versions()}
    tracker = Tracker.start(uri, "benchmarks", "make bench", {}, tags)
    tracker.log_metrics({r.name: r.value for r in results if r.value is not None}, step=0)
    tracker.log_artifact(out)
    tracker.finish("FINISHED" if all(r.passed is not False for r in results) else "FAILED")


if __name__ == "__main__":
    sys.exit(main())
