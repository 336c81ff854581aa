"""Tests for batch reciprocal scoring (engine.scoring).

Every property test compares :func:`reciprocal_topk` with a brute-force float64 reference written
plainly below (dense matrices, no blocking, no pruning), under the precision contract stated in
the module: scores within ``2 * delta + 2**-23`` relative, indices equal wherever the reference
separates them by more than that, exact float32 ties ordered by index. Both engines run every
property: the C kernel and the torch operations (forced by hiding the C kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit

import engine.scoring._api as scoring_api
import engine.scoring._torch as torch_engine
from engine.scoring import COMBINES, pairs_skipped, reciprocal_topk, scoring_backend

# The ``engine`` fixture only patches a module attribute for the whole test, so sharing it
# across generated examples is intended.
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=_QUIET)


# --------------------------------------------------------------------------- reference


@dataclass
class Case:
    """One scoring problem and everything the reference needs."""

    pref: np.ndarray
    bias: np.ndarray
    looks: np.ndarray
    k: int
    combine: str = "harmonic"
    group: np.ndarray | None = None
    seeks: np.ndarray | None = None
    exclude: np.ndarray | None = None
    block_size: int | None = None

    @property
    def options(self) -> dict[str, object]:
        return {
            "group": self.group,
            "seeks": self.seeks,
            "exclude": self.exclude,
            "combine": self.combine,
            "block_size": self.block_size,
        }

    @property
    def n(self) -> int:
        return len(self.bias)


def reference_scores(case: Case) -> np.ndarray:
    """Dense (n, n) float64 reciprocal scores, ``-inf`` where a pair is not eligible."""
    p = expit(case.pref @ case.looks.T + case.bias[:, None])
    q = p.T
    if case.combine == "harmonic":
        with np.errstate(invalid="ignore"):
            s = np.where(p + q > 0, 2 * p * q / (p + q), 0.0)
    elif case.combine == "geometric":
        s = np.sqrt(p * q)
    elif case.combine == "min":
        s = np.minimum(p, q)
    else:
        s = p * q
    ok = ~np.eye(case.n, dtype=bool)
    if case.group is not None:
        bits = case.seeks.astype(np.int64).view(np.uint64)
        wants = ((bits[:, None] >> case.group.astype(np.uint64)[None, :]) & np.uint64(1)) == 1
        ok &= wants & wants.T
    if case.exclude is not None and case.exclude.size:
        ok[case.exclude[0], case.exclude[1]] = False
        ok[case.exclude[1], case.exclude[0]] = False
    return np.where(ok, s, -np.inf)


def reference_order(s: np.ndarray) -> np.ndarray:
    """Each row's columns by (score desc, index asc)."""
    n = s.shape[0]
    return np.lexsort((np.broadcast_to(np.arange(n), s.shape), -s), axis=1)


def contract_rtol(case: Case) -> float:
    """The module's relative score tolerance ``2 delta + 2**-23`` for this case's inputs."""
    d = case.pref.shape[1]
    reach = np.linalg.norm(case.pref, axis=1).max() * np.linalg.norm(case.looks, axis=1).max()
    delta = (d + 3) * 2.0**-24 * (reach + np.abs(case.bias).max())
    return 2.01 * delta + 2.0**-23


def check(case: Case, scores: np.ndarray, indices: np.ndarray) -> None:
    """Assert the result (numpy, as numpy input gives) meets the contract against the reference."""
    n, k = case.n, case.k
    assert isinstance(scores, np.ndarray) and isinstance(indices, np.ndarray)
    assert scores.shape == (n, k) and indices.shape == (n, k)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    ours_s, ours_i = scores.astype(np.float64), indices
    ref = reference_scores(case)
    order = reference_order(ref)
    ref_sorted = np.take_along_axis(ref, order, 1)
    rtol = contract_rtol(case)
    atol = 2.0**-126  # float32 subnormals carry no relative precision
    for i in range(n):
        m = int(np.isfinite(ref_sorted[i]).sum())
        shown = min(m, k)
        # Padding is exact: as many candidates as there are eligible partners, up to k.
        assert np.isfinite(ours_s[i, :shown]).all()
        assert np.isneginf(ours_s[i, shown:]).all() and (ours_i[i, shown:] == -1).all()
        got, at = ours_s[i, :shown], ours_i[i, :shown]
        assert len(set(at.tolist())) == shown
        # Every candidate is eligible and carries its own score.
        assert np.isfinite(ref[i, at]).all()
        np.testing.assert_allclose(got, ref[i, at], rtol=rtol, atol=atol)
        # Descending, exact float32 ties by ascending index.
        assert (np.diff(got) <= 0).all()
        tied = np.diff(got) == 0
        assert (np.diff(at)[tied] > 0).all()
        # Wherever the reference separates rank r from r + 1, the first r agree as sets: all of
        # the reference's first r sit within our first r places.
        expect = np.append(ref_sorted[i, :m], -np.inf)[: shown + 1]
        separated = expect[:-1] - expect[1:] > 2 * (rtol * expect[:-1] + atol)
        place = np.full(n, n)
        place[at] = np.arange(shown)
        worst = np.maximum.accumulate(place[order[i, :shown]])
        assert (worst[separated] < np.arange(1, shown + 1)[separated]).all(), i


# --------------------------------------------------------------------------- engines


@pytest.fixture(params=["native", "torch"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on the C kernel and once on the torch operations."""
    if request.param == "native":
        assert scoring_backend(device="cpu") == "cpu-native", "the installed package lacks its kernel"
    else:
        monkeypatch.setattr(scoring_api, "load_kernel", lambda: None)
    return request.param


def run(case: Case, **extra: object) -> tuple[np.ndarray, np.ndarray]:
    options = {**case.options, **extra}
    return reciprocal_topk(case.pref, case.bias, case.looks, case.k, device="cpu", **options)


# --------------------------------------------------------------------------- strategies


@st.composite
def cases(draw: st.DrawFn, *, exact: bool = False) -> Case:
    """Small problems over every option; ``exact`` uses dyadic data whose logits are exact."""
    n = draw(st.integers(1, 36))
    d = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if exact:
        pref = rng.integers(-2, 3, (n, d)) / 2.0
        looks = rng.integers(-2, 3, (n, d)) / 2.0
        bias = rng.integers(-4, 5, n) / 4.0
        # Duplicated users tie exactly with each other.
        dup = rng.integers(0, n, n // 3)
        pref[: len(dup)], looks[: len(dup)], bias[: len(dup)] = pref[dup], looks[dup], bias[dup]
    else:
        scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
        pref = rng.standard_normal((n, d)) * scale
        looks = rng.standard_normal((n, d))
        bias = rng.standard_normal(n) * scale
    k = draw(st.integers(1, n + 3))
    combine = draw(st.sampled_from(COMBINES))
    block_size = draw(st.one_of(st.none(), st.integers(1, n + 2)))
    group = seeks = exclude = None
    if draw(st.booleans()):
        present = rng.choice(64, size=draw(st.integers(1, 4)), replace=False)
        if draw(st.booleans()):
            present[0] = 63  # the sign bit of the seeks mask
        group = rng.choice(present, n)
        wanted = rng.integers(0, 2, (n, present.size)).astype(bool)
        bits = (np.uint64(1) << present.astype(np.uint64))[None, :] * wanted
        noise = rng.integers(0, 2**63, n, dtype=np.uint64) & rng.integers(0, 2**63, n, dtype=np.uint64)
        seeks = (np.bitwise_or.reduce(bits, axis=1) | noise).view(np.int64)
    if draw(st.booleans()):
        m = draw(st.integers(0, 3 * n))
        exclude = rng.integers(0, n, (2, m))
        if m:
            exclude[:, 0] = exclude[0, 0]  # an i == j pair
            exclude = np.concatenate([exclude, exclude[:, : m // 2]], axis=1)  # duplicates
    return Case(pref, bias, looks, k, combine, group, seeks, exclude, block_size)


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(case=cases())
def test_matches_reference(engine: str, case: Case) -> None:
    check(case, *run(case))


@PROPERTY
@given(case=cases(exact=True))
def test_matches_reference_on_exact_ties(engine: str, case: Case) -> None:
    """Dyadic data: logits are exact in float32, so ties between duplicates are exact."""
    scores, indices = run(case)
    check(case, scores, indices)
    ref = reference_scores(case)
    for i in range(case.n):
        shown = int(np.isfinite(scores[i]).sum())
        # The kth score splits the row: everything above it is in, and at the kth score the
        # lowest indices are in.
        if shown == case.k:
            kth = ref[i, indices[i, -1]]
            inside = set(indices[i].tolist())
            above = np.flatnonzero(ref[i] > kth * (1 + 1e-12))
            assert set(above.tolist()) <= inside
            at_kth = np.flatnonzero(np.abs(ref[i] - kth) <= 1e-12 * kth)
            chosen = sorted(inside & set(at_kth.tolist()))
            assert chosen == sorted(at_kth.tolist())[: len(chosen)]


@settings(max_examples=60, deadline=None, suppress_health_check=_QUIET)
@given(case=cases(), seed=st.integers(0, 2**16))
def test_block_size_does_not_change_the_result(engine: str, case: Case, seed: int) -> None:
    """Any blocking gives the same candidates and scores up to the float32 contract."""
    base_s, base_i = run(case, block_size=case.n)
    block = int(np.random.default_rng(seed).integers(1, case.n + 1))
    s, i = run(case, block_size=block)
    np.testing.assert_allclose(s, base_s, rtol=2 * contract_rtol(case), atol=2.0**-126)
    assert ((i == -1) == (base_i == -1)).all()


@settings(max_examples=40, deadline=None, suppress_health_check=_QUIET)
@given(case=cases(), data=st.data())
def test_accepts_tensors_and_numpy_alike(engine: str, case: Case, data: st.DataObject) -> None:
    """Tensors in give tensors out and numpy in gives numpy out (faiss's convention), same values."""
    as_tensor = data.draw(st.booleans())
    convert = torch.from_numpy if as_tensor else np.asarray
    options = {key: (convert(v) if isinstance(v, np.ndarray) else v) for key, v in case.options.items()}
    s, i = reciprocal_topk(
        convert(case.pref), convert(case.bias), convert(case.looks), case.k, device="cpu", **options
    )
    kind = torch.Tensor if as_tensor else np.ndarray
    assert isinstance(s, kind) and isinstance(i, kind)
    check(case, np.asarray(s), np.asarray(i))


# --------------------------------------------------------------------------- larger examples


@pytest.mark.parametrize("combine", COMBINES)
def test_larger_problem_with_pruning(engine: str, combine: str) -> None:
    """Hundreds of users over many blocks, so the cutoffs really prune."""
    rng = np.random.default_rng(7)
    n, d = 700, 12
    case = Case(
        rng.standard_normal((n, d)) * 0.8,
        rng.standard_normal(n) * 0.5,
        rng.standard_normal((n, d)),
        k=15,
        combine=combine,
        group=rng.integers(0, 3, n),
        seeks=rng.integers(1, 8, n),
        exclude=rng.integers(0, n, (2, 2000)),
        block_size=96,
    )
    check(case, *run(case))


def test_compiled_torch_engine_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch engine with its torch.compile'd pass (eager if compiling fails) is exact too."""
    monkeypatch.setattr(scoring_api, "load_kernel", lambda: None)
    monkeypatch.setattr(torch_engine, "_COMPILE_PAIRS", 1)
    rng = np.random.default_rng(3)
    n, d = 300, 8
    case = Case(rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal((n, d)), k=10, block_size=64)
    check(case, *run(case))


def test_k_larger_than_everyone_pads() -> None:
    rng = np.random.default_rng(0)
    case = Case(rng.standard_normal((5, 3)), rng.standard_normal(5), rng.standard_normal((5, 3)), k=9)
    scores, indices = run(case)
    check(case, scores, indices)
    assert (indices[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()


def test_nobody_eligible_gives_only_padding() -> None:
    rng = np.random.default_rng(1)
    n = 6
    case = Case(
        rng.standard_normal((n, 2)),
        rng.standard_normal(n),
        rng.standard_normal((n, 2)),
        k=3,
        group=np.zeros(n, dtype=np.int64),
        seeks=np.full(n, 2, dtype=np.int64),  # everyone seeks group 1, nobody is in it
    )
    scores, indices = run(case)
    assert (indices == -1).all() and np.isneginf(scores).all()


def test_uint64_seeks_with_the_top_bit() -> None:
    rng = np.random.default_rng(2)
    n = 8
    group = np.array([63, 63, 0, 0, 63, 0, 63, 0])
    seeks = np.full(n, (1 << 63) | 1, dtype=np.uint64)
    case = Case(rng.standard_normal((n, 2)), rng.standard_normal(n), rng.standard_normal((n, 2)), k=7)
    scores, indices = reciprocal_topk(case.pref, case.bias, case.looks, case.k, group=group, seeks=seeks, device="cpu")
    check(Case(case.pref, case.bias, case.looks, case.k, group=group, seeks=seeks.view(np.int64)), scores, indices)
    assert (indices[:, :7] >= 0).all()


def test_empty_problem() -> None:
    scores, indices = reciprocal_topk(np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)), 4)
    assert scores.shape == (0, 4) and indices.shape == (0, 4)
    assert isinstance(scores, np.ndarray) and isinstance(indices, np.ndarray)
    scores_t, indices_t = reciprocal_topk(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3), 4)
    assert isinstance(scores_t, torch.Tensor) and isinstance(indices_t, torch.Tensor)


def test_leaves_matmul_precision_as_it_was() -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        rng = np.random.default_rng(4)
        case = Case(rng.standard_normal((20, 4)), rng.standard_normal(20), rng.standard_normal((20, 4)), k=5)
        check(case, *run(case))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# --------------------------------------------------------------------------- validation


def _valid() -> dict[str, object]:
    return {"pref": np.zeros((4, 2)), "bias": np.zeros(4), "looks": np.zeros((4, 2)), "k": 2}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": 2.0}, "k must be an int"),
        ({"k": True}, "k must be an int"),
        ({"pref": np.zeros(4)}, "pref must be 2-D"),
        ({"pref": np.zeros((4, 0)), "looks": np.zeros((4, 0))}, "at least one latent dimension"),
        ({"pref": [[0.0, 0.0]] * 4}, "pref must be a numpy array or a torch tensor"),
        ({"pref": np.full((4, 2), "a")}, "pref must be a numeric array"),
        ({"pref": np.full((4, 2), np.nan)}, "pref must be finite"),
        ({"bias": np.zeros(3)}, r"bias must have shape \(4,\)"),
        ({"bias": np.array([0.0, np.inf, 0.0, 0.0])}, "bias must be finite"),
        ({"looks": np.zeros((4, 3))}, r"looks must have shape \(4, 2\)"),
        ({"looks": np.ones((4, 2), dtype=bool)}, "looks must hold real numbers"),
        ({"pref": np.full((4, 2), 1e20), "looks": np.full((4, 2), 1e20)}, "too large for float32"),
        ({"combine": "mean"}, "combine must be one of harmonic, geometric, min, product; got 'mean'"),
        ({"group": np.zeros(4, dtype=np.int64)}, "group and seeks must be given together"),
        ({"seeks": np.zeros(4, dtype=np.int64)}, "group and seeks must be given together"),
        ({"group": np.array([0, 1, 64, 0]), "seeks": np.ones(4, dtype=np.int64)}, r"\[0, 63\], got 64"),
        ({"group": np.array([0, -1, 0, 0]), "seeks": np.ones(4, dtype=np.int64)}, r"\[0, 63\], got -1"),
        ({"group": np.zeros(4), "seeks": np.ones(4, dtype=np.int64)}, "group must hold integers"),
        ({"group": np.zeros(3, dtype=np.int64), "seeks": np.ones(3, dtype=np.int64)}, "group must have shape"),
        ({"exclude": np.zeros((3, 2), dtype=np.int64)}, r"exclude must have shape \(2, m\)"),
        ({"exclude": np.array([[0], [4]])}, r"user index 4, outside \[0, 4\)"),
        ({"exclude": np.array([[-1], [0]])}, r"user index -1, outside \[0, 4\)"),
        ({"block_size": 0}, "block_size must be >= 1"),
        ({"block_size": 2.5}, "block_size must be a positive int"),
        ({"device": "tpu"}, "device must be None, 'cpu' or 'cuda"),
    ],
)
def test_rejects_bad_input(change: dict[str, object], message: str) -> None:
    args = {**_valid(), **change}
    with pytest.raises(ValueError, match=message):
        reciprocal_topk(**args)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_rejects_cuda_without_a_gpu() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        reciprocal_topk(**_valid(), device="cuda")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("combine", COMBINES)
def test_cuda_agrees_with_cpu(combine: str) -> None:
    rng = np.random.default_rng(11)
    n, d = 3000, 24
    case = Case(
        rng.standard_normal((n, d)) * 0.5,
        rng.standard_normal(n) * 0.5,
        rng.standard_normal((n, d)),
        k=20,
        combine=combine,
        group=rng.integers(0, 4, n),
        seeks=rng.integers(1, 16, n),
        exclude=rng.integers(0, n, (2, 5000)),
        block_size=512,
    )
    cpu_s, cpu_i = run(case)
    gpu_s, gpu_i = reciprocal_topk(case.pref, case.bias, case.looks, case.k, device="cuda", **case.options)
    check(case, gpu_s, gpu_i)
    np.testing.assert_allclose(gpu_s, cpu_s, rtol=2 * contract_rtol(case), atol=2.0**-126)
    # Outside near-ties both devices pick the same partners.
    assert (gpu_i == cpu_i).mean() > 0.99
    # CUDA tensors in, CUDA tensors out.
    cuda = {key: torch.as_tensor(getattr(case, key), device="cuda") for key in ("pref", "bias", "looks")}
    on_gpu = reciprocal_topk(cuda["pref"], cuda["bias"], cuda["looks"], case.k, device="cuda")
    assert all(t.device.type == "cuda" for t in on_gpu)


# --------------------------------------------------------------------------- block skipping


@st.composite
def grouped_cases(draw: st.DrawFn) -> Case:
    """Dyadic problems (exact logits, exact ties) with partitions that cannot meet.

    Each group seeks a random set of groups (possibly none, possibly one nobody else is in),
    users deviate from their group's mask at random, and blocks are small.
    """
    n = draw(st.integers(2, 60))
    d = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pref = rng.integers(-2, 3, (n, d)) / 2.0
    looks = rng.integers(-2, 3, (n, d)) / 2.0
    bias = rng.integers(-4, 5, n) / 4.0
    dup = rng.integers(0, n, n // 3)
    pref[: len(dup)], looks[: len(dup)], bias[: len(dup)] = pref[dup], looks[dup], bias[dup]
    groups = draw(st.integers(1, 6))
    group = rng.integers(0, groups, n) * 9  # spread over the 64 bits
    masks = rng.integers(0, 2, (groups, groups)).astype(np.uint64)
    bits = np.uint64(1) << (np.arange(groups, dtype=np.uint64) * np.uint64(9))
    per_group = (masks * bits[None, :]).sum(axis=1, dtype=np.uint64)
    seeks = per_group[group // 9]
    odd = rng.random(n) < draw(st.sampled_from([0.0, 0.1]))
    seeks[odd] = rng.integers(0, 2**62, int(odd.sum()), dtype=np.uint64)
    exclude = rng.integers(0, n, (2, draw(st.integers(0, n)))) if draw(st.booleans()) else None
    k = draw(st.integers(1, n + 2))
    block = draw(st.integers(1, 9))
    combine = draw(st.sampled_from(COMBINES))
    return Case(pref, bias, looks, k, combine, group, seeks.view(np.int64), exclude, block)


def _no_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Score in the caller's order and visit every block pair, as before block skipping."""

    def every_pair(slot: torch.Tensor, sought: torch.Tensor, block: int) -> torch.Tensor:
        nb = -(-slot.numel() // block)
        return torch.ones(nb, nb, dtype=torch.bool)

    monkeypatch.setattr(scoring_api, "group_order", lambda slot: torch.arange(slot.numel()))
    monkeypatch.setattr(scoring_api, "meeting_blocks", every_pair)


@settings(max_examples=150, deadline=None, suppress_health_check=_QUIET)
@given(case=grouped_cases())
def test_skipping_blocks_changes_nothing(engine: str, case: Case) -> None:
    """Group order and skipped block pairs give bit for bit the result of scoring everything.

    The torch engine scores what it found after every block pair here, so that rows meet
    candidates tying their k-th score out of index order.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_engine, "_FLUSH_CHUNKS", 1)
        scores, indices = run(case)
        _no_skipping(patch)
        plain_s, plain_i = run(case)
    check(case, scores, indices)
    np.testing.assert_array_equal(indices, plain_i)
    np.testing.assert_array_equal(scores, plain_s)


@settings(max_examples=100, deadline=None, suppress_health_check=_QUIET)
@given(case=grouped_cases())
def test_pairs_skipped_counts_only_ineligible_pairs(case: Case) -> None:
    """The reported share is the share of pairs in skipped block pairs, all of them ineligible."""
    n, block = case.n, min(case.block_size, case.n)
    share = pairs_skipped(case.group, case.seeks, block_size=case.block_size, device="cpu")
    order = np.argsort(case.group, kind="stable")
    bits = case.seeks.view(np.uint64)[order]
    group = case.group[order].astype(np.uint64)
    blocks = np.arange(n) // block
    nb = int(blocks[-1]) + 1
    have = [np.bitwise_or.reduce(np.uint64(1) << group[blocks == b]) for b in range(nb)]
    seek = [np.bitwise_or.reduce(bits[blocks == b]) for b in range(nb)]
    skipped = 0
    wants = ((bits[:, None] >> group[None, :]) & np.uint64(1)) == 1
    for bi in range(nb):
        for bj in range(nb):
            if seek[bi] & have[bj] and seek[bj] & have[bi]:
                continue
            rows, cols = blocks == bi, blocks == bj
            cell = (wants & wants.T)[np.ix_(rows, cols)]
            assert not cell.any()
            skipped += int(rows.sum()) * int(cols.sum()) - (int(rows.sum()) if bi == bj else 0)
    assert share == pytest.approx(skipped / (n * (n - 1)))


def test_two_groups_seeking_each_other_skip_their_own() -> None:
    """Two shuffled groups that only seek each other: the pairs inside each group are skipped."""
    rng = np.random.default_rng(5)
    group = np.repeat([0, 1], 20)
    rng.shuffle(group)
    seeks = np.where(group == 0, 2, 1)
    assert pairs_skipped(group, seeks, block_size=10) == pytest.approx(2 * 20 * 19 / (40 * 39))
    assert pairs_skipped(group, seeks, block_size=40) == 0.0
    assert pairs_skipped(np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64)) == 0.0


def test_a_kernel_built_from_older_sources_is_refused() -> None:
    """A stale build (another ``state_t`` layout) must not be called: the torch engine serves."""
    import ctypes

    from engine.scoring._native import _bind

    with pytest.raises(OSError, match="predates"):
        _bind(ctypes.CDLL(None))  # this process's own symbols: no kernel_abi
