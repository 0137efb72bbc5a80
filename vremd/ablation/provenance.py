"""Where and how a trial's numbers were made: commit, lock file, CPU model and instruction set, threads, time.

A CPU training is a function of its inputs and of the float arithmetic that ran it (docs/determinism.md):
the thread count, and the instruction set torch's kernels were dispatched to (AVX2, AVX-512, ...), change
the order and width of float sums. Every trial records them beside its AP, in results.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from vremd.config import Config
from vremd.train.tracking import LOCK_TAG, run_tags

__all__ = ["cpu_description", "trial_provenance", "ISA_FLAGS"]

# /proc/cpuinfo flags that decide which vector kernels torch, oneDNN and the BLAS can use, narrowest first
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """{"cpu_model": "AMD EPYC 7B13", "cpu_isa": "sse4_2 avx avx2 fma", "torch_cpu_capability": "AVX2"}: the first
    processor's model name and vector flags (`ISA_FLAGS` present), and the kernel set torch dispatches to;
    "unknown" where /proc/cpuinfo is missing (not Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", "unknown") or "unknown",
            "cpu_isa": " ".join(f for f in ISA_FLAGS if f in flags) or "unknown",
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def trial_provenance(cfg: Config, repo_dir: Path, threads: int, wall_s: float, adopted_from: str = "") -> dict[str, str]:
    """`report.PROVENANCE_KEYS` of one trial as strings: commit and dirty flag, lock sha256, CPU, `threads` (the
    torch threads of its training's math, from its `RunIdentity`), `wall_s` (this attempt, seconds) and the run
    folder whose finished training was adopted ("" when this trial trained)."""
    tags: Mapping[str, str] = run_tags(cfg, Path(repo_dir))
    return {"git_commit": tags["git_commit"], "git_dirty": tags["git_dirty"], LOCK_TAG: tags[LOCK_TAG],
            **cpu_description(), "torch_threads": str(threads),
            "wall_s": f"{wall_s:.1f}", "adopted_from": adopted_from}
