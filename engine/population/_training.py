"""DP-SGD on the persona mixture through Opacus, with one example per user.

Likelihood. User ``u`` enters as the Gaussian approximation of their own likelihood over
``theta = [w, b]`` in information form, ``exp(h . theta - theta^T H theta / 2)``
(:func:`engine.preference.gaussian_likelihood`), and a persona is a Gaussian ``N(mu_k, C)`` with
a covariance ``C`` shared by all personas. The persona's marginal likelihood of the user has a
closed form (extreme deconvolution, Bovy, Hogg & Roweis 2011, in information form): with
``C = L L^T`` (Cholesky), ``M = I + L^T H L`` and ``g_k = h - H mu_k``,

    log Z_k = h . mu_k - mu_k^T H mu_k / 2 + |R^-1 L^T g_k|^2 / 2 - log|R|,    M = R R^T.

It follows from ``(C^-1 + H)^-1 = L M^-1 L^T`` and ``|C| |C^-1 + H| = |M|``. Only ``M`` is
factorised, never ``H``: ``M``'s eigenvalues are at least 1, so a singular ``H`` (fewer ratings
than dimensions) is as well conditioned as any other. ``M`` and ``R`` do not depend on the
persona, so a user costs one ``(d+1) x (d+1)`` Cholesky whatever the number of personas. The
user's loss is ``-log sum_k pi_k Z_k`` with ``pi = softmax(logits)``, and
``C = F F^T + diag(exp(2 s))``.

Within a persona, ``w`` and the intercept ``b`` are independent, as in
:class:`engine.preference.PreferencePrior` (which the personas become): ``F`` acts on ``w`` only,
the intercept keeps its own variance. Between personas the means still move ``w`` and ``b``
together.

Privacy. Each user is one example: the dataset is the stack of the users' ``(h, H)``. Opacus
computes each user's gradient (with the closed form :func:`_per_user_gradients`, registered as the
module's grad sampler), clips it to ``max_grad_norm``, adds Gaussian noise to the sum, and its
Poisson loader draws every user into each step independently with probability ``sample_rate``.
Its RDP accountant then bounds the release under adding or removing one user's whole history
(:data:`privacy.mechanisms.ADD_REMOVE_USER`). The loss is summed, not averaged, so no step
divides by the private number of users; Adam is invariant to that scale anyway. The starting
point is a fixed public constant (:func:`initial_parameters`): a data-dependent start would leak,
and a constant one leaves the sampling and the noise as the only randomness, the setting of both
the DP analysis and the canary audit.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import register_grad_sampler

from engine._opacus import LARGEST_ORDER_WARNING, seeded_opacus
from engine.preference import DEFAULT_L2, INTERCEPT_L2

__all__ = ["MixtureLikelihood", "TrainedMixture", "initial_parameters", "train"]

#: Seed of the public starting point; part of the algorithm, not of any release.
_INITIAL_SEED = 20_240_607
#: Starting persona means: ``w`` drawn at this fraction of the default prior's standard deviation,
#: the intercept 0. Personas that start close together split along the directions the users
#: pull them in; far-apart starts get stuck with one persona covering two clusters. On the
#: synthetic populations of the tests (4 populations x 2 fits, sample rate 1/20), the worst cosine
#: of a heavier persona (weight >= 0.2) with its match was 0.63 at 0.1, 0.27 at 0.3 and 0.41 at
#: 0.5; non-private full-batch fits from 0.1 found all four personas 12 times out of 12, from 1.0
#: 9 times. The intercepts start at 0: a random spread there made personas differ first in
#: like-rate rather than in taste.
_INITIAL_SPREAD = 0.1
#: Starting entries of the low-rank factor, relative to the prior's standard deviation. Not 0:
#: the gradient with respect to ``F`` is ``2 G F``, zero at ``F = 0``.
_INITIAL_FACTOR = 0.1


def initial_parameters(n_personas: int, dim: int, rank: int) -> dict[str, np.ndarray]:
    """The public starting point: the default isotropic prior, with persona means spread in ``w``.

    Returns
    -------
    dict
        ``means`` (K, d+1), ``logits`` (K,), ``factor`` (d, r), ``log_scale`` (d+1,).
    """
    rng = np.random.default_rng(_INITIAL_SEED)
    weight_sd = 1.0 / math.sqrt(DEFAULT_L2)
    means = np.zeros((n_personas, dim + 1))
    means[:, :-1] = _INITIAL_SPREAD * weight_sd * rng.standard_normal((n_personas, dim))
    return {
        "means": means,
        "logits": np.zeros(n_personas),
        "factor": _INITIAL_FACTOR * weight_sd * rng.standard_normal((dim, rank)),
        "log_scale": np.log(np.append(np.full(dim, weight_sd), 1.0 / math.sqrt(INTERCEPT_L2))),
    }


class _Terms(NamedTuple):
    """What a batch of users shares between the loss and its per-user gradients."""

    H: torch.Tensor  # (B, p, p)
    g: torch.Tensor  # (B, K, p): h - H mu_k
    L: torch.Tensor  # (p, p): Cholesky factor of C
    R: torch.Tensor  # (B, p, p): Cholesky factor of M = I + L^T H L
    log_z: torch.Tensor  # (B, K): log Z_k of each user


class MixtureLikelihood(torch.nn.Module):
    """Per-user negative log marginal likelihood under the persona mixture (module docstring).

    The parameters are the module's own (no sub-modules), so Opacus treats the whole model as
    one layer, whose per-user gradients :func:`_per_user_gradients` computes in closed form.
    """

    def __init__(self, initial: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.means = torch.nn.Parameter(torch.tensor(initial["means"], dtype=torch.float64))
        self.logits = torch.nn.Parameter(torch.tensor(initial["logits"], dtype=torch.float64))
        self.factor = torch.nn.Parameter(torch.tensor(initial["factor"], dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.tensor(initial["log_scale"], dtype=torch.float64))

    def full_factor(self) -> torch.Tensor:
        """``F`` with a zero row for the intercept, shape (d+1, r)."""
        return torch.cat([self.factor, self.factor.new_zeros(1, self.factor.shape[1])])

    def covariance(self) -> torch.Tensor:
        """The shared within-persona covariance ``F F^T + diag(exp(2 s))``."""
        factor = self.full_factor()
        return factor @ factor.T + torch.diag(torch.exp(2.0 * self.log_scale))

    def terms(self, h: torch.Tensor, H: torch.Tensor) -> _Terms:
        """The closed form of the module docstring for a batch, ``h`` (B, p) and ``H`` (B, p, p)."""
        L = torch.linalg.cholesky(self.covariance())
        R = torch.linalg.cholesky(torch.eye(h.shape[1], dtype=h.dtype) + L.T @ H @ L)
        H_mu = self.means @ H  # (B, K, p); H is symmetric
        g = h[:, None, :] - H_mu
        v = torch.linalg.solve_triangular(R, (g @ L).transpose(1, 2), upper=False)  # R^-1 L^T g_k, (B, p, K)
        log_det = torch.log(torch.diagonal(R, dim1=-2, dim2=-1)).sum(-1)
        log_z = h @ self.means.T - 0.5 * (H_mu * self.means).sum(-1) + 0.5 * (v * v).sum(1) - log_det[:, None]
        return _Terms(H=H, g=g, L=L, R=R, log_z=log_z)

    def forward(self, h: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """Loss of each user, shape (B,), from ``h`` (B, d+1) and ``H`` (B, d+1, d+1)."""
        log_z = self.terms(h, H).log_z
        return -torch.logsumexp(torch.log_softmax(self.logits, dim=0) + log_z, dim=1)


@register_grad_sampler(MixtureLikelihood)
def _per_user_gradients(
    layer: MixtureLikelihood, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Each user's gradient in closed form, Opacus' grad-sampler interface (module docstring).

    ``backprops`` is ``d total / d loss_u``, one per user (1 for the summed loss). With
    ``S = L M^-1 L^T`` the persona-``k`` posterior covariance of ``theta`` and
    ``a_k = g_k - H S g_k`` the mean of ``h - H theta`` under that posterior, Stein's and Price's
    identities give ``d log Z_k / d mu_k = a_k`` and ``d log Z_k / d C = (a_k a_k^T - W) / 2``
    with ``W = H - H S H``; all of it holds for a singular ``H``. Weighting by the
    responsibilities ``r_k`` gives the loss's gradient, and the chain rule through
    ``C = F F^T + diag(exp(2 s))`` and the softmax gives the parameters'. Opacus' own fallback,
    ``torch.func`` over the forward pass, gives the same numbers (to 1e-16) about four times
    slower (docs/benchmarks.md, "Engine tuning").
    """
    with torch.no_grad():
        t = layer.terms(*activations)
        root = torch.linalg.solve_triangular(t.R, t.L.T.expand_as(t.R), upper=False)  # R^-1 L^T
        S = root.transpose(1, 2) @ root
        SH = S @ t.H
        a = t.g - t.g @ SH  # rows g_k - H S g_k (H, S symmetric)
        W = t.H - t.H @ SH
        log_weights = torch.log_softmax(layer.logits, dim=0)
        r = torch.softmax(log_weights + t.log_z, dim=1)
        G = 0.5 * (W - (a * r[..., None]).transpose(1, 2) @ a)  # d loss_u / d C
        c = backprops.reshape(-1, 1)
        return {
            layer.means: -(c * r)[..., None] * a,
            layer.logits: c * (torch.exp(log_weights) - r),
            layer.factor: 2.0 * c[..., None] * (G @ layer.full_factor())[:, :-1, :],
            layer.log_scale: 2.0 * c * torch.exp(2.0 * layer.log_scale) * torch.diagonal(G, dim1=1, dim2=2),
        }


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch on one thread, then restore the previous count.

    Every tensor here is tiny (``(d+1) x (d+1)`` per user, batches of hundreds), far below the
    cost of waking torch's intra-op thread pool: one thread is several times faster
    (docs/benchmarks.md, "Engine tuning").
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class TrainedMixture:
    """The trained parameters in numpy, before post-processing, and what the accountant reports.

    ``factor`` has shape (d+1, r) with a zero last row; ``diagonal`` is ``exp(2 s)``.
    """

    means: np.ndarray
    logits: np.ndarray
    factor: np.ndarray
    diagonal: np.ndarray
    spent_epsilon: float
    accountant_steps: int


def train(
    h: np.ndarray,
    H: np.ndarray,
    *,
    n_personas: int,
    rank: int,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    max_grad_norm: float,
    learning_rate: float,
    delta: float,
    rng: np.random.Generator,
) -> TrainedMixture:
    """Run ``steps`` DP-SGD steps (Adam on the noisy clipped gradient) and read Opacus' accountant.

    ``h`` (n, d+1) and ``H`` (n, d+1, d+1) are float64, one row per user with ratings.

    ``sample_rate`` must be ``1 / m`` for an integer ``m`` (checked by the caller): Opacus' loader
    then runs ``m`` batches per epoch and its accountant uses exactly this rate.
    """
    noise_seed, sampling_seed = (int(v) for v in rng.integers(0, 2**63 - 1, size=2))
    module = MixtureLikelihood(initial_parameters(n_personas, h.shape[1] - 1, rank))
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    loader = DPDataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(h), torch.as_tensor(H)),
        sample_rate=sample_rate,
        generator=torch.Generator().manual_seed(sampling_seed),
    )
    with _single_threaded(), seeded_opacus(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LARGEST_ORDER_WARNING, category=UserWarning)
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        private_module, private_optimizer, private_loader = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            loss_reduction="sum",
            poisson_sampling=False,  # the loader already samples at exactly ``sample_rate``
            noise_generator=torch.Generator().manual_seed(noise_seed),
        )
        done = 0
        while done < steps:
            for batch_h, batch_H in private_loader:
                private_optimizer.zero_grad()
                private_module(batch_h, batch_H).sum().backward()
                private_optimizer.step()
                done += 1
                if done == steps:
                    break
        spent = float(engine.accountant.get_epsilon(delta))
    accountant_steps = sum(count for _, _, count in engine.accountant.history)
    with torch.no_grad():
        return TrainedMixture(
            means=module.means.detach().numpy().copy(),
            logits=module.logits.detach().numpy().copy(),
            factor=module.full_factor().numpy().copy(),
            diagonal=torch.exp(2.0 * module.log_scale).numpy().copy(),
            spent_epsilon=spent,
            accountant_steps=accountant_steps,
        )
