"""Issue 15: the matching job skips partition pairs that cannot meet and updates incrementally,
and neither changes a list: the stored lists equal those of scoring every pair in a full run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

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
    reference = run_matching(runtime.sessions, keys=runtime.keys, k=4, min_ratings=RATINGS)
    expected = _stored(runtime)
    report = run_matching(runtime.sessions, keys=runtime.keys, k=4, min_ratings=RATINGS, skip_partitions=True)
    assert _stored(runtime) == expected and any(expected.values())
    # Twelve users are one block of the kernel: it skips nothing (engine.scoring.pairs_skipped).
    assert reference.pairs_skipped_fraction == 0.0 and 0.5 < report.pairs_skipped_fraction < 1.0
    assert report.pairs_scored < reference.pairs_scored
    assert "of pairs skipped" in report.summary()


@pytest.mark.slow
def test_an_incremental_run_gives_changed_users_the_lists_of_a_full_run(population, runtime: Runtime) -> None:
    client, people = population
    run = dict(keys=runtime.keys, k=4, min_ratings=RATINGS, full_every=3, change_margin=timedelta(0))
    first = run_matching(runtime.sessions, **{**run, "full_every": 1})  # the cycle starts with a full run
    assert first.mode == "full"
    before = _stored(runtime)
    # Changes of every kind the marker covers: a new person, filters, appearance, a block, a like.
    newcomer, newcomer_id = matchable_person(
        client, look=[0.5] * runtime.latent_space.dim, gender="nonbinary", seeks=["woman", "man", "nonbinary"],
        ages=(18, 70), birth_year=1990, ratings=RATINGS,
    )
    (h1, id1), (h2, id2), (h3, id3), (h5, id5) = people[1], people[2], people[3], people[6]
    widened = {"gender": "nonbinary", "seeks": ["woman", "man", "nonbinary"], "age_min": 18, "age_max": 70}
    assert client.put("/v1/me/profile", json=widened, headers=h2).status_code == 200
    look = np.full(runtime.latent_space.dim, -0.5)
    look[AGE] = 1.0
    assert client.put("/v1/me/appearance", json={"latent": look.tolist()}, headers=h3).status_code == 204
    # Only someone the API showed the blocker can be blocked (D17): the first on person 1's list.
    blocked = before[id1][0]
    assert client.post(f"/v1/users/{blocked}/block", headers=h1).status_code == 204
    listed = before.get(id5, [])
    if listed:
        assert client.post(f"/v1/candidates/{listed[0]}/like", headers=h5).status_code == 200
    changed = {newcomer_id, id1, id2, id3, blocked, id5} | ({listed[0]} if listed else set())

    incremental = run_matching(runtime.sessions, **run)
    assert incremental.mode == "incremental" and incremental.refreshed < incremental.matchable + 1 + len(changed)
    after_incremental = _stored(runtime)
    full = run_matching(runtime.sessions, **{**run, "full_every": 1})
    assert full.mode == "full" and incremental.pairs_scored < full.pairs_scored
    after_full = _stored(runtime)
    for user in changed:
        assert after_incremental.get(user, []) == after_full.get(user, []), user
    # Changed users also entered the lists a full run puts them in.
    for owner, candidates in after_full.items():
        for candidate in set(candidates) & changed:
            assert candidate in after_incremental.get(owner, []), (owner, candidate)
    assert any(newcomer_id in candidates for candidates in after_incremental.values())
