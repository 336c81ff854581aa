"""Every user value stored encrypted, and how it is sealed and opened: the one place that knows.

Each value is sealed with its owner's data key (:class:`matchsvc.keys.UserCipher`); the associated
data binds table, column and a row tag, so a ciphertext copied to another column, row or user
does not open. The bindings below are part of the stored format: changing one makes every stored
value of that column unreadable.

===================================  ==========================  ===========================
column                               row tag                     plaintext
===================================  ==========================  ===========================
``ratings.label_ct``                 the face id                 ``b"\\x01"`` like, ``b"\\x00"`` pass
``preference_states.state_ct``       ``current``                 JSON state (below)
``appearances.latent_ct``            ``current``                 :func:`privacy.codec.encode_floats`
``profiles.filters_ct``              ``current``                 :meth:`Filters.to_state`, JSON
``decisions.choice_ct``              the target user's id        ``b"like"`` or ``b"pass"``
===================================  ==========================  ===========================

The preference state is a JSON object with a ``kind``. ``posterior`` states hold a
:class:`Belief`; version 1 ``online`` states (written before the posterior existed) hold the
noise-corrected fit and are still read as a belief without a persona mix; ``released`` states (a
release-time mechanism's model) hold the model only. :func:`decode_state` reads them all.

Version 3 (written today) packs a belief's arrays: each posterior's mean and the upper triangle of
its covariance (row by row; the covariance is exactly symmetric), and the persona means (one
array, persona by persona), as :func:`privacy.codec.encode_floats` bytes in base64. Version 2
wrote them as JSON lists of decimal floats: about four times the bytes, every one of them
rewritten on every rating, and most of the state's parse and encode time (D43). Version 2
states are still read, to the same values.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from engine.population import PersonaPosterior
from engine.preference import DriftCheckpoint, OnlinePreference, Posterior, PreferenceModel
from matchsvc.keys import UserCipher
from matchsvc.services.filters import Filters
from privacy.codec import decode_floats, encode_floats

__all__ = [
    "LIKE",
    "PASS",
    "STATE_VERSION",
    "Belief",
    "PersonaMean",
    "PersonaMix",
    "SteppableState",
    "decode_state",
    "export_state",
    "open_choice",
    "open_filters",
    "open_label",
    "open_labels",
    "open_latent",
    "open_model",
    "open_state",
    "released_state",
    "seal_choice",
    "seal_filters",
    "seal_label",
    "seal_latent",
    "seal_state",
]

#: The version written today; versions 1 and 2 are still read (module docstring).
STATE_VERSION = 3
#: The two stored choices of a decision on a candidate.
LIKE, PASS = b"like", b"pass"


def seal_label(cipher: UserCipher, *, face_id: uuid.UUID, label: bool) -> bytes:
    """A rating's stored (already private) label."""
    return cipher.seal(b"\x01" if label else b"\x00", table="ratings", column="label", row=str(face_id))


def open_label(cipher: UserCipher, *, face_id: uuid.UUID, blob: bytes) -> bool:
    return cipher.open(blob, table="ratings", column="label", row=str(face_id)) == b"\x01"


def open_labels(cipher: UserCipher, *, face_ids: Sequence[uuid.UUID], blobs: Sequence[bytes]) -> np.ndarray:
    """:func:`open_label` of each ``(face_ids[i], blobs[i])``, as a boolean array (a refit opens them all)."""
    opened = cipher.open_column(blobs, table="ratings", column="label", rows=[str(face_id) for face_id in face_ids])
    return np.fromiter((plaintext == b"\x01" for plaintext in opened), dtype=bool, count=len(opened))


def seal_latent(cipher: UserCipher, latent: np.ndarray) -> bytes:
    """The user's appearance latent, shape ``(dim,)``."""
    return cipher.seal(encode_floats(latent), table="appearances", column="latent", row="current")


def open_latent(cipher: UserCipher, blob: bytes) -> np.ndarray:
    return decode_floats(cipher.open(blob, table="appearances", column="latent", row="current"))


def seal_filters(cipher: UserCipher, filters: Filters) -> bytes:
    plaintext = json.dumps(filters.to_state(), sort_keys=True).encode()
    return cipher.seal(plaintext, table="profiles", column="filters", row="current")


def open_filters(cipher: UserCipher, blob: bytes) -> Filters:
    return Filters.from_state(json.loads(cipher.open(blob, table="profiles", column="filters", row="current")))


def seal_choice(cipher: UserCipher, *, target_id: uuid.UUID, choice: bytes) -> bytes:
    """A decision on candidate ``target_id``: :data:`LIKE` or :data:`PASS`."""
    return cipher.seal(choice, table="decisions", column="choice", row=str(target_id))


def open_choice(cipher: UserCipher, *, target_id: uuid.UUID, blob: bytes) -> bytes:
    return cipher.open(blob, table="decisions", column="choice", row=str(target_id))


def seal_state(cipher: UserCipher, state: dict[str, Any]) -> bytes:
    """A preference state (:meth:`Belief.to_state` or :func:`released_state`).

    Encoded with orjson: the rating path writes one on every rating, and the standard library's
    float formatting made JSON the largest part of it (docs/decisions.md D39). The text is the same
    JSON (shortest round-tripping floats), so states written either way read the same.
    """
    return cipher.seal(orjson.dumps(state), table="preference_states", column="state", row="current")


def open_state(cipher: UserCipher, blob: bytes) -> dict[str, Any]:
    return orjson.loads(cipher.open(blob, table="preference_states", column="state", row="current"))


def _packed(values: np.ndarray) -> str:
    return base64.b64encode(encode_floats(values)).decode("ascii")


def _unpacked(text: str) -> np.ndarray:
    return decode_floats(base64.b64decode(text))


@functools.lru_cache(maxsize=8)
def _upper_triangle(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(size)


def _pack_posterior(posterior: Posterior) -> dict[str, Any]:
    evidence = None if math.isnan(posterior.log_evidence) else posterior.log_evidence
    upper = posterior.covariance[_upper_triangle(posterior.mean.size)]
    return {"mean": _packed(posterior.mean), "covariance": _packed(upper), "log_evidence": evidence}


def _unpack_posterior(state: dict[str, Any]) -> Posterior:
    """Inverse of :func:`_pack_posterior` (``ValueError`` on one it did not write)."""
    mean, upper = _unpacked(state["mean"]), _unpacked(state["covariance"])
    rows, cols = _upper_triangle(mean.size)
    if upper.size != rows.size:
        raise ValueError(f"a covariance of size {mean.size} has {rows.size} stored values, got {upper.size}")
    covariance = np.empty((mean.size, mean.size))
    covariance[rows, cols] = upper
    covariance[cols, rows] = upper
    evidence = state["log_evidence"]
    return Posterior(mean=mean, covariance=covariance, log_evidence=math.nan if evidence is None else evidence)


@dataclass(frozen=True)
class PersonaMean:
    """The user's posterior mean of ``theta = [w, b]`` within one persona, shape ``(d + 1,)``."""

    mean: np.ndarray


@dataclass(frozen=True)
class PersonaMix:
    """The user's posterior over the personas of a population release, as of the last exact refit.

    What :func:`engine.sampling.next_batch` reads as ``personas`` (``responsibilities`` and each
    component's ``mean``); the within-persona covariances are not kept.
    """

    responsibilities: np.ndarray
    components: tuple[PersonaMean, ...]

    @classmethod
    def of(cls, fitted: PersonaPosterior) -> PersonaMix:
        return cls(
            responsibilities=np.array(fitted.responsibilities),
            components=tuple(PersonaMean(mean=np.array(c.mean)) for c in fitted.components),
        )


@dataclass(frozen=True)
class Belief:
    """What the service knows about a user's preference (:mod:`matchsvc.services.preferences`)."""

    posterior: Posterior
    personas: PersonaMix | None
    population_version: int | None
    drift_detected: bool
    #: Where the next exact refit's drift test resumes (:class:`engine.preference.DriftCheckpoint`).
    drift_checkpoint: DriftCheckpoint | None = None

    def to_state(self) -> dict[str, Any]:
        personas = None
        if self.personas is not None:
            personas = {
                "responsibilities": self.personas.responsibilities.tolist(),
                "means": _packed(np.concatenate([component.mean for component in self.personas.components])),
            }
        checkpoint = self.drift_checkpoint
        return {
            "version": STATE_VERSION,
            "kind": "posterior",
            "posterior": _pack_posterior(self.posterior),
            "personas": personas,
            "population_version": self.population_version,
            "drift_detected": self.drift_detected,
            "drift_checkpoint": None
            if checkpoint is None
            else {"posterior": _pack_posterior(checkpoint.posterior), "through": checkpoint.through, "digest": checkpoint.digest},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Belief:
        """A ``posterior`` state of version 3 or 2, or a version 1 ``online`` one (no persona mix)."""
        if state["version"] == 1:
            return cls(OnlinePreference.from_state(state["online"]).posterior, None, None, False)
        packed = state["version"] != 2  # version 2 held the arrays as JSON lists (module docstring)
        posterior_of = _unpack_posterior if packed else Posterior.from_state
        posterior = posterior_of(state["posterior"])
        personas = state["personas"]
        mix = None
        if personas is not None:
            means = personas["means"]
            rows = _unpacked(means).reshape(-1, posterior.mean.size) if packed else np.array(means, dtype=np.float64)
            mix = PersonaMix(
                responsibilities=np.array(personas["responsibilities"], dtype=np.float64),
                components=tuple(PersonaMean(mean=row) for row in rows),
            )
        checkpoint = state.get("drift_checkpoint")  # absent from the earliest version 2 states
        return cls(
            posterior=posterior,
            personas=mix,
            population_version=state["population_version"],
            drift_detected=bool(state["drift_detected"]),
            drift_checkpoint=None
            if checkpoint is None
            else DriftCheckpoint(posterior_of(checkpoint["posterior"]), int(checkpoint["through"]), str(checkpoint["digest"])),
        )


@dataclass(frozen=True)
class SteppableState:
    """A posterior state opened for one online step: the posterior parsed, the rest kept as stored.

    The rating path opens and rewrites a user's state on every rating, and a step changes only the
    posterior: the persona mix and the drift checkpoint are passed through, neither parsed nor
    re-encoded, and the released model is not derived (D40). :meth:`Belief.from_state` and
    :meth:`Belief.to_state` would give the same state.
    """

    #: A state of today's version (an older one as the state it is read as).
    state: dict[str, Any]
    posterior: Posterior
    #: Read from a version 1 state: never fitted against a population release.
    upgraded: bool

    @classmethod
    def of(cls, state: dict[str, Any]) -> SteppableState | None:
        """None for a ``released`` state, which has no posterior."""
        if state["kind"] == "released":
            return None
        if state["version"] != STATE_VERSION:
            belief = Belief.from_state(state)
            return cls(belief.to_state(), belief.posterior, upgraded=state["version"] == 1)
        return cls(state, _unpack_posterior(state["posterior"]), upgraded=False)

    def is_current(self, release_version: int | None) -> bool:
        """Fitted against population release ``release_version`` (None: no release yet)."""
        return not self.upgraded and self.state["population_version"] == release_version

    def stepped(self, posterior: Posterior) -> dict[str, Any]:
        """This state with ``posterior`` in place of its own."""
        return {**self.state, "posterior": _pack_posterior(posterior)}


def released_state(model: PreferenceModel) -> dict[str, Any]:
    """The state of a release-time mechanism's model: the model only, no belief."""
    return {"version": STATE_VERSION, "kind": "released", "model": model.to_vector().tolist()}


def decode_state(state: dict[str, Any]) -> tuple[PreferenceModel, Belief | None]:
    """The released model and, for a posterior state of either version, the belief."""
    if state["kind"] == "released":
        return PreferenceModel.from_vector(state["model"]), None
    belief = Belief.from_state(state)
    return belief.posterior.model(), belief


def open_model(cipher: UserCipher, blob: bytes) -> PreferenceModel:
    """The released model inside a sealed preference state (either version)."""
    return decode_state(open_state(cipher, blob))[0]


def export_state(cipher: UserCipher, blob: bytes) -> dict[str, Any]:
    """A sealed preference state for the data-subject export, either version.

    The released model (``coef``, ``intercept``) always; for a posterior state also the posterior
    (mean and covariance of ``[w, b]``), the persona shares, the user's mean within each persona,
    the population release version and the drift flag (empty or None where the state has none).
    """
    model, belief = decode_state(open_state(cipher, blob))
    out: dict[str, Any] = {"coef": model.coef.tolist(), "intercept": model.intercept}
    if belief is not None:
        personas = belief.personas
        out |= {
            "posterior_mean": belief.posterior.mean.tolist(),
            "posterior_covariance": belief.posterior.covariance.tolist(),
            "persona_shares": [] if personas is None else personas.responsibilities.tolist(),
            "persona_means": [] if personas is None else [c.mean.tolist() for c in personas.components],
            "population_version": belief.population_version,
            "drift_detected": belief.drift_detected,
        }
    return out
