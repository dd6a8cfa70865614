"""Exporter plugins against a real HTTP server: `export-loki` with logs from the Python SDK,
`export-webhook` with spans, the custom destination from docs/PLUGINS.md, the host's
credentials and retries around a plugin's requests, and plugins put in the wrong place."""

import base64
import json
import logging
import os
import subprocess
import time

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from conftest import ARCHIVE, PLUGIN_CACHE, PLUGINS, PROTOBUF, RECEIVER, pipeline, post, sluice_binary
from http_sink import HttpSink
from otlp_payloads import logs, traces


def exporter(name, plugin, sink, settings=""):
    return f"""
    [exporters.{name}]
    type = "plugin"
    plugin = "{{plugins}}/{plugin}.wasm"
    endpoint = "{sink.url}"
    {settings}
"""


def sdk_logs(host, service, lines):
    resource = Resource.create({"service.name": service, "deployment.environment": "test"})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{host.http_base}/v1/logs")))
    logger = logging.getLogger(f"e2e.loki.{service}")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for level, message in lines:
        logger.log(level, message, extra={"disk.index": 3})
    provider.shutdown()
    logger.removeHandler(handler)


def test_loki_push_with_labels_metadata_and_host_credentials(make_sluice):
    sink = HttpSink()
    host = make_sluice(RECEIVER + exporter("loki", "export-loki", sink, """
    auth = {{ basic = {{ username = {{ env = "LOKI_USER" }}, password = {{ env = "LOKI_TOKEN" }} }} }}
    config = {{ labels = ["service.name", "deployment.environment"], static_labels = {{ cluster = "gpu-a" }}, tenant = "graphistry" }}
""") + pipeline('["loki"]'), extra_env={"LOKI_USER": "loki-user", "LOKI_TOKEN": "s3cret"})
    sdk_logs(host, "forge", [(logging.WARNING, "disk almost full"), (logging.ERROR, "disk full"),
                              (logging.WARNING, "disk still almost full")])
    assert host.wait_metric("sluice_exporter_sent_items_total", 3, exporter="loki") == 3
    assert host.stop() == 0, host.logs()
    sink.close()

    pushes = sink.requests
    assert {(r["method"], r["path"]) for r in pushes} == {("POST", "/loki/api/v1/push")}
    headers = pushes[0]["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-scope-orgid"] == "graphistry"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"loki-user:s3cret").decode()
    streams = [s for r in pushes for s in json.loads(r["body"])["streams"]]
    by_level = {s["stream"]["level"]: s for s in streams}
    assert set(by_level) == {"warn", "error"}
    for stream in streams:
        assert stream["stream"] == {"service_name": "forge", "deployment_environment": "test", "cluster": "gpu-a",
                                    "level": stream["stream"]["level"]}
    assert sorted(v[1] for v in by_level["warn"]["values"]) == ["disk almost full", "disk still almost full"]
    [(time_ns, line, metadata)] = by_level["error"]["values"]
    assert line == "disk full"
    assert abs(int(time_ns) / 1e9 - time.time()) < 120
    assert metadata["disk_index"] == "3"


def test_webhook_splits_batches_and_retries_what_the_destination_asks(make_sluice):
    # The first answer is "busy, try again in 1 s"; everything after succeeds. The backoff alone
    # would retry within 50-150 ms.
    sink = HttpSink(lambda n: (503, {"Retry-After": "1"}, b"busy") if n == 0 else (202, {}, b""))
    host = make_sluice(RECEIVER + exporter("hook", "export-webhook", sink, """
    headers = {{ "x-hook-token" = {{ env = "HOOK_TOKEN" }} }}
    retry = {{ initial_backoff = "100ms", max_backoff = "500ms" }}
    config = {{ path = "/hooks/sluice?source=test", max_items = 2 }}
""") + pipeline('["hook"]'), extra_env={"HOOK_TOKEN": "t0ken"})
    status, _, _ = post(host, "/v1/traces", traces(3, prefix="job", attrs={"gpu": "a100"}).SerializeToString(), PROTOBUF)
    assert status == 200
    assert host.wait_metric("sluice_exporter_sent_items_total", 3, exporter="hook") == 3
    assert host.metric("sluice_exporter_retried_items_total", exporter="hook") == 3
    assert host.stop() == 0, host.logs()
    sink.close()

    # Request 0 was refused; requests 1 and 2 are its retry and the batch's second part.
    assert len(sink.requests) == 3
    assert sink.requests[1]["body"] == sink.requests[0]["body"], "the refused part is what is retried"
    assert sink.gaps()[0] >= 0.9, f"retried before the 1 s Retry-After: {sink.gaps()}"
    assert all(r["path"] == "/hooks/sluice?source=test" and r["headers"]["x-hook-token"] == "t0ken"
               for r in sink.requests)
    documents = [json.loads(r["body"]) for r in sink.requests[1:]]
    assert [(d["signal"], d["part"], d["parts"], len(d["items"])) for d in documents] == [
        ("traces", 1, 2, 2), ("traces", 2, 2, 1)]
    items = [i for d in documents for i in d["items"]]
    assert [i["name"] for i in items] == ["job-0", "job-1", "job-2"]
    assert all(len(i["trace_id"]) == 32 for i in items)
    assert [i["attributes"] for i in items] == [{"index": str(n), "gpu": "a100"} for n in range(3)]
    assert items[0]["resource"]["service.name"] == "payload-test"


def test_refused_requests_are_counted_not_retried(make_sluice):
    sink = HttpSink(lambda n: (400, {}, b"bad labels"))
    host = make_sluice(RECEIVER + exporter("hook", "export-webhook", sink) + pipeline('["hook"]'))
    assert post(host, "/v1/logs", logs(("a", "b")).SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_exporter_failed_items_total", 2, exporter="hook") == 2
    assert host.metric("sluice_exporter_retried_items_total", exporter="hook") == 0
    assert host.stop() == 0
    assert len(sink.requests) == 1
    assert "HTTP 400 Bad Request: bad labels" in host.logs()


def test_custom_destination_from_the_docs(make_sluice):
    """The < 50-line exporter PLUGINS.md shows, built as a fixture and run for real."""
    sink = HttpSink()
    host = make_sluice(RECEIVER + exporter("intake", "fixture-export-lines", sink, """
    config = {{ path = "/ingest", min_severity = 13 }}
""") + pipeline('["intake"]'))
    request = logs(("quiet", "loud"), service="forge")
    request.resource_logs[0].scope_logs[0].log_records[1].severity_number = 17
    request.resource_logs[0].scope_logs[0].log_records[1].severity_text = "ERROR"
    assert post(host, "/v1/logs", request.SerializeToString(), PROTOBUF)[0] == 200
    [pushed] = sink.wait_requests(1)
    assert host.stop() == 0
    assert pushed["path"] == "/ingest" and pushed["headers"]["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in pushed["body"].decode().splitlines()] == [
        {"service": "forge", "severity": "ERROR", "message": "loud"}]


def test_signals_the_plugin_does_not_export_are_counted_as_failed(make_sluice):
    sink = HttpSink()
    host = make_sluice(RECEIVER + exporter("loki", "export-loki", sink) + pipeline('["loki"]'))
    assert post(host, "/v1/traces", traces(2).SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_exporter_failed_items_total", 2, exporter="loki", signal="traces") == 2
    assert host.stop() == 0
    assert sink.requests == []
    assert "the plugin does not export traces" in host.logs()


def test_plugins_in_the_wrong_place_are_refused_before_anything_starts(make_sluice):
    sink = HttpSink()
    host = make_sluice(RECEIVER + ARCHIVE + exporter("misplaced", "drop-spans", sink) + pipeline(
        '["archive", "misplaced"]', """
        [[pipelines.all.processors]]
        name = "loki-as-processor"
        plugin = "{plugins}/export-loki.wasm"
    """), wait=False)
    assert host.process.wait(timeout=30) == 1
    logs_text = host.logs()
    assert "processor `loki-as-processor`:" in logs_text
    assert "implements the `exporter` world: use it as an exporter" in logs_text
    assert "exporter `misplaced`:" in logs_text
    assert "implements the `filter` world: use it in a pipeline's `processors`" in logs_text
    assert sink.requests == []


def test_reload_swaps_the_exporter_plugin_and_refuses_a_broken_one(make_sluice, tmp_path):
    sink = HttpSink()
    wasm = tmp_path / "hook.wasm"
    wasm.write_bytes((PLUGINS / "export-webhook.wasm").read_bytes())
    host = make_sluice(RECEIVER + f"""
    [exporters.hook]
    type = "plugin"
    plugin = "{wasm}"
    endpoint = "{sink.url}"
""" + pipeline('["hook"]'))
    assert post(host, "/v1/logs", logs(("one",)).SerializeToString(), PROTOBUF)[0] == 200
    sink.wait_requests(1)

    # A broken file: the reload is refused and the running exporter keeps delivering.
    wasm.write_bytes(b"not wasm")
    assert host.wait_metric("sluice_reload_total", 1, result="failure") == 1
    assert post(host, "/v1/logs", logs(("two",)).SerializeToString(), PROTOBUF)[0] == 200
    sink.wait_requests(2)

    # The TOML alone is still watched after that refusal: editing it tries again (and is
    # refused again, the file being still broken).
    host.config.write_text(host.config.read_text().replace(f'endpoint = "{sink.url}"',
                                                           f'endpoint = "{sink.url}"\n    config = {{ path = "/lines" }}'))
    assert host.wait_metric("sluice_reload_total", 2, result="failure") == 2, host.logs()
    # A different exporter at the same path: picked up without a restart.
    wasm.write_bytes((PLUGINS / "fixture-export-lines.wasm").read_bytes())
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1
    assert post(host, "/v1/logs", logs(("three",)).SerializeToString(), PROTOBUF)[0] == 200
    requests = sink.wait_requests(3)
    assert host.stop() == 0
    assert [r["path"] for r in requests] == ["/", "/", "/lines"]
    assert json.loads(requests[2]["body"].decode().splitlines()[0])["message"] == "three"


def test_plugin_test_shows_an_exporters_requests(tmp_path):
    batch = tmp_path / "logs.json"
    batch.write_text(json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": "1700000000000000000", "severityNumber": 17,
                                       "body": {"stringValue": "disk full"}}]}]}]}))
    result = subprocess.run([str(sluice_binary()), "plugin", "test", str(PLUGINS / "export-loki.wasm"),
                             "--input", str(batch), "--config", "tenant=ops"],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, SLUICE_CACHE_DIR=str(PLUGIN_CACHE)))
    assert result.returncode == 0, result.stderr
    assert "POST /loki/api/v1/push" in result.stdout
    assert "x-scope-orgid: ops" in result.stdout
    assert '"values":[["1700000000000000000","disk full"]]' in result.stdout
