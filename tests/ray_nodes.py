"""Ray nodes of a test's own on this machine: `ray start --block` children, each with a private temp dir.

`start_node` runs `ray start --block ...` as a child in its own process group, with its own `--temp-dir`
(Ray's address file lands there, not in /tmp/ray where an argument-less `ray.init()` of any other process
on this machine would find it), free ports and worker ports chosen by the OS, so several nodes of one
cluster (a head and nodes that join it with `--address`) and other Ray instances can share the host.
`RayNode.stop` terminates that process group, `RayNode.kill` SIGKILLs every process of its session, workers
included (a machine lost mid-trial); a plain `ray stop` would stop every Ray instance of the user on the
machine, not just ours.

Ray 2.60's `ray start --head` turns on token authentication: the test process, its children and every
`ray start --address` need `RAY_AUTH_MODE=token` (`node_env` sets it; the token is ~/.ray/auth_token).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vremd.tracking_server.server import free_port

RAY = Path(sys.executable).parent / "ray"


def node_env() -> dict[str, str]:
    """This process's environment for a node or a driver of our cluster: token auth, no telemetry, no RAY_ADDRESS."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass(frozen=True)
class RayNode:
    """One `ray start --block` child: its process (group leader), temp dir and console log."""

    process: subprocess.Popen
    temp_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""

    def session_pids(self) -> list[int]:
        """The live processes of this node's session: `ray start`, GCS, raylet, agents and the workers. Ray gives
        each worker a process group of its own, so a worker is found by its session, not its group."""
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == self.process.pid:
                    pids.append(int(entry))
            except ProcessLookupError:  # exited while listed
                continue
        return pids

    def kill(self) -> None:
        """SIGKILL every process of the node's session at once (a machine lost mid-trial): a worker left running
        would go on training and report to the driver until it noticed its raylet was gone."""
        deadline = time.monotonic() + 30
        while (pids := [pid for pid in self.session_pids() if _alive(pid)]) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.process.wait()
        if pids:
            raise RuntimeError(f"processes {pids} of the node's session survived SIGKILL for 30 s")

    def stop(self) -> None:
        """Terminate the node's process group (SIGKILL after 60 s), then SIGKILL what is left of it (a process
        still shutting down would write into the temp dir again) and remove its temp dir."""
        for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, None)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        for pid in self.session_pids():  # workers outside the group (see session_pids)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Not yet exited and not a zombie (a killed child stays listed until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def start_node(*args: str) -> RayNode:
    """`ray start --block <args>` on 127.0.0.1 with a private temp dir and ports of its own (not waited for)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix socket paths are length-limited
    log = temp_dir / "ray_start.log"
    cmd = [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
           "--min-worker-port=0", "--max-worker-port=0",  # OS-chosen: two nodes never hand out one port twice
           f"--dashboard-agent-listen-port={free_port()}", *args]  # the default 52365 is one per machine
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return RayNode(process, temp_dir, log)


def wait_for_nodes(address: str, count: int, nodes: list[RayNode], timeout_s: float = 180) -> None:
    """Poll `ray status` until `count` nodes are active; fail with a node's log if one exits first."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start exited with code {node.process.returncode}:\n{node.output()}")
        status = subprocess.run([str(RAY), "status", f"--address={address}"], env=node_env(), capture_output=True,
                                text=True)
        active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        if status.returncode == 0 and active.count(" node_") >= count:
            return
        time.sleep(2)
    raise RuntimeError(f"{count} Ray node(s) at {address} not active within {timeout_s:.0f} s; last `ray status`:\n"
                       f"{status.stdout if status else ''}{status.stderr[-2000:] if status else ''}")


def node_ids(address: str, resources: list[str]) -> dict[str, str]:
    """{custom resource: the hex id of the alive node that offers it}, asked by a short-lived driver process.

    A child process: Ray reads RAY_AUTH_MODE once per process, so a test process that imported Ray before
    setting it could not connect."""
    script = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
              "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))")
    out = subprocess.run([sys.executable, "-c", script, address], env=node_env(), capture_output=True, text=True,
                         timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"cannot list the nodes at {address}: {out.stderr[-3000:]}")
    alive = json.loads(out.stdout.strip().splitlines()[-1])
    found = {name: n["NodeID"] for n in alive for name in resources if name in n["Resources"]}
    missing = sorted(set(resources) - set(found))
    if missing:
        raise RuntimeError(f"no alive node at {address} offers {missing}: {[n['Resources'] for n in alive]}")
    return found
