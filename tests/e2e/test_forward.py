"""The OTLP exporter against real and scripted destinations: rotel-agent downstream, retries,
permanent errors, a dead destination, secret rotation, TLS and mTLS."""

import gzip
import ssl
import subprocess
import time
import zlib

import pytest
import trustme

from conftest import ARCHIVE, PLUGINS, PROTOBUF, RECEIVER, free_port, grpc_call, pipeline, post, rotel_binary, wait_port, wait_until
from downstream import Downstream, partial_success
from http_sink import HttpSink
from otlp_payloads import attributes, logs, points_in, records_in, spans_in, traces

FAST_RETRY = 'retry = {{ initial_backoff = "100ms", max_backoff = "500ms", max_elapsed = "20s" }}'


def forwarder(make_sluice, exporters_toml, exporters='["out"]', **kwargs):
    return make_sluice(RECEIVER + exporters_toml + pipeline(exporters), **kwargs)


def start_rotel(tmp_path, grpc_port, http_port, downstream):
    """rotel-agent on `grpc_port` and `http_port`, exporting OTLP/gRPC to the Sluice `downstream`."""
    return subprocess.Popen(
        [str(rotel_binary()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "otlp",
         "--otlp-exporter-endpoint", f"http://{downstream.grpc_endpoint}", "--batch-timeout", "50ms",
         "--pid-file", str(tmp_path / "rotel.pid"), "--log-file", str(tmp_path / "rotel.log")],
        stdout=open(tmp_path / "rotel.out", "wb"), stderr=subprocess.STDOUT)


def tls_forwarder(make_sluice, endpoint, ca_file, protocol="http/protobuf", client=None, retry=True):
    """A Sluice forwarding over TLS to `endpoint`, trusting `ca_file`; `client` is the folder
    holding client.pem / client.key for mTLS."""
    client_tls = f', cert_file = "{client}/client.pem", key_file = "{client}/client.key"' if client else ""
    no_retry = "" if retry else "retry = {{ enabled = false }}"
    return forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "{protocol}"
        endpoint = "{endpoint}"
        tls = {{{{ ca_file = "{ca_file}"{client_tls} }}}}
        {no_retry}
    """)


def tls_sink(make_sluice, ca, folder, mtls=False, **kwargs):
    """A Sluice whose receivers serve TLS (mTLS when asked), writing what it gets to files."""
    write_certificates(ca, folder)
    client_ca = f', client_ca_file = "{folder}/ca.pem"' if mtls else ""
    # Doubled braces survive the harness's str.format of the pipeline text.
    tls = f'tls = {{{{ cert_file = "{folder}/server.pem", key_file = "{folder}/server.key"{client_ca} }}}}'
    return make_sluice(f"""
        [receivers.otlp]
        type = "otlp"
        grpc = {{{{ address = "{{grpc}}", {tls} }}}}
        http = {{{{ address = "{{http}}", {tls} }}}}
    """ + ARCHIVE + pipeline(), **kwargs)


def send(host, request, path="/v1/traces"):
    status, _, body = post(host, path, request.SerializeToString(), PROTOBUF)
    assert status == 200, body


# With the SDK compressing (gzip, as the OTLP exporter compresses by default), each request goes
# on to rotel-agent as the client compressed it: rotel must read that body too.
@pytest.mark.parametrize("protocol,client_gzip", [("grpc", False), ("http/protobuf", False), ("grpc", True),
                                                  ("http/protobuf", True)])
def test_sdk_to_sluice_to_rotel_keeps_content(make_sluice, tmp_path, protocol, client_gzip):
    sink = make_sluice(RECEIVER + ARCHIVE + pipeline())
    rotel_grpc, rotel_http = free_port(), free_port()
    rotel = start_rotel(tmp_path, rotel_grpc, rotel_http, sink)
    try:
        wait_port(rotel_grpc)
        endpoint = f"http://127.0.0.1:{rotel_grpc}" if protocol == "grpc" else f"http://127.0.0.1:{rotel_http}"
        host = forwarder(make_sluice, f"""
            [exporters.out]
            type = "otlp"
            protocol = "{protocol}"
            endpoint = "{endpoint}"
            batch = {{{{ timeout = "50ms" }}}}
        """)
        send_with_the_sdk(host, gzip=client_gzip)
        assert host.stop() == 0, host.logs()
        expected = {"traces": 4, "metrics": 1, "logs": 2}

        def archived():
            return {s: sink.metric("sluice_exporter_sent_items_total", exporter="archive", signal=s) for s in expected}
        wait_until(lambda: archived() == expected, f"rotel delivered {expected} to the sink",
                   lambda: f"archived: {archived()}\n" + (tmp_path / "rotel.log").read_text(errors="replace")[-2000:],
                   timeout=20)
    finally:
        rotel.terminate()
        rotel.wait(timeout=20)
    assert sink.stop() == 0
    spans = spans_in(sink.lines("traces"))
    assert sorted(s["name"] for _, s in spans) == ["f-0", "f-1", "f-2", "f-3"]
    assert {svc for svc, _ in spans} == {"fwd"}
    assert all(attributes(s)["tenant"] == "acme" for _, s in spans)
    points = points_in(sink.lines("metrics"))
    assert {attributes(p)["queue"]: int(p["asInt"]) for _, name, _, p in points if name == "fwd_jobs"} == {"gpu": 5}
    records = records_in(sink.lines("logs"))
    assert sorted(r["body"]["stringValue"] for _, r in records) == ["alpha", "beta"]


def test_a_gzipped_request_goes_on_as_the_client_compressed_it(make_sluice):
    """No stage changed it and the exporter compresses the same way: the client's gzip body is sent
    on byte for byte. A plain request, or one a plugin changed, is compressed by the exporter."""
    sink = HttpSink()
    exporters = "".join(f"""
        [exporters.{name}]
        type = "otlp"
        protocol = "http/protobuf"
        compression = "gzip"
        endpoint = "{sink.url}{path}"
        batch = {{{{ timeout = "50ms" }}}}
    """ for name, path in [("out", ""), ("tagged", "/tagged")])
    host = make_sluice(RECEIVER + exporters + f"""
        [pipelines.plain]
        receivers = ["otlp"]
        exporters = ["out"]
        [pipelines.changed]
        receivers = ["otlp"]
        exporters = ["tagged"]
        [[pipelines.changed.processors]]
        plugin = "{PLUGINS}/set-attributes.wasm"
        config = {{{{ resource = [{{{{ key = "deployment.environment", value = "test" }}}}] }}}}
    """)
    request = traces(service="gzip-in").SerializeToString()
    body = gzip.compress(request)
    status, _, answer = post(host, "/v1/traces", body, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 200, answer
    received = sink.wait_requests(2)
    as_is = next(r for r in received if r["path"] == "/v1/traces")
    assert as_is["headers"]["content-encoding"] == "gzip"
    assert as_is["body"] == body, "the client's gzip body, untouched"
    tagged = next(r for r in received if r["path"] == "/tagged/v1/traces")
    assert tagged["headers"]["content-encoding"] == "gzip"
    assert b"deployment.environment" in gzip.decompress(tagged["body"])

    status, _, answer = post(host, "/v1/traces", request, PROTOBUF)
    assert status == 200, answer
    plain = [r for r in sink.wait_requests(4) if r["path"] == "/v1/traces"][1]
    assert plain["headers"]["content-encoding"] == "gzip"
    assert gzip.decompress(plain["body"]) == request
    assert host.stop() == 0, host.logs()


def test_gzipped_requests_merged_while_waiting_are_joined_not_compressed_again(make_sluice, tmp_path):
    """While each destination is down, clients' gzip requests wait and merge. The merged request
    is their bodies joined into one gzip member: each client's deflate data is in it as sent, it
    decompresses to the requests in order, and rotel-agent (tonic reads only a body's first gzip
    member) reads every span of it."""
    def answer(n):
        # The first request is refused until the rest have queued behind it.
        return (503, {"Retry-After": "1"}, b"") if n == 0 else (200, {}, b"")
    sink = HttpSink(answer)
    archive = make_sluice(RECEIVER + ARCHIVE + pipeline())
    rotel_grpc = free_port()
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{sink.url}"
        concurrency = 1
        batch = {{{{ timeout = "100ms" }}}}
        [exporters.rotel]
        type = "otlp"
        endpoint = "http://127.0.0.1:{rotel_grpc}"
        concurrency = 1
        batch = {{{{ timeout = "100ms" }}}}
        {FAST_RETRY}
    """, exporters='["out", "rotel"]')
    requests = [traces(5, service="joined", prefix=f"r{i}").SerializeToString() for i in range(20)]
    bodies = [gzip.compress(request, compresslevel=6) for request in requests]
    for body in bodies:
        status, _, answer_body = post(host, "/v1/traces", body, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 200, answer_body
    wait_until(lambda: host.metric("sluice_exporter_sent_items_total", exporter="out", signal="traces") == 100,
               "every span sent to the HTTP destination", host.logs)
    received = sink.wait_requests(2)[1:]
    # Each body one gzip member; together, in order, every request as the clients sent it.
    contents = []
    for request in received:
        assert request["headers"]["content-encoding"] == "gzip"
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        contents.append(reader.decompress(request["body"]))
        assert reader.eof and reader.unused_data == b"", "one gzip member, nothing after it"
    assert b"".join(contents) == b"".join(requests)
    for request, content in zip(received, contents):
        if content in requests:
            # A request that went alone is its client's body, byte for byte.
            assert request["body"] == bodies[requests.index(content)]
    merged = [(r, c) for r, c in zip(received, contents) if len(c) > len(requests[0])]
    assert merged, f"some requests were merged: {[len(c) for c in contents]}"
    for request, content in merged:
        # Joined, not compressed again: every client's deflate data is in the body as it was
        # sent (less its first and last bytes, where a final-block bit and padding may change).
        held = [body for body, plain in zip(bodies, requests) if plain in content]
        assert len(held) > 1
        assert all(body[11:-9] in request["body"] for body in held)

    # rotel-agent comes up only now; the forwarder's queued requests go to it, merged.
    rotel = start_rotel(tmp_path, rotel_grpc, free_port(), archive)
    try:
        wait_until(lambda: archive.metric("sluice_exporter_sent_items_total", exporter="archive",
                                          signal="traces") == 100,
                   "rotel-agent delivered every span", lambda: host.logs()[-3000:], timeout=30)
    finally:
        rotel.terminate()
        rotel.wait(timeout=20)
    assert host.metric("sluice_exporter_failed_items_total", exporter="rotel", signal="traces") == 0
    assert host.stop() == 0, host.logs()
    assert archive.stop() == 0
    names = sorted(s["name"] for _, s in spans_in(archive.lines("traces")))
    assert names == sorted(f"r{i}-{j}" for i in range(20) for j in range(5))
    sink.close()


def gzip_records(queue_dir):
    """(signal index, payload) of every record in a disk queue's segments that holds a gzip body
    (the kind byte's 0x80 bit); asserts each one's checksum."""
    import struct
    header = struct.Struct("<IIIQQQB")  # magic, payload length, CRC-32, seq, written at, items, kind
    found = []
    for segment in sorted(queue_dir.glob("*.seg")):
        data, offset = segment.read_bytes(), 0
        while offset < len(data):
            _, length, crc, *_, kind = header.unpack_from(data, offset)
            end = offset + header.size + length
            assert zlib.crc32(data[offset + 12:end]) == crc
            if kind & 0x80:
                found.append((kind & 0x7f, data[offset + header.size:end]))
            offset = end
    return found


def test_a_disk_queue_keeps_gzip_bodies_that_rotel_reads_merged(make_sluice, tmp_path):
    """A disk-queued exporter that sends gzip stores what it will send: a client's gzip body as it
    came (logs, no plugin) and a batch a plugin changed compressed as it is written (traces). Once
    rotel-agent comes up, the records go out merged, their bodies joined into one gzip member,
    and rotel-agent (tonic reads only a body's first member) reads every span and record."""
    archive = make_sluice(RECEIVER + ARCHIVE + pipeline())
    rotel_grpc = free_port()
    queue_dir = tmp_path / "queue"
    host = make_sluice(RECEIVER + f"""
        [exporters.rotel]
        type = "otlp"
        endpoint = "http://127.0.0.1:{rotel_grpc}"
        compression = "gzip"
        concurrency = 1
        batch = {{{{ timeout = "100ms" }}}}
        queue = {{{{ type = "disk", directory = "{queue_dir}" }}}}
        {FAST_RETRY}

        [pipelines.traces]
        signals = ["traces"]
        receivers = ["otlp"]
        exporters = ["rotel"]
        [[pipelines.traces.processors]]
        plugin = "{PLUGINS}/set-attributes.wasm"
        config = {{{{ resource = [{{{{ key = "deployment.environment", value = "test" }}}}] }}}}

        [pipelines.logs]
        signals = ["logs"]
        receivers = ["otlp"]
        exporters = ["rotel"]
    """)
    log_bodies = [gzip.compress(logs(bodies=(f"log-{i}",)).SerializeToString()) for i in range(5)]
    for i in range(10):
        request = traces(5, service="queued", prefix=f"r{i}").SerializeToString()
        body, headers = (gzip.compress(request), {**PROTOBUF, "Content-Encoding": "gzip"}) if i % 2 else (request, PROTOBUF)
        status, _, answer = post(host, "/v1/traces", body, headers)
        assert status == 200, answer
    for body in log_bodies:
        status, _, answer = post(host, "/v1/logs", body, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 200, answer
    stored = gzip_records(queue_dir)
    assert len(stored) == 15, f"every record holds a gzip body: {len(stored)}"
    assert [payload for signal, payload in stored if signal == 2] == log_bodies, "the clients' own bodies"
    assert all(b"deployment.environment" in gzip.decompress(p) for signal, p in stored if signal == 0)

    rotel = start_rotel(tmp_path, rotel_grpc, free_port(), archive)
    try:
        def archived(signal):
            return archive.metric("sluice_exporter_sent_items_total", exporter="archive", signal=signal)
        wait_until(lambda: (archived("traces"), archived("logs")) == (50, 5), "rotel-agent delivered everything",
                   lambda: host.logs()[-3000:], timeout=30)
    finally:
        rotel.terminate()
        rotel.wait(timeout=20)
    assert host.metric("sluice_exporter_failed_items_total", exporter="rotel", signal="traces") == 0
    assert host.stop() == 0, host.logs()
    assert archive.stop() == 0
    spans = spans_in(archive.lines("traces"))
    assert sorted(s["name"] for _, s in spans) == sorted(f"r{i}-{j}" for i in range(10) for j in range(5))
    assert sorted(r["body"]["stringValue"] for _, r in records_in(archive.lines("logs"))) == \
        [f"log-{i}" for i in range(5)]


def send_with_the_sdk(host, gzip=False):
    """Traces, metrics and logs from the Python OpenTelemetry SDK, into `host` over HTTP (gzip-compressed
    when asked)."""
    import logging
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from test_sdk import exporters

    span_exporter, metric_exporter, log_exporter = exporters("http", host, gzip=gzip)
    resource = Resource.create({"service.name": "fwd"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    for i in range(4):
        with tracer_provider.get_tracer("fwd").start_as_current_span(f"f-{i}") as span:
            span.set_attribute("tenant", "acme")
    tracer_provider.shutdown()
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter_provider.get_meter("fwd").create_counter("fwd_jobs").add(5, {"queue": "gpu"})
    meter_provider.shutdown()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logger = logging.getLogger("fwd.e2e")
    logger.propagate = False
    handler = LoggingHandler(level=logging.INFO, logger_provider=logger_provider)
    logger.addHandler(handler)
    for body in ("alpha", "beta"):
        logger.warning(body)
    logger_provider.shutdown()
    logger.removeHandler(handler)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_busy_answers_after_retry_after_then_delivers_once(make_sluice, status):
    """The statuses OTLP/HTTP calls retryable: each is retried, after the `Retry-After` the
    destination asks for (1 s, where the configured backoff alone would wait 50-750 ms), and
    the batch is delivered once."""
    down = Downstream(answer=lambda n, _: (status, {"Retry-After": "1"}, b"busy") if n < 2 else
                      (200, {}, partial_success(0)))
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{down.url}"
        {FAST_RETRY}
    """)
    send(host, traces(3, prefix="r"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 3, exporter="out", timeout=15) == 3, host.logs()
    assert host.metric("sluice_exporter_retried_items_total", exporter="out") == 6
    assert host.metric("sluice_exporter_failed_items_total", exporter="out") == 0
    assert host.stop() == 0
    assert [r["status"] for r in down.requests] == [status, status, 200]
    assert all(r["names"] == ["r-0", "r-1", "r-2"] and r["path"] == "/v1/traces" for r in down.requests)
    assert all(gap >= 0.9 for gap in down.gaps()), f"retried before the 1 s Retry-After: {down.gaps()}"
    down.close()


def test_a_shutdown_that_runs_out_of_grace_counts_what_was_being_retried(make_sluice):
    """Batches in retry are not in any queue, yet they are lost all the same when the grace
    period ends: the log and the exit say how many items."""
    down = Downstream(answer=lambda n, _: (503, {}, b"busy"))
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{down.url}"
        batch = {{{{ max_items = 1 }}}}
        {FAST_RETRY}
    """, grace="1s")
    send(host, traces(3, prefix="stuck"))
    assert host.wait_metric("sluice_pending_items", 3, stage="exporter", name="out") == 3
    assert host.wait_metric_at_least("sluice_exporter_retried_items_total", 3, exporter="out") >= 3
    assert host.metric("sluice_queue_depth", stage="exporter", name="out") == 0, "in retry, not queued"
    assert host.stop() == 1
    logs = host.logs()
    assert "Shutdown grace period ran out" in logs
    assert "exporter_items=3 " in logs and "queued_batches=0 " in logs, logs
    assert "with 3 items not yet delivered by exporters" in logs
    down.close()


def test_permanent_errors_are_dropped_and_counted_not_retried(make_sluice):
    down = Downstream(answer=lambda n, _: (400, {}, b"bad data"))
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{down.url}"
        {FAST_RETRY}
    """)
    send(host, traces(2))
    assert host.wait_metric("sluice_exporter_failed_items_total", 2, exporter="out") == 2
    time.sleep(0.5)
    assert len(down.requests) == 1
    assert host.metric("sluice_exporter_retried_items_total", exporter="out") == 0
    assert host.stop() == 0
    assert "Delivery failed; items dropped: HTTP 400" in host.logs()
    down.close()


def test_partial_success_is_counted(make_sluice):
    down = Downstream(answer=lambda n, _: (200, {}, partial_success(1)))
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{down.url}"
    """)
    send(host, traces(3))
    assert host.wait_metric("sluice_exporter_rejected_items_total", 1, exporter="out") == 1
    assert host.metric("sluice_exporter_sent_items_total", exporter="out") == 2
    assert host.stop() == 0
    down.close()


def test_destination_down_at_start_then_up_receives_everything_once(make_sluice):
    port = free_port()
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "http://127.0.0.1:{port}"
        {FAST_RETRY}
    """)
    for i in range(5):
        send(host, traces(2, prefix=f"d{i}"))
    assert host.wait_metric_at_least("sluice_exporter_retried_items_total", 2, exporter="out") >= 2
    down = Downstream(port=port)
    expected = sorted(f"d{i}-{k}" for i in range(5) for k in range(2))
    wait_until(lambda: down.delivered() == expected, "everything queued was delivered",
               lambda: f"delivered: {down.delivered()}", timeout=20)
    assert host.stop() == 0
    assert down.delivered() == expected, "everything queued arrives, exactly once"
    down.close()


def test_destination_down_mid_stream_then_back_receives_everything_once(make_sluice):
    down = Downstream()
    port = down.port
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "http://127.0.0.1:{port}"
        batch = {{{{ max_items = 1 }}}}
        {FAST_RETRY}
    """)
    send(host, traces(1, prefix="m0"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="out") == 1
    down.close()
    for i in range(1, 6):
        send(host, traces(1, prefix=f"m{i}"))
    assert host.wait_metric_at_least("sluice_exporter_retried_items_total", 1, exporter="out") >= 1
    back = Downstream(port=port)
    expected = [f"m{i}-0" for i in range(1, 6)]
    wait_until(lambda: back.delivered() == sorted(expected), "what was queued during the outage was delivered",
               lambda: f"delivered: {back.delivered()}", timeout=20)
    assert host.stop() == 0
    assert down.delivered() == ["m0-0"]
    assert back.delivered() == sorted(expected), "queued during the outage, delivered once after it"
    back.close()


def test_a_dead_destination_does_not_hold_back_a_live_one(make_sluice):
    live = Downstream()
    host = forwarder(make_sluice, f"""
        [exporters.dead]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "http://127.0.0.1:{free_port()}"
        on_full = "drop"
        queue_size = 2
        concurrency = 1
        batch = {{{{ max_items = 1 }}}}
        {FAST_RETRY}

        [exporters.live]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{live.url}"
        batch = {{{{ timeout = "20ms" }}}}
    """, exporters='["dead", "live"]')
    expected = []
    for i in range(30):
        send(host, traces(1, prefix=f"l{i}"))
        expected.append(f"l{i}-0")
    wait_until(lambda: live.delivered() == sorted(expected), "the live destination has every batch",
               lambda: f"delivered: {live.delivered()}", timeout=10)
    assert host.metric("sluice_exporter_dropped_items_total", exporter="dead") > 0
    host.process.kill()
    live.close()


def test_a_rotated_token_file_is_used_on_the_next_request(make_sluice, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    down = Downstream()
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{down.url}"
        auth = {{{{ bearer = {{{{ token = {{{{ file = "{token}" }}}} }}}} }}}}
        batch = {{{{ max_items = 1 }}}}
    """, extra_env={"SLUICE_LOG": "debug"})
    send(host, traces(1, prefix="before"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="out") == 1
    token.write_text("second-token-rotated\n")
    send(host, traces(1, prefix="after"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 2, exporter="out") == 2
    assert host.metric("sluice_exporter_failed_items_total", exporter="out") == 0
    assert host.stop() == 0
    tokens = [r["headers"]["authorization"] for r in down.requests]
    assert tokens == ["Bearer first-token", "Bearer second-token-rotated"]
    logs = host.logs()
    # Logged at debug, the most the host ever says about a delivery: a token shown would be here.
    assert " DEBUG " in logs, logs
    assert "first-token" not in logs and "second-token" not in logs
    down.close()


def test_http_json_protocol(make_sluice):
    down = Downstream(answer=lambda n, _: (200, {}, b"{}"))
    host = forwarder(make_sluice, f"""
        [exporters.out]
        type = "otlp"
        protocol = "http/json"
        endpoint = "{down.url}"
        compression = "none"
    """)
    send(host, traces(2, prefix="j"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 2, exporter="out") == 2
    assert host.stop() == 0
    assert down.delivered() == ["j-0", "j-1"]
    span = down.requests[0]["json"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "01" * 16
    down.close()


def write_certificates(ca, folder, name="server", host="localhost"):
    """Writes NAME.pem and NAME.key issued by `ca` for `host`, and the CA as ca.pem."""
    cert = ca.issue_cert(host)
    cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.pem"))
    cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_server(ca, require_client_cert=False):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


@pytest.mark.parametrize("mtls", [False, True])
def test_tls_and_mtls(make_sluice, tmp_path, ca, mtls):
    down = Downstream(tls=tls_server(ca, require_client_cert=mtls))
    write_certificates(ca, tmp_path, "client", "sluice-client")
    host = tls_forwarder(make_sluice, down.url, tmp_path / "ca.pem", client=tmp_path if mtls else None)
    send(host, traces(2, prefix="tls"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 2, exporter="out") == 2, host.logs()
    assert host.stop() == 0
    assert down.delivered() == ["tls-0", "tls-1"]
    down.close()


def test_a_wrong_ca_fails_clearly(make_sluice, tmp_path, ca):
    sink = tls_sink(make_sluice, ca, tmp_path)
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    host = tls_forwarder(make_sluice, f"https://localhost:{sink.http_port}", tmp_path / "other.pem", retry=False)
    send(host, traces(1))
    assert host.wait_metric("sluice_exporter_failed_items_total", 1, exporter="out") == 1
    assert host.stop() == 0
    failure = [line for line in host.logs().splitlines() if "Delivery failed" in line]
    assert failure and "exporter=out" in failure[0] and "certificate" in failure[0].lower(), failure
    assert sink.stop() == 0
    assert sink.lines("traces") == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("mtls", [False, True])
def test_sluice_to_sluice_over_tls(make_sluice, tmp_path, ca, protocol, mtls):
    sink = tls_sink(make_sluice, ca, tmp_path, mtls)
    port = sink.grpc_port if protocol == "grpc" else sink.http_port
    write_certificates(ca, tmp_path, "client", "sluice-forwarder")
    host = tls_forwarder(make_sluice, f"https://localhost:{port}", tmp_path / "ca.pem", protocol,
                         client=tmp_path if mtls else None)
    send(host, traces(3, prefix="secure"))
    assert host.wait_metric("sluice_exporter_sent_items_total", 3, exporter="out") == 3, host.logs()
    assert host.stop() == 0
    assert sink.stop() == 0
    assert sorted(s["name"] for _, s in spans_in(sink.lines("traces"))) == ["secure-0", "secure-1", "secure-2"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_mtls_receiver_refuses_clients_without_a_certificate(make_sluice, tmp_path, ca, protocol):
    """Each transport of a receiver with `client_ca_file` refuses a client that shows no
    certificate at the handshake, and says so (at debug: a port scan is not an error)."""
    sink = tls_sink(make_sluice, ca, tmp_path, mtls=True, extra_env={"SLUICE_LOG": "debug"})
    port = sink.grpc_port if protocol == "grpc" else sink.http_port
    host = tls_forwarder(make_sluice, f"https://localhost:{port}", tmp_path / "ca.pem", protocol, retry=False)
    send(host, traces(1))
    assert host.wait_metric("sluice_exporter_failed_items_total", 1, exporter="out") == 1
    assert host.stop() == 0
    assert sink.metric("sluice_receiver_accepted_items_total") == 0
    assert sink.stop() == 0
    assert sink.lines("traces") == []
    transport = "grpc" if protocol == "grpc" else "http"
    refusals = [line for line in sink.logs().splitlines() if "TLS handshake failed" in line]
    assert refusals, sink.logs()
    assert all(f"receiver `otlp` ({transport})" in line and "peer sent no certificates" in line
               for line in refusals), refusals


def test_receiver_requires_its_bearer_token(make_sluice, tmp_path):
    token = tmp_path / "ingest-token"
    token.write_text("let-me-in\n")
    sink = make_sluice(f"""
        [receivers.otlp]
        type = "otlp"
        grpc = {{{{ address = "{{grpc}}" }}}}
        http = {{{{ address = "{{http}}" }}}}
        auth = {{{{ bearer = {{{{ token = {{{{ file = "{token}" }}}} }}}} }}}}
        [exporters.archive]
        type = "file"
        directory = "{{data}}"
        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["archive"]
    """, extra_env={"SLUICE_LOG": "debug"})
    body = traces(1, prefix="authed").SerializeToString()
    assert post(sink, "/v1/traces", body, PROTOBUF)[0] == 401
    assert post(sink, "/v1/traces", body, {**PROTOBUF, "Authorization": "Bearer not-the-token-7f3a"})[0] == 401
    assert post(sink, "/v1/traces", body, {**PROTOBUF, "Authorization": "Bearer let-me-in"})[0] == 200
    import grpc as grpclib
    with pytest.raises(grpclib.RpcError) as error:
        grpc_call(sink, "traces", body)
    assert error.value.code() == grpclib.StatusCode.UNAUTHENTICATED
    grpc_call(sink, "traces", body, metadata=[("authorization", "Bearer let-me-in")])
    assert sink.stop() == 0
    assert len(spans_in(sink.lines("traces"))) == 2
    logs = sink.logs()
    # Logged at debug, the most the host ever says about a request, refusals included: a token
    # shown would be here.
    assert " DEBUG " in logs and "Refused a request: missing bearer token" in logs, logs
    assert "let-me-in" not in logs and "not-the-token-7f3a" not in logs
