"""Issue 6's acceptance: export, deletion by an auditor, crypto-shredding, and the deletion proof."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services.data_subject import owned_references
from privacy.crypto import DecryptionError, unwrap_data_key
from tests.support.accounts import auth_headers
from tests.support.scenario import rate_faces, set_profile, staff_headers


def _active_user(client: TestClient, db: Runtime, *, gender: str, seeks: str) -> tuple[dict[str, str], str]:
    headers = auth_headers(client)
    rate_faces(client, headers, n=12)
    set_profile(client, headers, look=[0.0] * db.latent_space.dim, gender=gender, seeks=[seeks])
    return headers, client.get("/v1/me", headers=headers).json()["id"]


@pytest.mark.slow
def test_export_then_auditor_deletion_leaves_nothing(client: TestClient, db: Runtime) -> None:
    ann, ann_id = _active_user(client, db, gender="woman", seeks="man")
    ben, ben_id = _active_user(client, db, gender="man", seeks="woman")
    run_matching(db.sessions, keys=db.keys, k=5, min_ratings=10)
    client.post(f"/v1/candidates/{ben_id}/like", headers=ann)
    assert client.post(f"/v1/candidates/{ann_id}/like", headers=ben).json()["matched"] is True
    client.post(f"/v1/users/{ben_id}/block", headers=ann)

    bundle = client.get("/v1/me/export", headers=ann).json()
    # Completeness: every row Ann owns, in every table that can hold one, is in the bundle.
    with db.engine.connect() as connection:
        for table, column in owned_references():
            count = connection.execute(
                text(f'SELECT count(*) FROM "{table.name}" WHERE "{column.name}" = :id'), {"id": ann_id}
            ).scalar_one()
            exported = [r for r in bundle["tables"].get(table.name, []) if r["referenced_by"] == column.name]
            assert len(exported) == count, (table.name, column.name)
    assert len(bundle["tables"]["ratings"]) == 12
    assert all(isinstance(r["label"]["recorded_like"], bool) for r in bundle["tables"]["ratings"])
    assert len(bundle["tables"]["appearances"][0]["latent"]) == db.latent_space.dim
    state = bundle["tables"]["preference_states"][0]["state"]
    assert set(state) == {
        "coef", "intercept", "posterior_mean", "posterior_covariance", "persona_shares", "persona_means",
        "population_version", "drift_detected",
    }
    assert len(state["posterior_mean"]) == db.latent_space.dim + 1
    assert bundle["tables"]["profiles"][0]["filters"]["gender"] == "woman"
    assert "password_hash" not in bundle["tables"]["users"][0]
    assert len(bundle["rated_faces"]) == 12
    # Ben's like of Ann names her but is his private data: not in her export at all.
    assert [r["user_id"] for r in bundle["tables"]["decisions"]] == [ann_id]

    with db.engine.connect() as connection:
        backup_key = connection.execute(
            text("SELECT wrapped_key FROM user_keys WHERE user_id = :id"), {"id": ann_id}
        ).scalar_one()

    auditor = staff_headers(client, db, Scope.auditor)
    assert client.delete(f"/v1/audit/users/{ann_id}", headers=auditor).status_code == 204
    assert client.delete(f"/v1/audit/users/{ann_id}", headers=auditor).status_code == 204  # idempotent

    proof = client.get(f"/v1/audit/users/{ann_id}/deletion-proof", headers=auditor).json()
    assert proof["clean"] is True and set(proof["references"]) >= {"ratings.user_id", "matches.user_low"}
    assert client.get("/v1/me", headers=ann).status_code == 401  # tokens are dead
    assert client.get("/v1/matches", headers=ben).json()["items"] == []
    assert client.get(f"/v1/audit/users/{ann_id}/export", headers=auditor).status_code == 404
    # The backup's copy of her wrapped key is useless: the KEK that wrapped it is destroyed.
    with pytest.raises(DecryptionError):
        unwrap_data_key(db.keys.ring, bytes(backup_key), user_id=ann_id)
    # Ben is unaffected.
    assert client.get("/v1/me/export", headers=ben).status_code == 200
    verify = client.get("/v1/audit/log/verify", headers=auditor).json()
    assert verify["ok"] is True
    actions = [e["action"] for e in client.get("/v1/audit/log", params={"limit": 100}, headers=auditor).json()["items"]]
    assert "export" in actions and "deletion" in actions


def test_user_can_delete_themselves(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    user_id = client.get("/v1/me", headers=headers).json()["id"]
    assert client.delete("/v1/me", headers=headers).status_code == 204
    assert client.get("/v1/me", headers=headers).status_code == 401
    auditor = staff_headers(client, db, Scope.auditor)
    assert client.get(f"/v1/audit/users/{user_id}/deletion-proof", headers=auditor).json()["clean"] is True


def test_privacy_budget_report_json_and_csv(client: TestClient, db: Runtime) -> None:
    _active_user(client, db, gender="woman", seeks="man")
    auditor = staff_headers(client, db, Scope.auditor)
    report = client.get("/v1/audit/privacy-budget", headers=auditor).json()
    assert report["users"] == 1 and report["per_mechanism"]["randomized_response"]["spends"] == 12
    assert report["spent_quantiles"]["max"] == pytest.approx(db.policy.epsilon)
    csv_text = client.get("/v1/audit/privacy-budget", params={"format": "csv"}, headers=auditor).text
    assert csv_text.splitlines()[0] == "user_pseudonym,epsilon_spent,delta_spent,epsilon_cap"
    assert len(csv_text.splitlines()) == 2
    user = auth_headers(client)
    assert client.get("/v1/audit/privacy-budget", headers=user).status_code == 403


def test_staff_accounts_cannot_be_exported_or_deleted_over_the_api(client: TestClient, db: Runtime) -> None:
    auditor = staff_headers(client, db, Scope.auditor)
    admin = staff_headers(client, db, Scope.admin)
    admin_id = client.get("/v1/me", headers=admin).json()["id"]
    before = _audit_count(db)
    assert client.delete(f"/v1/audit/users/{admin_id}", headers=auditor).status_code == 403
    assert client.get(f"/v1/audit/users/{admin_id}/export", headers=auditor).status_code == 403
    assert client.get(f"/v1/audit/users/{uuid.uuid4()}/export", headers=auditor).status_code == 404
    assert client.get("/v1/me", headers=admin).status_code == 200
    assert _audit_count(db) == before + 3  # refused and not-found attempts are audited too


def test_staff_cannot_delete_or_export_their_own_account_over_the_api(client: TestClient, db: Runtime) -> None:
    auditor = staff_headers(client, db, Scope.auditor)
    auditor_id = client.get("/v1/me", headers=auditor).json()["id"]
    before = _audit_count(db)
    for response in (
        client.delete(f"/v1/audit/users/{auditor_id}", headers=auditor),
        client.get(f"/v1/audit/users/{auditor_id}/export", headers=auditor),
    ):
        assert response.status_code == 403 and response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/me", headers=auditor).status_code == 200  # still there
    assert _audit_count(db) == before + 2
    with db.engine.connect() as connection:
        last = connection.execute(text("SELECT action, details->>'refused' FROM audit_log ORDER BY id DESC LIMIT 2"))
        assert [tuple(row) for row in last] == [("export", "staff account"), ("deletion", "staff account")]


def test_removing_a_scope_takes_effect_before_the_token_expires(client: TestClient, db: Runtime) -> None:
    auditor = staff_headers(client, db, Scope.auditor)
    assert client.get("/v1/audit/log", headers=auditor).status_code == 200
    auditor_id = client.get("/v1/me", headers=auditor).json()["id"]
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE users SET scopes = ARRAY['user'] WHERE id = :id"), {"id": auditor_id})
    assert client.get("/v1/audit/log", headers=auditor).status_code == 403


def _audit_count(db: Runtime) -> int:
    with db.engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
