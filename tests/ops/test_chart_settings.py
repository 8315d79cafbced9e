"""helm/replaybus and replaybus' settings: every variable the chart sets is a setting, the pods'
environment is a valid configuration, and the drain and proxy timings sit above what the server
holds open. Also: values the chart refuses, `helm lint`, and the values' documentation."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import ENV_PREFIX, Settings
from tests.ops.environment import container_environment
from tests.ops.rendering import CHART_DIR, Helm, HelmError, Render, Rendered
from tests.ops.values import BUNDLED, EXTERNAL, PRODUCTION, VALUE_SETS

SETTING_NAMES = frozenset(ENV_PREFIX + spec.name.upper() for spec in dataclasses.fields(Settings))


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def any_release(request: pytest.FixtureRequest, render: Render) -> Rendered:
    return render(VALUE_SETS[request.param])


def _settings_of(rendered: Rendered) -> Settings:
    """The server container's settings as `replaybus serve` would read them."""
    environment = container_environment(rendered, rendered.server_container)
    return Settings.from_env(environment.values)


def test_every_variable_the_chart_sets_is_a_replaybus_setting(any_release: Rendered) -> None:
    assert len(SETTING_NAMES) > 40
    for container in any_release.containers:
        environment = container_environment(any_release, container)
        names = set(environment.values) - environment.helpers
        unknown = sorted(name for name in names if name not in SETTING_NAMES)
        assert not unknown, f"{container['name']}: {unknown} are not settings"
        # A helper only carries a value into a setting's $(reference): never a setting itself.
        assert not [name for name in environment.helpers if name.startswith(ENV_PREFIX)]
    for secret in any_release.all("Secret"):
        assert set(secret.obj["data"]) <= SETTING_NAMES


def test_the_pods_environment_is_a_valid_configuration(any_release: Rendered) -> None:
    settings = _settings_of(any_release)
    assert settings.host == "0.0.0.0"
    assert settings.port == any_release.server_container["ports"][0]["containerPort"]
    # The migration init container reads the same configuration as the server.
    environments = [container_environment(any_release, c) for c in any_release.containers]
    assert all(e.values == environments[-1].values for e in environments)


@pytest.mark.parametrize(
    ("values", "redis", "database"),
    [
        (PRODUCTION, PRODUCTION["redis"]["url"], PRODUCTION["postgresql"]["url"]),
        (EXTERNAL, EXTERNAL["secrets"]["redisUrl"], EXTERNAL["secrets"]["databaseUrl"]),
        (
            BUNDLED,
            "redis://:from-secret-rel-redis-redis-password@rel-redis-master:6379/0",
            "postgresql://replaybus:from-secret-rel-postgresql-password@rel-postgresql:5432/replaybus",
        ),
    ],
)
def test_redis_and_postgres_urls_come_from_values_secrets_or_the_release(
    render: Render, values: dict[str, Any], redis: str, database: str
) -> None:
    rendered = render(values)
    environment = container_environment(rendered, rendered.server_container)
    assert environment.values["REPLAYBUS_REDIS_URL"] == redis
    assert environment.values["REPLAYBUS_DATABASE_URL"] == database
    config = rendered.one("ConfigMap")["data"]
    # A URL with a password never lands in the ConfigMap.
    for name in ("REPLAYBUS_REDIS_URL", "REPLAYBUS_DATABASE_URL"):
        url = urlsplit(environment.values[name])
        assert (name in config) == (url.password is None and environment.sources[name] != "env")


def test_the_release_redis_and_postgres_are_found_by_bitnami_names(render: Render) -> None:
    for release, redis_host, postgres_host in (
        ("rel", "rel-redis-master", "rel-postgresql"),
        ("redis-events", "redis-events-master", "redis-events-postgresql"),
    ):
        rendered = render(BUNDLED, release=release)
        environment = container_environment(rendered, rendered.server_container)
        redis = urlsplit(environment.values["REPLAYBUS_REDIS_URL"])
        database = urlsplit(environment.values["REPLAYBUS_DATABASE_URL"])
        assert (redis.hostname, redis.port) == (redis_host, 6379)
        assert (database.hostname, database.port, database.path) == (
            postgres_host,
            5432,
            "/replaybus",
        )
        assert database.username == "replaybus"
        refs = {
            entry["valueFrom"]["secretKeyRef"]["name"]
            for entry in rendered.server_container["env"]
            if "valueFrom" in entry
        }
        assert refs == {redis_host.removesuffix("-master"), postgres_host}


def test_dependencies_are_optional_and_off_by_default() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    conditions = {dep["name"]: dep["condition"] for dep in chart["dependencies"]}
    assert conditions == {"redis": "redis.enabled", "postgresql": "postgresql.enabled"}
    assert values["redis"]["enabled"] is False
    assert values["postgresql"]["enabled"] is False


def test_network_policy_opens_the_configured_database_ports(any_release: Rendered) -> None:
    environment = container_environment(any_release, any_release.server_container).values
    egress = any_release.one("NetworkPolicy")["spec"]["egress"]
    open_ports = {port["port"] for rule in egress for port in rule["ports"]}
    for name, default in (("REPLAYBUS_REDIS_URL", 6379), ("REPLAYBUS_DATABASE_URL", 5432)):
        if name in environment:
            assert (urlsplit(environment[name]).port or default) in open_ports


def _pre_stop_seconds(rendered: Rendered) -> int:
    command = rendered.server_container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


@pytest.mark.parametrize(
    "drain",
    [{}, {"grace": 30, "preStopSleep": 10}, {"grace": 1, "preStopSleep": 0, "margin": 1}],
)
def test_termination_grace_outlasts_the_pre_stop_pause_and_the_shutdown_grace(
    render: Render, drain: dict[str, int]
) -> None:
    rendered = render({"drain": drain})
    settings = _settings_of(rendered)
    if "grace" in drain:
        assert settings.shutdown_grace == drain["grace"]
    pre_stop = _pre_stop_seconds(rendered)
    assert pre_stop == drain.get("preStopSleep", pre_stop)
    termination = rendered.pod_spec["terminationGracePeriodSeconds"]
    assert termination > pre_stop + settings.shutdown_grace


@pytest.mark.parametrize(
    "streaming",
    [{}, {"bayeuxTimeout": 300}, {"bayeuxTimeout": 5, "sseHeartbeat": 60}],
)
def test_ingress_timeouts_outlast_the_long_poll_and_the_sse_heartbeat(
    render: Render, streaming: dict[str, int]
) -> None:
    rendered = render({**PRODUCTION, "streaming": streaming})
    settings = _settings_of(rendered)
    if "bayeuxTimeout" in streaming:
        assert settings.bayeux_timeout == streaming["bayeuxTimeout"]
    annotations = rendered.one("Ingress")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = int(annotations[prefix + timeout])
        assert seconds > settings.bayeux_timeout
        assert seconds > settings.sse_heartbeat
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-request-buffering"] == "off"


def test_default_long_poll_is_the_settings_default(render: Render) -> None:
    settings = _settings_of(render())
    assert settings.bayeux_timeout == Settings().bayeux_timeout
    assert settings.sse_heartbeat == Settings().sse_heartbeat


def test_ingress_annotations_from_values_win(render: Render) -> None:
    overridden = {"nginx.ingress.kubernetes.io/proxy-body-size": "32m", "team": "events"}
    values = {**PRODUCTION, "ingress": {**PRODUCTION["ingress"], "annotations": overridden}}
    annotations = render(values).one("Ingress")["metadata"]["annotations"]
    assert overridden.items() <= annotations.items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 3}, "shared engine"),
        ({"config": {"REPLAYBUS_WORKERS": "2"}}, "shared engine"),
        ({**EXTERNAL, "secrets": {**EXTERNAL["secrets"], "signingKey": ""}}, "signing key"),
        ({**EXTERNAL, "secrets": {**EXTERNAL["secrets"], "databaseUrl": ""}}, "shared catalog"),
        ({"config": {"REPLAYBUS_PORT": "9000"}}, "set by the chart"),
        ({"config": {"LOG_LEVEL": "debug"}}, "REPLAYBUS_"),
        ({"secrets": {"signingkey": "x"}}, "not a known secret"),
        ({"redis": {"enabled": True, "url": "redis://elsewhere:6379"}}, "redis.enabled"),
        ({"redis": {"url": "redis://a:6379"}, "secrets": {"redisUrl": "redis://b"}}, "one of"),
        ({"drain": {"grace": 0}}, "at least 1 second"),
    ],
)
def test_chart_refuses_values_that_would_break_the_release(
    render: Render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_passes(helm: Helm, chart: Path, name: str) -> None:
    output = helm.lint(chart, VALUE_SETS[name])
    assert "0 chart(s) failed" in output


def test_migration_runs_only_with_a_catalog_database(render: Render, tmp_path: Path) -> None:
    """The init container's shell command, run here: without REPLAYBUS_DATABASE_URL it passes;
    with one it runs `replaybus migrate` (which fails on a port where nothing listens)."""
    [init] = render().pod_spec["initContainers"]
    command = init["command"]
    assert command[:2] == ["sh", "-c"]
    # The `replaybus` script of the interpreter running the tests, as the image's venv has it.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    skipped = subprocess.run(
        command, env={**env, "PATH": path}, capture_output=True, text=True, timeout=60, check=False
    )
    assert skipped.returncode == 0
    assert "no REPLAYBUS_DATABASE_URL" in skipped.stdout
    migrating = subprocess.run(
        command,
        env={**env, "PATH": path, "REPLAYBUS_DATABASE_URL": "postgresql://x@127.0.0.1:9/db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrating.returncode != 0
    assert "migration failed" in migrating.stderr


def _values_keys(text: str) -> list[tuple[str, bool]]:
    """(dotted key, documented) for every key of values.yaml, in order: documented when a `# --`
    comment block sits right above it or above one of its parents."""
    keys: list[tuple[str, bool]] = []
    stack: list[tuple[int, str, bool]] = []
    comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if stripped.startswith("#"):
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if match is None:
            comment = False if not stripped else comment
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = comment or any(parent[2] for parent in stack)
        dotted = ".".join([*(parent[1] for parent in stack), match.group(2)])
        stack.append((indent, match.group(2), documented))
        keys.append((dotted, documented))
        comment = False
    return keys


def test_every_value_is_documented_with_a_helm_docs_comment() -> None:
    keys = _values_keys((CHART_DIR / "values.yaml").read_text())
    names = [key for key, _ in keys]
    leaves = [
        (key, documented)
        for key, documented in keys
        if not any(other.startswith(key + ".") for other in names)
    ]
    assert len(leaves) > 50
    undocumented = [key for key, documented in leaves if not documented]
    assert not undocumented


def test_chart_readme_covers_every_top_level_value() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    readme = (CHART_DIR / "README.md").read_text()
    missing = [key for key in values if f"`{key}" not in readme]
    assert not missing
