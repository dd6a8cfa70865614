"""Deployment artifacts: the Dockerfile (hadolint, and an image built by podman from its final
stage, whose own files start and become ready), the Compose profiles (docker-compose config, a
fresh clone, each mode's Sluice started with its rendered environment), the Kubernetes overlays
(kubectl kustomize + kubernetes-validate, every Sluice workload started with its rendered
environment), and the Grafana dashboards (every PromQL query returns data from a real Prometheus
scraping a live Sluice).

Starting a container's command here: the image's ENV, then the deployment's environment;
container paths mapped to local ones (the image's files to the repository's, volumes and secrets
to temporary folders); listeners on the container's interfaces moved to free loopback ports;
upstream URLs pointed at a loopback port where nothing listens (exporters retry; only start-up,
readiness and a clean exit are under test)."""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import PLUGIN_CACHE, PLUGINS, REPO, free_port, http, require_tool, sluice_binary

DEPLOY = REPO / "deploy"
DEPLOY_DOC = REPO / "docs" / "DEPLOY.md"
MODES = ["forward", "packaged", "hybrid"]
# Every Kubernetes overlay: one per mode, and forward with the gateway's queue on a
# PersistentVolume per pod (the persistent-queue component).
OVERLAYS = MODES + ["forward-persistent", "forward-kafka"]


def mode_of(overlay):
    """The mode an overlay runs: its name up to the first `-`."""
    return overlay.split("-")[0]


def gateway_kind(overlay):
    """The gateway's workload kind: a StatefulSet where each pod keeps its own volume."""
    return "StatefulSet" if overlay.endswith("-persistent") else "Deployment"


def sh(*args, cwd=REPO, env=None, timeout=300):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --- Running a container's command here --------------------------------------------------------

# The image's files and where this repository has them (deploy/Dockerfile's final stage copies
# the binary, plugins/dist and pipelines/). The compile cache is shared with the other tests'
# hosts, so each plugin compiles once per run; it is only ever a cache (an emptyDir in Kubernetes).
IMAGE_FILES = {
    "/usr/share/sluice/plugins": PLUGINS,
    "/etc/sluice/pipelines": REPO / "pipelines",
    "/var/cache/sluice": PLUGIN_CACHE,
}
IMAGE_BINARY = "/usr/local/bin/sluice"
IMAGE_PIPELINES = "/etc/sluice/pipelines"
LISTEN_ON_EVERY_INTERFACE = re.compile(r"(?:0\.0\.0\.0|\[::\]):(\d+)")


def image_config():
    """The final stage's ENV (a dict), ENTRYPOINT and CMD (lists) and USER, as the Dockerfile
    writes them: what every container of the image starts from."""
    config = {"env": {}, "entrypoint": [], "cmd": [], "user": None}
    for line in final_stage(DEPLOY / "Dockerfile"):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            for pair in shlex.split(rest):
                assert "=" in pair, f"ENV {rest}: the test reads only the KEY=value form"
                key, value = pair.split("=", 1)
                config["env"][key] = value
        elif instruction in ("ENTRYPOINT", "CMD") and rest.startswith("["):
            config[instruction.lower()] = json.loads(rest)
        elif instruction == "USER":
            config["user"] = rest.strip()
    return config


def local_path(value, mounts):
    """`value` with the container path it starts with replaced by the local path mounted there
    (the longest mount point wins, as in a container); anything else unchanged."""
    if not value.startswith("/"):
        return value
    points = [p for p in mounts if value == p or value.startswith(p.rstrip("/") + "/")]
    if not points:
        return value
    point = max(points, key=len)
    rest = value[len(point):].lstrip("/")
    return str(Path(mounts[point]) / rest) if rest else str(mounts[point])


def loopback_url(value):
    """A URL to a host other than this one, pointed at a free loopback port where nothing listens
    (cluster names resolve nowhere here, and nothing may leave this machine); anything else
    unchanged."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
        return value
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return value
    return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{free_port()}"))


def localize(argv, env, mounts):
    """A container's command and environment made runnable here. Returns (argv, env, listeners):
    paths mapped through `mounts`, every listener on the container's interfaces (`0.0.0.0:PORT`)
    moved to a free loopback port (`listeners`: container port → local port), and upstream URLs
    — set, or left to a pipeline's `${VAR:-url}` default — pointed at loopback."""
    listeners, local_env = {}, {}
    for name, value in env.items():
        value = local_path(value, mounts)
        match = LISTEN_ON_EVERY_INTERFACE.fullmatch(value)
        if match:
            listeners[int(match.group(1))] = free_port()
            value = f"127.0.0.1:{listeners[int(match.group(1))]}"
        local_env[name] = loopback_url(value)
    for toml in Path(local_path(IMAGE_PIPELINES, mounts)).glob("*.toml"):
        for name, default in re.findall(r"\$\{(\w+):-(\w+://[^}]*)\}", toml.read_text()):
            local_env.setdefault(name, loopback_url(default))
    return [local_path(arg, mounts) for arg in argv], local_env, listeners


def accepts_connections(port):
    """Whether something listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def serving_sha256(admin_port):
    """The SHA-256 of the config file the host serves, as GET /reload reports it."""
    status, _, body = http("GET", f"http://127.0.0.1:{admin_port}/reload")
    match = re.search(r"config sha256: ([0-9a-f]{64})", body.decode())
    assert status == 200 and match, f"GET /reload: {status} {body!r}"
    return match.group(1)


def start_ready_stop(argv, env, workdir, admin_port, serves, config, grace=30, ready_within=90):
    """Starts `argv` as a container would run it, waits for GET /readyz → 200 on `admin_port`,
    checks that it serves the file `config` (the pipeline the deployment means) and that each
    port of `serves` ({what: local port}) takes a connection, sends SIGTERM and waits `grace`
    seconds for exit 0. Returns what went wrong, with the process's output, or ""."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "output.log"
    problems = []
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, env={"PATH": os.environ["PATH"], **env}, cwd=workdir,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_within
            while not problems:
                if process.poll() is not None:
                    problems.append(f"exited {process.returncode} before it was ready")
                    break
                try:
                    if http("GET", f"http://127.0.0.1:{admin_port}/readyz", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    problems.append(f"/readyz not 200 within {ready_within}s")
                time.sleep(0.1)
            if not problems:
                if serving_sha256(admin_port) != hashlib.sha256(Path(config).read_bytes()).hexdigest():
                    problems.append(f"ready, but not serving {Path(config).name}")
                problems += [f"nothing listens for {what} (here 127.0.0.1:{port})"
                             for what, port in serves.items() if not accepts_connections(port)]
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    problems.append(f"still running {grace}s after SIGTERM")
                else:
                    if code != 0:
                        problems.append(f"exited {code} after SIGTERM, not 0")
    if not problems:
        return ""
    return "; ".join(problems) + f"\n$ {shlex.join(argv)}\n" + log.read_text(errors="replace")[-4000:]


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
    # The binary is hundreds of MB in a debug build and this test holds up to four copies of it:
    # each goes as soon as it has served, and the image with the test, so CI's disk stays free.
    shutil.rmtree(context)
    try:
        check_image_and_run_it(podman, tmp_path)
    finally:
        sh(podman, "rmi", "--force", "localhost/sluice-test:latest")
        shutil.rmtree(tmp_path / "rootfs", ignore_errors=True)


def check_image_and_run_it(podman, tmp_path):
    """The built image's config is what the Dockerfile says, and its own files start and become
    ready."""
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
    env.pop("PATH", None)  # podman's default, not the Dockerfile's
    assert env == image_config()["env"], "podman's image has the ENV the Dockerfile writes"
    # The image's own files start and become ready, run from the image's filesystem: its binary,
    # its pipelines and plugins at the paths its ENV names, its ENTRYPOINT and CMD. (Outside a
    # container, since podman may not run one here; the listeners and the upstream Jaeger go to
    # loopback ports, and the compile cache is the shared one.)
    rootfs = unpack_image(podman, "localhost/sluice-test:latest", tmp_path / "rootfs")
    mounts = {"/": rootfs, "/var/cache/sluice": PLUGIN_CACHE}
    argv, local_env, listeners = localize(config["Entrypoint"] + config["Cmd"], env, mounts)
    assert Path(argv[0]) == rootfs / "usr/local/bin/sluice"
    exposed = {int(port.split("/")[0]) for port in config["ExposedPorts"]}
    assert exposed <= set(listeners), \
        f"EXPOSEd ports {sorted(exposed - set(listeners))} have no SLUICE_*_ADDRESS on 0.0.0.0 in the image's ENV"
    admin = int(env["SLUICE_ADMIN_ADDRESS"].rsplit(":", 1)[1])
    problem = start_ready_stop(argv, local_env, tmp_path / "run", listeners[admin],
                               {f"EXPOSE {port}": listeners[port] for port in sorted(exposed)},
                               config=rootfs / "etc/sluice/pipelines" / f"{env['SLUICE_MODE']}.toml")
    assert not problem, f"the image's default command with its own files: {problem}"


def unpack_image(podman, image, destination):
    """The image's filesystem: `podman save` as a docker-archive, its layers unpacked in order."""
    archive = destination.parent / "image.tar"
    sh(podman, "save", "--format", "docker-archive", "-o", archive, image, timeout=600)
    destination.mkdir()
    with tarfile.open(archive) as outer:
        [manifest] = json.load(outer.extractfile("manifest.json"))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r|*") as inner:
                inner.extractall(destination, filter="tar")
    archive.unlink()
    return destination


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
    # The pipelines folder as shipped (packaged.toml reads the shared rules files beside it), with
    # the GPU receiver scripted.
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    config = tmp_path / "pipelines" / "packaged.toml"
    packaged = config.read_text()
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
# The secrets each mode's Sluice reads; packaged reads none, so it needs no secret files.
MODE_SECRETS = {"forward": {"otlp_password"}, "packaged": set(), "hybrid": {"otlp_password", "custom_collector_key"}}
# Where the host publishes ports when .env opens nothing: loopback, and the scrape endpoint nowhere.
PUBLISHED = {"sluice": {4317, 4318, 8888}, "prometheus": {9090}, "grafana": {3000}, "jaeger": {16686}}


def compose_config(tmp_path, profile, *files, env=None):
    """`docker-compose config` of a profile, as after DEPLOY.md's `cp .env.example .env` (and
    whatever a developer's own .env says left out), with the secrets' files in a temporary
    folder; and the services the profile activates."""
    import yaml

    secrets = {}
    for name in ("SLUICE_OTLP_PASSWORD_SECRET", "CUSTOM_COLLECTOR_KEY_SECRET"):
        path = tmp_path / name.lower()
        path.write_text("not-a-real-secret")
        secrets[name] = str(path)
    args = [require_tool("docker-compose"), "--env-file", COMPOSE / ".env.example"]
    for file in files:
        args += ["-f", COMPOSE / file]
    rendered = yaml.safe_load(sh(*args, "--profile", profile, "config", cwd=COMPOSE,
                                 env={"PATH": os.environ["PATH"], **secrets, **(env or {})}))
    return rendered, active_services(rendered, profile)


def active_services(rendered, profile):
    """The services `docker compose --profile PROFILE up` starts (`config` lists them all)."""
    return {name: service for name, service in rendered["services"].items()
            if not service.get("profiles") or profile in service["profiles"]}


def volume_mounts(service):
    """(source, target) of each of a service's volumes, from the short or the long syntax; a
    bind mount's source is an absolute path, a named volume's its name."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        out.append((source, target))
    return out


def published_ports(service):
    """(host address, container port) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            parts = port.split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            out.append((host_ip or "0.0.0.0", int(parts[-1])))
        else:
            out.append((port.get("host_ip") or "0.0.0.0", int(port["target"])))
    return out


def service_secrets(service):
    """The names of the secrets a service uses (short or long syntax)."""
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


@pytest.mark.parametrize("mode", MODES)
def test_compose_profile_is_the_mode(tmp_path, mode):
    rendered, active = compose_config(tmp_path, mode)
    assert set(active) == MODE_SERVICES[mode]
    sluice = active[f"sluice-{mode}"]
    environment = sluice["environment"]
    assert environment["SLUICE_MODE"] == mode
    # Credentials: an env file's variable, or the Compose secret file the host reads through _FILE;
    # only the modes that forward read them.
    assert service_secrets(sluice) == MODE_SECRETS[mode]
    if "otlp_password" in MODE_SECRETS[mode]:
        assert environment["SLUICE_OTLP_PASSWORD_FILE"] == "/run/secrets/otlp_password"
    assert not any(service_secrets(s) for name, s in active.items() if name != f"sluice-{mode}"), \
        "only Sluice reads secret files"
    # The pipelines are mounted, so editing them hot-reloads the running host; the plugins are the
    # image's own unless compose.plugins.yaml is added.
    mounts = {target: source for source, target in volume_mounts(sluice)}
    assert Path(mounts["/etc/sluice/pipelines"]) == REPO / "pipelines"
    assert "/usr/share/sluice/plugins" not in mounts, "the image's plugins serve unless the operator opts in"
    assert sluice["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "sluice" in sluice["networks"]["telemetry"]["aliases"]
    if mode != "forward":
        # Prometheus scrapes from its own container: the scrape endpoint takes the container's
        # interfaces (the pipelines default to loopback).
        assert environment["SLUICE_PROMETHEUS_ADDRESS"] == "0.0.0.0:8889"
        grafana = active["grafana"]
        assert any(target == "/etc/grafana/provisioning" for _, target in volume_mounts(grafana))
        assert any("prometheus.yml" in source for source, _ in volume_mounts(active["prometheus"]))


def test_compose_plugins_file_opts_into_a_plugins_folder(tmp_path):
    """compose.plugins.yaml mounts SLUICE_PLUGINS (default ../../plugins/dist) over the image's."""
    for mode in MODES:
        _, active = compose_config(tmp_path, mode, "compose.yaml", "compose.plugins.yaml")
        mounts = {target: source for source, target in volume_mounts(active[f"sluice-{mode}"])}
        assert Path(mounts["/usr/share/sluice/plugins"]) == REPO / "plugins" / "dist"
        assert Path(mounts["/etc/sluice/pipelines"]) == REPO / "pipelines", "the base file's mounts stay"
    _, active = compose_config(tmp_path, "packaged", "compose.yaml", "compose.plugins.yaml",
                               env={"SLUICE_PLUGINS": str(tmp_path)})
    mounts = {target: source for source, target in volume_mounts(active["sluice-packaged"])}
    assert Path(mounts["/usr/share/sluice/plugins"]) == tmp_path


def test_compose_gpu_file_reserves_the_gpus_for_every_mode(tmp_path):
    for mode in MODE_SERVICES:
        _, active = compose_config(tmp_path, mode, "compose.yaml", "compose.gpu.yaml")
        [device] = active[f"sluice-{mode}"]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == "all" and "utility" in device["capabilities"]
        assert active[f"sluice-{mode}"]["pid"] == "host"


def ports_table(doc):
    """The port numbers in the first column of DEPLOY.md's Compose "Ports" table."""
    section = doc.split("### Ports", 1)[1].split("\n##", 1)[0]
    return {int(port) for row in re.findall(r"^\| ([\d, ]+) \|", section, re.M) for port in row.split(",")}


def test_compose_publishes_on_loopback_unless_dotenv_opens_a_port(tmp_path):
    """Nothing is reachable from other hosts by default; .env opens OTLP and the UIs, never the
    admin port (POST /reload changes the running host) and never the scrape endpoint."""
    for mode in MODES:
        _, active = compose_config(tmp_path, mode)
        for name, service in active.items():
            ports = published_ports(service)
            assert {port for _, port in ports} == PUBLISHED[name.split("-")[0]], f"{name} publishes {ports}"
            assert all(host == "127.0.0.1" for host, _ in ports), f"{name} publishes {ports} beyond loopback"
        _, opened = compose_config(tmp_path, mode, env={"SLUICE_OTLP_HOST_IP": "0.0.0.0", "UI_HOST_IP": "0.0.0.0"})
        for name, service in opened.items():
            for host, port in published_ports(service):
                assert host == ("127.0.0.1" if port == 8888 else "0.0.0.0"), f"{name}: {port} on {host}"
    documented = ports_table(DEPLOY_DOC.read_text())
    assert documented == set().union(*PUBLISHED.values()) | {8889}, \
        "DEPLOY.md's Ports table says where each port is published and why"


def fresh_clone(destination):
    """What `git clone` of this work tree gives once it is committed: tracked files and untracked
    ones .gitignore doesn't keep out (so no plugins/dist, no .env, no secret files)."""
    listed = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def documented_secret_steps(mode):
    """DEPLOY.md's `printf '%s' '...' > secrets/NAME   # modes` lines that name `mode`."""
    steps = re.findall(r"^(printf '%s' '[^']*' > secrets/\w+)\s+# (.+)$", DEPLOY_DOC.read_text(), re.M)
    return [command for command, modes in steps if mode in modes]


@pytest.mark.parametrize("mode", MODES)
def test_compose_needs_nothing_a_fresh_clone_lacks(tmp_path, mode):
    """DEPLOY.md's steps in a fresh clone — `cp .env.example .env`, the mode in COMPOSE_PROFILES,
    the mode's secret files — and every bind mount, secret file and build input of the mode's
    services exists there; nothing comes from plugins/dist, which only a Rust toolchain makes."""
    sh("git", "check-ignore", "--quiet", "plugins/dist/drop-spans.wasm")  # fails unless ignored
    clone = fresh_clone(tmp_path / "clone").resolve()
    assert not (clone / "plugins" / "dist").exists()
    compose = clone / "deploy" / "compose"
    assert "cp .env.example .env" in DEPLOY_DOC.read_text()
    sh("cp", ".env.example", ".env", cwd=compose)
    dotenv = (compose / ".env").read_text()
    assert "\nCOMPOSE_PROFILES=packaged\n" in dotenv, "packaged is the example's mode"
    (compose / ".env").write_text(dotenv.replace("\nCOMPOSE_PROFILES=packaged\n", f"\nCOMPOSE_PROFILES={mode}\n"))
    steps = documented_secret_steps(mode)
    assert {re.search(r"secrets/(\w+)", step).group(1) for step in steps} == MODE_SECRETS[mode], \
        f"DEPLOY.md creates the secret files {mode} needs, and no others"
    for step in steps:
        sh("sh", "-c", step, cwd=compose)

    import yaml
    rendered = yaml.safe_load(sh(require_tool("docker-compose"), "--profile", mode, "config", cwd=compose,
                                 env={"PATH": os.environ["PATH"]}))
    active = active_services(rendered, mode)
    assert set(active) == MODE_SERVICES[mode]
    for name, service in active.items():
        for source, target in volume_mounts(service):
            if not source.startswith("/"):
                continue  # a named volume
            assert Path(source).is_relative_to(clone), f"{name}: {target} is mounted from {source}, outside the clone"
            assert Path(source).exists(), f"{name}: {target} is mounted from {source}, which a fresh clone lacks"
            assert not Path(source).is_relative_to(clone / "plugins" / "dist"), f"{name}: {target} needs plugins/dist"
        for secret in service_secrets(service):
            file = Path(rendered["secrets"][secret]["file"])
            assert file.is_file(), f"{name} uses secret {secret}: {file} doesn't exist after DEPLOY.md's steps"
        if "build" in service:
            context = Path(service["build"]["context"])
            assert context.resolve() == clone.resolve(), f"{name} builds from {context}"
            assert (context / service["build"]["dockerfile"]).is_file()
    assert set().union(*map(service_secrets, active.values())) == MODE_SECRETS[mode]


def command_lines(text):
    """The lines of a document's code: fenced blocks and lines indented by four spaces."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            lines.append(line.strip())
    return lines


def test_documented_secret_permissions_let_the_image_user_read_and_no_one_else():
    """Compose bind-mounts a secret file with its owner and mode from the host (it ignores
    uid/gid/mode for file secrets), and the image runs as 65532:65532. The permissions each
    document tells operators to give the files must let that user read them, and not everyone."""
    uid, gid = (int(n) for n in image_config()["user"].split(":"))
    operator = 1000  # whoever creates the files: not the image's user
    for doc in (COMPOSE / "secrets" / "README.md", DEPLOY_DOC):
        commands = " ; ".join(line for line in command_lines(doc.read_text())
                              if line.startswith(("chmod", "chown", "chgrp", "sudo ch")))
        modes = re.findall(r"\bchmod (0?[0-7]{3})\b", commands)
        assert len(modes) == 1, f"{doc.name}: one chmod for the secret files, found {modes}"
        mode = int(modes[0], 8)
        owner = int(m.group(1)) if (m := re.search(r"\bchown (\d+)", commands)) else operator
        group = int(m.group(1)) if (m := re.search(r"\bchgrp (\d+)|\bchown \d*:(\d+)", commands)) else operator
        readable = (owner == uid and mode & 0o400) or (group == gid and mode & 0o040) or mode & 0o004
        assert readable, f"{doc.name}: mode {mode:o}, owner {owner}, group {group}: uid {uid}/gid {gid} can't read"
        assert not mode & 0o004, f"{doc.name}: mode {mode:o} lets every user of the host read the secrets"


@pytest.mark.parametrize("mode", MODES)
def test_compose_sluice_starts_with_its_rendered_environment(tmp_path, mode):
    """The mode's Sluice service, run as its container would be: the image's ENV and command
    with the service's environment; its bind mounts and secret files at their container paths;
    ready on the admin port, serving every published port and every port the shipped Prometheus
    config scrapes; exit 0 on SIGTERM."""
    rendered, active = compose_config(tmp_path, mode)
    service = active[f"sluice-{mode}"]
    image = image_config()
    mounts = dict(IMAGE_FILES)  # a named volume at /var/cache/sluice: the shared compile cache
    for source, target in volume_mounts(service):
        if source.startswith("/"):
            mounts[target] = Path(source)
        elif target not in mounts:
            mounts[target] = tmp_path / "volumes" / source
            mounts[target].mkdir(parents=True)
    for secret in service.get("secrets", []):
        source, target = (secret, secret) if isinstance(secret, str) else (secret["source"], secret.get("target"))
        mounts[f"/run/secrets/{target or source}"] = Path(rendered["secrets"][source]["file"])
    container_env = {**image["env"], **{k: v or "" for k, v in service["environment"].items()}}
    argv = (service.get("entrypoint") or image["entrypoint"]) + (service.get("command") or image["cmd"])
    argv, env, listeners = localize(argv, container_env, {**mounts, IMAGE_BINARY: sluice_binary()})
    serves = {f"published {port}": port for _, port in published_ports(service)}
    if "prometheus" in active:
        scraped = re.findall(r'"sluice:(\d+)"', (DEPLOY / "prometheus" / "prometheus.yml").read_text())
        assert scraped, "the shipped Prometheus config scrapes Sluice"
        serves.update({f"scraped by Prometheus at sluice:{port}": int(port) for port in scraped})
    unserved = sorted(port for port in serves.values() if port not in listeners)
    assert not unserved, f"container ports {unserved} have no listener on 0.0.0.0 in the environment:\n{container_env}"
    admin = int(image["env"]["SLUICE_ADMIN_ADDRESS"].rsplit(":", 1)[1])
    problem = start_ready_stop(argv, env, tmp_path / "run", listeners[admin],
                               {what: listeners[port] for what, port in serves.items()},
                               config=local_path(f"{IMAGE_PIPELINES}/{mode}.toml", mounts))
    assert not problem, f"sluice-{mode}: {problem}"


# --- Kubernetes ---------------------------------------------------------------------------------

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"


def rendered_overlay(overlay):
    import yaml

    text = sh(require_tool("kubectl"), "kustomize", K8S / "overlays" / overlay)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs, kind, name):
    # A generated ConfigMap's name carries a hash suffix.
    named = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    matches = [d for d in docs if d["kind"] == kind and named.fullmatch(d["metadata"]["name"])]
    assert len(matches) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in matches]}"
    return matches[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay_renders_valid_kubernetes(tmp_path, overlay):
    import yaml

    docs = rendered_overlay(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    sh(require_tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION, rendered)
    mode = mode_of(overlay)

    settings = find(docs, "ConfigMap", "sluice-settings")["data"]
    assert settings["SLUICE_MODE"] == mode, "the overlay is the mode"
    pipelines = find(docs, "ConfigMap", "sluice-pipelines")["data"]
    assert set(pipelines) == {path.name for path in (REPO / "pipelines").glob("*.toml")}, \
        "the sluice-pipelines ConfigMap holds every pipelines/*.toml (pipelines/kustomization.yaml)"
    for name, text in pipelines.items():
        assert text == (REPO / "pipelines" / name).read_text(), f"{name} in the ConfigMap is not pipelines/{name}"

    gateway = find(docs, gateway_kind(overlay), "sluice-gateway")
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
    import tomllib
    if overlay.endswith("-kafka"):
        # Agents write to Kafka and gateways read it, both at the bootstrap address the overlay sets.
        assert agent_env["SLUICE_CONFIG"] == "/etc/sluice/pipelines/agent-kafka.toml"
        [brokers_ref] = [e["valueFrom"]["configMapKeyRef"] for e in agent_pod["containers"][0]["env"]
                         if e["name"] == "SLUICE_KAFKA_BROKERS"]
        assert brokers_ref["key"] in settings and settings["SLUICE_KAFKA_BROKERS"]
        [writer] = [e for e in tomllib.loads(pipelines["agent-kafka.toml"])["exporters"].values() if e["type"] == "kafka"]
        [reader] = [r for r in tomllib.loads(pipelines["gateway-kafka.toml"])["receivers"].values() if r["type"] == "kafka"]
        assert writer["brokers"] == reader["brokers"] == ["${SLUICE_KAFKA_BROKERS:-kafka:9092}"]
        gateway_env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert gateway_env["SLUICE_CONFIG"] == "/etc/sluice/pipelines/gateway-kafka.toml"
    else:
        assert agent_env["SLUICE_CONFIG"] == "/etc/sluice/pipelines/agent.toml"
        # The agents reach the gateways through a headless Service with the loadbalancing exporter.
        [balancer] = [e for e in tomllib.loads(pipelines["agent.toml"])["exporters"].values()
                      if e["type"] == "loadbalancing"]
        assert balancer["routing_key"] == "trace_id" and balancer["resolver"]["dns"]["port"] == 4317
        assert "${SLUICE_GATEWAY_HOSTNAME" in balancer["resolver"]["dns"]["hostname"]
        headless = find(docs, "Service", agent_env["SLUICE_GATEWAY_HOSTNAME"])["spec"]
        assert headless["clusterIP"] == "None", "one DNS address per gateway pod, not a virtual IP"
        assert {p["port"]: p["targetPort"] for p in headless["ports"]}[4317] == "otlp-grpc"

    gateway_pod = gateway["spec"]["template"]["spec"]
    [container] = gateway_pod["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": find(docs, "ConfigMap", "sluice-settings")["metadata"]["name"]}}]
    credentials = next(v for v in gateway_pod["volumes"] if v["name"] == "credentials")["secret"]
    assert credentials == {"secretName": "sluice-credentials", "optional": True}
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    for selector in (find(docs, "Service", "sluice-gateway")["spec"]["selector"],
                     find(docs, "Service", "sluice-gateway-headless")["spec"]["selector"],
                     find(docs, "PodDisruptionBudget", "sluice-gateway")["spec"]["selector"]["matchLabels"],
                     gateway["spec"]["selector"]["matchLabels"]):
        assert selector, "an empty selector selects every pod"
        assert selector.items() <= labels.items(), f"{selector} doesn't select the gateway's pods ({labels})"
    target = find(docs, "HorizontalPodAutoscaler", "sluice-gateway")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (gateway_kind(overlay), "sluice-gateway")

    # The disk queues' directory (SLUICE_DATA_DIR in the image) is a volume: an emptyDir, or a
    # claim per pod where the overlay keeps it across pods.
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/sluice")["name"]
    if gateway_kind(overlay) == "StatefulSet":
        [claim] = [c for c in gateway["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == data]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert data not in {v["name"] for v in gateway_pod["volumes"]}, "the claim, not an emptyDir"
        governing = find(docs, "Service", gateway["spec"]["serviceName"])["spec"]
        assert governing["clusterIP"] == "None" and governing["selector"].items() <= labels.items()
    else:
        assert "emptyDir" in next(v for v in gateway_pod["volumes"] if v["name"] == data)

    # The scrape endpoint is declared, served on the pod's interfaces and carried by the Service
    # only where a Prometheus scrapes it.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_ports = {port["name"] for port in find(docs, "Service", "sluice-gateway")["spec"]["ports"]}
    if mode == "forward":
        assert "metrics" not in ports and "metrics" not in service_ports
    else:
        assert ports["metrics"] == 8889 and "metrics" in service_ports
        assert settings["SLUICE_PROMETHEUS_ADDRESS"] == "0.0.0.0:8889"

    local_stack = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} - {"sluice-gateway"}
    if mode == "forward":
        assert local_stack == set()
    else:
        assert local_stack == {"prometheus", "grafana", "jaeger"}
        dashboards = find(docs, "ConfigMap", "grafana-dashboards")["data"]
        assert set(dashboards) == {"gpus.json", "sluice.json"}
        assert "kubernetes_sd_configs" in find(docs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]


# What an operator creates beside an overlay (DEPLOY.md, "From nothing to data"): the overlays
# only reference these Secrets.
SECRETS = {
    "sluice-credentials": {"otlp-username": "123456", "otlp-password": "glc_test", "custom-collector-key": "key"},
}
# The pipeline each Sluice workload means to run: the agent its own, the gateway the overlay's mode.
PIPELINE_OF = {"DaemonSet/sluice-agent": "agent.toml", "Deployment/sluice-gateway": "{mode}.toml",
               "StatefulSet/sluice-gateway": "{mode}.toml"}
# Overlays whose workloads run other pipelines than the above.
PIPELINES_OF_OVERLAY = {"forward-kafka": {"DaemonSet/sluice-agent": "agent-kafka.toml",
                                          "Deployment/sluice-gateway": "gateway-kafka.toml"}}
# The downward API's fields, as the kubelet fills them in on a node.
POD_FIELDS = {"spec.nodeName": "gpu-node-1", "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
              "metadata.name": "sluice-0", "metadata.namespace": "sluice"}


def sluice_containers(docs):
    """(workload, pod spec, container) for every container that runs the Sluice image, in every
    workload that has a pod template."""
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec.get("template", {}).get("spec") or (spec if doc["kind"] == "Pod" else None)
        if pod is not None and spec.get("volumeClaimTemplates"):
            # Each pod of a StatefulSet gets a claim of its own, mounted like a volume.
            claims = [{"name": c["metadata"]["name"], "persistentVolumeClaim": {}} for c in spec["volumeClaimTemplates"]]
            pod = {**pod, "volumes": pod.get("volumes", []) + claims}
        for container in (pod or {}).get("initContainers", []) + (pod or {}).get("containers", []):
            if container["image"].rsplit("/", 1)[-1].split("@")[0].split(":")[0] == "sluice":
                yield f"{doc['kind']}/{doc['metadata']['name']}", pod, container


def config_map(docs, name):
    """A rendered ConfigMap's data, by its (generated) name."""
    [found] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name] or [None]
    assert found is not None, f"ConfigMap {name} is referenced but not rendered"
    return found.get("data", {})


def container_environment(container, docs):
    """The environment the kubelet gives a container (over the image's ENV): envFrom, then env,
    with ConfigMap values from the rendered overlay, Secret values from SECRETS, downward-API
    fields from POD_FIELDS, and $(VAR) references expanded."""
    env = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            values = config_map(docs, source["configMapRef"]["name"])
        else:
            values = SECRETS[source["secretRef"]["name"]]
        env.update({prefix + key: value for key, value in values.items()})
    for variable in container.get("env", []):
        if "value" in variable:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), variable["value"])
        elif "fieldRef" in variable["valueFrom"]:
            value = POD_FIELDS[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["configMapKeyRef"]
            value = config_map(docs, ref["name"])[ref["key"]]
        elif "secretKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = SECRETS[ref["name"]][ref["key"]]
        else:
            pytest.fail(f"{variable['name']}: the test maps no {variable['valueFrom']}")
        env[variable["name"]] = value
    return env


def pod_volumes(pod, container, docs, workdir):
    """Container path → local path for each of the container's volume mounts: a ConfigMap's data
    and a Secret's keys (SECRETS) written into a folder, an emptyDir a fresh folder (the compile
    cache's the shared one)."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        assert "subPath" not in mount, f"{mount['name']}: the test maps whole volumes only"
        volume, local = volumes[mount["name"]], workdir / "volumes" / mount["name"]
        local.mkdir(parents=True)
        if "configMap" in volume:
            files = config_map(docs, volume["configMap"]["name"])
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in SECRETS or volume["secret"].get("optional"), f"Secret {name}: the test has no values"
            files = SECRETS.get(name, {})
        elif "emptyDir" in volume or "persistentVolumeClaim" in volume:
            files = {}
            local = IMAGE_FILES.get(mount["mountPath"], local)
        else:
            pytest.fail(f"volume {mount['name']}: the test maps no {set(volume) - {'name'}}")
        for file, text in files.items():
            (local / file).write_text(text)
        mounts[mount["mountPath"]] = local
    return mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_sluice_workload_starts_with_its_rendered_environment(tmp_path, overlay):
    """Every container of the overlay that runs the Sluice image, run as the kubelet would run
    it: the image's ENV and ENTRYPOINT/CMD, the rendered env/envFrom, args and volumes, paths
    mapped to local ones. Every declared containerPort must have a listener on the pod's
    interfaces; the process must become ready on the readiness probe's port, serve every declared
    port, and exit 0 on SIGTERM within the pod's grace period."""
    docs = rendered_overlay(overlay)
    mode = mode_of(overlay)
    image = image_config()
    started, failures = [], []
    for workload, pod, container in sluice_containers(docs):
        label = f"{mode}: {workload} ({container['name']})"
        started.append(workload)
        workdir = tmp_path / workload.replace("/", "-") / container["name"]
        mounts = {**IMAGE_FILES, **pod_volumes(pod, container, docs, workdir), IMAGE_BINARY: sluice_binary()}
        env = {**image["env"], **container_environment(container, docs)}
        command = container.get("command") or image["entrypoint"]
        args = container.get("args", [] if "command" in container else image["cmd"])
        argv, env, listeners = localize(command + args, env, mounts)
        declared = {port.get("name", str(port["containerPort"])): port["containerPort"]
                    for port in container.get("ports", [])}
        unserved = {name: port for name, port in declared.items() if port not in listeners}
        if unserved:
            failures.append(f"{label}: containerPorts {unserved} have no listener on 0.0.0.0 in its environment")
            continue
        probe = container["readinessProbe"]["httpGet"]
        admin = declared.get(probe["port"], probe["port"])
        assert probe["path"] == "/readyz" and admin in listeners, f"{label}: readiness probe {probe}"
        assert workload in PIPELINE_OF, f"{label}: which pipeline does it mean to run? Add it to PIPELINE_OF"
        pipeline_file = PIPELINES_OF_OVERLAY.get(overlay, {}).get(workload) or PIPELINE_OF[workload].format(mode=mode)
        problem = start_ready_stop(argv, env, workdir, listeners[admin],
                                   {f"containerPort {name}": listeners[port] for name, port in declared.items()},
                                   config=local_path(f"{IMAGE_PIPELINES}/{pipeline_file}", mounts),
                                   grace=pod.get("terminationGracePeriodSeconds", 30))
        if problem:
            failures.append(f"{label}: {problem}")
    assert {"DaemonSet/sluice-agent", f"{gateway_kind(overlay)}/sluice-gateway"} <= set(started), started
    assert not failures, "\n\n".join(failures)
