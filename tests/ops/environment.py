"""The environment a rendered container would get from the kubelet: envFrom ConfigMaps and
Secrets of the release, then `env` in order with `$(NAME)` references expanded."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.ops.rendering import Rendered

__all__ = ["ContainerEnvironment", "container_environment"]

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True, slots=True)
class ContainerEnvironment:
    """`values`: name to value (a value read from a Secret outside the release is a placeholder
    naming it). `sources`: which object or entry set each name. `helpers`: `env` names that other
    `env` values reference as `$(NAME)`. `external_secrets`: Secrets not in the release."""

    values: dict[str, str]
    sources: dict[str, str]
    helpers: frozenset[str]
    external_secrets: tuple[str, ...]


def _decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    data: Mapping[str, str] = secret.get("data") or {}
    plain: Mapping[str, str] = secret.get("stringData") or {}
    return {**{k: base64.b64decode(v).decode() for k, v in data.items()}, **plain}


def _from_source(
    rendered: Rendered, reference: Mapping[str, Any]
) -> tuple[str, dict[str, str] | None]:
    """(label, data) of one envFrom entry; data is None for a Secret outside the release."""
    if "configMapRef" in reference:
        name = reference["configMapRef"]["name"]
        [config_map] = [m.obj for m in rendered.all("ConfigMap") if m.name == name]
        return f"ConfigMap/{name}", {k: str(v) for k, v in config_map["data"].items()}
    name = reference["secretRef"]["name"]
    secrets = [m.obj for m in rendered.all("Secret") if m.name == name]
    return f"Secret/{name}", _decoded(secrets[0]) if secrets else None


def container_environment(rendered: Rendered, container: Mapping[str, Any]) -> ContainerEnvironment:
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    external: list[str] = []
    for reference in container.get("envFrom", []):
        label, data = _from_source(rendered, reference)
        if data is None:
            external.append(label.removeprefix("Secret/"))
            continue
        for name, value in data.items():
            values[name] = value
            sources[name] = label
    helpers: set[str] = set()
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            value = str(entry["value"])
            for referenced in _REFERENCE.findall(value):
                assert referenced in values, f"{name} uses $({referenced}) before it is defined"
                helpers.add(referenced)
            values[name] = _REFERENCE.sub(lambda match: values[match.group(1)], value)
        else:
            key = entry["valueFrom"]["secretKeyRef"]
            values[name] = f"from-secret-{key['name']}-{key['key']}"
        sources[name] = "env"
    return ContainerEnvironment(values, sources, frozenset(helpers), tuple(external))
