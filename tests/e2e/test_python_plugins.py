"""Plugins written in Python (sdk/python, built by componentize-py): the shipped examples in a
live pipeline fed by the OpenTelemetry Python SDK, their faults, and reloads under load."""

import json
import subprocess
import textwrap
import threading
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from conftest import ARCHIVE, PROTOBUF, RECEIVER, REPO, pipeline, post, wait_until
from otlp_payloads import attributes, spans_in, traces
from test_reload import write_config
from test_sdk import exporters

PYTHON_RULES = """
    [[pipelines.all.processors]]
    plugin = "{plugins}/drop-health-checks.wasm"

    [[pipelines.all.processors]]
    plugin = "{plugins}/tag-status-class.wasm"
"""


def test_python_rules_drop_and_tag_live_traffic(make_sluice):
    """Default limits (64 MiB, 100 ms a call, 1 s to start) fit a Python guest: the filter drops
    the health checks the SDK sends, the transform tags the rest with their status class."""
    host = make_sluice(RECEIVER + ARCHIVE + pipeline(processors=PYTHON_RULES), wait=False)
    # On a cold compile cache (the first test of a run to load them) the two 18 MB components are
    # compiled before the host is ready: tens of seconds each in a debug build on two cores.
    host.wait_ready(timeout=120)
    span_exporter, _, _ = exporters("http", host)
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    tracer = provider.get_tracer("e2e")
    for i in range(30):
        name = "GET /healthz" if i % 3 == 0 else f"GET /items/{i}"
        with tracer.start_as_current_span(name) as span:
            span.set_attribute("http.response.status_code", [200, 404, 503][i % 3] if i % 3 else 200)
    with tracer.start_as_current_span("no status"):
        pass
    provider.shutdown()

    wait_until(lambda: len(spans_in(host.lines("traces"))) >= 21, "the kept spans are written", host.logs)
    assert host.metric("sluice_plugin_items_dropped_total", plugin="drop-health-checks") == 10
    assert host.metric("sluice_plugin_faults_total", plugin="drop-health-checks") == 0
    assert host.metric("sluice_plugin_faults_total", plugin="tag-status-class") == 0
    spans = {span["name"]: attributes(span) for _, span in spans_in(host.lines("traces"))}
    assert "GET /healthz" not in spans
    assert len(spans) == 21
    for name, attrs in spans.items():
        code = attrs.get("http.response.status_code")
        expected = f"{int(code) // 100}xx" if code is not None else None
        assert attrs.get("http.status_class") == expected, (name, attrs)
    assert host.stop() == 0


def build_python_plugin(tmp_path, world, source):
    """Builds `source` (an app.py using the SDK) into a component, as `make plugins` does."""
    project = tmp_path / "project"
    project.mkdir(parents=True)
    (project / "app.py").write_text(textwrap.dedent(source))
    out = tmp_path / "plugin.wasm"
    subprocess.run([str(REPO / ".venv" / "bin" / "componentize-py"), "-d", str(REPO / "sdk" / "wit"), "-w", world,
                    "componentize", "-p", str(REPO / "sdk" / "python"), "-p", ".", "app", "-o", str(out)],
                   cwd=project, check=True, capture_output=True)
    return out


def test_a_python_rule_that_raises_fails_its_batch_not_the_host(make_sluice, tmp_path):
    plugin = build_python_plugin(tmp_path, "filter", """
        from sluice_plugin import Filter, export

        class Boom(Filter):
            def drop(self, batch):
                if "boom" in batch.names():
                    raise RuntimeError("a bug in the rule")
                return []

        WitWorld = export(Boom)
    """)
    host = make_sluice(RECEIVER + ARCHIVE + pipeline(processors=f"""
        [[pipelines.all.processors]]
        plugin = "{plugin}"
        on_error = "drop"
    """))
    for prefix in ("boom", "fine"):
        request = traces(1, prefix=prefix)
        request.resource_spans[0].scope_spans[0].spans[0].name = prefix
        status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
        assert status == 200, body
    wait_until(lambda: spans_in(host.lines("traces")), "the good batch is written", host.logs)
    assert [span["name"] for _, span in spans_in(host.lines("traces"))] == ["fine"]
    assert host.metric("sluice_plugin_faults_total", kind="error") == 1
    assert "RuntimeError: a bug in the rule" in host.logs()
    assert host.stop() == 0


def test_reloading_a_pipeline_of_python_rules_under_load_loses_nothing(make_sluice):
    """Config edits rebuild the Python plugins' instances while a client sends: every
    acknowledged span is written exactly once."""
    def config(names):
        return RECEIVER + ARCHIVE + pipeline(processors=f"""
            [[pipelines.all.processors]]
            plugin = "{{plugins}}/drop-health-checks.wasm"
            config = {{{{ span_names = {names} }}}}

            [[pipelines.all.processors]]
            plugin = "{{plugins}}/tag-status-class.wasm"
        """)
    host = make_sluice(config('["never-a"]'))
    acknowledged, errors, stop = [], [], threading.Event()

    def sender():
        n = 0
        while not stop.is_set():
            request = traces(5, prefix=f"s{n}").SerializeToString()
            status, _, body = post(host, "/v1/traces", request, PROTOBUF)
            if status == 200:
                acknowledged.extend(f"s{n}-{k}" for k in range(5))
                n += 1
            elif status != 503:
                errors.append(f"HTTP {status} {body[:200]!r}")
                return
            time.sleep(0.005)

    thread = threading.Thread(target=sender)
    thread.start()
    for i in range(6):
        time.sleep(0.5)
        write_config(host, config(f'["never-{i}"]'))
        assert host.wait_metric("sluice_reload_total", i + 1, timeout=20, result="success") == i + 1, host.logs()
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=30)
    assert not errors, errors
    assert host.stop() == 0, host.logs()
    written = sorted(span["name"] for _, span in spans_in(host.lines("traces")))
    assert len(written) == len(set(written)), "no span written twice"
    assert sorted(acknowledged) == written, "every acknowledged span written"
    assert len(acknowledged) > 100


def test_a_python_exporter_renders_requests_and_a_router_routes(make_sluice, tmp_path):
    """The other two kinds: an exporter's requests reach an HTTP destination through the host,
    and a router's routes pick exporters."""
    from http_sink import HttpSink

    exporter = build_python_plugin(tmp_path / "exporter", "exporter", """
        import json
        from sluice_plugin import Exporter, Request, export

        class Names(Exporter):
            def render(self, batch):
                body = json.dumps({"signal": batch.signal, "names": batch.names()})
                return [Request(path="/hook?source=py", body=body)]

        WitWorld = export(Names)
    """)
    router = build_python_plugin(tmp_path / "router", "router", """
        from sluice_plugin import Router, export

        class ByTenant(Router):
            def route(self, batch):
                return ["acme" if t == "acme" else None for t in batch.attribute_of_each("tenant")]

        WitWorld = export(ByTenant)
    """)
    sink = HttpSink()
    host = make_sluice(RECEIVER + ARCHIVE + f"""
        [exporters.hook]
        type = "plugin"
        plugin = "{exporter}"
        endpoint = "{sink.url}"
    """ + pipeline(processors=f"""
        [[pipelines.all.processors]]
        plugin = "{router}"

        [pipelines.all.routes]
        acme = ["hook"]
    """), wait=False)
    # Two fresh 18 MB components are compiled at validate before the host starts (tens of seconds
    # in a debug build on two cores); later loads come from the compile cache.
    host.wait_ready(timeout=120)
    request = traces(3, prefix="s", attrs={"tenant": "globex"})
    request.resource_spans[0].scope_spans[0].spans[1].attributes[-1].value.string_value = "acme"
    status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200, body
    [received] = sink.wait_requests(1)
    assert received["path"] == "/hook?source=py"
    assert json.loads(received["body"]) == {"signal": "traces", "names": ["s-1"]}
    wait_until(lambda: len(spans_in(host.lines("traces"))) == 2, "the rest take the default route", host.logs)
    assert host.stop() == 0
