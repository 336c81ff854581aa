"""Issue 15: the matching job skips partition pairs that cannot meet and updates incrementally,
and neither changes a list: the stored lists equal those of scoring every pair in a full run."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.latent import DIMENSION_NAMES
from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from tests.support.scenario import matchable_person, truncate_all

RATINGS = 2
AGE = DIMENSION_NAMES.index("apparent_age")


def _stored(db: Runtime) -> dict[str, list[str]]:
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT user_id::text, candidate_id::text FROM candidates ORDER BY user_id, rank"
        ).all()
    lists: dict[str, list[str]] = {}
    for owner, candidate in rows:
        lists.setdefault(owner, []).append(candidate)
    return lists


@pytest.fixture(scope="module")
def population(runtime: Runtime) -> Iterator[tuple[TestClient, list[tuple[dict[str, str], str]]]]:
    """Twelve people of three genders and several ages and ranges, some of whom can never meet."""
    from api.main import create_app

    truncate_all(runtime)
    rng = np.random.default_rng(15)
    genders = ("woman", "man", "nonbinary")
    partner = {"woman": ["man"], "man": ["woman"], "nonbinary": ["woman", "man", "nonbinary"]}
    people = []
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        for index in range(12):
            look = rng.uniform(-2, 2, runtime.latent_space.dim)
            look[AGE] = abs(look[AGE])
            young = index % 2 == 0
            gender = genders[index % 3]
            seeks = partner[gender] + ([gender] if index % 4 == 0 and gender != "nonbinary" else [])
            people.append(
                matchable_person(
                    client,
                    look=look.tolist(),
                    gender=gender,
                    seeks=seeks,
                    ages=(18, 30) if young else (35, 70),
                    birth_year=2001 if young else 1975,
                    ratings=RATINGS,
                )
            )
        yield client, people
    truncate_all(runtime)


@pytest.mark.slow
def test_skipping_partitions_stores_the_lists_of_scoring_everything(population, runtime: Runtime) -> None:
    reference = run_matching(runtime.sessions, keys=runtime.keys, k=4, min_ratings=RATINGS, skip_partitions=False)
    expected = _stored(runtime)
    report = run_matching(runtime.sessions, keys=runtime.keys, k=4, min_ratings=RATINGS)
    assert _stored(runtime) == expected and any(expected.values())
    assert reference.pairs_skipped_fraction == 0.0 and 0.5 < report.pairs_skipped_fraction < 1.0
    assert report.pairs_scored < reference.pairs_scored
    assert "of pairs skipped" in report.summary()
