"""What an operator meets first, in the repository's own layout: `pipelines/graphistry.toml`
naming its plugins as `../plugins/dist/…` and its rules in `graphistry-*.rules.toml`, edited
again and again while it runs; plugin settings a plugin refuses; secrets that aren't there."""

import hashlib
import os
import re
import shutil
import subprocess

import pytest

from conftest import PLUGIN_CACHE, PLUGINS, PROTOBUF, REPO, free_port, http, scrape, sluice_binary, wait_until
from otlp_payloads import spans_in, traces


class Repository:
    """A copy of the repository's pipelines and built plugins, laid out as in the checkout, with
    `sluice run --config pipelines/graphistry.toml` started in it."""

    def __init__(self, root, plugin_dir=None):
        self.root = root
        shutil.copytree(REPO / "pipelines", root / "pipelines")
        shutil.copytree(PLUGINS, root / "plugins" / "dist")
        self.config = root / "pipelines" / "graphistry.toml"
        self.admin_port, self.http_port = free_port(), free_port()
        env = {**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE), "SLUICE_LOG": "info",
               "SLUICE_ADMIN_ADDRESS": f"127.0.0.1:{self.admin_port}",
               "SLUICE_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
               "SLUICE_HTTP_ADDRESS": f"127.0.0.1:{self.http_port}",
               "SLUICE_DATA_DIR": str(root / "data")}
        env.pop("SLUICE_PLUGIN_DIR", None)
        if plugin_dir is not None:
            env["SLUICE_PLUGIN_DIR"] = str(plugin_dir)
        self.log = open(root / "stderr.log", "wb")
        self.process = subprocess.Popen([str(sluice_binary()), "run", "--config", "pipelines/graphistry.toml"],
                                        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_until(lambda: self.ready(), "the host is ready", self.logs)

    def ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"sluice exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return http("GET", f"http://127.0.0.1:{self.admin_port}/readyz")[0] == 200
        except OSError:
            return False

    def logs(self):
        self.log.flush()
        return (self.root / "stderr.log").read_text(errors="replace")

    def reloads(self, result):
        return int(scrape(self.admin_port, "sluice_reload_total", result=result))

    def last_reload(self):
        return http("GET", f"http://127.0.0.1:{self.admin_port}/reload")[2].decode()

    def send(self, *names):
        request = traces(len(names))
        for span, name in zip(request.resource_spans[0].scope_spans[0].spans, names):
            span.name = name
        status, _, _ = http("POST", f"http://127.0.0.1:{self.http_port}/v1/traces", request.SerializeToString(),
                            PROTOBUF)
        assert status == 200

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=30)
        self.log.close()
        return code

    def archived(self):
        path = self.root / "data" / "traces.jsonl"
        if not path.exists():
            return []
        import json
        return sorted(span["name"] for _, span in spans_in([json.loads(l) for l in path.read_text().splitlines()]))


def edit_in_place(path, old, new):
    """What editors that write in place do: same file, same inode, new content."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    with open(path, "r+") as f:
        f.write(text.replace(old, new, 1))
        f.truncate()


def sed_i(path, expression):
    """`sed -i`: a new file renamed over the old one."""
    subprocess.run(["sed", "-i", expression, str(path)], check=True)


@pytest.mark.parametrize("plugin_paths", ["relative", "absolute"])
def test_every_edit_reloads_in_the_repository_layout(tmp_path, plugin_paths):
    plugin_dir = None if plugin_paths == "relative" else tmp_path / "plugins" / "dist"
    repo = Repository(tmp_path, plugin_dir)
    try:
        config, noise = repo.config, repo.config.parent / "graphistry-noise.rules.toml"
        successes = 0

        def reloaded(result="success", count=None):
            nonlocal successes
            if result == "success":
                successes += 1
                count = successes
            wait_until(lambda: repo.reloads(result) == count, f"{result} reload number {count}",
                       lambda: repo.last_reload() + repo.logs())

        # 1. An editor writing in place, then `sed -i`, then in place again: each one reloads.
        edit_in_place(config, '[exporters.console]\ntype = "debug"', '[exporters.console]\ntype = "debug"\nverbosity = "summary"')
        reloaded()
        sed_i(config, 's/verbosity = "summary"/verbosity = "detailed"/')
        reloaded()
        # 2. A broken edit is refused; fixing it in place reloads, and GET /reload says so.
        sed_i(config, 's/type = "debug"/type = "debugg"/')
        reloaded("failure", 1)
        assert "last reload failed" in repo.last_reload() and "unknown type `debugg`" in repo.last_reload()
        edit_in_place(config, 'type = "debugg"', 'type = "debug"')
        reloaded()
        served = repo.last_reload()
        assert "last reload succeeded" in served, served
        assert f"config sha256: {hashlib.sha256(config.read_bytes()).hexdigest()}" in served, served
        # 3. The shared rule file is watched too, and its new rule serves.
        repo.send("drop-me-later")
        edit_in_place(noise, 'span_names = [', 'span_names = ["*drop-me*", ')
        reloaded()
        repo.send("drop-me-now", "kept")
        # 4. A rebuilt plugin (same path, rewritten) is a change as well.
        plugin = tmp_path / "plugins" / "dist" / "drop-spans.wasm"
        plugin.write_bytes(plugin.read_bytes())
        reloaded()
        edit_in_place(config, 'verbosity = "detailed"', 'verbosity = "summary"')
        reloaded()
        assert repo.reloads("failure") == 1
    finally:
        code = repo.stop()
    assert code == 0, repo.logs()
    assert repo.archived() == ["drop-me-later", "kept"]


def test_a_plugin_that_refuses_its_settings_is_a_config_error_everywhere(tmp_path):
    """`span_nams` is a typo `drop-spans` refuses: validate, start and reload all say so, at the
    `config` line, and a refused reload keeps the old rule serving."""
    repo = Repository(tmp_path)
    config = repo.config
    typo = ('config_file = "graphistry-noise.rules.toml"', 'config = { span_nams = ["*drop-me*"] }')
    try:
        repo.send("GET /healthz")
        edit_in_place(config, *typo)
        status, _, body = http("POST", f"http://127.0.0.1:{repo.admin_port}/reload")
        assert status == 400, body
        assert b"unknown field `span_nams`" in body and b"graphistry.toml:" in body, body
        repo.send("GET /healthz", "after")  # the old rule still drops health checks
        assert "the plugin refused its config" in repo.last_reload()
    finally:
        code = repo.stop()
    assert code == 0, repo.logs()
    assert repo.archived() == ["after"]

    validate = subprocess.run([str(sluice_binary()), "validate", str(config)], capture_output=True, text=True,
                              env={**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)})
    assert validate.returncode == 1
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "span_nams" in text)
    assert f"graphistry.toml:{line}:1" in validate.stderr, validate.stderr
    assert "processor `drop-spans`: the plugin refused its config" in validate.stderr
    assert "unknown field `span_nams`, expected one of `span_names`" in validate.stderr

    start = subprocess.run([str(sluice_binary()), "run", "--config", str(config)], capture_output=True,
                           text=True, timeout=30, env={**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)})
    assert start.returncode == 1 and "unknown field `span_nams`" in start.stderr, start.stderr


def test_an_exporter_plugin_that_refuses_its_settings_is_a_config_error(tmp_path):
    config = tmp_path / "webhook.toml"
    config.write_text(f"""
[receivers.otlp]
type = "otlp"

[exporters.hook]
type = "plugin"
plugin = "{PLUGINS}/export-webhook.wasm"
endpoint = "http://127.0.0.1:9"
config = {{ path = "no-slash" }}

[pipelines.logs]
signals = ["logs"]
receivers = ["otlp"]
exporters = ["hook"]
""")
    result = subprocess.run([str(sluice_binary()), "validate", str(config)], capture_output=True, text=True,
                            env={**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE)})
    assert result.returncode == 1
    assert "exporter `hook`: the plugin refused its config" in result.stderr
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("config ="))
    assert "`path` must start with `/`" in result.stderr and f"webhook.toml:{line}:1" in result.stderr, result.stderr


def test_a_missing_secret_stops_start_with_its_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_OTLP_")}
    env.update(SLUICE_OTLP_ENDPOINT="http://127.0.0.1:9", SLUICE_OTLP_USERNAME="instance-1",
               SLUICE_OTLP_PASSWORD_FILE=str(tmp_path / "absent"), SLUICE_CACHE_DIR=str(PLUGIN_CACHE),
               SLUICE_ADMIN_ADDRESS=f"127.0.0.1:{free_port()}", SLUICE_GRPC_ADDRESS=f"127.0.0.1:{free_port()}",
               SLUICE_HTTP_ADDRESS=f"127.0.0.1:{free_port()}")
    start = subprocess.run([str(sluice_binary()), "run", "--config", str(REPO / "pipelines" / "forward.toml")],
                           capture_output=True, text=True, timeout=30, env=env)
    assert start.returncode == 1, start.stderr
    assert "the basic auth password cannot be read: `SLUICE_OTLP_PASSWORD_FILE`" in start.stderr, start.stderr
    assert str(tmp_path / "absent") in start.stderr


def header_commands():
    """Each shipped pipeline's header command line(s) that run `sluice run`, continuation
    lines joined: (file, command)."""
    found = []
    for path in sorted((REPO / "pipelines").glob("*.toml")):
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        text = "\n".join(header).replace("\\\n", " ")
        found += [(path.name, line) for line in text.splitlines() if "sluice run" in line]
    return found


def loopback(url):
    """The same URL aimed at this machine when it names another: tests send nothing elsewhere."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return url
    return f"http://127.0.0.1:{free_port()}"


def test_every_shipped_pipeline_header_has_a_command():
    names = {name for name, _ in header_commands()}
    assert {"agent.toml", "forward.toml", "graphistry.toml", "hybrid.toml", "packaged.toml"} <= names, names


@pytest.mark.parametrize("name,command", header_commands(), ids=lambda v: v if v.endswith(".toml") else "")
def test_a_shipped_pipelines_header_command_runs_as_written(tmp_path, name, command):
    """The command in each pipeline's header, run from the checkout as written: only the binary's
    path, the listen addresses (free loopback ports) and destinations elsewhere (aimed at this
    machine) differ. It must start, become ready and stop cleanly."""
    import shlex
    words = shlex.split(command.split("&&")[-1])
    env = {**os.environ, "SLUICE_CACHE_DIR": str(PLUGIN_CACHE), "SLUICE_DATA_DIR": str(tmp_path / "data")}
    for key in ("SLUICE_CONFIG", "SLUICE_MODE", "SLUICE_PLUGIN_DIR"):
        env.pop(key, None)
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = loopback(value) if key.endswith("_ENDPOINT") else value
    assert words[0] == "./target/release/sluice", command
    admin = free_port()
    env.update(SLUICE_ADMIN_ADDRESS=f"127.0.0.1:{admin}", SLUICE_GRPC_ADDRESS=f"127.0.0.1:{free_port()}",
               SLUICE_HTTP_ADDRESS=f"127.0.0.1:{free_port()}", SLUICE_PROMETHEUS_ADDRESS=f"127.0.0.1:{free_port()}",
               # The GPU receiver finds no driver here: it warns and the host serves on.
               SLUICE_GPU_INTERVAL="1s")
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([str(sluice_binary()), *words[1:]], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            def ready():
                if process.poll() is not None:
                    raise AssertionError(f"`{command}` exited with {process.returncode}:\n{log.read_text()}")
                try:
                    return http("GET", f"http://127.0.0.1:{admin}/readyz")[0] == 200
                except OSError:
                    return False
            wait_until(ready, f"`{command}` is ready", log.read_text, timeout=30)
        finally:
            process.terminate()
            code = process.wait(timeout=30)
    assert code == 0, log.read_text()


def shipped_modes():
    """The deployment modes' pipelines and graphistry.toml, parsed as TOML (variables left as
    written: what is checked here doesn't depend on them)."""
    import tomllib
    names = ["forward", "packaged", "hybrid", "graphistry"]
    return {name: tomllib.loads((REPO / "pipelines" / f"{name}.toml").read_text()) for name in names}


def processors_of(pipeline, plugin_name):
    return [p for p in pipeline.get("processors", []) if p["plugin"].endswith(f"/{plugin_name}.wasm")]


def test_every_mode_takes_the_graphistry_rules_from_the_one_definition():
    """Each mode's drop and tag rules name the shared rule files rather than copies of them, and
    every pipeline that carries traces drops the noise."""
    for mode, config in shipped_modes().items():
        for name, pipeline in config["pipelines"].items():
            for plugin_name, rules in [("drop-spans", "graphistry-noise.rules.toml"),
                                       ("set-attributes", "graphistry-tags.rules.toml")]:
                for processor in processors_of(pipeline, plugin_name):
                    assert processor.get("config_file") == rules and "config" not in processor, (mode, name)
            if "traces" in pipeline.get("signals", ["traces"]):
                assert processors_of(pipeline, "drop-spans"), f"{mode}: pipeline {name} carries traces unfiltered"
            assert processors_of(pipeline, "set-attributes"), f"{mode}: pipeline {name} is not tagged"


def test_hybrid_sends_the_tenant_to_its_collector_as_well_and_jaeger_only_traces():
    config = shipped_modes()["hybrid"]
    for name, pipeline in config["pipelines"].items():
        signals = pipeline.get("signals", ["traces", "metrics", "logs"])
        exporters = set(pipeline["exporters"]) | {e for route in pipeline.get("routes", {}).values() for e in route}
        if "jaeger" in exporters:
            assert signals == ["traces"], f"pipeline {name} sends {signals} to Jaeger, which takes traces only"
        for route in pipeline.get("routes", {}).values():
            # "Also": the tenant's items reach every default exporter and the custom collector.
            assert set(pipeline["exporters"]) <= set(route) and "custom" in route, (name, route)


def test_shipped_listeners_default_to_loopback():
    """Every listen address a shipped pipeline defaults to is on loopback; deployments open them."""
    for path in sorted((REPO / "pipelines").glob("*.toml")):
        for variable, default in re.findall(r"\$\{(SLUICE_\w*ADDRESS):-([^}]+)\}", path.read_text()):
            assert default.startswith("127.0.0.1:"), f"{path.name}: {variable} defaults to {default}"
