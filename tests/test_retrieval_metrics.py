"""The retrieval metrics on hand-made rankings whose values are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_zoo.retrieval.metrics import (
    average_precision,
    mean_average_precision,
    ns_score,
    precision_at_k,
    rank,
    recall_at_k,
)


def test_average_precision_is_the_trapezoid_of_compute_ap():
    # ranking 0,1,2,3,4; positives {0, 2}; recall steps by 1/2.
    # result 0 (pos): recall .5, precision 1   -> + .5 * (1 + 1) / 2     = .5
    # result 1 (neg): recall .5, precision .5  -> + 0
    # result 2 (pos): recall 1,  precision 2/3 -> + .5 * (1/2 + 2/3) / 2 = 7/24
    # results 3, 4: recall stays 1 -> + 0.                          AP   = 19/24
    assert average_precision([0, 1, 2, 3, 4], {0, 2}) == pytest.approx(19 / 24)
    # a perfect ranking: 1
    assert average_precision([2, 0, 1], {0, 2}) == pytest.approx(1.0)


def test_junk_is_skipped_not_counted_as_a_miss():
    # 5 is junk: skipped, the ranking is then 0, 1, 2 as above -> 19/24
    assert average_precision([5, 0, 1, 2], {0, 2}, junk={5}) == pytest.approx(19 / 24)
    # the same ranking with 5 a plain negative:
    # result 5: recall 0, precision 0            -> + 0
    # result 0: recall .5, precision 1/2         -> + .5 * (0 + 1/2) / 2   = 1/8
    # result 1: recall .5, precision 1/3         -> + 0
    # result 2: recall 1,  precision 2/4         -> + .5 * (1/3 + 1/2) / 2 = 5/24;   AP = 1/3
    assert average_precision([5, 0, 1, 2], {0, 2}) == pytest.approx(1 / 3)


def test_a_positive_never_ranked_adds_nothing():
    # positives {0, 9}, only 0 and 1 ranked: result 0: recall .5 precision 1 -> .5; result 1: + 0
    assert average_precision([0, 1], {0, 9}) == pytest.approx(0.5)


def test_the_query_excluded_from_its_own_ranking():
    # Holidays: database 0..3, the query is image 0 (passed as junk), its one positive is 1.
    # ranking 0, 2, 1, 3 -> without the query 2, 1, 3:
    # result 2: recall 0, precision 0  -> + 0 * (1 + 0) / 2 = 0
    # result 1: recall 1, precision .5 -> + 1 * (0 + .5) / 2 = .25    (holidays_map.py: (0/1 + 1/2) / 2)
    assert average_precision([0, 2, 1, 3], {1}, junk={0}) == pytest.approx(0.25)
    # counted as a result instead, the query itself would cost a rank: 0 (neg), 2 (neg), 1 (pos, 1/3)
    # -> (0 + 1/3) / 2 = 1/6
    assert average_precision([0, 2, 1, 3], {1}) == pytest.approx(1 / 6)


def test_ties_keep_database_order():
    # scores 0.9, 0.5, 0.5, 0.1: images 1 and 2 tie; the stable rule puts the lower index first
    assert rank(np.array([0.9, 0.5, 0.5, 0.1])).tolist() == [0, 1, 2, 3]
    assert rank(np.array([[0.5, 0.5, 0.7], [0.1, 0.3, 0.3]])).tolist() == [[2, 0, 1], [1, 2, 0]]
    # so a positive at the tie's second place: results 0 (neg), 1 (neg), 2 (pos: recall 1, precision 1/3)
    # -> (0 + 1/3) / 2 = 1/6; at its first place: 0 (neg), 1 (pos, precision 1/2) -> (0 + 1/2) / 2 = 1/4
    ranking = rank(np.array([0.9, 0.5, 0.5, 0.1]))
    assert average_precision(ranking, {2}) == pytest.approx(1 / 6)
    assert average_precision(ranking, {1}) == pytest.approx(1 / 4)


def test_mean_average_precision():
    # (19/24 + 6/24) / 2 = 25/48
    assert mean_average_precision([19 / 24, 0.25]) == pytest.approx(25 / 48)
    with pytest.raises(ValueError, match="no queries"):
        mean_average_precision([])


def test_ns_score_counts_the_group_in_the_top_four_query_included():
    # group {0,1,2,3}, query 0: top four 0, 5, 1, 2 -> 0, 1, 2 are of the group: 3
    assert ns_score([0, 5, 1, 2, 3], {0, 1, 2, 3}) == 3
    assert ns_score([1, 0, 3, 2, 9], {0, 1, 2, 3}) == 4
    assert ns_score([9, 8, 7, 6, 0], {0, 1, 2, 3}) == 0  # the fifth place does not count


def test_recall_and_precision_at_k_skip_junk_first():
    # ranking 3, 0, 7, 1, 2; positives {0, 1, 2}; 7 is junk -> 3, 0, 1, 2
    ranking, pos, junk = [3, 0, 7, 1, 2], {0, 1, 2}, {7}
    # k=2: 3, 0 -> one hit: recall 1/3, precision 1/2
    assert recall_at_k(ranking, pos, 2, junk) == pytest.approx(1 / 3)
    assert precision_at_k(ranking, pos, 2, junk) == pytest.approx(1 / 2)
    # k=3: 3, 0, 1 -> two hits: 2/3 and 2/3
    assert recall_at_k(ranking, pos, 3, junk) == pytest.approx(2 / 3)
    assert precision_at_k(ranking, pos, 3, junk) == pytest.approx(2 / 3)
    # k=10: all three found; precision keeps k as its denominator: 3/10
    assert recall_at_k(ranking, pos, 10, junk) == pytest.approx(1.0)
    assert precision_at_k(ranking, pos, 10, junk) == pytest.approx(0.3)
    # junk not skipped: k=3 is 3, 0, 7 -> one hit
    assert recall_at_k(ranking, pos, 3) == pytest.approx(1 / 3)


def test_refusals():
    with pytest.raises(ValueError, match="without positives"):
        average_precision([0, 1], set())
    with pytest.raises(ValueError, match="both positive and junk"):
        average_precision([0, 1], {1}, junk={1})
    with pytest.raises(ValueError, match="without positives"):
        recall_at_k([0, 1], set(), 1)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k([0, 1], {0}, 0)
    with pytest.raises(ValueError, match="NaN"):
        rank(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        rank(np.zeros((1, 2, 3)))


def _compute_ap_reference(pos, amb, ranked_list):
    """compute_ap.cpp of the Oxford Buildings dataset, line by line."""
    old_recall, old_precision, ap, intersect_size, j = 0.0, 1.0, 0.0, 0, 0
    for item in ranked_list:
        if item in amb:
            continue
        if item in pos:
            intersect_size += 1
        recall = intersect_size / len(pos)
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall, old_precision = recall, precision
        j += 1
    return ap


def test_average_precision_equals_the_reference_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        ranking = rng.permutation(n)
        labels = rng.integers(0, 3, n)  # 0 negative, 1 positive, 2 junk
        labels[rng.integers(n)] = 1
        pos, amb = set(np.flatnonzero(labels == 1).tolist()), set(np.flatnonzero(labels == 2).tolist())
        assert average_precision(ranking, pos, amb) == pytest.approx(_compute_ap_reference(pos, amb, ranking.tolist()))
