"""The caller's privacy budget."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PrivacyBudget"]


class PrivacyBudget(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    mechanism: str = Field(
        description="randomized_response (at ingestion), objective_perturbation or dpsgd (per release)"
    )
    epsilon_spent: float = Field(description="Worst-case lifetime privacy loss of any one of your ratings")
    delta_spent: float
    epsilon_cap: float = Field(description="The loss no rating may ever exceed")
    spends: int = Field(description="Ledger entries recorded for you")
    guarantee: str = Field(description="What the numbers mean, in one sentence")
    epsilon_per_rating: float | None = Field(
        description="The epsilon the server randomizes each `liked` answer with (null: this deployment "
        "releases private models instead of randomizing labels)"
    )
    on_device_epsilon_min: float | None = Field(
        description="Smallest `epsilon` accepted with `randomized_like` (null: on-device randomization not offered)"
    )
    on_device_epsilon_max: float | None = Field(description="Largest `epsilon` accepted with `randomized_like`")
