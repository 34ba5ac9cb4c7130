"""Kubernetes manifests, the compose file and the Grafana dashboard, checked
without a cluster or a container engine: against their published schemas
(kubernetes-validate's Kubernetes schemas, the compose-spec schema that
check-jsonschema vendors), against each other (names, selectors, ports), and
against ipubsub itself (the config each replica would load, the metrics a
real node exports, the grace period the shutdown needs)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from ipubsub.config import Config, env_settings, load_config
from tests.conftest import MakeClient

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes release still maintained upstream when written, and the newest known.
K8S_VERSIONS = ("1.31.0", "1.37.0")
LEAVE_SECONDS = 2.0  # Node.stop waits at most this long for the leave's acks


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
    objects = k8s_objects()
    assert {kind for kind, _ in objects} == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    for (kind, name), doc in objects.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{kind}/{name} against Kubernetes {version}: {exc.message}") from None


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _pod_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it for ``pod_name``
    ($(VAR) expanded; secrets as placeholders)."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = {"postgres-dsn": "postgresql://u:p@postgres:5432/db"}.get(ref["key"], "x" * 16)
    return env


def test_one_configmap_serves_every_replica(tmp_path: Path) -> None:
    objects = k8s_objects()
    sts = objects[("StatefulSet", "ipubsub")]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    configmap = objects[("ConfigMap", volume["configMap"]["name"])]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert container["args"] == ["--config", f"{mount['mountPath']}/ipubsub.yaml"]
    config_file = tmp_path / "ipubsub.yaml"
    config_file.write_text(configmap["data"]["ipubsub.yaml"])
    headless = objects[("Service", spec["serviceName"])]
    names = [f"{sts['metadata']['name']}-{i}" for i in range(spec["replicas"])]
    configs = []
    for name in names:
        env = _pod_env(container, name)
        assert env_settings(env)  # every IPUBSUB_* variable names a setting
        config = load_config(config_file, env)
        configs.append(config)
        assert config.node.name == name  # pod name = node name: stable ring member
        assert config.node.advertise == f"{name}.{headless['metadata']['name']}:8080"
        assert config.storage.backend == "postgres" and config.storage.postgres.dsn.startswith("postgresql://u:p@")
        assert config.cluster.secret
    # Seeds: the pods' stable DNS names; each node advertises one of them.
    assert sorted(configs[0].cluster.seeds) == sorted(c.node.advertise for c in configs)
    assert len({c.node.name for c in configs}) == len(names)
    listen_port = int(configs[0].node.listen.rsplit(":", 1)[1])
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": listen_port}


def test_services_selectors_probes_and_the_shutdown_budget() -> None:
    objects = k8s_objects()
    sts = objects[("StatefulSet", "ipubsub")]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = objects[("Service", sts["spec"]["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    client = objects[("Service", "ipubsub")]["spec"]
    for service in (headless, client):
        assert service["selector"].items() <= labels.items()
        assert service["ports"][0]["targetPort"] == "http"
    assert not client.get("publishNotReadyAddresses")  # clients reach ready pods only
    pdb = objects[("PodDisruptionBudget", "ipubsub")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["maxUnavailable"] == 1

    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/"  # 200 even while draining
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)  # the image's user is the one the pod asks for

    # preStop holds SIGTERM a few seconds; then the node needs, at most: the
    # leave, half the grace for hand-off, the grace for in-flight requests,
    # one more hand-off second, and closing.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    sleep = float(re.fullmatch(r"sleep (\d+(?:\.\d+)?)", command[2]).group(1))  # type: ignore[union-attr]
    grace = Config.from_mapping(yaml.safe_load(objects[("ConfigMap", "ipubsub-config")]["data"]["ipubsub.yaml"]))
    shutdown = grace.node.shutdown_grace_seconds
    needed = sleep + LEAVE_SECONDS + 1.5 * shutdown + 1.0 + 5.0
    assert pod["terminationGracePeriodSeconds"] >= needed, needed


def test_compose_file_matches_the_compose_spec_and_configures_three_nodes(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[test]'")
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]

    services = compose["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("node-")}
    assert len(nodes) == 3 and "postgres" in services
    config_file = None
    for name, service in nodes.items():
        assert service["build"]["context"] == ".." and (ROOT / service["build"]["dockerfile"]).is_file()
        (volume,) = service["volumes"]
        source, target, mode = volume.split(":")
        config_file = ROOT / "deploy" / source
        assert config_file.is_file() and target == "/etc/ipubsub/ipubsub.yaml" and mode == "ro"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        (published,) = service["ports"]
        assert published.startswith("127.0.0.1:")  # nothing published beyond the host's loopback
        env = {k: str(v) for k, v in service["environment"].items()}
        config = load_config(config_file, env)
        assert config.node.name == name
        host, port = config.node.advertise.rsplit(":", 1)
        assert host == name and published.endswith(f":{port}")  # compose DNS: the service name
        assert sorted(s.split(":")[0] for s in config.cluster.seeds) == sorted(nodes)
        assert config.storage.backend == "postgres" and "@postgres:5432/" in config.storage.postgres.dsn
        stop = float(service["stop_grace_period"].rstrip("s"))
        assert stop >= LEAVE_SECONDS + 1.5 * config.node.shutdown_grace_seconds + 1.0 + 5.0
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"


# -- Grafana -------------------------------------------------------------------------


def grafana() -> dict[str, Any]:
    return json.loads((ROOT / "deploy" / "grafana" / "ipubsub.json").read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in grafana()["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = grafana()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"]
    titles = {p["title"] for p in panels}
    for figure in ("Delivered/s", "Sent/s", "Forwarded/s", "Waiting receivers", "Blocked senders",
                   "Buffered messages", "Buffered bytes", "Drops/s", "Storage up", "Storage batch write, p99"):
        assert figure in titles


def test_grafana_queries_parse_as_promql() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="pip install -e '.[test]'")
    for expr in expressions():
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        try:
            promql_parser.parse(concrete)
        except ValueError as exc:
            raise AssertionError(f"{expr}: {exc}") from None


async def test_grafana_queries_use_metrics_a_node_exports(make_client: MakeClient, tmp_path: Path) -> None:
    client: TestClient = await make_client({"storage": {"backend": "sqlite",
                                                         "sqlite": {"path": str(tmp_path / "m.db")}}})
    r = await client.post("/api/v1/streams/send", data=b'{"streamId": "s", "message": 1, "writeToDB": true}')
    assert r.status == 200
    exported = set(re.findall(r"^([a-z_:]+)[{ ]", await (await client.get("/metrics")).text(), re.M))
    used = {name for expr in expressions() for name in re.findall(r"\b((?:ipubsub|process)_[a-z_]+)\b", expr)}
    assert used and used <= exported, sorted(used - exported)
