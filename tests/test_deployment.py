"""docker-compose.yml starts what it promises (issue 13, item 15; issue 15's Ray cluster and match job).

No Docker engine runs here, so the file is checked the way ``docker compose`` reads it: variables
interpolated (required ones given dummy values), then the environment of every service that runs
our image validated by the same ``Settings`` the service starts with, in production mode.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from matchsvc.cli import app as cli_app
from matchsvc.keys import KeyRingStore
from matchsvc.settings import Environment, Settings

ROOT = Path(__file__).resolve().parents[1]
#: Long enough for every secret the settings check (tokens need 32 characters).
DUMMY = "x" * 48
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def _interpolate(text: str) -> str:
    """Compose's substitution: ``${V}``, ``${V:-default}``, ``${V:?error}``, ``$$``; unset variables get DUMMY
    unless a default is given (the dummy stands for what an operator must set)."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        op, arg = match.group("op"), match.group("arg")
        return arg if op in (":-", "-") else DUMMY

    return _VARIABLE.sub(value, text)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(_interpolate((ROOT / "docker-compose.yml").read_text()))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):  # the "KEY=value" list form
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def test_interpolation_follows_compose_rules() -> None:
    assert _interpolate("a${X:?set X}b${Y:-dflt}c${Z}d$$e") == f"a{DUMMY}bdflt{'c'}{DUMMY}d$e"


#: Variables that are not ours but that our services legitimately read.
FOREIGN = {"DATABASE_URL", "RAY_ADDRESS"}
SETTINGS_FIELDS = {f"MATCHSVC_{name.upper()}" for name in Settings.model_fields}


def _ours() -> dict[str, dict[str, Any]]:
    """The services that run our image with settings (the one-shot ``keyring`` service reads none)."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("build") == "." and service.get("environment")
    }


@pytest.mark.parametrize("name", sorted(_ours()))
def test_each_service_environment_is_a_valid_production_configuration(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = _environment(_ours()[name])
    unknown = {key for key in environment if key not in SETTINGS_FIELDS | FOREIGN}
    assert not unknown, f"{name}: unknown variables {unknown} (a typo is silently ignored at run time)"
    for key in list(os.environ):
        if key.startswith("MATCHSVC_") or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises when production lacks a database, a secret or a key ring
    assert settings.environment is Environment.production, name


def test_the_ray_cluster_and_the_job_share_the_apis_database_and_key_ring() -> None:
    services = _compose()["services"]
    api = services["api"]
    nodes = {name: services[name] for name in ("ray-head", "ray-worker", "match-job")}
    for name, service in nodes.items():
        environment = _environment(service)
        assert environment["DATABASE_URL"] == _environment(api)["DATABASE_URL"], name
        assert environment["MATCHSVC_KEYRING_FILE"] == _environment(api)["MATCHSVC_KEYRING_FILE"], name
        # The API's key-ring volume, mounted read-only: a node can never create or rotate a key ring.
        api_volume = next(v for v in api["volumes"] if v.split(":")[1] == "/data")
        assert f"{api_volume.split(':')[0]}:/data:ro" in service["volumes"], name
        # Each task reads its ranges and writes its lists itself (D36), in statements far longer than a request's.
        limits = {key: float(value) for key, value in environment.items() if key.startswith("MATCHSVC_DB_")}
        assert limits["MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS"] >= 600, name
        assert limits["MATCHSVC_DB_DEADLINE_SECONDS"] > limits["MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS"], name
    head_port = next(arg.split("=")[1] for arg in nodes["ray-head"]["command"] if arg.startswith("--port="))
    worker_address = next(arg.split("=")[1] for arg in nodes["ray-worker"]["command"] if arg.startswith("--address="))
    assert worker_address == f"ray-head:{head_port}"
    assert _environment(nodes["match-job"])["RAY_ADDRESS"] == f"ray-head:{head_port}"
    assert shlex.join(nodes["match-job"]["command"]) == "matchsvc match run --backend ray"
    assert set(nodes["match-job"]["depends_on"]) == {"ray-head", "ray-worker"}


def test_the_key_ring_file_is_created_on_a_volume_the_api_mounts() -> None:
    services = _compose()["services"]
    ring = PurePosixPath(_environment(services["api"])["MATCHSVC_KEYRING_FILE"])

    def mounted(service: dict[str, Any]) -> bool:
        targets = [PurePosixPath(volume.split(":")[1]) for volume in service.get("volumes", [])]
        return any(ring.is_relative_to(target) for target in targets)

    assert mounted(services["api"]), "the API must see the ring (and persist rotations) on a volume"
    creators = [
        name for name, service in services.items() if service.get("command", [])[:3] == ["matchsvc", "keys", "init"]
    ]
    assert creators, "some service must create the key ring"
    creator = services[creators[0]]
    assert str(ring) in creator["command"] and mounted(creator)
    assert services["api"]["depends_on"][creators[0]]["condition"] == "service_completed_successfully"


def test_keys_init_creates_a_private_ring_and_never_overwrites_one(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "init", str(path)])
    assert created.exit_code == 0, created.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert KeyRingStore(path=path).ring.current == 1

    again = runner.invoke(cli_app, ["keys", "init", str(path)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    kept = runner.invoke(cli_app, ["keys", "init", str(path), "--exist-ok"])
    assert kept.exit_code == 0
    assert path.read_text() == first
