"""deploy/: every manifest parses and validates against its schema (offline, with the
schemas the validators ship), every file and setting a manifest names exists, and every
probe path is served by the service it probes (the service runs; the test GETs it)."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml

from icetime import settings
from services.relay import server as relay_server
from services.scoring import probe as scoring_probe

from .conftest import ROOT, Stack, make_settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = sorted(DEPLOY.glob("compose.*.yaml"))
#: The Kubernetes version the manifests are checked against (a schema the validator ships).
K8S_VERSION = "1.30"
#: Which TOML each manifest's icetime containers read.
CONFIGS = {"compose.venue.yaml": DEPLOY / "venue.compose.toml",
           "compose.cloud.yaml": K8S / "cloud.toml", "k8s": K8S / "cloud.toml"}
#: The settings field of the HTTP port each service's probes ask.
HTTP_PORT = {"ingest": "ingest_http_port", "scoring": "scoring_http_port",
             "broadcast": "broadcast_http_port", "relay": "relay_http_port"}


def k8s_documents():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            yield name, doc


def containers(doc):
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", [])


def service_of(command):
    """``services.broadcast`` in a container's command -> "broadcast"; None otherwise."""
    joined = " ".join(command or ())
    m = re.search(r"-m services\.(\w+)", joined)
    return m[1] if m else None


def compose_files():
    return [(path, yaml.safe_load(path.read_text())) for path in COMPOSE]


def test_the_kubernetes_manifests_validate():
    listed = {name for name, _ in k8s_documents()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest is in the kustomization, and no other"
    kinds = []
    for _name, doc in k8s_documents():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.append(doc["kind"])
    assert {"Deployment", "StatefulSet", "Service", "Ingress"} <= set(kinds)
    # The validator does refuse what is wrong: a typo'd field in a probe.
    bad = next(doc for _, doc in k8s_documents() if doc["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def check_compose(*paths):
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.compose-spec", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_the_compose_files_validate(tmp_path):
    assert [p.name for p in COMPOSE] == ["compose.cloud.yaml", "compose.venue.yaml"]
    done = check_compose(*COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE[0].read_text().replace("healthcheck:", "helthcheck:", 1))
    assert check_compose(broken).returncode == 1


def test_every_probe_runs_on_every_service():
    """Every icetime container has a health check (compose) or liveness and readiness
    probes (Kubernetes); so has every Redis."""
    for path, doc in compose_files():
        for name, svc in doc["services"].items():
            if "redis-cluster-init" in name:
                continue  # a one-shot job
            if name != "lb":
                assert "healthcheck" in svc, (path.name, name)
    for name, doc in k8s_documents():
        for c in containers(doc):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                assert "livenessProbe" in c and "readinessProbe" in c, (name, c["name"])


def test_every_file_a_compose_file_names_exists():
    for path, doc in compose_files():
        config = CONFIGS[path.name]
        for name, svc in doc["services"].items():
            build = svc.get("build")
            if build:
                assert (path.parent / build["context"] / build["dockerfile"]).is_file()
            for volume in svc.get("volumes", []):
                source, target = volume.split(":")[:2]
                if not source.startswith("."):
                    continue  # a named volume
                assert (path.parent / source).is_file(), (path.name, name, source)
                if target.endswith(".toml"):
                    assert (path.parent / source).resolve() == config.resolve()
                    assert f"--config {target}" in " ".join(svc["command"])
    assert (DEPLOY / "haproxy.cfg").is_file()
    for config in set(CONFIGS.values()):
        settings.load(config)  # every configuration a manifest names loads as it is


def test_every_config_and_secret_a_kubernetes_manifest_names_exists():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    maps = {g["name"]: [f.split("=") for f in g["files"]]
            for g in kustomization["configMapGenerator"]}
    secrets = {g["name"]: {lit.split("=")[0] for lit in g["literals"]}
               for g in kustomization["secretGenerator"]}
    for files in maps.values():
        for _key, file in files:
            assert (K8S / file).is_file()
    for name, doc in k8s_documents():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        mounts = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", [])
                  if "configMap" in v}
        for c in containers(doc):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (name, ref)
            for m in c.get("volumeMounts", []):
                if m["name"] in mounts:
                    keys = [k for k, _ in maps[mounts[m["name"]]]]
                    assert any(f"--config {m['mountPath']}/{k}" in " ".join(c["command"])
                               for k in keys), (name, c["name"])


def probes():
    """(where, service, port, path) of every HTTP probe in deploy/."""
    out = []
    for path, doc in compose_files():
        for name, svc in doc["services"].items():
            test = svc.get("healthcheck", {}).get("test", [])
            url = next((t for t in test if t.startswith("http")), None)
            if url:
                u = urlsplit(url)
                out.append((f"{path.name}:{name}", service_of(svc["command"]), u.port, u.path,
                            CONFIGS[path.name]))
    for name, doc in k8s_documents():
        for c in containers(doc):
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe"):
                get = c.get(kind, {}).get("httpGet")
                if get:
                    port = ports.get(get["port"], get["port"])
                    out.append((f"{name}:{c['name']}:{kind}", service_of(c["command"]), port,
                                get["path"], CONFIGS["k8s"]))
    text = (DEPLOY / "haproxy.cfg").read_text()
    for path in re.findall(r"option httpchk GET (\S+)", text):
        out.append(("haproxy.cfg", "broadcast", 8080, path, CONFIGS["compose.cloud.yaml"]))
    return out


async def test_every_probe_path_is_served_by_its_service(redis_server):
    found = probes()
    assert {s for _, s, *_ in found} == set(HTTP_PORT)
    paths: dict[str, set[str]] = {}
    for where, service, port, path, config in found:
        cfg = settings.load(config)
        assert getattr(cfg, HTTP_PORT[service]) == port, (where, port)
        paths.setdefault(service, set()).add(path)

    url = redis_server.url
    st = Stack(make_settings(url, scoring_http_port=0, relay_http_port=0,
                             relay_cloud_url=url + "?db=1"), url)
    try:
        await st.start("ingest")
        await st.start("broadcast")
        await st.start("scoring", scoring_probe.serve)
        await st.start("relay", relay_server.serve)
        async with aiohttp.ClientSession() as s:
            for service, wanted in sorted(paths.items()):
                port = getattr(st.settings, HTTP_PORT[service])
                for path in sorted(wanted):
                    async with asyncio.timeout(10):  # the relay is ready after a pass
                        while True:
                            async with s.get(f"http://127.0.0.1:{port}{path}") as resp:
                                if resp.status == 200:
                                    break
                                assert resp.status == 503, (service, path, resp.status)
                            await asyncio.sleep(0.1)
    finally:
        await st.close()


async def test_ready_says_503_while_redis_is_away(redis_server):
    """Readiness is about the data, not the process: with Redis gone, /api/ready is
    503 (a load balancer takes the node out) while /healthz stays 200."""
    url = redis_server.url
    st = Stack(make_settings(url), url)
    try:
        await st.start("broadcast")
        base = f"http://127.0.0.1:{st.settings.broadcast_http_port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/api/ready") as resp:
                assert resp.status == 200
            await asyncio.to_thread(redis_server.stop)
            async with s.get(base + "/api/ready") as resp:
                assert resp.status == 503
                assert "redis" in (await resp.json())["reason"]
            async with s.get(base + "/healthz") as resp:
                assert resp.status == 200
    finally:
        await st.close()
