"""`sluice tap` as a person uses it, against live traffic: the Graphistry pipeline as shipped
shows its health checks dropped by `drop-spans` and what it keeps tagged by `set-attributes`;
a tap that reads slower than the pipeline runs loses its own samples (and says so), never the
pipeline's items; off loopback, a tap needs the admin token."""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import FILE_PIPELINE, HEALTH_CHECKS_DROPPED, PROTOBUF, post, shipped_sluice, sluice_binary, wait_until
from otlp_payloads import spans_in, traces

GRAPHISTRY_NAMES = ["GET /healthz", "datasets.list", "upload_dataset", "render", "check_workers"]


def graphistry_request(n):
    """A request of the Graphistry app's span names, `n` rounds of them."""
    request = traces(len(GRAPHISTRY_NAMES) * n, service="graphistry-api")
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        span.name = GRAPHISTRY_NAMES[i % len(GRAPHISTRY_NAMES)]
    return request


@pytest.fixture
def graphistry(tmp_path):
    """graphistry.toml as shipped, fed ten requests a second until the test ends."""
    host = shipped_sluice(tmp_path, "graphistry.toml", GRAPHISTRY_INSTANCE="lab-7")
    stop = threading.Event()

    def send():
        body = graphistry_request(2).SerializeToString()
        while not stop.is_set():
            post(host, "/v1/traces", body, PROTOBUF)
            time.sleep(0.1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    yield host
    stop.set()
    sender.join(timeout=10)
    assert host.stop() == 0, host.logs()


def tap(host, *args, env=None, timeout=30):
    return subprocess.run([str(sluice_binary()), "tap", "--address", f"127.0.0.1:{host.admin_port}", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_tap_shows_the_health_checks_dropped_by_drop_spans(graphistry):
    result = tap(graphistry, "--match", "span.name=GET /health*", "--limit", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    for line in lines:
        assert line.startswith('graphistry receiver span "GET /healthz" service=graphistry-api'), line
        assert line.endswith("→ dropped by drop-spans"), line

    # Everything as received, each with its fate: noise dropped, the rest kept and tagged.
    result = tap(graphistry, "--limit", "10")
    assert result.returncode == 0, result.stderr
    seen = {}
    for line in result.stdout.splitlines():
        seen[line.split('"')[1]] = line
    assert set(seen) == set(GRAPHISTRY_NAMES), result.stdout
    for name in ("GET /healthz", "datasets.list", "check_workers"):
        assert seen[name].endswith("→ dropped by drop-spans"), seen[name]
    for name in ("upload_dataset", "render"):
        assert "→ kept · resource system set by set-attributes · resource graphistry.instance set by set-attributes" \
            in seen[name], seen[name]


def test_tap_after_a_plugin_and_at_an_exporter_as_json(graphistry):
    result = tap(graphistry, "--stage", "after:drop-spans", "--format", "json", "--limit", "10")
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(items) == 10
    fates = {(span["name"], item["fate"], item["dropped_by"])
             for item in items for _, span in spans_in([item["otlp"]])}
    assert fates <= {("upload_dataset", "kept", None), ("render", "kept", None),
                     ("GET /healthz", "dropped", "drop-spans"), ("datasets.list", "dropped", "drop-spans"),
                     ("check_workers", "dropped", "drop-spans")}, fates
    assert {fate for _, fate, _ in fates} == {"kept", "dropped"}, "it shows what it let through and what it dropped"
    assert all(item["stage"] == "after:drop-spans" and item["pipeline"] == "graphistry" for item in items)

    # At the exporter: the items as the archive gets them, tags in place, no noise.
    result = tap(graphistry, "--stage", "exporter:archive", "--format", "json", "--limit", "4")
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        item = json.loads(line)
        resource = {a["key"]: a["value"]["stringValue"] for a in item["otlp"]["resourceSpans"][0]["resource"]["attributes"]}
        assert resource["system"] == "graphistry" and resource["graphistry.instance"] == "lab-7", resource
        [(_, span)] = list(spans_in([item["otlp"]]))
        assert span["name"] in ("upload_dataset", "render"), span
        assert item["fate"] == "kept"


def test_tap_names_what_the_host_does_not_have(graphistry):
    result = tap(graphistry, "--pipeline", "nope")
    assert result.returncode == 1
    assert "no pipeline `nope`; the pipelines are: graphistry" in result.stderr, result.stderr
    result = tap(graphistry, "--pipeline", "graphistry", "--stage", "after:sample")
    assert result.returncode == 1
    assert "its stages are: receiver, after:drop-spans, after:set-attributes, exporter:console, exporter:archive" \
        in result.stderr, result.stderr
    result = tap(graphistry, "--match", "colour=red")
    assert result.returncode == 1 and "match field `colour`" in result.stderr, result.stderr


def test_a_tap_that_falls_behind_loses_its_own_samples_not_the_pipelines_items(make_sluice):
    host = make_sluice(HEALTH_CHECKS_DROPPED)
    # A watcher that asks and then reads nothing: its socket fills, then its channel.
    watcher = socket.socket()
    watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher.connect(("127.0.0.1", host.admin_port))
    # A rate well past the load, so every batch is offered and the channel fills.
    watcher.sendall(b"GET /tap?format=json&rate=100000000 HTTP/1.0\r\n\r\n")
    wait_until(lambda: host.metric("sluice_tap_watchers") == 1, "the tap is open")
    requests, spans = 300, 100
    body = traces(spans, prefix="keep").SerializeToString()
    for _ in range(requests):
        status, _, answer = post(host, "/v1/traces", body, PROTOBUF)
        assert status == 200, answer
    wait_until(lambda: host.metric("sluice_exporter_sent_items_total", exporter="archive") == requests * spans,
               "every item reaches the archive while the tap is stuck", host.logs)
    missed = host.metric("sluice_tap_missed_samples_total")
    assert missed > 0, "the tap's channel filled"

    # Reading again: what was buffered, then a line saying how many batches were missed.
    watcher.settimeout(10)
    received = b""
    post(host, "/v1/traces", body, PROTOBUF)
    while b"missed_batches" not in received:
        chunk = watcher.recv(1 << 20)
        assert chunk, "the stream ended"
        received += chunk
    notice = next(json.loads(line) for line in received.split(b"\n") if b"missed_batches" in line)
    assert notice["missed_batches"] >= 1, notice
    watcher.close()
    wait_until(lambda: host.metric("sluice_tap_watchers") == 0, "a watcher that leaves is forgotten")
    assert host.stop() == 0


def test_off_loopback_a_tap_needs_the_admin_token(make_sluice, tmp_path):
    token = "tap-token-never-logged-41c9"
    open_host = make_sluice(FILE_PIPELINE, admin_host="0.0.0.0")
    result = tap(open_host, "--limit", "1", timeout=10)
    assert result.returncode == 1
    assert "403" in result.stderr and "admin_auth" in result.stderr, result.stderr

    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    service = f'admin_auth = {{ bearer = {{ token = {{ file = "{token_file}" }} }} }}\n'
    host = make_sluice(FILE_PIPELINE, admin_host="0.0.0.0", service=service)
    assert tap(host, "--limit", "1", timeout=10).returncode == 1, "no token"
    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope")
    result = tap(host, "--limit", "1", "--token-file", str(wrong), timeout=10)
    assert result.returncode == 1 and "401" in result.stderr, result.stderr

    def tapped(*args, env=None):
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(result=tap(host, "--limit", "1", *args, env=env)))
        thread.start()
        wait_until(lambda: host.metric("sluice_tap_watchers") == 1, "the tap is open")
        post(host, "/v1/traces", traces(1).SerializeToString(), PROTOBUF)
        thread.join(timeout=30)
        return outcome["result"]

    by_file = tapped("--token-file", str(token_file))
    assert by_file.returncode == 0 and "→ kept" in by_file.stdout, by_file.stderr
    by_env = tapped(env=dict(os.environ, SLUICE_ADMIN_TOKEN=token))
    assert by_env.returncode == 0 and "→ kept" in by_env.stdout, by_env.stderr
    assert host.stop() == 0
    assert token not in host.logs()
