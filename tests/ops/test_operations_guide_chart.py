"""The operations guide's `helm template` command, run as written (the guide's Helm is this
test's pinned binary; the chart is the repository's, with its optional dependencies stubbed as
`helm dependency build` would have fetched them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.ops.rendering import Helm, parse_output
from tests.ops.values import PRODUCTION_FILE

GUIDE = Path(__file__).parents[2] / "docs" / "operations.md"
REPOSITORY = Path(__file__).parents[2]


def _guide_helm_command() -> list[str]:
    section = GUIDE.read_text().split("## Container image and Kubernetes", 1)[1]
    match = re.search(r"```sh\n(helm template .*?)\n```", section)
    assert match is not None, "the operations guide lost its helm template command"
    return shlex.split(match.group(1))


def test_the_guides_helm_command_renders_the_shipped_production_example(
    helm: Helm, chart: Path
) -> None:
    command = _guide_helm_command()
    assert command[:2] == ["helm", "template"]
    arguments = [
        str(chart) if argument == "helm/replaybus" else argument for argument in command[1:]
    ]
    values = arguments[arguments.index("-f") + 1]
    assert (REPOSITORY / values).resolve() == PRODUCTION_FILE.resolve()
    arguments[arguments.index("-f") + 1] = str(PRODUCTION_FILE)

    rendered = parse_output(helm.run(*arguments))

    deployment = rendered.one("Deployment")
    assert deployment["metadata"]["name"] == "events-replaybus"
    assert {"Service", "Ingress", "HorizontalPodAutoscaler", "ServiceMonitor"} <= rendered.kinds
