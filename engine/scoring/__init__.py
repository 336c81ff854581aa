"""Reciprocal top-k candidates for every user, scored both ways, in blocks.

User ``i`` likes user ``j`` with the one-way probability

    p[i, j] = sigmoid(pref[i] . looks[j] + bias[i])

and the pair's reciprocal score is ``s[i, j] = combine(p[i, j], p[j, i])`` (harmonic mean by
default, so a pair only scores well when *both* sides are likely to like each other).
:func:`reciprocal_topk` returns each user's ``k`` best mutually eligible partners without ever
holding the ``n x n`` score matrix: memory is ``O(n k + B^2)`` for blocks of ``B`` users.

How it stays fast
-----------------
* **One product serves both directions.** For a block pair ``(I, J)`` with ``J >= I`` two GEMMs
  give ``x = logit p[I, J]`` and ``y = logit p[J, I]`` laid out the same way; rows ``I`` read
  them along their rows and rows ``J`` down their columns, so every pair's two logits are
  computed once: the multiply work of a one-directional exact search.
* **Eligibility lives in the GEMM.** Group filters are extra coordinates: a pair that is not
  mutually sought gets a logit near ``-2**100`` and can never be a candidate.
* **Skip what cannot meet.** With groups, users are scored in group order (a stable
  permutation; keys carry the caller's indices, so results and ties are unchanged) and a block
  pair is never computed when one block's users seek none of the other's groups, in either
  direction. :func:`pairs_skipped` gives the share of pairs a call skips, for reports.
* **Prune before scoring.** Every combine is increasing in both probabilities, so ``s > t``
  holds exactly when a per-combine statistic ``T`` of ``u = exp(-x)``, ``v = exp(-y)`` stays
  below a cutoff ``T_t``. A cheap exp-free lower bound on ``log T`` (tangents under the
  softplus, at most ``TANGENT_GAP`` short) is compared against each row's cutoff, which rises with the row's
  running ``k``-th best score; only survivors are scored exactly.
* **Seeded cutoffs.** A row whose list is not full yet takes a cutoff from the block in hand:
  of its ``k + e`` smallest statistics (``e`` = its excluded partners) at least ``k`` belong to
  real candidates, and each of those scores at least what the largest of them implies. The C
  engine meets every row's own diagonal block first and seeds there.
* **Two engines, same contract.** On the CPU a small C kernel (``_native.c``, built when the
  package is installed, so no compiler is needed at run time) fuses the statistic, the cutoff
  test, exact scoring and the per-row top-k insert into one pass per direction, threads over
  rows, and lets every row's cutoff rise entry by entry. On CUDA (or if the kernel was not
  built) the same arithmetic runs as torch operations: a ``torch.compile``-fused pass computes
  chunk minima of the statistic, surviving chunks are scored in batches and merged into
  per-row lists.

Precision and ties
------------------
Products run in float32 (TF32 and bfloat16 shortcuts are switched off for the call). Each
candidate's score is evaluated in float64 from its two float32 logits and rounded once to
float32, so equal logits always give equal scores wherever they sit. Against a float64
reference every score has relative error at most ``2 * delta + 2**-23``, where ``delta`` bounds
the float32 logit error: ``delta <= (d + 3) * 2**-24 * (|pref_i| |looks_j| + |b_i|)`` for the
pair (input rounding plus the dot product; the log of every combine moves by at most the sum of
the two logit errors). Each row is ordered by ``(score desc, index asc)`` on those float32
scores, so exact ties go to the lower index. Hence, for every row and every ``r``, the first
``r`` indices are, as a set, the float64 reference's first ``r`` whenever the reference's
``r``-th and ``(r + 1)``-th scores differ by more than twice that relative error; inside closer
near-ties the order may differ from the reference's. Pruning is exact: a
pair is dropped only when its score provably cannot enter the row's top ``k``.

Layout: ``_api`` (the public functions, validation, eligibility as GEMM columns), ``_blocks``
(group order and the block pairs that may meet), ``_bounds``
(score arithmetic and pruning bounds both engines share), ``_native`` with ``_native.c`` (the
CPU engine), ``_torch`` (the torch engine).
"""

from engine.scoring._api import cores_given, cpu_threads, pairs_skipped, reciprocal_topk, scoring_backend
from engine.scoring._bounds import COMBINES

__all__ = ["COMBINES", "cores_given", "cpu_threads", "pairs_skipped", "reciprocal_topk", "scoring_backend"]
