"""Export bundles, deletion proofs and the population privacy budget."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DeletionProof", "ExportBundle", "PopulationBudget"]


class ExportBundle(BaseModel):
    format: str
    generated_at: str
    user_id: uuid.UUID
    tables: dict[str, list[dict[str, Any]]] = Field(description="Every row referencing the user, decrypted")
    rated_faces: dict[str, list[float]] = Field(description="Latents of the faces the ratings refer to")
    audit_entries: list[dict[str, Any]]


class DeletionProof(BaseModel):
    user_id: uuid.UUID
    clean: bool = Field(description="True when no row in any table references the user")
    references: dict[str, int] = Field(description="Rows per table.column that reference the user")


class PopulationBudget(BaseModel):
    mechanism: str
    epsilon_per_release: float
    delta_per_release: float
    epsilon_cap: float
    users: int = Field(description="Users with at least one spend")
    users_at_cap: int
    per_mechanism: dict[str, dict[str, float]]
    spent_quantiles: dict[str, float] = Field(description="Distribution of users' worst-case epsilon")
