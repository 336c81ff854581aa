"""docker-compose.yml: every service that runs our code gets a valid environment, and the Ray
cluster and the match job reach the same PostgreSQL and key ring as the API (issue 15)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from matchsvc.settings import Settings

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
#: What ``${VAR}`` / ``${VAR:?msg}`` / ``${VAR:-default}`` stand for in this check.
PLACEHOLDERS = {
    "POSTGRES_PASSWORD": "pw",
    "MATCHSVC_SECRET_KEY": "s" * 40,
    "MATCHSVC_CORS_ORIGINS": "",
}
#: Variables that are not ours but that our services legitimately read.
FOREIGN = {"DATABASE_URL", "RAY_ADDRESS"}
SETTINGS_FIELDS = {f"MATCHSVC_{name.upper()}" for name in Settings.model_fields}


def _substitute(value: object) -> str:
    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in PLACEHOLDERS:
            return PLACEHOLDERS[name]
        if operator == ":-":
            return rest
        raise AssertionError(f"${{{name}}} has no placeholder and no default")

    return re.sub(r"\$\{([A-Z_]+)(?:(:[?-])([^}]*))?\}", one, str(value))


def _services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _ours() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in _services().items() if service.get("build") == "."}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: _substitute(value) for key, value in (service.get("environment") or {}).items()}


#: The api service's key ring is being fixed on another branch; when it merges this XPASSes
#: (strict), and the mark goes.
_API_KEYRING = pytest.mark.xfail(reason="api service has no key ring yet (fixed on another branch)", strict=True)


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=_API_KEYRING) if name == "api" else name for name in sorted(_ours())]
)
def test_each_service_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = _environment(_ours()[name])
    unknown = {key for key in environment if key not in SETTINGS_FIELDS | FOREIGN}
    assert not unknown, f"{name}: unknown variables {unknown} (a typo is silently ignored at run time)"
    for key in list(os.environ):
        if key.startswith("MATCHSVC_") or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url is not None and settings.database_url.endswith("matchsvc:pw@postgres:5432/matchsvc"), name


def test_the_ray_cluster_and_the_job_share_the_apis_database_and_key_ring() -> None:
    services = _services()
    api = services["api"]
    nodes = {name: services[name] for name in ("ray-head", "ray-worker", "match-job")}
    for name, service in nodes.items():
        environment = _environment(service)
        assert environment["DATABASE_URL"] == _environment(api)["DATABASE_URL"], name
        assert environment["MATCHSVC_KEYRING_FILE"] == "/data/keyring.json", name
        # The API's key-ring volume, mounted read-only: a node can never create or rotate a key ring.
        api_volume = next(v for v in api["volumes"] if v.split(":")[1] == "/data")
        assert f"{api_volume.split(':')[0]}:/data:ro" in service["volumes"], name
        assert "postgres" in services and services["postgres"]["image"].startswith("postgres:")
    head_port = next(arg.split("=")[1] for arg in nodes["ray-head"]["command"] if arg.startswith("--port="))
    worker_address = next(arg.split("=")[1] for arg in nodes["ray-worker"]["command"] if arg.startswith("--address="))
    assert worker_address == f"ray-head:{head_port}"
    assert _environment(nodes["match-job"])["RAY_ADDRESS"] == f"ray-head:{head_port}"
    assert shlex.join(nodes["match-job"]["command"]) == "matchsvc match run --backend ray"
    assert set(nodes["match-job"]["depends_on"]) == {"ray-head", "ray-worker"}
