"""docker-compose.yml checked against the code, since no Docker engine runs here.

Every service's command must be an entry point of the workspace, and every
variable it sets must be one the settings class of that command reads (with a
value that class accepts).
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from songswipe.shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PIPELINE = ("webhook", "orchestrator", "generator", "finalizer")
#: ``songswipe-migrate`` reads its one variable without a settings class.
MIGRATE_VARIABLES = {"DATABASE_URL"}


def _workspace_members() -> list[Path]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += [
            p for p in sorted(ROOT.glob(pattern)) if (p / "pyproject.toml").exists()
        ]
    return members


def _entry_points() -> dict[str, str]:
    found: dict[str, str] = {}
    for member in _workspace_members():
        project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
        found.update(project.get("scripts", {}))
    return found


ENTRY_POINTS = _entry_points()


def _command(service: dict[str, Any]) -> str:
    entrypoint = service.get("entrypoint")
    command = entrypoint if entrypoint else service["command"]
    return str(command[0] if isinstance(command, list) else command.split()[0])


def _settings_class(entry_point: str) -> type[ServiceSettings] | None:
    """The one ``ServiceSettings`` subclass of the entry point's package."""
    package = entry_point.split(":")[0].rsplit(".", 1)[0]
    try:
        module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError:
        return None
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ServiceSettings)
        and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} should define one settings class"
    return classes[0]


def _project_services() -> list[str]:
    return [name for name, service in SERVICES.items() if "build" in service]


@pytest.mark.parametrize("name", _project_services())
def test_every_command_is_a_workspace_entry_point(name: str) -> None:
    command = _command(SERVICES[name])

    assert command in ENTRY_POINTS, f"{name} runs {command}, not an entry point"
    module_name, _, function = ENTRY_POINTS[command].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))


@pytest.mark.parametrize("name", _project_services())
def test_every_variable_set_is_read_by_the_services_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = SERVICES[name]
    environment = {k: str(v) for k, v in service.get("environment", {}).items()}
    command = _command(service)

    if command == "songswipe-migrate":
        assert set(environment) <= MIGRATE_VARIABLES
        return
    settings_class = _settings_class(ENTRY_POINTS[command])
    assert settings_class is not None, f"{command} has no settings module"
    unknown = {k for k in environment if k.lower() not in settings_class.model_fields}
    assert not unknown, (
        f"{name} sets {unknown}, which {settings_class.__name__} ignores"
    )

    monkeypatch.chdir(ROOT / "tests")  # no .env file here
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings_class()


@pytest.mark.parametrize("name", PIPELINE)
def test_services_wait_for_healthy_kafka_and_migrated_database(name: str) -> None:
    service = SERVICES[name]

    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (
        service["depends_on"]["migrate"]["condition"]
        == "service_completed_successfully"
    )
    assert {"path": ".env", "required": False} in service["env_file"]
    assert "healthcheck" in service


def test_migrations_wait_for_healthy_postgres() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )
    assert "healthcheck" in SERVICES["kafka"]
    assert "healthcheck" in SERVICES["postgres"]


@pytest.mark.parametrize("name", PIPELINE)
def test_health_checks_probe_the_port_the_service_listens_on(name: str) -> None:
    service = SERVICES[name]
    environment = service["environment"]
    probe = " ".join(service["healthcheck"]["test"])
    port_variable = "WEBHOOK_PORT" if name == "webhook" else "METRICS_PORT"

    ports = re.findall(r"127\.0\.0\.1:(\d+)/", probe)

    assert ports == [str(environment[port_variable])]


def test_generator_scales_to_three() -> None:
    generator = SERVICES["generator"]

    assert "container_name" not in generator
    assert "ports" not in generator
    assert int(generator["environment"]["KAFKA_PARTITIONS"]) >= 3


def test_kafka_is_kraft_without_topic_auto_creation() -> None:
    kafka = SERVICES["kafka"]

    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_dockerfile_installs_every_workspace_member() -> None:
    for member in _workspace_members():
        relative = member.relative_to(ROOT).as_posix()
        assert f"COPY {relative}/pyproject.toml" in DOCKERFILE, relative
