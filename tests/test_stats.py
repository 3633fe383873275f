"""`klipjax.stats` against hand-computed values on small arrays, and the coverage
of its intervals on synthetic data."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from klipjax import stats


def test_iqm_of_known_sets():
    # n = 8: the middle half is the 3rd..6th scores: (3 + 4 + 5 + 6) / 4
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5
    # n = 5: the middle half [1.25, 3.75) of the mass takes 3/4 of the 2nd score,
    # all of the 3rd, 3/4 of the 4th: (0.75*2 + 3 + 0.75*4) / 2.5 = 3; the
    # outlier 100 has no weight
    assert stats.iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)
    # n = 3: [0.75, 2.25) -> (0.25*0 + 1 + 0.25*10) / 1.5 = 7/3, not the mean 11/3
    assert stats.iqm([10, 0, 1]) == pytest.approx(7 / 3)
    # n = 2: [0.5, 1.5) -> half of each: the mean
    assert stats.iqm([2, 6]) == 4.0
    assert stats.iqm([7.5]) == 7.5


def test_iqm_is_the_middle_half_trimmed_mean_when_n_divides_by_4():
    rng = np.random.default_rng(0)
    for n in (4, 12, 40):
        scores = rng.normal(size=n)
        assert stats.iqm(scores) == pytest.approx(scipy_stats.trim_mean(scores, 0.25))


def test_iqm_reduces_one_axis():
    scores = np.array([[1, 2, 3, 4, 100], [8, 1, 7, 2, 6]], float)
    np.testing.assert_allclose(stats.iqm(scores, axis=1), [3.0, stats.iqm(scores[1])])
    np.testing.assert_allclose(stats.iqm(scores.T, axis=0), [3.0, stats.iqm(scores[1])])


def test_scores_layouts_and_bad_input():
    matrix = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])  # [seeds, tasks]
    tasks = stats.by_task(matrix)
    np.testing.assert_array_equal(tasks[1], [10, 20, 30])
    assert [t.size for t in stats.by_task([[1, 2], [3, 4, 5]])] == [2, 3]  # ragged
    assert len(stats.by_task([1, 2, 3])) == 1
    with pytest.raises(ValueError, match="non-finite"):
        stats.by_task([1.0, np.nan])
    with pytest.raises(ValueError, match="no scores"):
        stats.by_task([[1.0], []])
    with pytest.raises(ValueError, match="confidence"):
        stats.interval_estimate([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="method"):
        stats.interval_estimate([1.0, 2.0], method="studentized")


def test_normalize_maps_each_task_range_to_unit():
    # task 0: (x - 0) / 500; task 1: (x + 500) / 400
    low, high = stats.normalize([[0, 250, 500], [-500, -100]], [0, -500], [500, -100])
    np.testing.assert_allclose(low, [0, 0.5, 1])
    np.testing.assert_allclose(high, [0, 1])
    with pytest.raises(ValueError, match="not above"):
        stats.normalize([[1.0]], [1.0], [1.0])


def test_interval_of_a_constant_is_a_point_and_intervals_are_reproducible():
    assert stats.interval_estimate([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    scores = np.random.default_rng(1).normal(size=10)
    first = stats.interval_estimate(scores, resamples=500, seed=4)
    assert first == stats.interval_estimate(scores, resamples=500, seed=4)
    assert first != stats.interval_estimate(scores, resamples=500, seed=5)
    assert first.low < first.value < first.high
    assert first.value == stats.iqm(scores)


def test_the_bootstrap_resamples_seeds_within_each_task():
    # Task 0 holds 3 zeros, task 1 five ones. Resampled within tasks, every
    # replicate pools exactly 3 zeros and 5 ones: the mean is always 5/8. A
    # bootstrap over the pooled runs would vary it.
    estimate = stats.interval_estimate([[0, 0, 0], [1, 1, 1, 1, 1]], stats.mean)
    assert estimate == (0.625, 0.625, 0.625)


@pytest.mark.parametrize(
    "statistic, method", [(stats.iqm, "percentile"), (stats.mean, "bca")]
)
def test_interval_coverage_on_normal_data(statistic, method):
    # The IQM and the mean of a symmetric distribution are its centre, 0 here.
    # 400 samples of 30 draws: the share of 95% intervals holding 0 is within
    # about 2 binomial standard errors (0.011) of the bootstrap's coverage, which
    # runs a little under nominal at n = 30.
    rng = np.random.default_rng(2026)
    trials = 400
    covered = 0
    for trial in range(trials):
        sample = rng.normal(loc=0.0, scale=3.0, size=30)
        estimate = stats.interval_estimate(
            sample, statistic, resamples=1000, seed=trial, method=method
        )
        covered += estimate.low <= 0.0 <= estimate.high
    assert 0.90 <= covered / trials <= 0.98


def test_probability_of_improvement_by_hand():
    # identical samples: exactly one half, whatever the values
    same = np.random.default_rng(3).normal(size=7)
    assert stats.probability_of_improvement(same, same).value == 0.5
    assert stats.probability_of_improvement([2, 2, 2], [2, 2, 2]) == (0.5, 0.5, 0.5)
    # x = (3, 4), y = (1, 2, 3): 3 beats 1 and 2 and ties 3 (2.5), 4 beats all
    # three (3): 5.5 of 6 pairs
    assert stats.probability_of_improvement([3, 4], [1, 2, 3]).value == 5.5 / 6
    # x = (1, 2, 3) vs y = (2, 2, 2): 0 + 1.5 + 3 = 4.5 of 9 pairs
    assert stats.probability_of_improvement([1, 2, 3], [2, 2, 2]).value == 0.5
    # P(X > Y) + P(Y > X) = 1
    x, y = [5.0, 1.0, 4.0, 4.0], [4.0, 2.0, 3.0]
    forward = stats.probability_of_improvement(x, y).value
    assert forward + stats.probability_of_improvement(y, x).value == pytest.approx(1)


def test_probability_of_improvement_averages_tasks():
    # task 0: X always better (1); task 1: X always worse (0): mean 0.5
    x = [[10.0, 11.0], [0.0, 1.0, 2.0]]
    y = [[1.0, 2.0, 3.0], [5.0, 6.0]]
    estimate = stats.probability_of_improvement(x, y, resamples=200)
    assert estimate == (0.5, 0.5, 0.5)  # every resample keeps the order per task
    # fully separated on one task: certain, with a point interval
    assert stats.probability_of_improvement([5, 6], [1, 2]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="tasks"):
        stats.probability_of_improvement([[1.0], [2.0]], [[1.0]])


def test_probability_of_improvement_interval_brackets_the_value():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.5, 1, size=10), rng.normal(0, 1, size=10)
    for method in ("percentile", "bca"):
        estimate = stats.probability_of_improvement(x, y, method=method)
        assert 0 <= estimate.low < estimate.value < estimate.high <= 1


def test_performance_profile_by_hand():
    # four runs 1, 2, 3, 4: above 0 all, above 1 three, above 2.5 two, above 4 none
    profile = stats.performance_profile([4, 2, 3, 1], [0, 1, 2.5, 4], resamples=300)
    np.testing.assert_allclose(profile.fraction, [1, 0.75, 0.5, 0])
    assert np.all(profile.low <= profile.fraction)
    assert np.all(profile.fraction <= profile.high)
    assert profile.low[0] == profile.high[0] == 1.0  # every resample is above 0
    # pooled over tasks: 2 of 5 runs score above 1.5
    pooled = stats.performance_profile([[1, 2], [0, 1, 3]], [1.5], resamples=50)
    assert pooled.fraction[0] == 0.4
