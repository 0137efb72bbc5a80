"""One `ablate.py` per table at a time: exclusive locks on its Tune experiment and its results folder.

Two runs of one table on one `--storage` would restore and drive the same Tune experiment at once (the loser
crashed on the winner's half-written checkpoints and could write an all-"failed" table over the results).
`lock_table` takes, without waiting, `fcntl.flock(LOCK_EX | LOCK_NB)` on two lock files:

    <storage>/.table<N>-<profile>.lock    the Tune experiment <storage>/table<N>-<profile> and its trainings
    <out>/.table<N>.lock                  the results folder <out>/table<N>/ (replaced as a whole, so the lock
                                          lives beside it; another profile writes the same folder)

The holder writes one json line into each: pid, host, start time and command. A second run stops at once
with `LockHeldError` naming the lock file and that holder.

A stale lock cannot block: the kernel releases a flock when the last descriptor of its open file closes,
which the holder's exit does however it ends (finished, crashed, killed with SIGKILL). The file stays, with
the dead holder's line, and the next run takes the lock and overwrites the line; nothing needs cleaning up.
The descriptor is close-on-exec, so Ray's processes started by the holder never keep the lock alive. On a
network file system the lock holds only where flock is coherent across hosts (Linux NFS emulates it with
byte-range locks; other network file systems may lock per host only).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from vremd.errors import InputError

__all__ = ["LockHeldError", "exclusive_lock", "lock_table", "table_lock_paths"]


class LockHeldError(InputError):
    """Another process holds the lock; the message names the lock file and its holder."""


def _holder(fd: int) -> str:
    """The holder recorded in an open lock file, in words."""
    text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    try:
        who = json.loads(text)
        return f"pid {who['pid']} on {who['host']} since {who['started']}: {who['command']}"
    except (ValueError, TypeError, KeyError):  # the holder has not written its line yet
        return f"a process that has not recorded itself yet ({text[:80]!r})"


@contextmanager
def exclusive_lock(path: Path, what: str, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on the file `path` (made if needed) for the block, recording this process as its
    holder; yields `path`. Raises `LockHeldError` at once, naming `path`, `what` it guards and the holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"{path}: {what} is in use by {_holder(fd)}; wait for it to end (a holder that "
                                "died has released the lock)") from None
        line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def table_lock_paths(storage: Path, out_dir: Path, table: int, profile: str) -> tuple[Path, Path]:
    """The lock files of table `table` run with `profile`: the Tune experiment's and the results folder's."""
    return Path(storage) / f".table{table}-{profile}.lock", Path(out_dir) / f".table{table}.lock"


@contextmanager
def lock_table(storage: Path, out_dir: Path, table: int, profile: str, command: str) -> Iterator[None]:
    """Hold both locks of a table run (`table_lock_paths`) for the block: the experiment's, then the results'."""
    experiment, results = table_lock_paths(storage, out_dir, table, profile)
    with ExitStack() as stack:
        stack.enter_context(exclusive_lock(experiment, f"the Tune experiment table{table}-{profile}", command))
        stack.enter_context(exclusive_lock(results, f"the results folder {Path(out_dir) / f'table{table}'}", command))
        yield
