"""Paired differences between an ablation row and its table's reference row, seed by seed: pure numbers.

For one AP column (Mean or a joint group), a row R and the table's reference row F:

    S = the seeds both R and F finished,  n = |S|,  d_s = R_s - F_s  (AP points, s in S)
    mean  d = sum(d_s) / n;  spread  s_d = sqrt(sum((d_s - d)^2) / (n - 1))
    95% interval  d -/+ h,  h = t(0.975, n - 1) * s_d / sqrt(n)     (Student's t over seeds)

Why paired by seed: at one seed both rows see the same batches and augmentation (keyed by seed, epoch
and index) on the same frozen backbone, so what the seed does to both alike cancels in d_s; what is left
is the row's effect plus the part of the training noise that the two rows do not share. The seeds are
the replicates, so the interval says whether another set of seeds would likely give the same sign.
It assumes the d_s are independent draws from one normal distribution; with 2-3 seeds that cannot be
checked, and the interval is wide by construction (t(0.975, 1) = 12.7, t(0.975, 2) = 4.30).

Verdicts: `too few seeds` when n < 2 (no spread to measure); `resolved` when the interval excludes 0;
`not resolved` otherwise. Zero spread (every seed gives the same d_s, for example two rows that are
one training adopted twice) makes the interval the single point d: `resolved` iff d != 0, with the note
`zero spread`, since a t interval of width 0 rests on n equal numbers, not on a measured spread.
A row missing a seed the reference has (or the other way round) is paired on the seeds both have and
says which seeds were left out. One seed gives `too few seeds`: a bootstrap over val videos would
measure how the AP moves with the val sample, not with the training's seed, which is what decides
whether a row helps, and the trials do not record per-video AP; we do not compute one.

The smallest difference a table could resolve is the half-width h of one row at the table's seed count n
with the table's pooled paired spread (the spreads of its rows, weighted by their n - 1). An observed
mean difference beyond it would have been called resolved; a true difference of exactly that size is
resolved only about half the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["PairedDiff", "Resolution", "RESOLVED", "NOT_RESOLVED", "TOO_FEW", "ZERO_SPREAD_AP", "t_quantile_975", "mean_interval",
           "paired_difference", "table_resolution"]

RESOLVED, NOT_RESOLVED, TOO_FEW = "resolved", "not resolved", "too few seeds"
ZERO_SPREAD_AP = 1e-9  # a spread below this (AP points) is float rounding of equal differences: zero
CONFIDENCE = 0.95


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer `df` >= 1: the finite sums of Abramowitz & Stegun 26.7.3-4."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... up to cos^(df-3)))
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    for k in range(1, df // 2):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile_975(df: int) -> float:
    """t(0.975, df): the half-width factor of a two-sided 95% Student-t interval (df >= 1), by bisection on the
    exact integer-df distribution function (12.706 at df 1, 4.303 at 2, 1.960 as df grows)."""
    if df < 1:
        raise ValueError(f"t quantile: expected df >= 1, got {df}")
    low, high = 0.0, 16.0
    while _t_central_mass(high, df) < CONFIDENCE:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central_mass(mid, df) < CONFIDENCE else (low, mid)
        if high - low < 1e-12:
            break
    return (low + high) / 2


def _mean_sd_half(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, sample spread, 95% t half-width) of `values`; NaN where there are too few of them."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd, t_quantile_975(n - 1) * sd / math.sqrt(n)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% t interval) of per-seed values; the half-width is NaN below 2 values."""
    mean, _, half_width = _mean_sd_half(values)
    return mean, half_width


@dataclass(frozen=True)
class PairedDiff:
    """One row minus the reference row in one AP column, paired by seed (AP points; NaN where undefined)."""

    row: str
    reference: str
    column: str
    seeds: tuple[int, ...]  # the seeds both rows finished, ascending
    diffs: tuple[float, ...]  # row - reference at each of `seeds`
    unpaired: tuple[int, ...]  # seeds only one of the two rows finished (left out)
    mean: float
    sd: float  # spread of `diffs` (n - 1 in the denominator); NaN below 2 seeds
    half_width: float  # t(0.975, n-1) * sd / sqrt(n); NaN below 2 seeds

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def zero_spread(self) -> bool:
        return self.n >= 2 and self.sd <= ZERO_SPREAD_AP

    @property
    def verdict(self) -> str:
        """`resolved` (the 95% interval excludes 0), `not resolved`, or `too few seeds` (n < 2)."""
        if self.n < 2:
            return TOO_FEW
        if self.zero_spread:
            return RESOLVED if abs(self.mean) > ZERO_SPREAD_AP else NOT_RESOLVED
        return RESOLVED if self.low > 0 or self.high < 0 else NOT_RESOLVED

    @property
    def note(self) -> str:
        """What qualifies the verdict: zero spread, seeds left out, no paired seed; "" when nothing does."""
        notes = ["zero spread: the interval is the point" if self.zero_spread else "",
                 "no seed finished in both rows" if self.n == 0 else "",
                 f"seed{'s' * (len(self.unpaired) > 1)} {', '.join(map(str, self.unpaired))} in one row only, "
                 f"paired on {self.n}" if self.unpaired else ""]
        return "; ".join(n for n in notes if n)


def paired_difference(row: str, reference: str, column: str, row_by_seed: Mapping[int, float],
                      reference_by_seed: Mapping[int, float]) -> PairedDiff:
    """`row` - `reference` in `column`, paired on the seeds both have: a `PairedDiff` with its 95% t interval."""
    seeds = tuple(sorted(set(row_by_seed) & set(reference_by_seed)))
    unpaired = tuple(sorted(set(row_by_seed) ^ set(reference_by_seed)))
    diffs = tuple(float(row_by_seed[s]) - float(reference_by_seed[s]) for s in seeds)
    return PairedDiff(row, reference, column, seeds, diffs, unpaired, *_mean_sd_half(diffs))


@dataclass(frozen=True)
class Resolution:
    """The smallest mean difference a table resolves in one column: `half_width` at `n` seeds and spread `sd`."""

    column: str
    n: int  # the table's seed count: the most seeds any row was paired on
    sd: float  # pooled paired spread of the table's rows (weighted by n - 1); NaN without a row of 2 seeds
    half_width: float  # t(0.975, n - 1) * sd / sqrt(n); NaN below 2 seeds


def table_resolution(diffs: Sequence[PairedDiff], column: str) -> Resolution:
    """The pooled spread of the rows' paired differences in `column` and the half-width it gives at the table's
    seed count (the smallest observed difference that would be called resolved)."""
    measured = [d for d in diffs if d.column == column and d.n >= 2]
    n = max((d.n for d in diffs if d.column == column), default=0)
    if not measured or n < 2:
        return Resolution(column, n, math.nan, math.nan)
    dof = sum(d.n - 1 for d in measured)
    sd = math.sqrt(sum((d.n - 1) * d.sd ** 2 for d in measured) / dof)
    return Resolution(column, n, sd, t_quantile_975(n - 1) * sd / math.sqrt(n))
