"""One private fit exactly as the service does it, for every mechanism the service offers.

``fit_private`` takes the TRUE labels and applies the mechanism itself, so audits and benchmarks
exercise the same code path as the service:

``"randomized_response"`` (default)
    randomized response on each label, then :func:`fit_noisy` (pure eps, ``LABEL_CHANGE``). The
    service privatises at rating time with fresh OS randomness and refits from the stored bits;
    here the uniforms come from ``rng``. The same :meth:`RandomizedResponse.privatise` runs.
``"objective_perturbation"``
    objective perturbation (pure eps per release, ``REPLACE_ONE``).
``"dpsgd"``
    DP-SGD through Opacus on the logistic model ((eps, delta), ``ADD_REMOVE_ONE``, delta > 0).
``"none"``
    the non-private fit of the same learner; the benchmark's baseline, refused by the service.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine._validation import InvalidInputError, check_rng
from engine._opacus import seeded_opacus
from engine.latent.base import PRIOR_BOUND
from engine.preference._model import PreferenceModel
from engine.preference._noisy import check_labels, check_latents
from engine.preference._posterior import PreferencePrior, fit_noisy
from engine.preference._solver import minimise
from privacy.accounting import RDPAccountant, calibrate_noise_multiplier
from privacy.mechanisms import (
    ADD_REMOVE_ONE,
    LABEL_CHANGE,
    Guarantee,
    RandomizedResponse,
    check_epsilon,
    objective_perturbation,
)

__all__ = [
    "DPSGD_EPOCHS",
    "DPSGD_MAX_GRAD_NORM",
    "DPSGD_SAMPLE_RATE",
    "MECHANISMS",
    "OBJECTIVE_NOISE_SHARE",
    "SERVICE_MECHANISMS",
    "fit_private",
    "mechanism_guarantee",
]

#: Mechanisms the service may use for a user's model.
SERVICE_MECHANISMS: tuple[str, ...] = ("randomized_response", "objective_perturbation", "dpsgd")
#: Everything :func:`fit_private` accepts; ``"none"`` only for the non-private benchmark baseline.
MECHANISMS: tuple[str, ...] = (*SERVICE_MECHANISMS, "none")

#: Objective perturbation spends this share of epsilon on the noise (``epsilon' = 0.9 epsilon``)
#: and the rest on the regulariser it forces: the best of the shares tried, at few ratings and
#: at many (docs/benchmarks.md, "Engine tuning").
OBJECTIVE_NOISE_SHARE: float = 0.9

#: DP-SGD schedule: full-batch steps (Poisson sampling at rate 1, so every rating is in every
#: step and the RDP of each step is the Gaussian mechanism's closed form, alpha / (2 sigma^2)).
#: A user has tens to hundreds of ratings: subsampling would buy little amplification, and
#: calibrating the noise for subsampled steps (numerical RDP) costs seconds per fit. Three
#: full-batch steps at learning rate 0.5 are as accurate as more (docs/benchmarks.md).
DPSGD_SAMPLE_RATE: float = 1.0
DPSGD_EPOCHS: int = 3
DPSGD_MAX_GRAD_NORM: float = 1.0
_DPSGD_LEARNING_RATE: float = 0.5


def mechanism_guarantee(mechanism: str, *, epsilon: float, delta: float) -> Guarantee:
    """What one :func:`fit_private` release with these arguments claims; the ledger records it.

    Raises
    ------
    InvalidInputError
        For an unknown mechanism, ``epsilon <= 0``, ``delta`` outside ``[0, 1)``, an infinite
        epsilon for ``"objective_perturbation"``/``"dpsgd"``, or ``delta == 0`` for ``"dpsgd"``.
    """
    if mechanism not in MECHANISMS:
        raise InvalidInputError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    eps = check_epsilon(epsilon)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta < 1.0:
        raise InvalidInputError(f"delta must be in [0, 1), got {delta!r}")
    if mechanism == "randomized_response":
        return RandomizedResponse(epsilon=eps).guarantee
    if mechanism == "objective_perturbation":
        return objective_perturbation.guarantee(eps)
    if mechanism == "dpsgd":
        if not math.isfinite(eps):
            raise InvalidInputError(f"epsilon must be finite for dpsgd, got {epsilon!r}")
        if delta <= 0:
            raise InvalidInputError(f"delta must be > 0 for dpsgd (Gaussian noise is not pure DP), got {delta!r}")
        return Guarantee(epsilon=eps, delta=float(delta), neighbouring=ADD_REMOVE_ONE, mechanism="dpsgd")
    return Guarantee(epsilon=math.inf, delta=0.0, neighbouring=LABEL_CHANGE, mechanism="none")


def _fit_objective(z: np.ndarray, s: np.ndarray, *, epsilon: float, rng: np.random.Generator) -> PreferenceModel:
    """Objective perturbation (Chaudhuri et al. 2011, Algorithm 2) with the scaled features."""
    n, d = z.shape
    X = objective_perturbation.unit_ball_features(z, coordinate_bound=PRIOR_BOUND)
    scale = objective_perturbation.feature_scale(d, coordinate_bound=PRIOR_BOUND)
    l2 = objective_perturbation.l2_for_noise_share(epsilon=epsilon, n=n, noise_share=OBJECTIVE_NOISE_SHARE)
    params = objective_perturbation.perturbation_parameters(epsilon=epsilon, n=n, l2=l2)
    noise = objective_perturbation.sample_noise(d + 1, epsilon_prime=params.epsilon_prime, rng=rng)
    # n times the paper's objective: sum of losses + (n (Lambda + Delta) / 2) ||f||^2 + b . f.
    f, _ = minimise(X, s, linear=noise, penalty=np.full(d + 1, n * params.total_l2))
    return PreferenceModel(coef=f[:-1] / scale, intercept=float(f[-1] / scale))


def _fit_dpsgd(
    z: np.ndarray, s: np.ndarray, *, epsilon: float, delta: float, rng: np.random.Generator
) -> PreferenceModel:
    """DP-SGD on ``sigmoid(w . z + b)`` through Opacus, noise calibrated by RDP accounting.

    torch and Opacus are imported here, not at module level: they take seconds to import and
    only this mechanism needs them.
    """
    import torch
    from opacus import PrivacyEngine

    n, d = z.shape
    batch_size = max(1, math.ceil(n * DPSGD_SAMPLE_RATE))
    noise_seed, sampling_seed = (int(v) for v in rng.integers(0, 2**63 - 1, size=2))
    features = torch.as_tensor(z, dtype=torch.float32)
    targets = torch.as_tensor((s > 0).astype(np.float32)).unsqueeze(1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(features, targets),
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(sampling_seed),
    )
    sample_rate = 1.0 / len(loader)  # Opacus' own definition of the Poisson rate for this loader
    steps = DPSGD_EPOCHS * len(loader)
    sigma = calibrate_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps)
    module = torch.nn.Linear(d, 1)
    torch.nn.init.zeros_(module.weight)
    torch.nn.init.zeros_(module.bias)
    optimizer = torch.optim.SGD(module.parameters(), lr=_DPSGD_LEARNING_RATE)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    accountant = RDPAccountant()
    with seeded_opacus():
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        private_module, private_optimizer, private_loader = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=DPSGD_MAX_GRAD_NORM,
            poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(noise_seed),
        )
        for _ in range(DPSGD_EPOCHS):
            for batch_features, batch_targets in private_loader:
                private_optimizer.zero_grad()
                loss_fn(private_module(batch_features), batch_targets).backward()
                private_optimizer.step()
                accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
    spent = accountant.get_epsilon(delta)
    if spent > epsilon:  # only if the loader ran more steps than the noise was calibrated for
        raise RuntimeError(f"DP-SGD spent epsilon={spent} in {len(accountant)} steps, over its target {epsilon}")
    weight = module.weight.detach().double().numpy().ravel()
    return PreferenceModel(coef=weight, intercept=float(module.bias.detach().double().item()))


def fit_private(
    Z: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epsilon: float,
    delta: float = 0.0,
    mechanism: str = "randomized_response",
    rng: np.random.Generator | None = None,
    public_negatives: npt.ArrayLike | None = None,
    prior: PreferencePrior | None = None,
) -> PreferenceModel:
    """Fit the released preference model from TRUE labels through a privacy mechanism.

    Parameters
    ----------
    Z : array_like, shape (n, d)
        Latents of the rated faces (public).
    y : array_like of bool or {0, 1}, shape (n,)
        True answers, 1 = like. Only the mechanism sees them.
    epsilon : float
        Privacy parameter, ``> 0``; ``math.inf`` is allowed for ``"randomized_response"`` (no noise, benchmark
        only) and ignored for ``"none"``.
    delta : float
        ``> 0`` for ``"dpsgd"``; the pure mechanisms claim ``delta = 0`` whatever is passed.
    mechanism : str
        One of :data:`MECHANISMS` (module docstring).
    rng : numpy.random.Generator, optional
        Source of the mechanism's randomness; a fresh OS-seeded generator when omitted.
    public_negatives : array_like, shape (m, d), optional
        Latents known to be negatives without asking (the safety region). They are public, so
        they enter every learner as clean, unprivatised examples.
    prior : PreferencePrior, optional
        Gaussian prior over ``[w, b]`` for ``"randomized_response"`` and ``"none"`` (e.g. the population model's);
        the isotropic default when omitted. Using it is post-processing of that release, whose own
        (user-level) guarantee is accounted separately; this release's guarantee is unchanged.
        ``"objective_perturbation"`` and ``"dpsgd"`` have no prior and refuse one.

    Returns
    -------
    PreferenceModel
        The release; :func:`mechanism_guarantee` with the same arguments states its guarantee.
        For ``"randomized_response"`` and ``"none"`` its like-probability is calibrated (see :func:`fit_noisy`).
        ``"objective_perturbation"`` and ``"dpsgd"`` release their private fit as it is: calibrating it would
        spend more budget, and with tens of ratings it is dominated by the noise anyway.
    """
    guarantee = mechanism_guarantee(mechanism, epsilon=epsilon, delta=delta)
    if prior is not None and mechanism not in ("randomized_response", "none"):
        raise InvalidInputError(f"prior is only used by the 'randomized_response' and 'none' learners, not {mechanism!r}")
    z = check_latents(Z)
    labels = check_labels(y, z.shape[0])
    rng = np.random.default_rng() if rng is None else check_rng(rng)
    negatives = (
        None if public_negatives is None else check_latents(public_negatives, name="public_negatives", dim=z.shape[1])
    )
    if mechanism == "randomized_response":
        rr = RandomizedResponse(epsilon=guarantee.epsilon)
        private = rr.privatise(labels, rng.random(labels.size))
        return fit_noisy(z, private, flip_probability=rr.flip_probability, public_negatives=negatives, prior=prior)
    if mechanism == "none":
        return fit_noisy(z, labels, flip_probability=0.0, public_negatives=negatives, prior=prior)
    s = np.where(labels, 1.0, -1.0)
    if negatives is not None:
        z = np.vstack([z, negatives])
        s = np.concatenate([s, -np.ones(negatives.shape[0])])
    if mechanism == "objective_perturbation":
        return _fit_objective(z, s, epsilon=guarantee.epsilon, rng=rng)
    return _fit_dpsgd(z, s, epsilon=guarantee.epsilon, delta=guarantee.delta, rng=rng)
