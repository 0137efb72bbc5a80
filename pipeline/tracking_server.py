"""Run a team's MLflow tracking server: PostgreSQL backend store, served artifacts, until Ctrl-C.

    python pipeline/tracking_server.py [--root tracking] [--port 5000] [--host 127.0.0.1] [--pg-port 5433]
    # then, in the shells that train, ablate or predict:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000

The PostgreSQL cluster lives in <root>/postgres (created on first start), artifacts in <root>/artifacts.
As root, PostgreSQL runs as --pg-user (it refuses root). Bound to 127.0.0.1 unless --host says otherwise
(e.g. --host 0.0.0.0 for a team, behind your own authentication). Stops both servers on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from vremd.errors import InputError
from vremd.tracking_server.server import TrackingServerError, mlflow_server, postgres


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("tracking"), help="folder of the database and artifacts")
    parser.add_argument("--host", default="127.0.0.1", help="address the MLflow server binds to")
    parser.add_argument("--port", type=int, default=5000, help="MLflow server port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port (127.0.0.1 only)")
    parser.add_argument("--pg-user", default="postgres", help="unprivileged user PostgreSQL runs as when we are root")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both servers like Ctrl-C does
    try:
        with postgres(args.root / "postgres", args.pg_port, args.pg_user) as db_uri:
            with mlflow_server(db_uri, args.root / "artifacts", args.port, args.host,
                               log=args.root / "mlflow-server.log") as uri:
                print(f"MLflow server at {uri} (backend {db_uri}, artifacts in {args.root / 'artifacts'}); "
                      f"Ctrl-C stops it\nexport MLFLOW_TRACKING_URI={uri}", flush=True)
                while True:
                    time.sleep(3600)
    except (InputError, OSError, TrackingServerError) as exc:
        print(f"tracking_server: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tracking_server: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
