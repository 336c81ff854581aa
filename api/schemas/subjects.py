"""Export bundles, deletion proofs and the population privacy budget."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DeletionProof", "ExportBundle", "PopulationBudget", "PopulationModelBudget", "PopulationModelRelease"]


class ExportBundle(BaseModel):
    format: str
    generated_at: str
    user_id: uuid.UUID
    tables: dict[str, list[dict[str, Any]]] = Field(
        description="Every row the user owns, decrypted (not other people's rows that name them: docs/privacy.md)"
    )
    rated_faces: dict[str, list[float]] = Field(description="Latents of the faces the ratings refer to")
    audit_entries: list[dict[str, Any]]


class DeletionProof(BaseModel):
    user_id: uuid.UUID
    clean: bool = Field(description="True when no row in any table references the user")
    references: dict[str, int] = Field(description="Rows per table.column that reference the user")


class PopulationModelRelease(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    created_at: datetime
    mechanism: str
    epsilon: float = Field(description="This release alone, under adding or removing one user's whole history")
    delta: float
    n_users: int = Field(description="Users with ratings it was trained on (exact: operator metadata, not private)")
    noise_multiplier: float = Field(description="DP-SGD noise standard deviation over the clipping norm")
    sample_rate: float = Field(description="Probability that a user is in a step's batch (Poisson sampling)")
    steps: int
    max_grad_norm: float = Field(description="Clipping norm of each user's gradient")


class PopulationModelBudget(BaseModel):
    """The population model's ledger: releases compose in Renyi DP, read at one delta."""

    model_config = ConfigDict(from_attributes=True)

    neighbouring: str = Field(description="add-remove-user: one user's whole rating history present or absent")
    epsilon_per_release: float
    epsilon_cap: float = Field(description="No release may take the composed epsilon past this")
    epsilon_spent: float = Field(description="All releases so far, composed (RDP), at `delta`")
    delta: float = Field(description="The deployment's delta, at which the composed epsilon is read")
    releases: list[PopulationModelRelease] = Field(description="Every release, oldest first")


class PopulationBudget(BaseModel):
    mechanism: str
    epsilon_per_release: float
    delta_per_release: float
    epsilon_cap: float
    users: int = Field(description="Users with at least one spend")
    users_at_cap: int
    per_mechanism: dict[str, dict[str, float]]
    spent_quantiles: dict[str, float] = Field(description="Distribution of users' worst-case epsilon")
    population_model: PopulationModelBudget = Field(description="User-level DP releases of the population model")
