"""The statistics behind "is the difference real?", against figures computed by hand and the
published sample sizes of Cohen's power tables."""

import pytest
from scipy import stats

from views.significance import difference, seeds_for


def test_welch_interval_and_p_value_match_the_hand_computation() -> None:
    # diff 3, standard error sqrt(1/3 + 1/3) = 0.8165, 4 degrees of freedom, t(0.975, 4) = 2.7764
    found = difference([4, 5, 6], [1, 2, 3])
    assert found.mean == pytest.approx(3)
    assert (found.low, found.high) == pytest.approx((0.7330, 5.2670), abs=1e-4)
    assert found.p_value == pytest.approx(0.02131, abs=1e-5)
    assert found.beyond_noise is True


def test_unequal_variances_use_welchs_degrees_of_freedom() -> None:
    # var 1 (n 3) and var 20 (n 5): se^2 = 1/3 + 4, df = se^4 / ((1/3)^2/2 + 4^2/4) = 4.630
    found = difference([10, 11, 12], [2, 6, 4, 10, -2])
    margin = stats.t.ppf(0.975, 4.630) * (1 / 3 + 4) ** 0.5  # the quantile at that df
    assert (found.low, found.high) == pytest.approx((7 - margin, 7 + margin), abs=1e-3)
    assert found.p_value == pytest.approx(2 * stats.t.sf(7 / (1 / 3 + 4) ** 0.5, 4.630), abs=1e-4)


def test_an_interval_holding_zero_is_noise() -> None:
    found = difference([0.80, 0.82, 0.78], [0.79, 0.81, 0.80])
    assert found.low is not None and found.low < 0 < (found.high or 0)
    assert found.beyond_noise is False
    assert found.p_value is not None and found.p_value > 0.05
    assert found.text().endswith("(noise)")


def test_fewer_than_two_seeds_on_either_side_gives_no_figures() -> None:
    for variant, baseline in (([0.9], [0.8, 0.81]), ([0.9, 0.91], [0.8])):
        found = difference(variant, baseline)
        assert found.mean is None and found.seeds_needed is None and found.text() == "-"


def test_identical_seeds_on_both_sides() -> None:
    same = difference([0.5, 0.5], [0.5, 0.5])
    assert (same.mean, same.p_value, same.beyond_noise, same.seeds_needed) == (0, 1.0, False, None)
    apart = difference([0.6, 0.6], [0.5, 0.5])
    assert apart.beyond_noise is True and apart.p_value == 0.0


@pytest.mark.parametrize(("effect", "runs"), [(0.2, 394), (0.5, 64), (0.8, 26), (2.0, 6)])
def test_seeds_for_80_percent_power_match_cohens_tables(effect: float, runs: int) -> None:
    assert seeds_for(effect) == runs


def test_a_difference_too_small_to_chase_needs_no_count() -> None:
    assert seeds_for(0.01) is None and seeds_for(0.0) is None
    assert seeds_for(0.1) is None  # 1,571 seeds: over the 1,000 worth chasing


def test_seeds_needed_follow_the_observed_effect() -> None:
    # means 0.5 apart, both variances 1: Cohen's d = 0.5, 64 runs per group
    assert difference([0.5, 1.5, 2.5], [0.0, 1.0, 2.0]).seeds_needed == 64


def test_p_values_and_intervals_agree_with_scipy_stats() -> None:
    variant, baseline = [0.91, 0.88, 0.93, 0.90, 0.87], [0.86, 0.89, 0.84, 0.88]
    found = difference(variant, baseline)
    welch = stats.ttest_ind(variant, baseline, equal_var=False)
    assert found.p_value == pytest.approx(float(welch.pvalue), rel=1e-9)
    interval = welch.confidence_interval(0.95)
    assert (found.low, found.high) == pytest.approx((interval.low, interval.high), rel=1e-9)
