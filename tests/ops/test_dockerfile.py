"""The Dockerfile and .dockerignore, read without Docker (no daemon here): stages, user, ports,
health check, entry point, secrets and build context; the health check and the entry point are
also run for real against a `replaybus serve` on this machine."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from app.settings import ENV_PREFIX, Settings
from tests.e2e.server import run_server
from tests.ops.dockerfile import (
    DockerIgnore,
    Stage,
    exec_form,
    parse_dockerfile,
    parse_env,
    split_flags,
)
from tests.ops.rendering import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|PASSPHRASE|_KEY|_KEYS|CREDENTIALS?)$")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore.parse(DOCKERIGNORE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _image_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        env.update(parse_env(instruction))
    return env


def _copy_sources(stage: Stage) -> list[tuple[str, dict[str, str]]]:
    """(source, flags) of every COPY/ADD of the stage."""
    sources = []
    for instruction in [*stage.all("COPY"), *stage.all("ADD")]:
        flags, rest = split_flags(instruction.arguments)
        words = exec_form(rest) if rest.startswith("[") else rest.split()
        sources += [(source, flags) for source in words[:-1]]
    return sources


def test_final_stage_is_a_clean_slim_python_fed_by_a_builder_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name is not None
    assert final.name != builder.name
    assert final.base == builder.base == "python:3.11-slim"
    from_builder = [flags.get("from") for _, flags in _copy_sources(final)]
    assert builder.name in from_builder, "the runtime stage copies the builder's venv"
    # The builder installs the server distribution (the repository root), not clients/python.
    installs = [i.arguments for i in builder.all("RUN") if "pip install" in i.arguments]
    assert installs
    assert all(re.search(r"pip install \.(\s|$)", command) for command in installs)
    assert all("clients" not in command for command in installs)


def test_final_stage_runs_as_a_fixed_non_root_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the runtime stage sets USER"
    uid, _, gid = user.arguments.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # USER comes after everything that needs root.
    assert final.instructions.index(user) > max(
        final.instructions.index(i) for i in final.all("RUN")
    )


def test_image_listens_on_every_interface_on_the_exposed_default_port(final: Stage) -> None:
    default_port = Settings().port
    exposed = {int(word.split("/")[0]) for i in final.all("EXPOSE") for word in i.arguments.split()}
    assert exposed == {default_port}
    env = _image_env(final)
    assert env[ENV_PREFIX + "HOST"] == "0.0.0.0"
    assert int(env.get(ENV_PREFIX + "PORT", default_port)) == default_port
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    assert (settings.host, settings.port) == ("0.0.0.0", default_port)


def test_image_runs_replaybus_serve_and_stops_on_sigterm(
    final: Stage, pyproject: dict[str, Any]
) -> None:
    entrypoint, command = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    assert command is not None
    assert exec_form(entrypoint.arguments) + exec_form(command.arguments) == ["replaybus", "serve"]
    assert "replaybus" in pyproject["project"]["scripts"]
    signal = final.last("STOPSIGNAL")
    assert signal is not None
    assert signal.arguments == "SIGTERM"


def test_no_secret_is_baked_into_the_image(stages: list[Stage]) -> None:
    secret_settings = {
        ENV_PREFIX + spec.name.upper()
        for spec in dataclasses.fields(Settings)
        if spec.metadata["secret"]
    }
    assert {ENV_PREFIX + "SIGNING_KEY", ENV_PREFIX + "OPERATOR_KEY"} <= secret_settings
    text = DOCKERFILE.read_text()
    global_args = re.findall(r"^ARG\s+(\w+)", text, flags=re.MULTILINE)
    names = set(global_args)
    for stage in stages:
        for instruction in [*stage.all("ENV"), *stage.all("ARG")]:
            names |= set(parse_env(instruction))
    assert names
    assert not names & secret_settings
    assert not [name for name in names if _SECRET_NAME.search(name)]
    assert "BEGIN" not in text, "no PEM block in the Dockerfile"


def test_every_copied_source_is_in_the_build_context(
    stages: list[Stage], ignore: DockerIgnore
) -> None:
    sources = [
        src for stage in stages for src, flags in _copy_sources(stage) if "from" not in flags
    ]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not ignore.excludes(source), f"COPY {source}: excluded by .dockerignore"


def test_builder_copies_everything_the_server_distribution_is_built_from(
    stages: list[Stage], pyproject: dict[str, Any]
) -> None:
    copied = {Path(src).parts[0] for src, flags in _copy_sources(stages[0]) if "from" not in flags}
    patterns: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    assert packages == {"app", "api", "storage"}
    assert packages <= copied
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied


def test_dockerignore_keeps_local_state_out_and_the_packages_in(ignore: DockerIgnore) -> None:
    for path in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "tests/node/node_modules/ws/index.js",
        "clients/js/node_modules/x/y.js",
        "bench-results/latest.json",
        ".mypy_cache/3.11/x.json",
        "app/__pycache__/settings.cpython-311.pyc",
        "storage/redis/__pycache__/engine.cpython-311.pyc",
        "replaybus.egg-info/PKG-INFO",
        "helm/replaybus/values.yaml",
        ".env",
    ):
        assert ignore.excludes(path), f"{path} would be sent to the Docker daemon"
    shipped = [
        path.relative_to(REPO_ROOT).as_posix()
        for package in ("app", "api", "storage")
        for path in (REPO_ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    # The Lua scripts and SQL migrations are package data the wheel must carry.
    assert any(path.endswith(".lua") for path in shipped)
    assert any(path.endswith(".sql") for path in shipped)
    kept_out = [path for path in shipped if ignore.excludes(path)]
    assert not kept_out
    assert not ignore.excludes("pyproject.toml")
    assert not ignore.excludes("README.md")


def _healthcheck_command(final: Stage) -> list[str]:
    instruction = final.last("HEALTHCHECK")
    assert instruction is not None, "the image has a HEALTHCHECK"
    _, rest = split_flags(instruction.arguments)
    keyword, _, command = rest.partition(" ")
    assert keyword == "CMD"
    return exec_form(command)


def test_healthcheck_asks_healthz_with_the_standard_library(final: Stage) -> None:
    command = _healthcheck_command(final)
    assert command[0] == "python", "slim images have no curl: python is on the venv's PATH"
    assert "/healthz" in " ".join(command)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_healthcheck_passes_on_a_serving_node_and_fails_without_one(final: Stage) -> None:
    command = [sys.executable, *_healthcheck_command(final)[1:]]
    with run_server() as server:
        port = server.base_url.rsplit(":", 1)[1]
        healthy = subprocess.run(
            command, env={**os.environ, ENV_PREFIX + "PORT": port}, timeout=30, check=False
        )
    assert healthy.returncode == 0
    down = subprocess.run(
        command,
        env={**os.environ, ENV_PREFIX + "PORT": str(_free_port())},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0
