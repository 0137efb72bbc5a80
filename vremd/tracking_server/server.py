"""A team's MLflow tracking server: PostgreSQL as the backend store, `mlflow server` serving the artifacts.

    with postgres(data_dir, port=5433) as db_uri:               # initdb on first use, pg_ctl start/stop
        with mlflow_server(db_uri, artifacts_dir, port=5000) as uri:   # http://127.0.0.1:5000
            ...  # MLFLOW_TRACKING_URI=uri for training, ablations and predict

PostgreSQL refuses to run as root (`initdb: cannot be run as root`). When this process is root, the
database folder is given to an unprivileged system user (`os_user`, default `postgres`, the account
Debian's postgresql package creates; `useradd --system postgres` elsewhere) and `initdb`/`pg_ctl` run
as that user through `runuser -u`. PostgreSQL listens on 127.0.0.1 only, with no unix socket, and trusts
connections from this machine: only the MLflow server, bound to `host`, is meant to be reached by others.
Both context managers stop what they started, also when the body raises.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["postgres", "mlflow_server", "wait_for_http", "free_port", "TrackingServerError", "DB_NAME", "DB_USER"]

DB_NAME = "mlflow"
DB_USER = "vremd"


class TrackingServerError(RuntimeError):
    """PostgreSQL or the MLflow server could not be started; the message names the command and its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(os_user: str | None) -> list[str]:
    """The command prefix that runs a PostgreSQL tool as `os_user` when we are root, else nothing."""
    if os.geteuid() != 0:
        return []
    if not os_user:
        raise TrackingServerError("PostgreSQL cannot run as root: name an unprivileged user (--pg-user)")
    try:
        pwd.getpwnam(os_user)
    except KeyError:
        raise TrackingServerError(f"--pg-user {os_user}: no such user (create one: useradd --system {os_user})") from None
    return ["runuser", "-u", os_user, "--"]


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise TrackingServerError(f"{what} failed ({' '.join(cmd)}): {(out.stderr or out.stdout).strip()[-800:]}")


def _check_reachable(data_dir: Path, os_user: str) -> None:
    """`os_user` must be able to enter every folder above `data_dir` (a root-only /tmp/pytest-of-root is not)."""
    uid = pwd.getpwnam(os_user).pw_uid
    for parent in data_dir.parents:
        st = parent.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)):
            raise TrackingServerError(f"{data_dir}: user {os_user} cannot enter {parent} (mode {oct(st.st_mode & 0o777)}); "
                                      "put the database folder where that user can reach it")


def _init_db(data_dir: Path, prefix: list[str], os_user: str | None) -> None:
    """initdb into an empty `data_dir`, owned by `os_user` when we are root."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if prefix:
        _check_reachable(data_dir, os_user)
        shutil.chown(data_dir, os_user, pwd.getpwnam(os_user).pw_gid)
        data_dir.chmod(0o700)
    _run([*prefix, "initdb", "-D", str(data_dir), "-U", DB_USER, "--auth=trust", "--encoding=UTF8"], "initdb")


def _create_database(port: int) -> None:
    import psycopg2  # the driver MLflow's PostgreSQL store needs; imported only where a server is started

    conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()


@contextmanager
def postgres(data_dir: Path, port: int = 5433, os_user: str | None = "postgres") -> Iterator[str]:
    """Start PostgreSQL on 127.0.0.1:`port` with its cluster in `data_dir` (created on first use);
    yield the SQLAlchemy URI of its `mlflow` database; `pg_ctl stop` on exit."""
    data_dir = Path(data_dir).resolve()
    prefix = _as_user(os_user)
    if not (data_dir / "PG_VERSION").is_file():
        _init_db(data_dir, prefix, os_user)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    log = data_dir / "server.log"
    _run([*prefix, "pg_ctl", "-D", str(data_dir), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
         f"pg_ctl start (log: {log})")
    try:
        _create_database(port)
        yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        subprocess.run([*prefix, "pg_ctl", "-D", str(data_dir), "-m", "fast", "-w", "stop"], capture_output=True)


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; raise `TrackingServerError` on timeout or if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TrackingServerError(f"the server exited with code {process.returncode} (log: {log})")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TrackingServerError(f"{url} did not answer within {timeout_s:.0f} s (log: {log})")


@contextmanager
def mlflow_server(backend_uri: str, artifacts_dir: Path, port: int = 5000, host: str = "127.0.0.1",
                  log: Path | None = None, workers: int = 2, timeout_s: float = 300) -> Iterator[str]:
    """Run `mlflow server` on `backend_uri` serving artifacts from `artifacts_dir`; yield its http URI.

    The server runs in its own process group, terminated (then killed) on exit.
    """
    artifacts_dir = Path(artifacts_dir).resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    log = Path(log) if log is not None else artifacts_dir.parent / "mlflow-server.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
           "--artifacts-destination", str(artifacts_dir), "--host", host, "--port", str(port),
           "--workers", str(workers)]
    with open(log, "ab") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        wait_for_http(uri + "/health", timeout_s, process, log)
        yield uri
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group (the server's workers too, even if the server itself has exited), SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
