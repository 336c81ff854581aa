"""Issue 6's authorisation matrix: every route x {anonymous, user, other, auditor, admin}, exact statuses.

``RULES`` maps each (method, path template) the app serves to the status each role must get and to
a builder that fills in the request for that role. ``user`` owns the resources in the paths (a face
served to them, their candidates, their match); ``other`` is a second normal user who sends the very
same request, so where ``user`` gets 2xx, ``other`` gets 404: what is not yours does not exist for
you. Under ``/v1/me`` the caller is the subject, so ``other`` can only reach their own data, and the
cell checks that the answer is indeed theirs. Staff accounts hold one scope each: ``auditor`` reaches
``/v1/audit`` and nothing of a user's; both staff roles reach only their own account (``GET /v1/me``,
their sessions, logout, password change) besides, and ``admin`` also ``/metrics``.

A route the app serves without a rule fails :func:`test_every_route_has_a_rule`, whether or not it
is in the OpenAPI schema. Of FastAPI's own routes, ``/openapi.json``, ``/docs``,
``/docs/oauth2-redirect`` and ``/redoc`` are covered (public); only their implicit ``HEAD`` twins
are left out, since Starlette answers HEAD with the GET handler itself. The web clients' static
files (mounts at ``/app/``, ``/console/``, ``/shared/``, public, no methods of their own) are pinned
in ``tests/api/test_web_clients.py``.

Destructive cells do not interfere: the allowed role deletes a throwaway account or a match nothing
else uses, while denied roles aim at resources other cells rely on and the cell then proves those
still exist. Every auditor request under ``/v1/audit`` must leave its audit entry, naming the
auditor and (as a pseudonym) the user it concerns. The scenario is built once for the module:
each account costs an argon2 hash.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services.audit import pseudonym
from matchsvc.services.preference_profile import preference_profile
from tests.support.accounts import PASSWORD, auth_headers, register
from tests.support.scenario import rate_faces, set_profile, staff_headers, truncate_all, user_id

PROBLEM = "application/problem+json"
ROLES = ("anonymous", "user", "other", "auditor", "admin")
#: Ratings per matchable person, and the matching job's threshold.
RATINGS = 6
#: Who seeks whom: ``user`` is a candidate of the five suitors and they of her; ``other`` is
#: nobody's candidate (no man seeks men), so none of ``user``'s resources are also his.
PEOPLE = {
    "user": ("woman", ["man"]),
    "other": ("man", ["man"]),
    "partner": ("man", ["woman"]),
    "doomed_partner": ("man", ["woman"]),
    "like_target": ("man", ["woman"]),
    "pass_target": ("man", ["woman"]),
    "block_target": ("man", ["woman"]),
}


@dataclass(frozen=True)
class World:
    """The accounts and resources every cell works on, built once for the module."""

    client: TestClient
    runtime: Runtime
    headers: Mapping[str, Mapping[str, str]]  # role -> Authorization header ({} for anonymous)
    ids: Mapping[str, uuid.UUID]  # role or person -> account id
    username: str  # user's
    usernames: Mapping[str, str]  # role -> account name, to open more sessions of the same account
    look: list[float]
    profiles: Mapping[str, Mapping[str, object]]
    rated: frozenset[str]  # faces user rated
    face: str  # served to user (and rated), never to other
    unrated_face: str  # served to user, left for the rating cell
    candidates: frozenset[uuid.UUID]  # user's
    kept_match: uuid.UUID  # user and partner; nobody may delete it
    doomed_match: uuid.UUID  # user and doomed_partner; deleted by user's unmatch cell

    def newcomer(self, *, log_in: bool) -> tuple[dict[str, str], uuid.UUID]:
        """A fresh normal account for a cell that destroys it."""
        name = f"newcomer{uuid.uuid4().hex[:10]}"
        response = self.client.post(
            "/v1/auth/register", json={"username": name, "password": PASSWORD, "birth_year": 1990}
        )
        assert response.status_code == 201, response.text
        return (auth_headers(self.client, name) if log_in else {}), uuid.UUID(response.json()["id"])

    def login(self, role: str) -> dict[str, Any]:
        """Another session of ``role``'s account (for a cell that ends it), as the token response."""
        response = self.client.post("/v1/auth/token", data={"username": self.usernames[role], "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response.json()

    def session_works(self, access_token: str) -> bool:
        return self.client.get("/v1/me", headers={"Authorization": f"Bearer {access_token}"}).status_code == 200

    def count(self, sql: str, **params: Any) -> int:
        with self.runtime.engine.connect() as connection:
            return int(connection.execute(text(sql), params).scalar_one())

    def account_exists(self, account: uuid.UUID) -> bool:
        return self.count("SELECT count(*) FROM users WHERE id = :id", id=account) == 1

    def match_exists(self, match: uuid.UUID) -> bool:
        return self.count("SELECT count(*) FROM matches WHERE id = :id", id=match) == 1


def _build_world(client: TestClient, runtime: Runtime) -> World:
    look = [0.0] * runtime.latent_space.dim
    people: dict[str, dict[str, str]] = {}
    profiles: dict[str, Mapping[str, object]] = {}
    names: dict[str, str] = {}
    served: dict[str, tuple[list[str], list[str]]] = {}
    for person, (gender, seeks) in PEOPLE.items():
        names[person] = register(client)
        people[person] = auth_headers(client, names[person])
        served[person] = rate_faces(client, people[person], n=RATINGS, keep=1 if person == "user" else 0)
        profiles[person] = set_profile(client, people[person], look=look, gender=gender, seeks=seeks)
    people["bystander"] = auth_headers(client)
    for scope in (Scope.auditor, Scope.admin):
        names[scope.value] = f"{scope.value}{uuid.uuid4().hex[:8]}"
        people[scope.value] = staff_headers(client, runtime, scope, username=names[scope.value])
    ids = {person: user_id(client, headers) for person, headers in people.items()}

    run_matching(runtime.sessions, keys=runtime.keys, k=6, min_ratings=RATINGS)

    def listed(person: str) -> set[uuid.UUID]:
        response = client.get("/v1/candidates", headers=people[person])
        return {uuid.UUID(item["user_id"]) for item in response.json()["items"]}

    suitors = {ids[p] for p in ("partner", "doomed_partner", "like_target", "pass_target", "block_target")}
    assert listed("user") == suitors and listed("other") == set()
    matches = {}
    for partner in ("partner", "doomed_partner"):
        assert client.post(f"/v1/candidates/{ids[partner]}/like", headers=people["user"]).json()["matched"] is False
        answer = client.post(f"/v1/candidates/{ids['user']}/like", headers=people[partner]).json()
        assert answer["matched"] is True
        matches[partner] = uuid.UUID(answer["match_id"])

    rated, kept = served["user"]
    world = World(
        client=client,
        runtime=runtime,
        headers={"anonymous": {}, **{role: people[role] for role in ROLES[1:]}},
        ids=ids,
        username=names["user"],
        usernames={role: names[role] for role in ROLES[1:]},
        look=look,
        profiles=profiles,
        rated=frozenset(rated),
        face=rated[0],
        unrated_face=kept[0],
        candidates=frozenset(suitors),
        kept_match=matches["partner"],
        doomed_match=matches["doomed_partner"],
    )
    # Without this, other's 404 on user's face would prove nothing.
    assert world.count(
        "SELECT count(*) FROM face_impressions WHERE user_id = :other AND face_id::text = ANY(:faces)",
        other=ids["other"], faces=[*rated, *kept],
    ) == 0
    return world


@pytest.fixture(scope="module")
def world(runtime: Runtime) -> Iterator[World]:
    """One scenario for every cell; the tables are emptied before and after, as ``db`` would."""
    truncate_all(runtime)
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            yield _build_world(client, runtime)
    finally:
        truncate_all(runtime)


@dataclass(frozen=True)
class Call:
    """One request, filled in for one role.

    ``credentials`` replaces the role's Authorization header (a throwaway account of that role);
    ``subject`` is the user the request is about, whom its audit entry must name; ``afterwards``
    checks the state the request must have left behind.
    """

    path: str
    subject: uuid.UUID | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, str] | None = None
    afterwards: Callable[[], None] | None = None


Builder = Callable[[World, str], Call]
Check = Callable[[World, str, httpx.Response], None]


@dataclass(frozen=True)
class Rule:
    """Expected status per role; ``logged``: audit actions an auditor's request must append."""

    expected: Mapping[str, int]
    build: Builder
    logged: tuple[str, ...] = ()
    check: Check | None = None


def _everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def _account(status: int) -> dict[str, int]:
    """Any authenticated account, staff included."""
    return {"anonymous": 401, "user": status, "other": status, "auditor": status, "admin": status}


def _users(status: int, *, other: int | None = None) -> dict[str, int]:
    """Scope ``user``: staff hold no user scope."""
    return {"anonymous": 401, "user": status, "other": status if other is None else other, "auditor": 403, "admin": 403}


def _auditors(status: int) -> dict[str, int]:
    return {"anonymous": 401, "user": 403, "other": 403, "auditor": status, "admin": 403}


def _admins(status: int) -> dict[str, int]:
    return {"anonymous": 401, "user": 403, "other": 403, "auditor": 403, "admin": status}


def _fixed(path: str) -> Builder:
    return lambda world, role: Call(path)


# Builders ------------------------------------------------------------------------------------------


def _register(world: World, role: str) -> Call:
    name = f"joiner{uuid.uuid4().hex[:10]}"
    return Call("/v1/auth/register", json={"username": name, "password": PASSWORD, "birth_year": 1990})


def _token(world: World, role: str) -> Call:
    return Call("/v1/auth/token", data={"username": world.username, "password": PASSWORD})


def _appearance(world: World, role: str) -> Call:
    return Call("/v1/me/appearance", json={"latent": world.look})


def _preview(world: World, role: str) -> Call:
    return Call("/v1/me/appearance/preview", json={"latent": world.look})


def _profile(world: World, role: str) -> Call:
    # The caller's own filters again, so the matching state stays as built.
    return Call("/v1/me/profile", json=dict(world.profiles["other" if role == "other" else "user"]))


def _face_image(world: World, role: str) -> Call:
    return Call(f"/v1/faces/{world.face}/image")


def _rate(world: World, role: str) -> Call:
    return Call(
        "/v1/ratings",
        json={"face_id": world.unrated_face, "liked": True},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


def _rate_batch(world: World, role: str) -> Call:
    return Call(
        "/v1/ratings/batch",
        json={"items": [{"face_id": world.unrated_face, "randomized_like": False, "epsilon": 2.0}]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


def _batch_rated_only_served(world: World, role: str, response: httpx.Response) -> None:
    """A face served to ``user`` does not exist for ``other``: the item is not_found, nothing stored."""
    status = response.json()["items"][0]["status"]
    expected = {"not_found"} if role == "other" else {"created", "replaced"}
    _assert(status in expected, f"{role} got item status {status}")


def _candidate(action: str, person: str) -> Builder:
    return lambda world, role: Call(f"/v1/candidates/{world.ids[person]}{action}")


def _unmatch(world: World, role: str) -> Call:
    if role == "user":
        doomed = world.doomed_match
        return Call(f"/v1/matches/{doomed}", afterwards=lambda: _assert(not world.match_exists(doomed), "not deleted"))
    kept = world.kept_match
    return Call(f"/v1/matches/{kept}", afterwards=lambda: _assert(world.match_exists(kept), f"{role} deleted it"))


def _match_avatar(world: World, role: str) -> Call:
    return Call(f"/v1/matches/{world.kept_match}/avatar")


def _block(world: World, role: str) -> Call:
    return Call(f"/v1/users/{world.ids['block_target']}/block")


def _delete_me(world: World, role: str) -> Call:
    if role in ("user", "other"):
        headers, doomed = world.newcomer(log_in=True)
        return Call(
            "/v1/me", credentials=headers,
            afterwards=lambda: _assert(not world.account_exists(doomed), "account still exists"),
        )
    if role == "anonymous":
        return Call("/v1/me")
    staff = world.ids[role]
    return Call("/v1/me", afterwards=lambda: _assert(world.account_exists(staff), f"{role} was deleted"))


def _refresh(world: World, role: str) -> Call:
    return Call("/v1/auth/refresh", data={"refresh_token": world.login("user")["refresh_token"]})


def _logout(world: World, role: str) -> Call:
    """Staff log out too; each role ends a second session of its own, never the one other cells use."""
    if role == "anonymous":
        return Call("/v1/auth/logout")
    doomed = world.login(role)["access_token"]
    return Call(
        "/v1/auth/logout",
        credentials={"Authorization": f"Bearer {doomed}"},
        afterwards=lambda: _assert(not world.session_works(doomed), "session still works"),
    )


def _revoke_session(world: World, role: str) -> Call:
    """``user`` revokes a second session of her own; everyone else aims at it and must miss."""
    target = world.login("user")
    path = f"/v1/me/sessions/{target['session_id']}"
    if role == "user":
        return Call(path, afterwards=lambda: _assert(not world.session_works(target["access_token"]), "not revoked"))
    return Call(path, afterwards=lambda: _assert(world.session_works(target["access_token"]), f"{role} revoked it"))


def _change_password(world: World, role: str) -> Call:
    """Every account may change its own password; a throwaway account of the role does, since all
    its sessions end."""
    body = {"current_password": PASSWORD, "new_password": "another horse battery staple"}
    if role == "anonymous":
        return Call("/v1/me/password", json=body)
    if role in ("user", "other"):
        headers, _ = world.newcomer(log_in=True)
    else:
        headers = staff_headers(world.client, world.runtime, Scope(role))
    token = headers["Authorization"].split()[1]
    return Call(
        "/v1/me/password", json=body, credentials=headers,
        afterwards=lambda: _assert(not world.session_works(token), "session survived the password change"),
    )


def _audit_user(suffix: str) -> Builder:
    return lambda world, role: Call(f"/v1/audit/users/{world.ids['user']}{suffix}", subject=world.ids["user"])


def _audit_delete(world: World, role: str) -> Call:
    if role == "auditor":
        _, doomed = world.newcomer(log_in=False)
        return Call(
            f"/v1/audit/users/{doomed}", subject=doomed,
            afterwards=lambda: _assert(not world.account_exists(doomed), "account still exists"),
        )
    kept = world.ids["bystander"]
    return Call(
        f"/v1/audit/users/{kept}", subject=kept,
        afterwards=lambda: _assert(world.account_exists(kept), f"{role} deleted a user"),
    )


def _assert(condition: bool, message: str) -> None:
    assert condition, message


# Checks on allowed answers: the data is the caller's own ----------------------------------------


def _is_caller(world: World, role: str, response: httpx.Response) -> None:
    assert response.json()["id"] == str(world.ids[role])


def _export_is_callers(world: World, role: str, response: httpx.Response) -> None:
    assert response.json()["user_id"] == str(world.ids[role])
    if role == "other":
        assert str(world.ids["user"]) not in response.text


def _sessions_are_callers(world: World, role: str, response: httpx.Response) -> None:
    listed = {item["id"]: item["current"] for item in response.json()["items"]}
    active = "SELECT count(*) FROM user_sessions WHERE user_id = :owner AND id::text = ANY(:ids) AND revoked_at IS NULL"
    assert world.count(active, owner=world.ids[role], ids=list(listed)) == len(listed) > 0
    assert sum(listed.values()) == 1


def _ratings_are_callers(world: World, role: str, response: httpx.Response) -> None:
    faces = {item["face_id"] for item in response.json()["items"]}
    mine = world.rated | {world.unrated_face}
    assert faces <= mine if role == "user" else not faces & mine


def _candidates_are_callers(world: World, role: str, response: httpx.Response) -> None:
    listed = {uuid.UUID(item["user_id"]) for item in response.json()["items"]}
    assert (listed and listed <= world.candidates) if role == "user" else not listed & world.candidates


def _matches_are_callers(world: World, role: str, response: httpx.Response) -> None:
    listed = {uuid.UUID(item["id"]) for item in response.json()["items"]}
    assert world.kept_match in listed if role == "user" else not listed & {world.kept_match, world.doomed_match}


def _is_png(world: World, role: str, response: httpx.Response) -> None:
    assert response.headers["content-type"] == "image/png" and response.content.startswith(b"\x89PNG")


def _not_matched(world: World, role: str, response: httpx.Response) -> None:
    assert response.json() == {"matched": False, "match_id": None}


def _web_client(world: World, role: str, response: httpx.Response) -> None:
    """``/app`` and ``/console`` redirect (308) to the page itself, which carries the CSP."""
    assert [hop.status_code for hop in response.history] == [308]
    assert response.url.path.endswith("/") and "frame-ancestors 'none'" in response.headers["content-security-policy"]


def _profile_is_callers(world: World, role: str, response: httpx.Response) -> None:
    runtime = world.runtime
    with runtime.sessions() as session:
        mine = preference_profile(
            session, keys=runtime.keys, user_id=world.ids[role], policy=runtime.policy, space=runtime.latent_space
        )
    assert (response.json()["ratings"], response.json()["certainty"]["logit_sd"]) == (mine.ratings, mine.logit_sd)


# The matrix ---------------------------------------------------------------------------------------

#: Routes anyone may call. Making a route public is a decision: it goes here, not just into RULES.
PUBLIC = frozenset({
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/token"),
    ("POST", "/v1/auth/refresh"),  # the refresh token is the credential
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/app"),  # the web clients' pages are public; everything they show comes from the API
    ("GET", "/console"),
})

RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/auth/register"): Rule(_everyone(201), _register),
    ("POST", "/v1/auth/token"): Rule(_everyone(200), _token),
    ("POST", "/v1/auth/refresh"): Rule(_everyone(200), _refresh),
    ("POST", "/v1/auth/logout"): Rule(_account(204), _logout),
    ("GET", "/v1/me/sessions"): Rule(_account(200), _fixed("/v1/me/sessions"), check=_sessions_are_callers),
    # Only user owns the target session; for everyone else it does not exist.
    ("DELETE", "/v1/me/sessions/{session_id}"): Rule(
        {"anonymous": 401, "user": 204, "other": 404, "auditor": 404, "admin": 404}, _revoke_session
    ),
    ("PUT", "/v1/me/password"): Rule(_account(204), _change_password),
    ("GET", "/v1/me"): Rule(_account(200), _fixed("/v1/me"), check=_is_caller),
    ("GET", "/v1/me/ratings"): Rule(_users(200), _fixed("/v1/me/ratings"), check=_ratings_are_callers),
    ("GET", "/v1/me/privacy"): Rule(_users(200), _fixed("/v1/me/privacy")),
    ("GET", "/v1/me/preference-profile"): Rule(
        _users(200), _fixed("/v1/me/preference-profile"), check=_profile_is_callers
    ),
    ("GET", "/v1/me/ideal-faces"): Rule(_users(200), _fixed("/v1/me/ideal-faces")),
    ("PUT", "/v1/me/appearance"): Rule(_users(204), _appearance),
    ("GET", "/v1/me/appearance/space"): Rule(_users(200), _fixed("/v1/me/appearance/space")),
    ("POST", "/v1/me/appearance/preview"): Rule(_users(200), _preview, check=_is_png),
    ("GET", "/v1/me/avatar"): Rule(_users(200), _fixed("/v1/me/avatar"), check=_is_png),
    ("PUT", "/v1/me/profile"): Rule(_users(200), _profile),
    ("GET", "/v1/me/profile"): Rule(_users(200), _fixed("/v1/me/profile")),
    ("GET", "/v1/me/export"): Rule(_users(200), _fixed("/v1/me/export"), check=_export_is_callers),
    ("DELETE", "/v1/me"): Rule(_users(204), _delete_me),
    ("GET", "/v1/faces/next"): Rule(_users(200), _fixed("/v1/faces/next")),
    ("GET", "/v1/faces/{face_id}/image"): Rule(_users(200, other=404), _face_image, check=_is_png),
    ("POST", "/v1/ratings"): Rule(_users(201, other=404), _rate),
    ("POST", "/v1/ratings/batch"): Rule(_users(200), _rate_batch, check=_batch_rated_only_served),
    ("GET", "/v1/candidates"): Rule(_users(200), _fixed("/v1/candidates"), check=_candidates_are_callers),
    ("GET", "/v1/candidates/{candidate_id}/avatar"): Rule(
        _users(200, other=404), _candidate("/avatar", "like_target"), check=_is_png
    ),
    ("POST", "/v1/candidates/{candidate_id}/like"): Rule(
        _users(200, other=404), _candidate("/like", "like_target"), check=_not_matched
    ),
    ("POST", "/v1/candidates/{candidate_id}/pass"): Rule(
        _users(200, other=404), _candidate("/pass", "pass_target"), check=_not_matched
    ),
    ("GET", "/v1/matches"): Rule(_users(200), _fixed("/v1/matches"), check=_matches_are_callers),
    ("DELETE", "/v1/matches/{match_id}"): Rule(_users(204, other=404), _unmatch),
    ("GET", "/v1/matches/{match_id}/avatar"): Rule(_users(200, other=404), _match_avatar, check=_is_png),
    # Only someone the API showed you: block_target is user's candidate and nobody other ever saw.
    ("POST", "/v1/users/{user_id}/block"): Rule(_users(204, other=404), _block),
    ("GET", "/v1/audit/users/{user_id}/export"): Rule(_auditors(200), _audit_user("/export"), logged=("export",)),
    ("DELETE", "/v1/audit/users/{user_id}"): Rule(_auditors(204), _audit_delete, logged=("deletion",)),
    ("GET", "/v1/audit/users/{user_id}/deletion-proof"): Rule(
        _auditors(200), _audit_user("/deletion-proof"), logged=("auditor_read",)
    ),
    ("GET", "/v1/audit/privacy-budget"): Rule(
        _auditors(200), _fixed("/v1/audit/privacy-budget"), logged=("auditor_read",)
    ),
    ("GET", "/v1/audit/log"): Rule(_auditors(200), _fixed("/v1/audit/log"), logged=("auditor_read",)),
    ("GET", "/v1/audit/log/verify"): Rule(_auditors(200), _fixed("/v1/audit/log/verify"), logged=("auditor_read",)),
    ("GET", "/healthz"): Rule(_everyone(200), _fixed("/healthz")),
    ("GET", "/readyz"): Rule(_everyone(200), _fixed("/readyz")),
    ("GET", "/metrics"): Rule(_admins(200), _fixed("/metrics")),
    ("GET", "/openapi.json"): Rule(_everyone(200), _fixed("/openapi.json")),
    ("GET", "/docs"): Rule(_everyone(200), _fixed("/docs")),
    ("GET", "/docs/oauth2-redirect"): Rule(_everyone(200), _fixed("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Rule(_everyone(200), _fixed("/redoc")),
    ("GET", "/app"): Rule(_everyone(200), _fixed("/app"), check=_web_client),
    ("GET", "/console"): Rule(_everyone(200), _fixed("/console"), check=_web_client),
}

CELLS = [(operation, role) for operation in RULES for role in ROLES]


def _audit_head(world: World) -> int:
    return world.count("SELECT coalesce(max(id), 0) FROM audit_log")


def _audit_since(world: World, after: int) -> list[tuple[str, str | None, uuid.UUID | None]]:
    with world.runtime.engine.connect() as connection:
        query = text("SELECT action, subject, actor_id FROM audit_log WHERE id > :after ORDER BY id")
        return [tuple(row) for row in connection.execute(query, {"after": after})]


@pytest.mark.parametrize(
    ("operation", "role"), CELLS, ids=[f"{method} {path} as {role}" for (method, path), role in CELLS]
)
def test_authorization_matrix(world: World, operation: tuple[str, str], role: str) -> None:
    method, template = operation
    rule = RULES[operation]
    call = rule.build(world, role)
    headers = {**(world.headers[role] if call.credentials is None else call.credentials), **call.headers}
    head = _audit_head(world)
    response = world.client.request(method, call.path, json=call.json, data=call.data, headers=headers)

    expected = rule.expected[role]
    assert response.status_code == expected, (
        f"{method} {template} as {role}: expected {expected}, got {response.status_code}: {response.text[:300]}"
    )
    if expected in (401, 403, 404):
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == expected
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if expected < 300 and rule.check is not None:
        rule.check(world, role, response)
    if call.afterwards is not None:
        call.afterwards()
    if role == "auditor" and rule.logged:
        entries = _audit_since(world, head)
        subject = pseudonym(call.subject, key=world.runtime.secrets.audit_pseudonym_key) if call.subject else None
        for action in rule.logged:
            assert (action, subject, world.ids["auditor"]) in entries, (action, entries)


def test_every_route_has_a_rule(world: World) -> None:
    """A route added without a rule, in the OpenAPI schema or hidden from it, fails here."""
    schema = world.client.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    served = {
        (method, route.path_format)
        for route in iter_route_contexts(world.client.app.routes)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert documented <= served
    assert set(RULES) == served, {"without a rule": sorted(served - set(RULES)), "stale": sorted(set(RULES) - served)}


def test_rules_keep_the_promises() -> None:
    """The table itself: anonymous callers get 401 off the public list; users never reach /v1/audit;
    every audit route names the entry an auditor's request leaves."""
    for operation, rule in RULES.items():
        assert set(rule.expected) == set(ROLES), operation
        if operation in PUBLIC:
            assert len(set(rule.expected.values())) == 1, operation
            continue
        assert rule.expected["anonymous"] == 401, operation
        if operation[1].startswith("/v1/audit"):
            assert all(rule.expected[role] == 403 for role in ("user", "other", "admin")), operation
            assert 200 <= rule.expected["auditor"] < 300 and rule.logged, operation
