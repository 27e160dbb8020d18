"""Is a variant's difference to the baseline larger than seed noise? Welch's t-test over seeds:
the mean difference, its 95% confidence interval and p-value, and the seeds per variant that
would detect the observed difference at 80% power."""

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache

from pydantic import BaseModel, Field

# SciPy's distributions as its special functions (scipy.special: ufuncs, microseconds a call,
# where scipy.stats' methods take milliseconds): stdtr is Student's t CDF, stdtrit its inverse,
# nctdtr the noncentral t CDF, ndtri the normal quantile. Each function imports them when first
# called, so that the API (whose schemas hold Difference) starts without SciPy.

CONFIDENCE = 0.95
POWER = 0.80
MOST_SEEDS = 1_000
"""Beyond this many seeds per variant, a difference is called too small to chase: a study
runs at most 20 (``models.studies.MAX_SEEDS``), and an estimate this far out is itself noise
(one difference of 0.004 over 5 seeds read 7,951 seeds on one run and over 10,000 on another)."""


class Difference(BaseModel):
    """A variant's mean minus the baseline's, over seeds; None where either has fewer than two
    runs with the metric."""

    mean: float | None = Field(description="The variant's mean minus the baseline's.")
    low: float | None = Field(description="The 95% confidence interval's lower end (Welch).")
    high: float | None = Field(description="Its upper end.")
    p_value: float | None = Field(description="Welch's t-test, two-sided.")
    seeds_needed: int | None = Field(
        description="Seeds per variant that would detect this difference at 80% power "
        "(two-sided, 5% level); null when no difference was observed or it would take over "
        "1,000."
    )
    beyond_noise: bool | None = Field(
        description="Whether the interval excludes 0: false, not distinguishable from noise."
    )

    def text(self, digits: int = 3) -> str:
        """``+0.012 [-0.004, +0.028]``, with ``(noise)`` when the interval holds 0."""
        if self.mean is None or self.low is None or self.high is None:
            return "-"
        interval = f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        return interval if self.beyond_noise else f"{interval} (noise)"


UNKNOWN = Difference(
    mean=None, low=None, high=None, p_value=None, seeds_needed=None, beyond_noise=None
)


def difference(variant: Sequence[float], baseline: Sequence[float]) -> Difference:
    """How ``variant``'s values (one per seed) differ from ``baseline``'s."""
    return _difference(tuple(map(float, variant)), tuple(map(float, baseline)))


@lru_cache(maxsize=4096)
def _difference(variant: tuple[float, ...], baseline: tuple[float, ...]) -> Difference:
    """``difference``, remembered: a table polled while its study runs asks again and again."""
    if len(variant) < 2 or len(baseline) < 2:
        return UNKNOWN
    from scipy.special import stdtr, stdtrit

    mean = statistics.fmean(variant) - statistics.fmean(baseline)
    var_v, var_b = statistics.variance(variant), statistics.variance(baseline)
    error = math.sqrt(var_v / len(variant) + var_b / len(baseline))
    if error == 0:  # every seed gave the same value on both sides
        noise = mean == 0
        return Difference(
            mean=mean,
            low=mean,
            high=mean,
            p_value=1.0 if noise else 0.0,
            seeds_needed=None if noise else 2,
            beyond_noise=not noise,
        )
    freedom = error**4 / (
        (var_v / len(variant)) ** 2 / (len(variant) - 1)
        + (var_b / len(baseline)) ** 2 / (len(baseline) - 1)
    )
    margin = float(stdtrit(freedom, (1 + CONFIDENCE) / 2)) * error
    p_value = float(2 * stdtr(freedom, -abs(mean) / error))  # Welch's t-test, two-sided
    low, high = mean - margin, mean + margin
    return Difference(
        mean=mean,
        low=low,
        high=high,
        p_value=p_value,
        seeds_needed=seeds_for(abs(mean) / math.sqrt((var_v + var_b) / 2)),
        beyond_noise=not low <= 0 <= high,
    )


def seeds_for(effect: float) -> int | None:
    """The fewest runs per group at which a two-sided two-sample t-test at the 5% level finds
    a standardised difference ``effect`` (Cohen's d) with 80% power; None over MOST_SEEDS."""
    from scipy.special import ndtri

    z = float(ndtri(1 - (1 - CONFIDENCE) / 2) + ndtri(POWER))
    if effect <= 0 or 2 * (z / effect) ** 2 > MOST_SEEDS:
        return None
    runs = max(2, math.floor(2 * (z / effect) ** 2) - 1)  # the normal approximation, a bit low
    while _power(effect, runs) < POWER:
        runs += 1
    return runs


def _power(effect: float, runs: int) -> float:
    """The power of that test with ``runs`` per group (the noncentral t distribution)."""
    from scipy.special import nctdtr, stdtrit

    freedom = 2 * runs - 2
    critical = stdtrit(freedom, 1 - (1 - CONFIDENCE) / 2)
    shift = effect * math.sqrt(runs / 2)
    return float(1 - nctdtr(freedom, shift, critical) + nctdtr(freedom, shift, -critical))
