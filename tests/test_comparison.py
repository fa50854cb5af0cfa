"""Paired comparison statistics, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from clothclf.evaluation.comparison import compare_paired, format_p, mcnemar_exact, wilson_interval


def test_wilson_interval_of_the_shipped_model_matches_the_issue():
    low, high = wilson_interval(342, 372)  # 0.919: the issue quotes 0.887-0.943
    assert (round(low, 3), round(high, 3)) == (0.887, 0.943)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(5, 0)


def test_mcnemar_exact_is_the_binomial_tail_of_the_discordant_pairs():
    # 1 vs 9 discordant pairs: 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * 11 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_compare_paired_counts_each_kind_of_pair():
    a = np.array([True, True, False, False, True])
    b = np.array([True, False, True, True, True])
    result = compare_paired(a, b)
    assert (result.n, result.correct_a, result.correct_b, result.only_a, result.only_b) == (5, 3, 4, 1, 2)
    assert result.accuracy("a") == 0.6 and result.accuracy("b") == 0.8
    assert result.p_value == pytest.approx(1.0)  # 2 * P(X <= 1 | n=3) = 2 * 4/8, capped at 1
    assert result.interval("b") == wilson_interval(4, 5)
    with pytest.raises(ValueError):
        compare_paired(a, b[:3])
    assert format_p(0.0004) == "< 0.001" and format_p(0.02148) == "0.0215"
