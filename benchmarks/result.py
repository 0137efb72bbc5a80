"""One benchmark figure as `make bench` collects it: what was measured, against which named baseline,
the value, the target and whether it was met, and the command that reproduces it.

Every benchmark script takes `--json PATH` and writes its `Result`s there (a list); `benchmarks/run.py`
gathers them into `benchmarks/results.json`, and `benchmarks/report.py` renders the README table from it.
Pass/fail is computed here from the value and the target, never written by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vremd.atomic import atomic_write_text

__all__ = ["Result", "write_results", "read_results", "read_meta", "SCHEMA_KEYS"]

# how a value reads: a speed-up over the baseline (higher is better), a cost multiple of it (lower is
# better) or a rate
UNITS = {"x": "speed-up", "x cost": "cost multiple", "crops/s/core": "rate", "samples/s": "rate",
         "person-crops/s": "rate", "AP": "difference", "cores": "count", "KB/sample": "size", "": "none"}
OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}


@dataclass(frozen=True)
class Result:
    """One row of the benchmark table.

    `value` is None when the figure was not measured (then `note` says why and `passed` is None);
    `target` is None for a figure reported without a target.
    """

    name: str  # short key, unique across benchmarks, e.g. "crops.offline"
    benchmark: str  # what is measured, for the table
    baseline: str  # the named baseline the ratio is taken against ("" for an absolute figure)
    value: float | None
    unit: str  # a key of UNITS
    command: str  # the command that reproduces it
    target: float | None = None
    op: str = ""  # ">=" or "<=" with a target
    details: str = ""  # the figures behind the value, for the table
    note: str = ""  # why a value is missing
    extra: dict[str, Any] = field(default_factory=dict)  # further machine-readable figures

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"Result {self.name}: unit {self.unit!r} not in {sorted(UNITS)}")
        if (self.target is None) != (self.op == ""):
            raise ValueError(f"Result {self.name}: a target needs an op (>= or <=) and an op a target")
        if self.op and self.op not in OPS:
            raise ValueError(f"Result {self.name}: op {self.op!r} not in {sorted(OPS)}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"Result {self.name}: value {self.value} is not finite")
        if self.value is None and not self.note:
            raise ValueError(f"Result {self.name}: an unmeasured figure needs a note saying why")

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None without a target or without a value."""
        if self.target is None or self.value is None:
            return None
        return bool(OPS[self.op](self.value, self.target))

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Result":
        fields = {k: v for k, v in data.items() if k != "passed"}
        missing = {"name", "benchmark", "baseline", "value", "unit", "command"} - fields.keys()
        if missing:
            raise ValueError(f"benchmark result {data.get('name', '?')}: missing fields {sorted(missing)}")
        result = cls(**fields)
        if "passed" in data and data["passed"] != result.passed:
            raise ValueError(f"benchmark result {result.name}: stored passed={data['passed']} but value "
                             f"{result.value} {result.op} {result.target} gives {result.passed}")
        return result


SCHEMA_KEYS = tuple(Result.__dataclass_fields__) + ("passed",)


def write_results(path: str | Path, results: Iterable[Result], **meta: Any) -> None:
    """Write `{"results": [...], **meta}` to `path` (atomically); `meta` says where and how it was measured."""
    doc = {**meta, "results": [r.to_json() for r in results]}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The fields of a `write_results` file beside its results."""
    return {k: v for k, v in _load(path).items() if k != "results"}


def read_results(path: str | Path) -> list[Result]:
    """The `Result`s of a `write_results` file (checked: fields present, stored pass/fail consistent)."""
    return [Result.from_json(d) for d in _load(path)["results"]]


def _load(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'results' list of benchmark results")
    return data
