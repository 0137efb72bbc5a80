"""Logged metrics/s of 8 concurrent writers: SQLite file (the default) against the PostgreSQL-backed server.

    python -m benchmarks.tracking_stores [--writers 8] [--epochs 20] [--metrics 10] [--json FILE]

Each writer is a process logging through `Tracker` one batch of `--metrics` metrics per epoch, as the
training loop does; both stores are new, in a temporary folder, and measured in the same run. Prints
metrics/s for each, every metric counted back, and the ratio server / SQLite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.result import Result, write_results
from vremd.tracking_server.load import concurrent_writers
from vremd.tracking_server.server import free_port, mlflow_server, postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=10, help="metrics per epoch (one batch)")
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/result.py)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="vts", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL's user must enter it
    try:
        results = {"sqlite": concurrent_writers(f"sqlite:///{root / 'mlflow.db'}", args.writers, args.epochs,
                                                args.metrics)}
        with postgres(root / "postgres", free_port()) as db_uri:
            with mlflow_server(db_uri, root / "artifacts", free_port(), log=root / "server.log") as uri:
                results["postgres server"] = concurrent_writers(uri, args.writers, args.epochs, args.metrics)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, r in results.items():
        print(f"{name:>16}: {r.metrics_per_s:7.0f} metrics/s ({r.found}/{r.expected} arrived, {r.retries} retries, "
              f"{len(r.failures)} writers failed)")
    ratio = results["postgres server"].metrics_per_s / results["sqlite"].metrics_per_s
    print(f"{args.writers} writers: postgres server / sqlite = {ratio:.2f}x")
    if args.json:
        command = "python -m benchmarks.tracking_stores"
        arrived = "; ".join(f"{name} {r.metrics_per_s:.0f} metrics/s, {r.found}/{r.expected} arrived"
                            for name, r in results.items())
        write_results(args.json, [
            Result("tracking_stores.rate", f"metrics/s logged by {args.writers} concurrent writers, PostgreSQL-backed "
                   "mlflow server", "a new SQLite file (the default store)", round(ratio, 2), "x", command,
                   details=arrived),
            Result("tracking_stores.arrived", f"share of the logged metrics that arrived, {args.writers} writers, "
                   "worse of the two stores", "", min(r.found / r.expected for r in results.values()), "", command,
                   target=1.0, op=">=", details=arrived),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
