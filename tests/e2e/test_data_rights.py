"""Issue 6's acceptance: export, deletion by an auditor, crypto-shredding, and the deletion proof."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from matchsvc.jobs.matching import run_matching
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services import auth as auth_service
from matchsvc.services.data_subject import user_references
from privacy.crypto import DecryptionError, unwrap_data_key
from tests.support.accounts import PASSWORD, auth_headers


def _auditor(client: TestClient, db: Runtime) -> dict[str, str]:
    name = f"auditor{uuid.uuid4().hex[:6]}"
    with db.sessions() as session:
        auth_service.register(
            session, keys=db.keys, username=name, password=PASSWORD, birth_year=1975, scopes=frozenset({Scope.auditor})
        )
    return auth_headers(client, name)


def _active_user(client: TestClient, db: Runtime, *, gender: str, seeks: str) -> tuple[dict[str, str], str]:
    headers = auth_headers(client)
    for face in client.get("/v1/faces/next", params={"n": 12}, headers=headers).json()["faces"]:
        client.post(
            "/v1/ratings", json={"face_id": face["id"], "liked": True},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
    look = np.zeros(db.latent_space.dim)
    assert client.put("/v1/me/appearance", json={"latent": look.tolist()}, headers=headers).status_code == 204
    profile = {"gender": gender, "seeks": [seeks], "age_min": 18, "age_max": 99}
    assert client.put("/v1/me/profile", json=profile, headers=headers).status_code == 200
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
    # Completeness: every row referencing Ann, in every table that can, is in the bundle.
    with db.engine.connect() as connection:
        for table, column in user_references():
            count = connection.execute(
                text(f'SELECT count(*) FROM "{table.name}" WHERE "{column.name}" = :id'), {"id": ann_id}
            ).scalar_one()
            exported = [r for r in bundle["tables"].get(table.name, []) if r["referenced_by"] == column.name]
            assert len(exported) == count, (table.name, column.name)
    assert len(bundle["tables"]["ratings"]) == 12
    assert all(isinstance(r["label"]["recorded_like"], bool) for r in bundle["tables"]["ratings"])
    assert len(bundle["tables"]["appearances"][0]["latent"]) == db.latent_space.dim
    assert set(bundle["tables"]["preference_states"][0]["state"]) == {"coef", "intercept"}
    assert bundle["tables"]["profiles"][0]["filters"]["gender"] == "woman"
    assert "password_hash" not in bundle["tables"]["users"][0]
    assert len(bundle["rated_faces"]) == 12
    # Ben's like of Ann references her but is his private data.
    theirs = [r for r in bundle["tables"]["decisions"] if r["referenced_by"] == "target_id"]
    assert theirs and all(r["choice"].startswith("withheld") for r in theirs)

    with db.engine.connect() as connection:
        backup_key = connection.execute(
            text("SELECT wrapped_key FROM user_keys WHERE user_id = :id"), {"id": ann_id}
        ).scalar_one()

    auditor = _auditor(client, db)
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
    auditor = _auditor(client, db)
    assert client.get(f"/v1/audit/users/{user_id}/deletion-proof", headers=auditor).json()["clean"] is True


def test_privacy_budget_report_json_and_csv(client: TestClient, db: Runtime) -> None:
    _active_user(client, db, gender="woman", seeks="man")
    auditor = _auditor(client, db)
    report = client.get("/v1/audit/privacy-budget", headers=auditor).json()
    assert report["users"] == 1 and report["per_mechanism"]["randomized_response"]["spends"] == 12
    assert report["spent_quantiles"]["max"] == pytest.approx(db.policy.epsilon)
    csv_text = client.get("/v1/audit/privacy-budget", params={"format": "csv"}, headers=auditor).text
    assert csv_text.splitlines()[0] == "user_pseudonym,epsilon_spent,delta_spent,epsilon_cap"
    assert len(csv_text.splitlines()) == 2
    user = auth_headers(client)
    assert client.get("/v1/audit/privacy-budget", headers=user).status_code == 403
