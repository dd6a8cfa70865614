"""Deployment artifacts: the Dockerfile (hadolint, and an image built by podman from its final
stage), the Compose profiles (docker-compose config), the Kubernetes overlays (kubectl kustomize
+ kubernetes-validate), and the Grafana dashboards (every PromQL query returns data from a real
Prometheus scraping a live Sluice)."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, require_tool, sluice_binary

DEPLOY = REPO / "deploy"


def sh(*args, cwd=REPO, env=None, timeout=300):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --- The image ---------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    sh(require_tool("hadolint"), DEPLOY / "Dockerfile")


def final_stage(dockerfile):
    """The instructions of the last stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from + 1:]


def test_the_image_builds_from_the_local_binary_with_the_documented_entrypoint(tmp_path):
    """No registry here, so the final stage is built `FROM scratch` with the binary and the
    libraries it links (what distroless/cc provides), and everything else exactly as written."""
    podman = require_tool("podman")
    context = tmp_path / "context"
    (context / "rootfs").mkdir(parents=True)
    binary = sluice_binary()
    for line in sh("ldd", binary).splitlines():
        match = re.search(r"(/\S+)", line)
        if match and Path(match.group(1)).exists():
            lib = Path(match.group(1))
            target = context / "rootfs" / lib.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), target)
    sources = {
        "/out/sluice": "sluice",
        "/src/plugins/dist/": "plugins/",
        "/src/pipelines/": "pipelines/",
        "/out/cache/": "cache/",
    }
    shutil.copy2(binary, context / "sluice")
    shutil.copytree(REPO / "plugins" / "dist", context / "plugins")
    shutil.copytree(REPO / "pipelines", context / "pipelines")
    (context / "cache").mkdir()
    stage = []
    for line in final_stage(DEPLOY / "Dockerfile"):
        match = re.match(r"COPY (--from=build )((?:--chown=\S+ )?)(\S+) (\S+)$", line)
        if match:
            source = match.group(3)
            assert source in sources, f"the final stage copies {source}, which the test doesn't know"
            line = f"COPY {match.group(2)}{sources[source]} {match.group(4)}"
        stage.append(line)
    (context / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\n" + "\n".join(stage) + "\n")
    sh(podman, "build", "--format", "docker", "-t", "localhost/sluice-test:latest", "-f", context / "Containerfile",
       context, timeout=600)
    [image] = json.loads(sh(podman, "image", "inspect", "localhost/sluice-test:latest"))
    config = image["Config"]
    assert config["User"] == "65532:65532", "runs as distroless' nonroot user"
    assert config["Entrypoint"] == ["/usr/local/bin/sluice"]
    assert config["Cmd"] == ["run"]
    # podman reports the health check beside the config rather than in it.
    health = config.get("Healthcheck") or image["Healthcheck"]
    assert health["Test"] == ["CMD", "/usr/local/bin/sluice", "health"]
    assert health["Interval"] == 15 * 10**9 and health["Retries"] == 3
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SLUICE_MODE"] == "packaged" and env["SLUICE_PIPELINES_DIR"] == "/etc/sluice/pipelines"
    assert env["SLUICE_PLUGIN_DIR"] == "/usr/share/sluice/plugins"
    assert set(config["ExposedPorts"]) == {"4317/tcp", "4318/tcp", "8888/tcp", "8889/tcp"}
    # Where the engine can run containers, the image's own binary validates its own pipelines.
    run = subprocess.run([podman, "run", "--rm", "--network=none", "--entrypoint", "/usr/local/bin/sluice",
                          "localhost/sluice-test:latest", "validate", "/etc/sluice/pipelines/packaged.toml"],
                         capture_output=True, text=True, timeout=120)
    engine_refused = ("crun:", "runc:", "OCI permission denied", "cgroup", "user namespace")
    if run.returncode != 0 and any(reason in run.stderr for reason in engine_refused):
        print(f"podman cannot run containers here; the image was built and inspected only: {run.stderr.strip()}")
    else:
        assert run.returncode == 0, run.stderr
        assert "is valid" in run.stdout


# --- Grafana dashboards against a live Sluice ---------------------------------------------------

FULL_READINGS = (
    "gpu_utilization_percent = 71, memory_copy_utilization_percent = 22, encoder_utilization_percent = 1, "
    "decoder_utilization_percent = 2, memory_used_bytes = 8589934592, memory_free_bytes = 34359738368, "
    "memory_total_bytes = 42949672960, gpu_temperature_celsius = 58, memory_temperature_celsius = 63, "
    "power_watts = 212.5, energy_millijoules = {energy}, sm_clock_mhz = 1410, memory_clock_mhz = 1215, "
    "pcie_tx_bytes_per_second = 1048576, pcie_rx_bytes_per_second = 4194304, pcie_replays = 0, xid_errors = 0, "
    "last_xid = 0, ecc_corrected = 1, ecc_uncorrected = 0, remapped_rows_correctable = 0, "
    "remapped_rows_uncorrectable = 0, row_remap_pending = false, row_remap_failure = false, "
    "nvlink_tx_bytes = {nvlink}, nvlink_rx_bytes = {nvlink}, throttle_reasons = 0")


def full_gpu_script(samples=40):
    """Two GPUs (one with a MIG instance and a process) whose energy and NVLink counters climb."""
    out = ['driver_version = "550.54.15"']
    for n in range(samples):
        out.append("[[samples]]")
        for gpu in range(2):
            out += ["[[samples.devices]]", f"index = {gpu}", f'uuid = "GPU-{gpu}0000000-0000-0000-0000-000000000000"',
                    'model = "NVIDIA A100-SXM4-40GB"', f"minor_number = {gpu}",
                    "readings = { " + FULL_READINGS.format(energy=1_000_000 + n * 200_000, nvlink=n * 10**6) + " }",
                    'processes = [{ pid = 4242, name = "python", memory_used_bytes = 4294967296, sm_utilization_percent = 55 }]']
        out += ["[[samples.devices]]", "index = 0", 'uuid = "MIG-00000000-0000-0000-0000-000000000000"',
                'model = "NVIDIA A100-SXM4-40GB"',
                'mig = { parent_uuid = "GPU-00000000-0000-0000-0000-000000000000", profile = "1g.5gb", gpu_instance_id = 7 }',
                "readings = { memory_used_bytes = 1073741824 }"]
    return "\n".join(out) + "\n"


def dashboard_queries():
    """Every PromQL expression in the shipped dashboards (panels and variables), by dashboard."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
        for variable in dashboard["templating"]["list"]:
            metric, label = re.match(r"label_values\((.+), (\w+)\)$", variable["definition"]).groups()
            out.append((path.name, f"variable {variable['name']}", f"count by ({label}) ({metric})"))
    return out


def concrete(expr):
    """Grafana's variables replaced as Grafana would for "All" over a short range."""
    return (expr.replace("$__rate_interval", "10s").replace('"$host"', '".*"').replace('"$gpu"', '".*"'))


def test_every_dashboard_query_returns_data_from_a_live_sluice(tmp_path):
    from types import SimpleNamespace

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from conftest import PLUGINS, free_port
    from test_prometheus import query
    from test_sdk import exporters

    script = tmp_path / "gpus.toml"
    script.write_text(full_gpu_script())
    config = tmp_path / "packaged.toml"
    packaged = (REPO / "pipelines" / "packaged.toml").read_text()
    assert 'kind = "nvml"' in packaged
    config.write_text(packaged.replace('kind = "nvml"', f'kind = "scripted"\nscript = "{script}"'))
    ports = {name: free_port() for name in ("admin", "grpc", "http", "scrape", "prometheus", "nowhere")}
    env = dict(os.environ, SLUICE_ADMIN_ADDRESS=f"127.0.0.1:{ports['admin']}",
               SLUICE_GRPC_ADDRESS=f"127.0.0.1:{ports['grpc']}", SLUICE_HTTP_ADDRESS=f"127.0.0.1:{ports['http']}",
               SLUICE_PROMETHEUS_ADDRESS=f"127.0.0.1:{ports['scrape']}", SLUICE_PLUGIN_DIR=str(PLUGINS),
               SLUICE_GPU_INTERVAL="1s", JAEGER_ENDPOINT=f"http://127.0.0.1:{ports['nowhere']}",
               SLUICE_CACHE_DIR=str(tmp_path / "cache"))
    host = subprocess.Popen([str(sluice_binary()), "run", "--config", str(config)], env=env,
                            stderr=open(tmp_path / "sluice.log", "wb"))
    # The shipped Prometheus config, pointed at this host and scraping every second.
    shipped = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert '"sluice:8889"' in shipped and '"sluice:8888"' in shipped
    (tmp_path / "prometheus.yml").write_text(
        shipped.replace("sluice:8889", f"127.0.0.1:{ports['scrape']}").replace("sluice:8888", f"127.0.0.1:{ports['admin']}")
        .replace("scrape_interval: 15s", "scrape_interval: 1s"))
    prometheus = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        sdk_host = SimpleNamespace(http_base=f"http://127.0.0.1:{ports['http']}", grpc_endpoint=None)
        span_exporter, _, _ = exporters("http", sdk_host)
        provider = TracerProvider(resource=Resource.create({"service.name": "graphistry-api"}))
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
        deadline = time.time() + 90
        pending = dashboard_queries()
        while pending and time.time() < deadline:
            with provider.get_tracer("e2e").start_as_current_span("upload"):
                pass
            provider.force_flush()
            time.sleep(1)
            still = []
            for dashboard, title, expr in pending:
                try:
                    if not query(ports["prometheus"], concrete(expr)):
                        still.append((dashboard, title, expr))
                except (OSError, AssertionError):
                    still.append((dashboard, title, expr))
            pending = still
        provider.shutdown()
        assert not pending, "queries without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in pending) + \
            "\n" + (tmp_path / "sluice.log").read_text()[-3000:]
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        # Traces wait for a Jaeger that isn't there; draining them isn't this test's business.
        host.kill()
        host.wait(timeout=30)


# --- Docker Compose -----------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose"
MODE_SERVICES = {
    "forward": {"sluice-forward"},
    "packaged": {"sluice-packaged", "prometheus", "grafana", "jaeger"},
    "hybrid": {"sluice-hybrid", "prometheus", "grafana", "jaeger"},
}


def compose_config(tmp_path, profile, *files):
    """`docker-compose config` of a profile, with the secrets' files in a temporary folder."""
    import yaml

    secrets = {}
    for name in ("SLUICE_OTLP_PASSWORD_SECRET", "CUSTOM_COLLECTOR_KEY_SECRET", "GRAFANA_ADMIN_PASSWORD_SECRET"):
        path = tmp_path / name.lower()
        path.write_text("not-a-real-secret")
        secrets[name] = str(path)
    env = {"PATH": os.environ["PATH"], **secrets}
    args = [require_tool("docker-compose")]
    for file in files or ("compose.yaml",):
        args += ["-f", COMPOSE / file]
    rendered = yaml.safe_load(sh(*args, "--profile", profile, "config", cwd=COMPOSE, env=env))
    active = {name: service for name, service in rendered["services"].items()
              if not service.get("profiles") or profile in service["profiles"]}
    return rendered, active


@pytest.mark.parametrize("mode", sorted(MODE_SERVICES))
def test_compose_profile_is_the_mode(tmp_path, mode):
    rendered, active = compose_config(tmp_path, mode)
    assert set(active) == MODE_SERVICES[mode]
    sluice = active[f"sluice-{mode}"]
    environment = sluice["environment"]
    assert environment["SLUICE_MODE"] == mode
    # Credentials: an env file's variable, or the Compose secret file the host reads through _FILE.
    assert environment["SLUICE_OTLP_PASSWORD_FILE"] == "/run/secrets/otlp_password"
    assert {s["source"] for s in sluice["secrets"]} >= {"otlp_password"}
    # The pipelines and plugins are mounted, so editing them hot-reloads the running host.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in sluice["volumes"]}
    assert Path(mounts["/etc/sluice/pipelines"]) == REPO / "pipelines"
    assert Path(mounts["/usr/share/sluice/plugins"]) == REPO / "plugins" / "dist"
    assert sluice["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "sluice" in sluice["networks"]["telemetry"]["aliases"]
    # The mode's pipeline is valid with exactly the environment Compose gives the container.
    validated = subprocess.run([str(sluice_binary()), "validate", str(REPO / "pipelines" / f"{mode}.toml")],
                               env={"PATH": os.environ["PATH"], **{k: str(v) for k, v in environment.items()}},
                               capture_output=True, text=True, timeout=30)
    assert validated.returncode == 0, validated.stderr
    if mode != "forward":
        grafana = active["grafana"]
        assert any(v.endswith(":/etc/grafana/provisioning:ro") for v in grafana["volumes"])
        assert any("prometheus.yml" in v for v in active["prometheus"]["volumes"])


def test_compose_gpu_file_reserves_the_gpus_for_every_mode(tmp_path):
    for mode in MODE_SERVICES:
        _, active = compose_config(tmp_path, mode, "compose.yaml", "compose.gpu.yaml")
        [device] = active[f"sluice-{mode}"]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == "all" and "utility" in device["capabilities"]
        assert active[f"sluice-{mode}"]["pid"] == "host"


# --- Kubernetes ---------------------------------------------------------------------------------

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"


def rendered_overlay(mode):
    import yaml

    text = sh(require_tool("kubectl"), "kustomize", K8S / "overlays" / mode)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs, kind, name):
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(matches) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in matches]}"
    return matches[0]


@pytest.mark.parametrize("mode", ["forward", "packaged", "hybrid"])
def test_kustomize_overlay_renders_valid_kubernetes(tmp_path, mode):
    import yaml

    docs = rendered_overlay(mode)
    rendered = tmp_path / f"{mode}.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    sh(require_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, rendered)

    settings = find(docs, "ConfigMap", "sluice-settings")["data"]
    assert settings["SLUICE_MODE"] == mode, "the overlay is the mode"
    pipelines = find(docs, "ConfigMap", "sluice-pipelines")["data"]
    for name, text in pipelines.items():
        assert text == (REPO / "pipelines" / name).read_text(), f"{name} in the ConfigMap is not pipelines/{name}"

    gateway = find(docs, "Deployment", "sluice-gateway")
    agent = find(docs, "DaemonSet", "sluice-agent")
    for workload in (gateway, agent):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert container["image"] == "sluice:latest"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"requests", "limits"} <= set(container["resources"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        # The pipelines come from the ConfigMap: an edit reaches the pod by symlink swap.
        assert volumes[mounts["/etc/sluice/pipelines"]]["configMap"]["name"] == "sluice-pipelines"
    agent_pod = agent["spec"]["template"]["spec"]
    assert agent_pod["runtimeClassName"] == "nvidia" and agent_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    agent_env = {e["name"]: e.get("value") for e in agent_pod["containers"][0]["env"]}
    assert agent_env["SLUICE_CONFIG"] == "/etc/sluice/pipelines/agent.toml"

    gateway_pod = gateway["spec"]["template"]["spec"]
    [container] = gateway_pod["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": find(docs, "ConfigMap", "sluice-settings")["metadata"]["name"]}}]
    credentials = next(v for v in gateway_pod["volumes"] if v["name"] == "credentials")["secret"]
    assert credentials == {"secretName": "sluice-credentials", "optional": True}
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    for selector in (find(docs, "Service", "sluice-gateway")["spec"]["selector"],
                     find(docs, "PodDisruptionBudget", "sluice-gateway")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert find(docs, "HorizontalPodAutoscaler", "sluice-gateway")["spec"]["scaleTargetRef"]["name"] == "sluice-gateway"

    # The mode's pipeline is valid with the environment the gateway gets (credentials as files).
    env = {"PATH": os.environ["PATH"], **settings}
    for variable in container["env"]:
        secret_file = tmp_path / Path(variable["value"]).name
        secret_file.write_text("from-a-secret")
        env[variable["name"]] = str(secret_file)
    validated = subprocess.run([str(sluice_binary()), "validate", str(REPO / "pipelines" / f"{mode}.toml")],
                               env=env, capture_output=True, text=True, timeout=30)
    assert validated.returncode == 0, validated.stderr

    local_stack = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} - {"sluice-gateway"}
    if mode == "forward":
        assert local_stack == set()
    else:
        assert local_stack == {"prometheus", "grafana", "jaeger"}
        dashboards = find(docs, "ConfigMap", "grafana-dashboards")["data"]
        assert set(dashboards) == {"gpus.json", "sluice.json"}
        assert "kubernetes_sd_configs" in find(docs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
