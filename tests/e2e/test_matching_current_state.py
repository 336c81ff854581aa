"""Issue 15: stored candidate lists obey the current state between matching runs.

A profile change, a block, a pass or a deletion takes effect on lists, avatars and likes in the
request that makes it; the list, avatar, like and pass endpoints re-check the pair against the
current filters (both ways, today's ages), blocks and accounts, so even a row written from a stale
snapshot (a run that read the state before the change) is never served.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner

from matchsvc.cli import app as cli_app
from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from tests.support.scenario import matchable_person, rate_faces, truncate_all, user_id

RATINGS = 2
GENDERS = ("woman", "man", "nonbinary")


def _person(client: TestClient, db: Runtime, *, gender: str, seeks: list[str], birth_year: int = 1990) -> tuple[dict[str, str], str]:
    look = [0.0] * db.latent_space.dim
    return matchable_person(client, look=look, gender=gender, seeks=seeks, birth_year=birth_year, ratings=RATINGS)


def _listed(client: TestClient, headers: dict[str, str]) -> list[str]:
    response = client.get("/v1/candidates", headers=headers)
    assert response.status_code == 200, response.text
    return [item["user_id"] for item in response.json()["items"]]


def _run(db: Runtime) -> None:
    run_matching(db.sessions, keys=db.keys, k=10, min_ratings=RATINGS)


def _stale_row(db: Runtime, owner: str, candidate: str) -> None:
    """What a run that read the state before the last change writes: a row the change excluded."""
    with db.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO candidates (user_id, candidate_id, rank) VALUES (:u, :c, 1000) ON CONFLICT DO NOTHING"),
            {"u": owner, "c": candidate},
        )


def test_a_man_who_stops_seeking_women_leaves_her_list_at_once(client: TestClient, db: Runtime) -> None:
    m, m_id = _person(client, db, gender="man", seeks=["woman"])
    a, a_id = _person(client, db, gender="woman", seeks=["man"])
    _run(db)
    assert _listed(client, a) == [m_id] and _listed(client, m) == [a_id]

    profile = {"gender": "man", "seeks": ["man"], "age_min": 18, "age_max": 99}
    assert client.put("/v1/me/profile", json=profile, headers=m).status_code == 200

    assert _listed(client, a) == [] and _listed(client, m) == []
    assert client.get(f"/v1/candidates/{a_id}/avatar", headers=m).status_code == 404
    assert client.get(f"/v1/candidates/{m_id}/avatar", headers=a).status_code == 404
    assert client.post(f"/v1/candidates/{a_id}/like", headers=m).status_code == 404
    assert client.post(f"/v1/candidates/{m_id}/like", headers=a).status_code == 404
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM candidates").scalar_one() == 0
        assert connection.exec_driver_sql("SELECT count(*) FROM decisions").scalar_one() == 0

    # A row written by a run that read M's old filters is still never served.
    _stale_row(db, a_id, m_id)
    _stale_row(db, m_id, a_id)
    assert _listed(client, a) == [] and _listed(client, m) == []
    assert client.get(f"/v1/candidates/{m_id}/avatar", headers=a).status_code == 404
    assert client.post(f"/v1/candidates/{a_id}/like", headers=m).status_code == 404


def test_the_other_sides_age_range_counts_when_one_side_changes(client: TestClient, db: Runtime) -> None:
    """A filter change opens the *other* side's filters too: B's range excludes A's age both times."""
    a, a_id = _person(client, db, gender="woman", seeks=["man"], birth_year=1990)
    b, b_id = _person(client, db, gender="man", seeks=["woman"], birth_year=1990)
    _run(db)
    assert _listed(client, a) == [b_id]
    b_profile = {"gender": "man", "seeks": ["woman"], "age_min": 18, "age_max": 25}
    assert client.put("/v1/me/profile", json=b_profile, headers=b).status_code == 200
    assert _listed(client, a) == [] and _listed(client, b) == []
    assert client.post(f"/v1/candidates/{a_id}/pass", headers=b).status_code == 404


def test_a_pass_removes_the_pair_from_both_lists(client: TestClient, db: Runtime) -> None:
    a, a_id = _person(client, db, gender="woman", seeks=["man"])
    b, b_id = _person(client, db, gender="man", seeks=["woman"])
    _run(db)
    assert client.post(f"/v1/candidates/{b_id}/pass", headers=a).status_code == 200
    assert _listed(client, a) == [] and _listed(client, b) == []
    assert client.get(f"/v1/candidates/{a_id}/avatar", headers=b).status_code == 404
    assert client.post(f"/v1/candidates/{a_id}/like", headers=b).status_code == 404
    _run(db)
    assert _listed(client, a) == [] and _listed(client, b) == []
    # A run that read the state before the pass stores the pair again: it stays hidden both ways.
    _stale_row(db, b_id, a_id)
    _stale_row(db, a_id, b_id)
    assert _listed(client, a) == [] and _listed(client, b) == []
    assert client.get(f"/v1/candidates/{a_id}/avatar", headers=b).status_code == 404
    assert client.post(f"/v1/candidates/{a_id}/like", headers=b).status_code == 404


def test_pages_skip_ineligible_rows_without_losing_eligible_ones(client: TestClient, db: Runtime) -> None:
    """Filtering a page must not shorten it or end the listing early."""
    seeker, _ = _person(client, db, gender="woman", seeks=["man", "woman"])
    men = [_person(client, db, gender="man", seeks=["woman"]) for _ in range(3)]
    women = [_person(client, db, gender="woman", seeks=["man"]) for _ in range(2)]  # never accept her
    me = str(user_id(client, seeker))
    _run(db)
    for _, woman in women:
        _stale_row(db, me, woman)
    first = client.get("/v1/candidates", params={"limit": 2}, headers=seeker).json()
    assert len(first["items"]) == 2 and first["next_cursor"] is not None
    rest = client.get("/v1/candidates", params={"limit": 2, "cursor": first["next_cursor"]}, headers=seeker).json()
    listed = [item["user_id"] for item in first["items"] + rest["items"]]
    assert sorted(listed) == sorted(man for _, man in men) and rest["next_cursor"] is None


def test_match_run_reads_the_schedules_settings_and_options_override_them(
    client: TestClient, db: Runtime, cli_env: pytest.MonkeyPatch
) -> None:
    few, _ = _person(client, db, gender="woman", seeks=["woman"])  # RATINGS ratings
    more = []
    for _ in range(2):
        headers, _ = _person(client, db, gender="woman", seeks=["woman"])
        rate_faces(client, headers, n=2)  # RATINGS + 2
        more.append(headers)
    runner = CliRunner()
    cli_env.setenv("MATCHSVC_MATCH_MIN_RATINGS", str(RATINGS + 1))
    cli_env.setenv("MATCHSVC_MATCH_K", "1")
    from_settings = runner.invoke(cli_app, ["match", "run"])
    assert from_settings.exit_code == 0, from_settings.output
    assert "matched 2/3 users" in from_settings.stdout
    assert [len(_listed(client, h)) for h in (few, *more)] == [0, 1, 1]

    overridden = runner.invoke(cli_app, ["match", "run", "--min-ratings", str(RATINGS), "--k", "2", "--full"])
    assert overridden.exit_code == 0, overridden.output
    assert "matched 3/3 users" in overridden.stdout
    assert [len(_listed(client, h)) for h in (few, *more)] == [2, 2, 2]


# -- property: random histories never expose a pair the current state excludes -----------------

@dataclass
class World:
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)
    ages: dict[int, int] = field(default_factory=dict)
    profiles: dict[int, dict] = field(default_factory=dict)
    blocks: set[frozenset[int]] = field(default_factory=set)
    passes: set[frozenset[int]] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)

    def accepts(self, a: int, b: int) -> bool:
        mine = self.profiles[a]
        return self.profiles[b]["gender"] in mine["seeks"] and mine["age_min"] <= self.ages[b] <= mine["age_max"]

    def allowed(self, a: int, b: int) -> bool:
        pair = frozenset((a, b))
        return (
            a != b
            and not {a, b} & self.deleted
            and pair not in self.blocks
            and pair not in self.passes
            and self.accepts(a, b)
            and self.accepts(b, a)
        )


PEOPLE = 4
BIRTH_YEARS = (1970, 1985, 1995, 2000)
profiles = st.fixed_dictionaries(
    {
        "gender": st.sampled_from(GENDERS),
        "seeks": st.lists(st.sampled_from(GENDERS), min_size=1, max_size=3, unique=True),
        "age_min": st.sampled_from((18, 25, 30, 40)),
        "age_max": st.sampled_from((35, 45, 60, 99)),
    }
).filter(lambda p: p["age_min"] <= p["age_max"])
person = st.integers(0, PEOPLE - 1)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("profile"), person, profiles),
        st.tuples(st.just("block"), person, person),
        st.tuples(st.just("pass"), person, person),
        st.tuples(st.just("like"), person, person),
        st.tuples(st.just("delete"), person),
        st.tuples(st.just("run")),
        st.tuples(st.just("stale"), person, person),
    ),
    min_size=1,
    max_size=8,
)


def _check(client: TestClient, world: World) -> None:
    alive = [p for p in world.ids if p not in world.deleted]
    for a in alive:
        listed = set(_listed(client, world.headers[a]))
        for b in world.ids:
            if b == a:
                continue
            if world.ids[b] in listed:
                assert world.allowed(a, b), (a, b, world)
            elif not world.allowed(a, b):
                assert client.get(f"/v1/candidates/{world.ids[b]}/avatar", headers=world.headers[a]).status_code == 404
                assert client.post(f"/v1/candidates/{world.ids[b]}/like", headers=world.headers[a]).status_code == 404


def _apply(client: TestClient, db: Runtime, world: World, step: tuple) -> None:
    kind, *args = step
    live = lambda *people: not set(people) & world.deleted  # noqa: E731
    if kind == "run":
        _run(db)
    elif kind == "profile" and live(args[0]):
        (who, profile) = args
        assert client.put("/v1/me/profile", json=profile, headers=world.headers[who]).status_code == 200
        world.profiles[who] = profile
    elif kind == "block" and live(args[0]) and args[0] != args[1]:
        a, b = args
        # Only someone the API showed ``a`` can be blocked (D17); anyone else, deleted or not, is a 404.
        status = client.post(f"/v1/users/{world.ids[b]}/block", headers=world.headers[a]).status_code
        assert status == 404 if b in world.deleted else status in (204, 404)
        if status == 204:
            world.blocks.add(frozenset(args))
    elif kind in ("pass", "like") and live(args[0]) and args[0] != args[1]:
        a, b = args
        response = client.post(f"/v1/candidates/{world.ids[b]}/{kind}", headers=world.headers[a])
        assert response.status_code in (200, 404, 422), response.text
        if response.status_code == 200 and kind == "pass":
            world.passes.add(frozenset(args))
    elif kind == "delete" and live(args[0]):
        assert client.delete("/v1/me", headers=world.headers[args[0]]).status_code == 204
        world.deleted.add(args[0])
    elif kind == "stale" and live(*args) and args[0] != args[1]:
        _stale_row(db, world.ids[args[0]], world.ids[args[1]])


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(initial=st.lists(profiles, min_size=PEOPLE, max_size=PEOPLE), history=steps)
def test_random_histories_never_expose_an_excluded_pair(
    client: TestClient, db: Runtime, initial: list[dict], history: list[tuple]
) -> None:
    truncate_all(db)
    world = World()
    year = datetime.now(UTC).year
    for index, profile in enumerate(initial):
        birth_year = BIRTH_YEARS[index]
        headers, uid = _person(client, db, gender=profile["gender"], seeks=profile["seeks"], birth_year=birth_year)
        assert client.put("/v1/me/profile", json=profile, headers=headers).status_code == 200
        world.headers[index], world.ids[index], world.ages[index] = headers, uid, year - birth_year
        world.profiles[index] = profile
    _run(db)
    _check(client, world)
    for step in history:
        _apply(client, db, world, step)
        _check(client, world)
