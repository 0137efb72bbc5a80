"""Interleaved repeats: every variant runs once per round, rounds repeated, so load from other jobs on a
shared machine falls on all variants alike; each variant's median and minimum are reported."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

__all__ = ["Timing", "interleaved", "cpu_clock", "wall_clock"]


@dataclass(frozen=True)
class Timing:
    """Seconds of the timed runs of one variant."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def min(self) -> float:
        return min(self.runs)

    def text(self, scale: float = 1.0, unit: str = "s") -> str:
        return f"median {_num(self.median * scale)} {unit} (min {_num(self.min * scale)})"


def _num(x: float) -> str:
    """4 significant digits, without an exponent for large values: 0.0661, 357.1, 15,668."""
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def cpu_clock() -> float:
    """This process's CPU seconds (per-core figures on a shared machine)."""
    return time.process_time()


def wall_clock() -> float:
    return time.perf_counter()


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 0,
                clock: Callable[[], float] = wall_clock) -> dict[str, Timing]:
    """Run each variant once per round for `warmup + repeats` rounds; time the last `repeats` rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + repeats):
        for name, fn in variants.items():
            start = clock()
            fn()
            elapsed = clock() - start
            if round_ >= warmup:
                runs[name].append(elapsed)
    return {name: Timing(tuple(r)) for name, r in runs.items()}
