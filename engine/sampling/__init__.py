"""Active-learning face feed: which faces a user is shown next.

The feed only ever sees public inputs: the latent space, the user's *released* preference model
or posterior (already private, so using them is post-processing and spends no budget), how many
faces the user has rated, the shared cache of already rendered faces, and public randomness. It
never reads raw ratings.

One entry point, :func:`next_batch`. With a Gaussian **posterior** over ``theta = [w, b]`` (the
service's normal case, :class:`engine.preference.Posterior`) it works in two phases:

* **Cold start** (fewer than ``FeedConfig.coldstart_ratings`` ratings, default 10): every slot is
  ``ADAPTIVE``, chosen by :func:`informative_indices`. A rating of face ``z`` (features
  ``x = [z, 1]``) adds ``I_rr(t) x x^T`` to the Laplace precision of ``theta``, where ``I_rr`` is
  the Fisher information of a *randomized-response* label about the logit ``t = mean . x``, so the
  posterior entropy drops by ``0.5 log(1 + I_rr(t) x^T S x)`` (``S`` the covariance). The
  product trades off the two things that make a question useful: ``x^T S x`` is large where the
  model is unsure (often far out along poorly known directions), ``I_rr`` is large where the
  answer is not a foregone conclusion (``t`` near 0); it is at most ``(1 - 2 rho)^2`` times the
  clean-label information for the flip rate ``rho`` the labels are stored with
  (``FeedConfig.flip_probability``), and falls off faster than it as ``|t|`` grows. A batch is
  chosen greedily, folding each pick into ``S`` (Sherman-Morrison): the batch's joint gain, a
  log-determinant, is monotone submodular, so greedy reaches at least ``1 - 1/e`` of the best
  batch's, and the faces of one batch do not ask the same question twice.
* **Learning**: a share ``exploit_fraction`` (70 %) of ``EXPLOIT`` faces, ranked by the posterior
  mean logit (the released model is that mean times a positive factor, so it ranks faces
  identically); when a persona posterior (:class:`engine.population.PersonaPosterior`) with at
  least two personas is given, a guaranteed share ``outside_persona_fraction`` (10 %) of
  ``OUTSIDE_PERSONA`` faces, those another persona likes most relative to the user's dominant
  one, ``max_{k != dom} sigmoid(mu_k . x) - sigmoid(mu_dom . x)``; the rest ``EXPLORE``, by
  :func:`informative_indices` again, with every other face of the batch already folded into
  ``S``. Information gain alone would not keep the outside faces: once the posterior sits inside
  one persona it calls faces only other personas like uninformative, and a change of taste would
  go unnoticed until the drift test had data to see it. Within the exploit and outside-persona
  shortlists (top ``shortlist_fraction`` by their score) the faces are again picked by
  information gain, not by distance: among faces the user probably likes, the ones that still
  teach the model (docs/benchmarks.md has the measurement against farthest-point picks).

Without a posterior (a caller with only a point estimate) the feed behaves as before:

* **Warm-up** (no released model yet, or fewer than ``FeedConfig.warmup_ratings`` ratings): every
  slot is ``SPREAD``. Faces are chosen by greedy farthest-point selection (Gonzalez's 2-approximate
  k-center) over a large prior sample and the cache, starting from a random face, so the first
  ratings cover the prior. Farthest-point selection leans towards the outskirts of the prior;
  for fitting a linear direction that is what an optimal design wants (extreme points pin the
  slope down best).
* **Learning**: ``EXPLOIT`` as above but ranked by the released model's score; ``EXPLORE`` faces
  from the candidates nearest its decision boundary (``p`` close to 0.5, where ``p(1 - p)``, the
  Bernoulli variance of the next rating, is largest: uncertainty sampling), the only honest
  informativeness measure a point estimate offers.

Without a posterior, exploit faces come from the top ``shortlist_fraction`` of candidates by
their score and are then picked by farthest-point selection against everything already in the
batch, which keeps the batch diverse.

Shared cached faces (already rendered, so cheap to serve) fill a share of every batch given by
:meth:`FeedConfig.cached_share`::

    share(n_rated) = floor + (start - floor) * 2 ** (-n_rated / half_life)

80 % for a new user by default, halving its distance to the 10 % floor every 40 ratings: a new
user's faces are mostly shared ones, and as the model firms up the feed moves to fresh faces
drawn for that user's direction. Cached slots are spread over the roles in proportion. Fractional
slot counts are rounded stochastically with ``rng`` so every share holds in expectation even for
tiny batches.

Safety: every candidate, fresh or cached, is passed through ``space.in_safety_region`` and
dropped if flagged, before any selection. A face in the safety region is never returned, however
strongly the model prefers that direction or however informative it would be. Repeated cache rows
count once, and the batch is shown in a random order so that a face's position says nothing about
its role.

Layout: ``_types`` (protocols, tuning, result), ``_pools`` (cache, slot plan, shortlists, shared
by both feeds), ``_design`` (the posterior feed and :func:`informative_indices`), ``_spread``
(the point-estimate feed and :func:`farthest_point_indices`), ``_feed`` (:func:`next_batch`).
"""

from engine.sampling._design import informative_indices
from engine.sampling._feed import next_batch
from engine.sampling._spread import farthest_point_indices
from engine.sampling._types import (
    MAX_BATCH_SIZE,
    FeedBatch,
    FeedConfig,
    PersonaView,
    PosteriorView,
    ReleasedModel,
    SlotRole,
    linear_params,
)

__all__ = [
    "MAX_BATCH_SIZE",
    "FeedBatch",
    "FeedConfig",
    "PersonaView",
    "PosteriorView",
    "ReleasedModel",
    "SlotRole",
    "farthest_point_indices",
    "informative_indices",
    "linear_params",
    "next_batch",
]
