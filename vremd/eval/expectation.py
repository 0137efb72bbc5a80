"""What the demo is expected to score, with the tolerance measured across seeds and machines, and the check.

The expectation (`pipeline/demo_expected.json`) holds, per result, the expected Mean AP and a tolerance
in AP points, and the digest of the settings it was measured with: a run with other settings (another
profile, an edited params.yaml, the tests' smoke-sized demo) is not compared. How the tolerance was
measured is in docs/determinism.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vremd.errors import InputError

__all__ = ["Expected", "load_expected", "settings_digest", "verdict_line"]


@dataclass(frozen=True)
class Expected:
    """An expected AP: `value` ± `tolerance` (AP points), measured as `how`."""

    name: str
    value: float
    tolerance: float
    how: str

    def holds(self, ap: float) -> bool:
        return abs(ap - self.value) <= self.tolerance


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short sha256 of resolved settings (dotted key -> value): the settings an expectation holds for."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_expected(path: Path) -> tuple[str, str, dict[str, Expected]]:
    """(profile, settings digest, {result name: Expected}) from the expectation json at `path`."""
    try:
        data = json.loads(Path(path).read_text())
        results = {name: Expected(name, float(e["expected"]), float(e["tolerance"]), str(e["how"]))
                   for name, e in data["results"].items()}
        return str(data["profile"]), str(data["settings_digest"]), results
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: expected profile, settings_digest and results.<name>.{{expected, tolerance, how}} "
                         f"({type(exc).__name__}: {exc})") from None


def verdict_line(expected: Expected, ap: float | None) -> str:
    """`Mean AP 37.7: within the expected 37.9 ± 1.5 (...)`, or `OUTSIDE ...`, or `not measured`."""
    if ap is None:
        return f"{expected.name}: not measured (expected {expected.value:.1f} ± {expected.tolerance:.1f})"
    state = "within" if expected.holds(ap) else "OUTSIDE"
    return (f"{expected.name} {ap:.1f}: {state} the expected {expected.value:.1f} ± {expected.tolerance:.1f} "
            f"({expected.how})")
