"""Accepted means decodable: what the receivers answer 200/OK to, every exporter can decode.
Hostile requests — protobuf mutated byte by byte, strings that are not UTF-8 deep inside an
attribute, values nested past the decoder's recursion limit, a varint where a message is due —
are refused at the door (400 / INVALID_ARGUMENT), never acknowledged and then dropped by an
exporter that decodes them."""

import random

import grpc
import pytest

from conftest import ARCHIVE, PROTOBUF, RECEIVER, free_port, grpc_call, post, wait_until
from otlp_payloads import logs, metrics, points_in, records_in, spans_in, traces
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

# The file exporter decodes every signal; the Prometheus one decodes metrics too.
DECODING_EXPORTERS = RECEIVER + ARCHIVE + """
    [exporters.scrape]
    type = "prometheus"
    address = "127.0.0.1:{scrape_port}"

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["archive"]

    [pipelines.metrics]
    signals = ["metrics"]
    receivers = ["otlp"]
    exporters = ["scrape"]
"""


def decoding_host(make_sluice):
    return make_sluice(DECODING_EXPORTERS.replace("{scrape_port}", str(free_port())))


def field(number, payload):
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def span_request(extra):
    """A request of one valid span with the encoded fields `extra` appended to it, framed by
    hand into its scope group, resource group and request (Python's encoder would refuse to
    write some of what the tests send)."""
    span = traces(1, prefix="hostile").resource_spans[0].scope_spans[0].spans[0]
    return field(1, field(2, field(2, span.SerializeToString() + extra)))


def with_attribute(value):
    """One span whose attribute `deep` has the encoded AnyValue `value`."""
    return span_request(field(9, field(1, b"deep") + field(2, value)))


def nested(depth):
    """An encoded AnyValue: an int inside `depth` arrays."""
    value = AnyValue(int_value=7).SerializeToString()
    for _ in range(depth):
        value = field(5, field(1, value))
    return value


def not_utf8():
    """A string attribute three levels down whose bytes are not UTF-8 (the Python encoder
    checks, so the bytes are patched after encoding)."""
    body = with_attribute(AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="caf\u00e9")])).SerializeToString())
    at = body.index("caf\u00e9".encode())
    return body[:at + 3] + b"\xc3\x28" + body[at + 5:]


def varint_for_a_message():
    """A span whose `status` (a message, field 15) is sent as a varint."""
    return span_request(bytes([15 << 3 | 0, 1]))


HOSTILE = {
    "a string that is not UTF-8": not_utf8,
    "values nested past the recursion limit": lambda: with_attribute(nested(120)),
    "a varint where a message is due": varint_for_a_message,
}


@pytest.mark.parametrize("defect", HOSTILE)
def test_deep_defects_are_refused_at_the_door(make_sluice, defect):
    host = decoding_host(make_sluice)
    body = HOSTILE[defect]()
    status, _, answer = post(host, "/v1/traces", body, PROTOBUF)
    assert status == 400, answer
    with pytest.raises(grpc.RpcError) as refused:
        grpc_call(host, "traces", body)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nested just inside the limit is fine: the check refuses only what cannot be decoded.
    assert post(host, "/v1/traces", with_attribute(nested(40)), PROTOBUF)[0] == 200
    assert host.metric("sluice_receiver_refused_requests_total", reason="malformed") == 2
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="archive", signal="traces") == 1
    assert host.stop() == 0
    assert "cannot decode" not in host.logs()


def mutate(rng, body):
    body = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(body))
        choice = rng.random()
        if choice < 0.4:
            body[i] ^= 1 << rng.randrange(8)
        elif choice < 0.6:
            body[i] = rng.choice([0x0B, 0x0C, 0x80, 0xFF, 0xC3, 0x0E, 0x7F])
        elif choice < 0.8:
            del body[i]
        else:
            body.insert(i, rng.randrange(256))
    return bytes(body)


def test_every_acknowledged_item_of_mutated_requests_is_exported(make_sluice):
    """Two thousand mutated requests of the three signals: each answered 200 (fully or with a
    partial success) is decoded and written by both exporters; the rest are refused."""
    host = decoding_host(make_sluice)
    rng = random.Random(20261130)
    originals = {
        "traces": traces(5, attrs={"http.route": "/checkout", "tenant": "a"}).SerializeToString(),
        "metrics": metrics((1.0, 2.0, 3.0)).SerializeToString(),
        "logs": logs(("one", "two", "three")).SerializeToString(),
    }
    answers = {"accepted": 0, "refused": 0}
    for i in range(2000):
        signal = ("traces", "metrics", "logs")[i % 3]
        status, _, _ = post(host, f"/v1/{signal}", mutate(rng, originals[signal]), PROTOBUF)
        assert status in (200, 400), status
        answers["accepted" if status == 200 else "refused"] += 1
    # Both verdicts came up often: the test says something about each.
    assert answers["accepted"] > 200 and answers["refused"] > 200, answers

    def everything_written():
        accepted = {s: host.metric("sluice_receiver_accepted_items_total", signal=s) for s in originals}
        sent = {s: host.metric("sluice_exporter_sent_items_total", exporter="archive", signal=s) for s in originals}
        return sent == accepted and (accepted, sent)
    accepted, _ = wait_until(everything_written, "the file exporter wrote every accepted item", host.logs)
    assert host.wait_metric("sluice_exporter_sent_items_total", accepted["metrics"],
                            exporter="scrape", signal="metrics") == accepted["metrics"]
    assert host.metric("sluice_exporter_failed_items_total") == 0
    assert host.stop() == 0
    assert "cannot decode" not in host.logs() and "batch dropped" not in host.logs()
    # What was written is what was counted.
    assert len(spans_in(host.lines("traces"))) == accepted["traces"]
    assert len(points_in(host.lines("metrics"))) == accepted["metrics"]
    assert len(records_in(host.lines("logs"))) == accepted["logs"]


def test_points_no_exporter_can_represent_are_refused_through_partial_success(make_sluice):
    """A number point without a value would become a made-up 0 in Prometheus; a histogram whose
    bucket counts don't fit its bounds has no faithful form anywhere. Both are refused at the
    door, counted in `partial_success`, and the rest goes through."""
    host = decoding_host(make_sluice)
    request = metrics((1.0, 2.0))
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[1].ClearField("as_double")
    histogram = request.resource_metrics[0].scope_metrics[0].metrics.add(name="latency", unit="s")
    point = histogram.histogram.data_points.add(count=3, explicit_bounds=[1.0, 2.0], bucket_counts=[1, 2])
    histogram.histogram.aggregation_temporality = 2
    assert point.bucket_counts == [1, 2]
    status, _, body = post(host, "/v1/metrics", request.SerializeToString(), PROTOBUF)
    assert status == 200
    answer = ExportMetricsServiceResponse.FromString(body)
    assert answer.partial_success.rejected_data_points == 2, answer
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="archive", signal="metrics") == 1
    assert host.stop() == 0
    assert [(name, point.get("asDouble")) for _, name, _, point in points_in(host.lines("metrics"))] == \
        [("gpu.temp", 1.0)]
