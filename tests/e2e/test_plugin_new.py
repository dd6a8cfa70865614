"""`sluice plugin new`, tried as a new author would: scaffold a project outside the repository,
follow its README — `make build`, `make test`, the pipeline it shows, the request it sends — and
see the rule drop the health check in a live host."""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import JSON, REPO, free_port, http, sluice_binary, wait_until


def readme_blocks(readme, language):
    return re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)


@pytest.mark.parametrize("lang", ["python", "rust"])
def test_a_scaffolded_plugin_builds_tests_and_runs_in_a_pipeline(tmp_path, lang):
    started = time.monotonic()
    made = subprocess.run([str(sluice_binary()), "plugin", "new", "drop-noise", "--lang", lang, "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "drop-noise"
    readme = (project / "README.md").read_text()

    # The README's commands, as written; `sluice` is this build, and the Python project uses
    # the componentize-py `make plugins` installed rather than downloading it again.
    env = {**os.environ, "SLUICE": str(sluice_binary())}
    if lang == "python":
        env["COMPONENTIZE"] = str(REPO / ".venv" / "bin" / "componentize-py")
    commands = [line.split("#")[0].strip() for block in readme_blocks(readme, "sh") for line in block.splitlines()]
    assert "make build" in commands and "make test" in commands, readme
    for command in ("make build", "make test"):
        result = subprocess.run(command.split(), cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    assert "dropped 1: GET /healthz" in result.stdout

    # The pipeline the README shows, on ports of this test's choosing.
    [pipeline] = readme_blocks(readme, "toml")
    grpc, http_port, admin = free_port(), free_port(), free_port()
    pipeline = pipeline.replace('type = "otlp"\n', f'type = "otlp"\ngrpc = {{ address = "127.0.0.1:{grpc}" }}\n'
                                                  f'http = {{ address = "127.0.0.1:{http_port}" }}\n', 1)
    (project / "pipeline.toml").write_text(f'[service]\nadmin_address = "127.0.0.1:{admin}"\n\n' + pipeline)
    stdout = open(tmp_path / "stdout.log", "wb")
    host = subprocess.Popen([str(sluice_binary()), "run", "--config", "pipeline.toml"], cwd=project,
                            stdout=stdout, stderr=subprocess.PIPE)
    try:
        def ready():
            if host.poll() is not None:
                pytest.fail(f"sluice exited: {host.stderr.read().decode()}")
            try:
                return http("GET", f"http://127.0.0.1:{admin}/readyz")[0] == 200
            except OSError:
                return False
        wait_until(ready, "the pipeline is ready", timeout=60)
        [curl] = [line for block in readme_blocks(readme, "sh") for line in block.splitlines() if "curl" in line]
        assert "--data-binary @sample.json" in curl and "/v1/traces" in curl
        status, _, body = http("POST", f"http://127.0.0.1:{http_port}/v1/traces",
                               (project / "sample.json").read_bytes(), JSON)
        assert status == 200, body
        wait_until(lambda: b"POST /checkout" in (tmp_path / "stdout.log").read_bytes(), "the kept span is printed")
        assert b"GET /healthz" not in (tmp_path / "stdout.log").read_bytes()
    finally:
        host.terminate()
        host.wait(timeout=30)
        # A Rust project's build is hundreds of MB of dependencies; CI's disk is shared.
        shutil.rmtree(project / "target", ignore_errors=True)
    took = time.monotonic() - started
    print(f"{lang}: from `sluice plugin new` to the rule running in a pipeline in {took:.0f} s")
