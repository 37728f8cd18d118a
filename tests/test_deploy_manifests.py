"""``deploy/kubernetes``: the manifests load, hang together, and give each GenOps process a
configuration GenOps accepts. (``kubectl kustomize`` is not available here: this checks what it
would rely on, with the YAML itself and GenOps's own settings parser and CLI.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from genops.cli import build_parser
from genops.config import FIELDS, env_name, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
SETTINGS = {env_name(name) for name in FIELDS}
OVERLAYS = ("cluster", "managed")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(folder: Path) -> dict[str, Any]:
    (doc,) = documents(folder / "kustomization.yaml")
    return doc


def resources(folder: Path) -> list[dict[str, Any]]:
    """Every object a kustomization folder lists, following folders it includes."""
    found = []
    for entry in kustomization(folder).get("resources", []):
        target = (folder / entry).resolve()
        found += resources(target) if target.is_dir() else documents(target)
    return found


def objects(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in resources(KUBE / "overlays" / overlay)}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def example_secrets(overlay: str) -> dict[str, str]:
    lines = (KUBE / "overlays" / overlay / "secrets.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def effective_env(obj: dict[str, Any], overlay: str) -> dict[str, str]:
    """The GENOPS_* environment a workload's container gets: ConfigMap (as patched), Secret, env."""
    everything = objects(overlay)
    config = dict(everything[("ConfigMap", "genops-config")]["data"])
    for patch in kustomization(KUBE / "overlays" / overlay).get("patches", []):
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "replace" and op["path"].startswith("/data/")
            config[op["path"][len("/data/"):]] = op["value"]
    # Secrets as an operator fills them in: long, distinct tokens; the example URL as written.
    secrets = {k: (v or f"{k.lower()}-0123456789abcdef") for k, v in example_secrets(overlay).items()}
    secrets["GENOPS_ALERT_WEBHOOK_URL"] = ""
    (container,) = pod_spec(obj)["containers"]
    return {**config, **secrets, **env_of(container)}


def test_every_manifest_is_valid_yaml_with_kind_and_name():
    files = sorted(KUBE.rglob("*.yaml"))
    assert len(files) >= 11
    for path in files:
        for doc in documents(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path


def test_kustomizations_list_every_manifest_and_nothing_missing():
    listed = set()
    for folder in {p.parent for p in KUBE.rglob("kustomization.yaml")}:
        for entry in kustomization(folder).get("resources", []):
            target = (folder / entry).resolve()
            assert target.exists(), f"{folder}: {entry}"
            listed.add(target)
        for generator in kustomization(folder).get("secretGenerator", []):
            for env_file in generator["envs"]:
                assert (folder / f"{env_file}.example").exists(), f"{folder}: {env_file}.example"
    manifests = {p.resolve() for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests <= listed, sorted(str(p) for p in manifests - listed)
    assert "secrets.env" in (ROOT / "deploy" / ".gitignore").read_text().split()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_gets_a_configuration_genops_accepts(overlay, tmp_path):
    """ConfigMap + Secret (as the example says) + the container's env, through GenOps's own loader."""
    workloads = [obj for obj in objects(overlay).values() if obj["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job")]
    assert {obj["metadata"]["name"] for obj in workloads} == {"genops-proxy", "genops-collector", "genops-jobs",
                                                               "genops-migrate"}
    for obj in workloads:
        env = effective_env(obj, overlay)
        unknown = sorted(name for name in env if name.startswith("GENOPS_") and name not in SETTINGS)
        assert not unknown, f"{obj['metadata']['name']}: not settings: {unknown}"
        settings = load_settings({}, env={**env, "GENOPS_DATA_DIR": str(tmp_path)})
        assert not settings.embedded  # every process talks to the ClickHouse server
        assert settings.clickhouse_cluster == ("genops" if overlay == "cluster" else "")


def test_commands_exist():
    parser = build_parser()
    for obj in objects("cluster").values():
        if obj["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job"):
            (container,) = pod_spec(obj)["containers"]
            assert container["image"] == "genops"
            parser.parse_args(container["args"])  # exits on an unknown command or flag
    images = kustomization(KUBE / "base")["images"]
    assert [image["name"] for image in images] == ["genops"]


def test_proxy_drains_before_it_is_killed():
    everything = objects("cluster")
    proxy = everything[("Deployment", "genops-proxy")]
    spec = pod_spec(proxy)
    (container,) = spec["containers"]
    env = env_of(container)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # the whole shutdown fits in the grace period, with room to flush the spans
    shutdown = int(pre_stop[1]) + float(env["GENOPS_DRAIN_DELAY_S"]) + float(env["GENOPS_DRAIN_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] >= shutdown + 15
    assert proxy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert env["GENOPS_EXPORTER"] == "otlp" and env["GENOPS_OTLP_ENDPOINT"] == "http://genops-collector:4318"
    hpa = everything[("HorizontalPodAutoscaler", "genops-proxy")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "genops-proxy"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


def test_services_select_their_pods():
    everything = objects("cluster")
    for (kind, name), service in everything.items():
        if kind != "Service":
            continue
        selected = [obj for obj in everything.values() if obj["kind"] in ("Deployment", "StatefulSet")
                    and service["spec"]["selector"].items() <= obj["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, name
        (container,) = pod_spec(selected[0])["containers"]
        ports = {p["name"] for p in container["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"]), name
    collector = everything[("StatefulSet", "genops-collector")]
    assert collector["spec"]["serviceName"] == "genops-collector-headless"
    assert ("Service", "genops-collector-headless") in everything


def test_collector_keeps_its_spool_on_a_volume():
    collector = objects("cluster")[("StatefulSet", "genops-collector")]
    (container,) = pod_spec(collector)["containers"]
    claims = {c["metadata"]["name"] for c in collector["spec"]["volumeClaimTemplates"]}
    data_dir = env_of(container)["GENOPS_DATA_DIR"]
    assert any(m["mountPath"] == data_dir and m["name"] in claims for m in container["volumeMounts"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    drain = float(env_of(container)["GENOPS_DRAIN_TIMEOUT_S"])
    assert pod_spec(collector)["terminationGracePeriodSeconds"] > drain + 5


def test_jobs_run_as_a_cronjob_one_at_a_time():
    jobs = objects("cluster")[("CronJob", "genops-jobs")]
    assert jobs["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = pod_spec(jobs)["containers"]
    assert container["args"] == ["jobs", "once"]
    migrate = objects("cluster")[("Job", "genops-migrate")]
    (container,) = pod_spec(migrate)["containers"]
    assert container["args"][0] == "migrate"


def test_clickhouse_cluster_matches_the_setting_and_the_secret():
    everything = objects("cluster")
    chi = everything[("ClickHouseInstallation", "genops")]
    keeper = everything[("ClickHouseKeeperInstallation", "genops")]
    (cluster,) = chi["spec"]["configuration"]["clusters"]
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    env = effective_env(everything[("Deployment", "genops-proxy")], "cluster")
    assert cluster["name"] == env["GENOPS_CLICKHOUSE_CLUSTER"]
    assert re.match(rf"http://genops:[^@]+@clickhouse-{chi['metadata']['name']}:8123/$", env["GENOPS_CLICKHOUSE_URL"])
    (node,) = chi["spec"]["configuration"]["zookeeper"]["nodes"]
    assert node["host"] == f"keeper-{keeper['metadata']['name']}"  # the operator's Service of the Keeper installation
    replicas = keeper["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"]
    assert replicas >= 3 and replicas % 2 == 1
    secret, key = chi["spec"]["configuration"]["users"]["genops/k8s_secret_password"].split("/")
    (generator,) = kustomization(KUBE / "overlays" / "cluster")["secretGenerator"]
    assert generator["name"] == secret and generator["options"]["disableNameSuffixHash"] is True
    assert key in example_secrets("cluster")
    profile = chi["spec"]["configuration"]["profiles"]
    assert profile["genops/distributed_foreground_insert"] == 1
