"""helm/replaybus rendered by Helm 3 for representative values, read as Kubernetes objects:
which objects exist, how they point at each other, probes, ports, security and roll-outs."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.settings import Settings
from tests.ops.dockerfile import parse_dockerfile
from tests.ops.rendering import REPO_ROOT, Render, Rendered, sha256_of
from tests.ops.values import BUNDLED, EXTERNAL, PRODUCTION, VALUE_SETS

_ALWAYS = {"ConfigMap", "Service", "Deployment", "ServiceAccount", "PodDisruptionBudget"}
_STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
_INSTANCE = {"app.kubernetes.io/instance": "rel"}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def any_release(request: pytest.FixtureRequest, render: Render) -> Rendered:
    """The chart rendered with each representative value set."""
    return render(VALUE_SETS[request.param])


def test_defaults_render_one_pod_with_no_optional_object(render: Render) -> None:
    rendered = render()
    assert rendered.kinds == _ALWAYS | {"NetworkPolicy"}
    assert rendered.one("Deployment")["spec"]["replicas"] == 1


def test_production_values_render_ingress_autoscaler_and_service_monitor(render: Render) -> None:
    rendered = render(PRODUCTION)
    assert rendered.kinds == _ALWAYS | {
        "NetworkPolicy",
        "Ingress",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    }


def test_optional_objects_follow_their_switches(render: Render) -> None:
    rendered = render(
        {
            "networkPolicy": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "serviceAccount": {"create": False},
        }
    )
    assert rendered.kinds == {"ConfigMap", "Service", "Deployment"}
    assert rendered.pod_spec["serviceAccountName"] == "default"


def test_every_object_carries_the_standard_labels_and_the_release_namespace(
    any_release: Rendered,
) -> None:
    for manifest in any_release.manifests:
        labels = manifest.obj["metadata"]["labels"]
        assert all(labels.get(label) for label in _STANDARD_LABELS), manifest.source
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert manifest.obj["metadata"]["namespace"] == "events"
        assert manifest.name.startswith("rel-replaybus")


def test_selectors_of_service_budget_policy_and_autoscaler_find_the_pods(render: Render) -> None:
    rendered = render(PRODUCTION)
    deployment = rendered.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector
    assert selector.items() <= pod_labels.items()
    service = rendered.one("Service")
    assert service["spec"]["selector"] == selector
    assert rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    policy_selector = rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert policy_selector.items() <= pod_labels.items()
    target = rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    monitor = rendered.one("ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [endpoint] = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_the_http_port_is_the_settings_default_everywhere(render: Render) -> None:
    rendered = render()
    [port] = rendered.server_container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", Settings().port)
    assert rendered.one("ConfigMap")["data"]["REPLAYBUS_PORT"] == str(Settings().port)
    [service_port] = rendered.one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    exposed = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())[-1].last("EXPOSE")
    assert exposed is not None
    assert exposed.arguments == str(port["containerPort"])


def test_another_container_port_moves_the_listener_with_it(render: Render) -> None:
    rendered = render({"containerPort": 9090})
    [port] = rendered.server_container["ports"]
    assert port["containerPort"] == 9090
    assert rendered.one("ConfigMap")["data"]["REPLAYBUS_PORT"] == "9090"
    assert rendered.one("ConfigMap")["data"]["REPLAYBUS_HOST"] == "0.0.0.0"


def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness(any_release: Rendered) -> None:
    container = any_release.server_container
    paths = {
        probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/healthz", "http"),
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
    }


def test_pods_run_as_the_image_user_on_a_read_only_root(any_release: Rendered) -> None:
    final = parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())[-1]
    user = final.last("USER")
    assert user is not None
    image_uid = int(user.arguments.split(":")[0])
    pod = any_release.pod_spec
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for container in any_release.containers:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == image_uid
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        [tmp] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]]


def test_checksum_annotation_is_the_sha256_of_the_rendered_config_map(
    any_release: Rendered,
) -> None:
    annotations = any_release.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == sha256_of(any_release.manifest("ConfigMap"))


def test_a_config_change_changes_the_checksum_and_so_rolls_the_pods(render: Render) -> None:
    before = render()
    after = render({"config": {"REPLAYBUS_LOG_LEVEL": "debug"}})

    def checksum(rendered: Rendered) -> str:
        pod = rendered.one("Deployment")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    assert checksum(before) != checksum(after)
    assert checksum(after) == sha256_of(after.manifest("ConfigMap"))
    assert checksum(render()) == checksum(before)


def _secret_refs(rendered: Rendered) -> set[str]:
    return {
        reference["secretRef"]["name"]
        for container in rendered.containers
        for reference in container.get("envFrom", [])
        if "secretRef" in reference
    }


def test_existing_secret_renders_no_secret_and_the_pods_read_it(render: Render) -> None:
    rendered = render({**PRODUCTION, "secrets": {"operatorKey": "ignored-0123456789abcdefgh"}})
    assert "Secret" not in rendered.kinds
    assert _secret_refs(rendered) == {"replaybus-prod"}
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_secret_values_render_a_secret_the_pods_read(render: Render) -> None:
    rendered = render(EXTERNAL)
    secret = rendered.manifest("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret.obj["data"].items()}
    assert data == {
        "REPLAYBUS_SIGNING_KEY": EXTERNAL["secrets"]["signingKey"],
        "REPLAYBUS_OPERATOR_KEY": EXTERNAL["secrets"]["operatorKey"],
        "REPLAYBUS_REDIS_URL": EXTERNAL["secrets"]["redisUrl"],
        "REPLAYBUS_DATABASE_URL": EXTERNAL["secrets"]["databaseUrl"],
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": EXTERNAL["secrets"]["bootstrapClientSecret"],
    }
    assert _secret_refs(rendered) == {secret.name}
    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/secret"] == sha256_of(secret)
    config = rendered.one("ConfigMap")["data"]
    assert not any("password" in value for value in config.values())


def test_no_secret_values_means_no_secret_at_all(render: Render) -> None:
    rendered = render()
    assert "Secret" not in rendered.kinds
    assert not _secret_refs(rendered)


def test_autoscaler_owns_the_replica_count(render: Render) -> None:
    rendered = render(PRODUCTION)
    assert "replicas" not in rendered.one("Deployment")["spec"]
    autoscaler = rendered.one("HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    spec = autoscaler["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    [cpu] = spec["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert render(BUNDLED).one("Deployment")["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("budget", "expected"),
    [({}, {"maxUnavailable": 1}), ({"minAvailable": 2}, {"minAvailable": 2})],
)
def test_disruption_budget_takes_max_unavailable_or_min_available(
    render: Render, budget: dict[str, Any], expected: dict[str, int]
) -> None:
    spec = render({"podDisruptionBudget": budget}).one("PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


def test_ingress_routes_its_hosts_to_the_service_with_tls(render: Render) -> None:
    rendered = render(PRODUCTION)
    ingress = rendered.one("Ingress")["spec"]
    service = rendered.one("Service")
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["events.example.com"], "secretName": "events-tls"}]
    [rule] = ingress["rules"]
    assert rule["host"] == "events.example.com"
    [path] = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service["spec"]["ports"][0]["name"]},
    }


def test_network_policy_admits_the_ingress_controller_and_scraper_on_http_only(
    render: Render,
) -> None:
    rules = render(PRODUCTION).one("NetworkPolicy")["spec"]["ingress"]
    sources = [rule["from"][0]["namespaceSelector"]["matchLabels"] for rule in rules]
    assert sources == [
        {"kubernetes.io/metadata.name": "ingress-nginx"},
        {"kubernetes.io/metadata.name": "monitoring"},
    ]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in rules)
    [open_rule] = render().one("NetworkPolicy")["spec"]["ingress"]
    assert "from" not in open_rule
    assert open_rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_network_policy_lets_pods_reach_dns_redis_and_postgres(render: Render) -> None:
    policy = render(BUNDLED).one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = {
        (port["port"], port["protocol"]): rule.get("to")
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    assert ports[(53, "UDP")] is None
    assert ports[(6379, "TCP")] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis", **_INSTANCE}}}
    ]
    assert ports[(5432, "TCP")] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql", **_INSTANCE}}}
    ]
    external = render(EXTERNAL).one("NetworkPolicy")["spec"]["egress"]
    assert all("to" not in rule for rule in external)
