"""Skipping partition pairs that cannot meet changes no list: same result as scoring every pair."""

from __future__ import annotations

import numpy as np
import pytest

from engine.partitioned import partitioned_topk, plan_partitions
from engine.scoring import reciprocal_topk


def _mask(bits: list[int]) -> int:
    mask = sum(1 << b for b in set(bits))
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def _population(seed: int, n: int, d: int, *, span: int) -> dict[str, np.ndarray]:
    """Gender x 16 age buckets as group codes; each seeks other genders (some their own) within
    ``span`` buckets of their own, as the service's filters do."""
    rng = np.random.default_rng(seed)
    gender, bucket = rng.integers(0, 4, n), rng.integers(0, 16, n)
    seeks = []
    for g, b in zip(gender, bucket):
        wanted = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
        lo, hi = max(0, b - int(rng.integers(0, span + 1))), min(15, b + int(rng.integers(0, span + 1)))
        seeks.append(_mask([int(w) * 16 + a for w in wanted for a in range(lo, hi + 1)]))
    return {
        "pref": rng.normal(size=(n, d)),
        "bias": rng.normal(size=n),
        "looks": rng.uniform(-3, 3, (n, d)),
        "group": gender * 16 + bucket,
        "seeks": np.array(seeks, dtype=np.int64),
        "exclude": rng.integers(0, n, (2, n // 2)),
    }


@pytest.mark.parametrize("seed,n,k,span", [(0, 400, 7, 2), (1, 900, 20, 5), (2, 60, 80, 15), (3, 2500, 30, 3)])
def test_same_lists_as_scoring_every_pair(seed: int, n: int, k: int, span: int) -> None:
    case = _population(seed, n, 16, span=span)
    scores, indices = reciprocal_topk(**case, k=k, device="cpu")
    ours, found, scored = partitioned_topk(**case, k=k)
    plan = plan_partitions(case["group"], case["seeks"])
    np.testing.assert_array_equal(found, np.asarray(indices))
    # Products run in float32 in both; their rounding differs (kernel's bound: a few 2**-24 * d).
    np.testing.assert_allclose(ours, np.asarray(scores), rtol=2e-5, atol=0)
    assert 0.0 < plan.skipped_fraction < 1.0 and scored == plan.pairs_scored


def test_rows_limits_the_work_but_keeps_those_rows_exact() -> None:
    case = _population(4, 700, 12, span=3)
    rows = np.array([3, 50, 51, 600])
    _, found, _ = partitioned_topk(**case, k=9, rows=rows)
    _, reference, _ = partitioned_topk(**case, k=9)
    np.testing.assert_array_equal(found[rows], reference[rows])


def test_partition_pairs_are_kept_only_when_both_sides_can_want_each_other() -> None:
    group = np.array([0, 0, 16, 17, 33])
    seeks = np.array([_mask([16]), _mask([17]), _mask([0]), _mask([33]), _mask([0])], dtype=np.int64)
    plan = plan_partitions(group, seeks)
    # 0 meets 16 (0 seeks 16, 16 seeks 0); 0 wants 17 but 17 seeks only 33; 33 wants 0, 0 does not want 33.
    assert plan.pairs == [(0, 16)]
    assert plan.pairs_scored == 4 and plan.pairs_total == 20
    assert plan.skipped_fraction == pytest.approx(0.8)
