"""WebAssembly plugins in real pipelines: the shipped plugins' effects, routes, the Graphistry
pipeline, the compile cache, `sluice plugin test`, and the sandbox: a plugin that loops, hoards
memory, traps, panics, exports the wrong world or isn't Wasm at all never stops the host from
answering clients, and later batches still flow."""

import hashlib
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import (ARCHIVE, PLUGIN_CACHE, PLUGINS, PROTOBUF, RECEIVER, REPO, pipeline, post,
                      shipped_sluice, sluice_binary)
from otlp_payloads import attributes, logs, records_in, spans_in, traces


def plugin(name):
    path = PLUGINS / f"{name}.wasm"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make plugins`")
    return path


def one_plugin_pipeline(processor_toml, exporters='["archive"]', extra=""):
    return RECEIVER + ARCHIVE + extra + pipeline(exporters, processor_toml)


def send(host, request):
    status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200, body
    return status


def span_names(host):
    return sorted(span["name"] for _, span in spans_in(host.lines("traces")))


# Plugins built against sluice:plugin@0.1.0 (the guest got the bytes), kept as they were built.
CONTRACT_0_1_0 = REPO / "tests" / "plugins-0.1.0"


@pytest.mark.parametrize("built", ["0.2.0", "0.1.0", "mixed"])
def test_three_plugin_chain_filters_tags_and_routes(make_sluice, built):
    """The shipped plugins as built now (0.2.0), as built against 0.1.0, and the two mixed in
    one chain: the same answers."""
    old = "{plugins}" if built == "0.2.0" else str(CONTRACT_0_1_0)
    new = str(CONTRACT_0_1_0) if built == "0.1.0" else "{plugins}"
    host = make_sluice(one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{old}/drop-spans.wasm"
        config = {{{{ span_names = ["GET /healthz"], span_attributes = {{{{ "http.route" = ["/internal/*"] }}}} }}}}

        [[pipelines.all.processors]]
        plugin = "{new}/set-attributes.wasm"
        config = {{{{ resource = [{{{{ key = "system", value = "graphistry" }}}}], attributes = [{{{{ key = "user.password", action = "delete" }}}}] }}}}

        [[pipelines.all.processors]]
        plugin = "{old}/route-by-attribute.wasm"
        config = {{{{ attribute = "tenant", routes = {{{{ acme = "acme" }}}} }}}}

        [pipelines.all.routes]
        acme = ["acme_files"]
    """.format(old=old, new=new), extra="""
        [exporters.acme_files]
        type = "file"
        directory = "{data}/acme"
    """))
    send(host, traces(3, prefix="keep", attrs={"tenant": "acme", "user.password": "x"}))
    send(host, traces(2, prefix="other", attrs={"tenant": "globex"}))
    health = traces(2, prefix="h")
    health.resource_spans[0].scope_spans[0].spans[0].name = "GET /healthz"
    health.resource_spans[0].scope_spans[0].spans[1].attributes.add(key="http.route").value.string_value = "/internal/x"
    send(host, health)
    # The all-health batch is empty after drop-spans, so later plugins are not called for it.
    assert host.wait_metric("sluice_plugin_calls_total", 3, plugin="drop-spans") == 3
    assert host.wait_metric("sluice_plugin_calls_total", 2, plugin="route-by-attribute") == 2
    assert host.metric("sluice_plugin_items_dropped_total", plugin="drop-spans") == 2
    assert host.metric("sluice_plugin_items_in_total", plugin="drop-spans") == 7
    assert host.stop() == 0

    default_spans = spans_in(host.lines("traces"))
    assert sorted(s["name"] for _, s in default_spans) == ["other-0", "other-1"]
    acme_lines = [json.loads(line) for line in (host.data / "acme" / "traces.jsonl").read_text().splitlines()]
    acme_spans = spans_in(acme_lines)
    assert sorted(s["name"] for _, s in acme_spans) == ["keep-0", "keep-1", "keep-2"]
    for line in acme_lines:
        for rs in line["resourceSpans"]:
            assert attributes(rs["resource"])["system"] == "graphistry"
    for _, span in acme_spans:
        assert "user.password" not in attributes(span)
        assert attributes(span)["tenant"] == "acme"


def test_set_attributes_redacts_span_and_log_record_attributes(make_sluice):
    """`redact`: the first entry whose pattern matches a key decides; `mask` leaves `***`, `hash`
    the SHA-256 of the value as text, in hex; other attributes pass untouched, and the values
    are nowhere in what is written."""
    host = make_sluice(one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/set-attributes.wasm"
        config = {{ redact = [
            {{ keys = "*password*", mode = "mask" }},
            {{ keys = "user.email", mode = "hash" }},
            {{ keys = "*.id", mode = "hash" }},
            {{ keys = "user.*", mode = "mask" }},
        ] }}
    """))
    secrets = {"user.password": "hunter2", "db.password": "pg-s3cret", "user.email": "ann@example.com",
               "user.name": "ann-the-admin"}
    span_request = traces(1, prefix="login", attrs={**secrets, "http.route": "/login"})
    span_request.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="account.id").value.int_value = 4242
    send(host, span_request)
    log_request = logs(("login",))
    record = log_request.resource_logs[0].scope_logs[0].log_records[0]
    for key, value in {**secrets, "http.route": "/login"}.items():
        record.attributes.add(key=key).value.string_value = value
    record.attributes.add(key="account.id").value.int_value = 4242
    assert post(host, "/v1/logs", log_request.SerializeToString(), PROTOBUF)[0] == 200
    assert host.stop() == 0, host.logs()

    def sha256(text):
        return hashlib.sha256(text.encode()).hexdigest()
    redacted = {"user.password": "***", "db.password": "***", "user.email": sha256("ann@example.com"),
                "account.id": sha256("4242"), "user.name": "***", "http.route": "/login"}
    [(_, span)] = spans_in(host.lines("traces"))
    assert attributes(span) == {"index": "0", **redacted}
    [(_, log_record)] = records_in(host.lines("logs"))
    assert attributes(log_record) == redacted
    written = "".join(path.read_text() for path in host.data.glob("*.jsonl"))
    for value in secrets.values():
        assert value not in written, value


def test_sample_traces_is_consistent_across_hosts(make_sluice):
    pipeline = one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/sample-traces.wasm"
        config = {{ percentage = 30.0 }}
    """)
    hosts = [make_sluice(pipeline), make_sluice(pipeline)]
    for i in range(200):
        trace_id = os.urandom(16)
        request = traces(2, prefix=f"t{i}", trace_id=trace_id)
        for host in hosts:
            send(host, request)
    for host in hosts:
        assert host.stop() == 0
    kept = [span_names(host) for host in hosts]
    assert kept[0] == kept[1], "every host keeps the same traces"
    assert 80 <= len(kept[0]) <= 160, len(kept[0])  # 30% of 200 traces × 2 spans = 120
    # Both spans of a trace share its fate.
    traces_kept = {name.rsplit("-", 1)[0] for name in kept[0]}
    assert len(kept[0]) == 2 * len(traces_kept)


def test_graphistry_pipeline_as_shipped(tmp_path):
    host = shipped_sluice(tmp_path, "graphistry.toml", GRAPHISTRY_INSTANCE="lab-7")
    try:
        request = traces(1, prefix="x")
        spans = request.resource_spans[0].scope_spans[0].spans
        for name in ["GET /healthz", "datasets.list", "check_workers", "upload_dataset", "render"]:
            span = spans.add()
            span.CopyFrom(spans[0])
            span.name = name
        del spans[0]
        send(host, request)
    finally:
        code = host.stop()
    assert code == 0, host.logs()
    lines = host.lines("traces")
    assert span_names(host) == ["render", "upload_dataset"]
    resource = attributes(lines[0]["resourceSpans"][0]["resource"])
    assert resource["system"] == "graphistry" and resource["graphistry.instance"] == "lab-7"


def test_compiled_plugins_are_cached_on_disk(make_sluice, tmp_path):
    cache = tmp_path / "cache"
    pipeline = one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/drop-spans.wasm"
    """)
    first = make_sluice(pipeline, extra_env={"SLUICE_CACHE_DIR": str(cache)})
    assert first.stop() == 0
    # Start-up's check of the plugin compiled it into the cache; building the chain read it back.
    assert len(list(cache.glob("*.cwasm"))) == 1
    second = make_sluice(pipeline, extra_env={"SLUICE_CACHE_DIR": str(cache)})
    assert second.stop() == 0
    assert 'compiled="from cache"' in second.logs()


def test_a_pinned_plugin_with_another_hash_is_refused(make_sluice):
    host = make_sluice(one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/drop-spans.wasm"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        config = {{ span_names = ["*"] }}
    """), wait=False)
    assert host.process.wait(timeout=30) == 1, "a plugin that is not the pinned file never runs"
    assert "but the config pins 0000" in host.logs()


def test_plugin_test_command(tmp_path):
    batch = tmp_path / "batch.json"
    spans = [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"{i + 1:016x}", "name": name}
             for i, name in enumerate(["op-0", "GET /healthz", "op-2"])]
    batch.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
    result = subprocess.run([str(sluice_binary()), "plugin", "test", str(plugin("drop-spans")), "--input", str(batch),
                             "--config", 'span_names=["GET /healthz"]', "--output", str(tmp_path / "out.jsonl")],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, SLUICE_CACHE_DIR=str(PLUGIN_CACHE)))
    assert result.returncode == 0, result.stderr
    assert "dropped 1: GET /healthz" in result.stdout
    assert "kept 2: op-0, op-2" in result.stdout
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [s["name"] for _, s in spans_in(out)] == ["op-0", "op-2"]


# --- The sandbox -------------------------------------------------------------------------------

FAULTY = {
    # fixture: (processor settings, the batch that triggers it, expected fault kind)
    "loop-forever": ('limits = {{ timeout = "50ms" }}', "any", "deadline"),
    "allocate-forever": ('limits = {{ memory = "16MiB" }}', "any", "memory"),
    "trap": ("", "trap", "trap"),
    "panic": ("", "panic", "trap"),
}


@pytest.mark.parametrize("fixture", sorted(FAULTY))
@pytest.mark.parametrize("on_error", ["pass", "drop"])
def test_faulting_plugins_never_stop_the_host(make_sluice, fixture, on_error):
    settings, trigger, kind = FAULTY[fixture]
    host = make_sluice(one_plugin_pipeline(f"""
        [[pipelines.all.processors]]
        plugin = "{{plugins}}/fixture-{fixture}.wasm"
        on_error = "{on_error}"
        {settings}
    """))
    bad = traces(1, prefix="bad")
    bad.resource_spans[0].scope_spans[0].spans[0].name = trigger
    send(host, bad)
    assert host.wait_metric("sluice_plugin_faults_total", 1, plugin=f"fixture-{fixture}", kind=kind) == 1, host.logs()
    # The host still answers, and the next batches flow through a fresh instance (or, for the
    # fixtures that fault on everything, follow on_error).
    assert host.admin("/healthz")[0] == 200
    for i in range(3):
        send(host, traces(1, prefix=f"good{i}"))
    # Every batch reached the plugin (or, while it backs off after faults, its on_error).
    assert host.wait_metric("sluice_plugin_items_in_total", 4, plugin=f"fixture-{fixture}") == 4, host.logs()
    assert host.stop() == 0, host.logs()
    names = span_names(host)
    logs_text = host.logs()
    assert f"plugin=fixture-{fixture}" in logs_text and f"kind=\"{kind}\"" in logs_text
    good = ["good0-0", "good1-0", "good2-0"]
    if fixture in ("trap", "panic"):
        # Only the triggering batch faulted; the recreated instance kept everything after it.
        assert names == sorted(good + ([trigger] if on_error == "pass" else []))
    else:
        # Every batch faults: on_error decides the fate of each one, all four alike.
        assert names == (sorted([trigger] + good) if on_error == "pass" else [])
    if fixture == "panic":
        assert "a plugin bug" in logs_text, "the panic message reaches the log"


def test_a_runaway_plugin_is_interrupted_after_the_host_sat_idle(make_sluice):
    """The thread that advances plugin deadlines sleeps once no call ran for a second; a call
    starting wakes it, so a plugin that never returns is still stopped at its deadline."""
    host = make_sluice(one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/fixture-loop-forever.wasm"
        limits = {{ timeout = "50ms" }}
    """))
    time.sleep(2)  # past the second of no calls after which the epoch thread parks
    send(host, traces(1))
    assert host.wait_metric("sluice_plugin_faults_total", 1, plugin="fixture-loop-forever", kind="deadline") == 1, \
        host.logs()
    assert host.admin("/healthz")[0] == 200


@pytest.mark.parametrize("fixture,content,message", [
    ("wrong-world", None, "wrong-world"),
    ("not-wasm", b"this is a text file, not a component\n", "not-wasm"),
])
def test_unloadable_plugins_are_refused_before_anything_starts(make_sluice, tmp_path, fixture, content, message):
    """A plugin that can't be loaded is a config error at validate and at start, with the reason
    at its line: nothing starts with a rule that would never run."""
    path = plugin("fixture-wrong-world") if content is None else tmp_path / "not-wasm.wasm"
    if content is not None:
        path.write_bytes(content)
    host = make_sluice(one_plugin_pipeline(f"""
        [[pipelines.all.processors]]
        name = "broken"
        plugin = "{path}"
    """), wait=False)
    assert host.process.wait(timeout=30) == 1
    logs_text = host.logs()
    assert "pipeline `all`: processor `broken`:" in logs_text and message in logs_text, logs_text
    validate = subprocess.run([str(sluice_binary()), "validate", str(host.config)], capture_output=True, text=True,
                              env=dict(os.environ, SLUICE_CACHE_DIR=str(PLUGIN_CACHE)))
    assert validate.returncode == 1 and "processor `broken`" in validate.stderr, validate.stderr


def test_plugins_only_see_the_signals_they_ask_for(make_sluice):
    host = make_sluice(one_plugin_pipeline("""
        [[pipelines.all.processors]]
        plugin = "{plugins}/sample-traces.wasm"
        config = {{ percentage = 0.0 }}
    """))
    assert post(host, "/v1/logs", logs(("kept",)).SerializeToString(), PROTOBUF)[0] == 200
    send(host, traces(2))
    # Once the traces (sent second) are through, the logs batch is long done: it was never the
    # plugin's to see.
    assert host.wait_metric("sluice_plugin_items_dropped_total", 2, plugin="sample-traces") == 2
    assert host.metric("sluice_plugin_calls_total", plugin="sample-traces") == 1
    assert host.metric("sluice_plugin_items_in_total", plugin="sample-traces") == 2
    assert host.stop() == 0
    assert span_names(host) == []
    assert len(host.lines("logs")) == 1


@pytest.mark.parametrize("granted", [False, True])
def test_plugins_reach_nothing_they_are_not_granted(make_sluice, granted):
    """The probe plugin drops each probe span whose access worked: without grants, every probe
    survives (no files, no network, no environment); granting one variable makes exactly that
    probe succeed. Each probe can succeed (the fixture's native tests show it): the files are
    the host's working directory and `/`, and the network probe dials a listener this test
    holds open, which nothing ever reaches."""
    grant = 'env = ["SLUICE_PROBE_SECRET"]' if granted else ""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        host = make_sluice(one_plugin_pipeline(f"""
            [[pipelines.all.processors]]
            plugin = "{{plugins}}/fixture-snoop.wasm"
            config = {{{{ port = {port} }}}}
            {grant}
        """), extra_env={"SLUICE_PROBE_SECRET": "s3cret"})
        request = traces(3)
        for span, probe in zip(request.resource_spans[0].scope_spans[0].spans, ["fs-probe", "env-probe", "net-probe"]):
            span.name = probe
        send(host, request)
        assert host.wait_metric("sluice_plugin_calls_total", 1, plugin="fixture-snoop") == 1
        assert host.stop() == 0
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection came in
    expected = ["fs-probe", "net-probe"] if granted else ["env-probe", "fs-probe", "net-probe"]
    assert span_names(host) == expected
    assert "Plugin fault" not in host.logs(), "the probes ran; none faulted"


@pytest.mark.parametrize("on_error", ["pass", "drop"])
def test_an_answer_past_its_limits_is_an_invalid_answer(make_sluice, on_error):
    """A transform told to set a value longer than `limits.value_size` (here, a 70 KB string
    from a rule file, as a careless rule would) is refused whole, with its policy and metric;
    the same rule within the limit applies."""
    host = make_sluice(one_plugin_pipeline(f"""
        [[pipelines.all.processors]]
        plugin = "{{plugins}}/set-attributes.wasm"
        name = "huge"
        on_error = "{on_error}"
        config = {{{{ attributes = [{{{{ key = "blob", value = "{'x' * 70_000}" }}}}] }}}}

        [[pipelines.all.processors]]
        plugin = "{{plugins}}/set-attributes.wasm"
        name = "small"
        limits = {{{{ value_size = "8B" }}}}
        config = {{{{ attributes = [{{{{ key = "tag", value = "12345678" }}}}] }}}}
    """))
    send(host, traces(2, prefix="limited"))
    assert host.wait_metric("sluice_plugin_faults_total", 1, plugin="huge", kind="invalid_answer") == 1, host.logs()
    assert host.stop() == 0
    assert "`limits.value_size` allows 65536" in host.logs()
    spans = [span for _, span in spans_in(host.lines("traces"))]
    if on_error == "drop":
        assert spans == []
    else:
        assert [attributes(span).get("blob") for span in spans] == [None, None]
        assert [attributes(span).get("tag") for span in spans] == ["12345678", "12345678"]
