"""Benchmark: what the differences of a chapter table cost (13 variants x 8 columns, 5 seeds
each), as views.significance computes them (scipy.special's ufuncs, remembered) and as
scipy.stats' methods would (ttest_ind, t.ppf, nct.cdf), side by side in ABAB rounds on the same
random figures. Prints each round's seconds and the median ratio.

    python bench/significance.py [--rounds 5]
"""

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from views import significance

TABLE = 13 * 8


def by_stats(variant: list[float], baseline: list[float]) -> tuple[float, float, int | None]:
    """The interval's margin, the p-value and the seeds needed through scipy.stats."""
    from scipy import stats

    var_v, var_b = statistics.variance(variant), statistics.variance(baseline)
    error = math.sqrt(var_v / len(variant) + var_b / len(baseline))
    freedom = error**4 / (
        (var_v / len(variant)) ** 2 / (len(variant) - 1)
        + (var_b / len(baseline)) ** 2 / (len(baseline) - 1)
    )
    margin = float(stats.t.ppf(0.975, freedom)) * error
    p_value = float(stats.ttest_ind(variant, baseline, equal_var=False).pvalue)
    effect = abs(statistics.fmean(variant) - statistics.fmean(baseline)) / math.sqrt(
        (var_v + var_b) / 2
    )
    runs = 2
    while runs < 10_000:
        shift, df = effect * math.sqrt(runs / 2), 2 * runs - 2
        critical = stats.t.ppf(0.975, df)
        power = 1 - stats.nct.cdf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
        if power >= 0.8:
            return margin, p_value, runs
        runs += 1
    return margin, p_value, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    ratios = []
    by_stats([0.1, 0.2], [0.3, 0.5])  # imports first: the rounds time the calls alone
    significance.difference([0.1, 0.2], [0.3, 0.5])
    for number in range(rounds):
        rng = random.Random(number)
        # accuracies 0.1 to 0.2 apart on average: effects whose power searches end quickly
        table = [
            ([rng.gauss(0.8, 0.05) for _ in range(5)], [rng.gauss(0.7, 0.05) for _ in range(5)])
            for _ in range(TABLE)
        ]
        started = time.perf_counter()
        for variant, baseline in table:
            by_stats(variant, baseline)
        stats_seconds = time.perf_counter() - started
        significance._difference.cache_clear()
        started = time.perf_counter()
        for variant, baseline in table:
            significance.difference(variant, baseline)
        special_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for variant, baseline in table:
            significance.difference(variant, baseline)
        again_seconds = time.perf_counter() - started
        ratios.append(stats_seconds / special_seconds)
        print(
            f"round {number + 1}: scipy.stats {stats_seconds:.3f} s, scipy.special "
            f"{special_seconds:.3f} s, again (remembered) {again_seconds * 1000:.2f} ms"
        )
    print(f"median: scipy.special is {statistics.median(ratios):.1f}x faster per table")


if __name__ == "__main__":
    main()
