"""The command line: validate, run with a bad config, --version and --help."""

import json
import os
import socket
import subprocess

from conftest import PROTOBUF, REPO, Sluice, free_port, http, sluice_binary, wait_until
from otlp_payloads import spans_in, traces

INVALID = REPO / "tests" / "config" / "invalid"


def run(*args, cwd=REPO, env=None):
    return subprocess.run([str(sluice_binary()), *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          env=env)


def test_validate_accepts_the_shipped_pipelines():
    """With what a deployment must set (the endpoint and credentials without defaults), every
    shipped pipeline validates, its plugins started with their settings."""
    env = dict(os.environ, SLUICE_OTLP_ENDPOINT="https://otlp.example.com", SLUICE_OTLP_USERNAME="instance-1",
               SLUICE_OTLP_PASSWORD="token", CUSTOM_COLLECTOR_KEY="key")
    shipped = [p for p in sorted((REPO / "pipelines").glob("*.toml")) if not p.name.endswith(".rules.toml")]
    assert len(shipped) >= 6
    for path in shipped:
        result = run("validate", str(path), env=env)
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stdout


def test_validate_prints_every_golden_error():
    cases = sorted(INVALID.glob("*.toml"))
    assert len(cases) >= 12
    for case in cases:
        # As the golden test names them: relative to host/, so `config_file` paths resolve.
        shown = f"../tests/config/invalid/{case.name}"
        result = run("validate", shown, cwd=REPO / "host", env={"PATH": "/usr/bin:/bin", "SLUICE_TEST_SET": "set"})
        assert result.returncode == 1, case.name
        assert result.stderr == case.with_suffix(".err").read_text(), case.name


def test_run_refuses_an_invalid_config():
    result = run("run", "--config", str(INVALID / "unknown_receiver.toml"))
    assert result.returncode == 1
    assert "unknown receiver `jaeger`" in result.stderr
    result = run("run", "--config", "/nonexistent/sluice.toml")
    assert result.returncode == 1
    assert "cannot read config file /nonexistent/sluice.toml" in result.stderr


def grpc_to_discard(admin_address, grpc_port):
    """The smallest runnable config: OTLP/gRPC on `grpc_port` into a discard exporter."""
    return f"""
[service]
admin_address = "{admin_address}"
[receivers.otlp]
type = "otlp"
grpc = {{ address = "127.0.0.1:{grpc_port}" }}
http = {{ enabled = false }}
[exporters.out]
type = "discard"
[pipelines.all]
receivers = ["otlp"]
exporters = ["out"]
"""


def test_run_reports_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(grpc_to_discard(f"127.0.0.1:{free_port()}", port))
        result = run("run", "--config", str(config))
    assert result.returncode == 1
    assert f"receiver `otlp` (grpc): cannot listen on 127.0.0.1:{port}" in result.stderr


def test_version_and_help():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("sluice ")
    result = run("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "validate" in result.stdout


def test_environment_substitution_reaches_the_running_host(tmp_path):
    data = tmp_path / "custom-data"
    host = Sluice(tmp_path, """
        [receivers.otlp]
        type = "otlp"
        grpc = {{ address = "{grpc}" }}
        http = {{ address = "127.0.0.1:${{TEST_HTTP_PORT}}" }}
        [exporters.archive]
        type = "file"
        directory = "${{TEST_DATA_DIR:-/nonexistent}}"
        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["archive"]
    """, extra_env={"TEST_HTTP_PORT": str(port := free_port()), "TEST_DATA_DIR": str(data)})
    try:
        status, _, _ = http("POST", f"http://127.0.0.1:{port}/v1/traces", traces(1, prefix="substituted").SerializeToString(),
                            PROTOBUF)
        assert status == 200
    finally:
        code = host.stop()
    assert code == 0, host.logs()
    assert [span["name"] for _, span in spans_in(
        [json.loads(line) for line in (data / "traces.jsonl").read_text().splitlines()])] == ["substituted-0"]


def test_mode_picks_the_pipeline_and_health_answers(tmp_path):
    """SLUICE_MODE is the one setting that picks a deployment's pipeline; `sluice health` is the
    container health check."""
    admin = free_port()
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "hybrid.toml").write_text(grpc_to_discard("${SLUICE_ADMIN_ADDRESS}", free_port()))
    env = dict(os.environ, SLUICE_MODE="hybrid", SLUICE_PIPELINES_DIR=str(pipelines),
               SLUICE_ADMIN_ADDRESS=f"0.0.0.0:{admin}")
    env.pop("SLUICE_CONFIG", None)
    assert run("health", env=env).returncode == 1, "nothing runs yet"
    host = subprocess.Popen([str(sluice_binary()), "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        def ready():
            assert host.poll() is None, host.stderr.read()
            return run("health", "--ready", env=env).returncode == 0
        wait_until(ready, "`sluice health --ready` succeeds", timeout=20, interval=0.1)
        healthy = run("health", env=env)
        assert healthy.returncode == 0 and "200" in healthy.stdout
    finally:
        host.terminate()
        host.wait(timeout=30)
    assert str(pipelines / "hybrid.toml") in host.stderr.read()
    # A config path wins over a mode from the same place (the Kubernetes agent sets SLUICE_CONFIG
    # in an image that sets SLUICE_MODE); the command line wins over the environment.
    missing = tmp_path / "agent.toml"
    both = run("run", env=dict(env, SLUICE_CONFIG=str(missing)))
    assert both.returncode == 1 and str(missing) in both.stderr, both.stderr
    typed = run("run", "--mode", "forward", env=dict(env, SLUICE_CONFIG=str(missing)))
    assert typed.returncode == 1 and str(pipelines / "forward.toml") in typed.stderr, typed.stderr
    wrong = run("run", env=dict(env, SLUICE_MODE="local"))
    assert wrong.returncode == 2 and "forward, packaged, hybrid" in wrong.stderr
