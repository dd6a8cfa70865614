"""`service.memory_limit`: with a destination that takes requests and never answers and a
flood of large requests, the host answers 503 (retryable) above its soft limit instead of
growing until the kernel kills it, its peak resident size stays under the limit, and once the
destination answers again everything it acknowledged arrives."""

import threading
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import PROTOBUF, http, post, wait_until
from http_sink import HttpSink
from otlp_payloads import kv, traces

LIMIT_MIB = 256


def peak_resident_mib(pid):
    """The process's peak resident set size so far (`VmHWM`), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def request_ids(body):
    """The `request.id` resource attributes of an OTLP/protobuf traces request."""
    request = ExportTraceServiceRequest.FromString(body)
    return {kv.value.string_value for rs in request.resource_spans for kv in rs.resource.attributes
            if kv.key == "request.id"}


def test_a_flood_against_a_stalled_destination_stays_under_the_limit(make_sluice):
    stalled = threading.Event()

    def answer(_):
        stalled.wait(120)  # a destination that takes the request and doesn't answer
        return 200, {"Content-Type": "application/x-protobuf"}, b""
    sink = HttpSink(answer)
    host = make_sluice(f"""
        [receivers.otlp]
        type = "otlp"
        grpc = {{{{ enabled = false }}}}
        http = {{{{ address = "{{http}}", max_body_size = "16MiB" }}}}

        [exporters.vendor]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "{sink.url}"
        compression = "none"
        queue_size = 10000
        timeout = "60s"
        retry = {{{{ max_elapsed = "10m" }}}}

        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["vendor"]
    """, service=f'memory_limit = "{LIMIT_MIB}MiB"')
    # About 4 MB a request: 10,000 spans with five attributes each.
    template = traces(10_000, attrs={f"attribute.{i}": "v" * 40 for i in range(5)})
    acknowledged, refused, errors = set(), [], []
    lock = threading.Lock()

    def flood(sender):
        for n in range(25):
            request_id = f"{sender}-{n}"
            resource = template.resource_spans[0].resource
            del resource.attributes[:]
            resource.attributes.extend([kv("service.name", "flood"), kv("request.id", request_id)])
            try:
                status, headers, _ = post(host, "/v1/traces", template.SerializeToString(), PROTOBUF)
            except OSError as error:
                errors.append(repr(error))
                continue
            with lock:
                if status == 200:
                    acknowledged.add(request_id)
                elif status == 503 and headers.get("retry-after") == "1":
                    refused.append(request_id)
                else:
                    errors.append(status)

    senders = [threading.Thread(target=flood, args=(s,)) for s in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(180)
    assert not errors, errors
    # The limit was reached: requests were refused for memory, and the rest acknowledged.
    assert refused and acknowledged, (len(refused), len(acknowledged))
    assert host.metric("sluice_receiver_refused_requests_total", reason="memory") == len(refused)
    assert host.metric("sluice_memory_limit_bytes") == LIMIT_MIB << 20
    peak = peak_resident_mib(host.process.pid)
    print(f"refused {len(refused)}, acknowledged {len(acknowledged)}, peak resident {peak:.1f} MiB")  # shown with -s
    assert peak < LIMIT_MIB, f"peak resident {peak:.0f} MiB over the {LIMIT_MIB} MiB limit"

    # The destination answers again: everything acknowledged arrives, and the host accepts again.
    stalled.set()

    def delivered():
        with sink.lock:
            seen = set().union(*(request_ids(r["body"]) for r in sink.requests))
        return acknowledged <= seen and seen
    wait_until(delivered, "every acknowledged request reached the destination", host.logs, timeout=120)
    wait_until(lambda: host.metric("sluice_memory_refusing") == 0, "the host stops refusing", host.logs)
    assert post(host, "/v1/traces", traces(1).SerializeToString(), PROTOBUF)[0] == 200
    assert host.stop() == 0
    logs = host.logs()
    assert "refusing new data" in logs and "accepting data again" in logs
