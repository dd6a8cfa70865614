"""Malformed, oversized, wrongly typed and compressed requests get the answers the OTLP spec
gives them, and the host keeps serving after each one."""

import gzip
import json

import grpc
import pytest
import zstandard
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import JSON, PROTOBUF, grpc_call, http, post
from otlp_payloads import spans_in, traces


def still_serving(host):
    status, _, _ = post(host, "/v1/traces", traces(1, prefix="alive").SerializeToString(), PROTOBUF)
    assert status == 200


def test_malformed_protobuf_is_400_with_a_status_body(sluice):
    status, headers, body = post(sluice, "/v1/traces", b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF)
    assert status == 400
    assert headers["content-type"] == "application/x-protobuf"
    rpc_status = status_pb2.Status.FromString(body)
    assert rpc_status.code == 3 and "invalid protobuf traces request" in rpc_status.message
    still_serving(sluice)
    assert sluice.metric("sluice_receiver_refused_requests_total", reason="malformed", transport="http") == 1


def test_malformed_json_is_400_in_json(sluice):
    status, headers, body = post(sluice, "/v1/logs", b'{"resourceLogs": [', JSON)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == 3
    still_serving(sluice)


def test_wrong_path_method_and_content_type(sluice):
    assert post(sluice, "/v1/profiles", b"", PROTOBUF)[0] == 404
    assert http("GET", f"{sluice.http_base}/v1/traces")[0] == 405
    status, _, body = post(sluice, "/v1/traces", b"hello", {"Content-Type": "text/plain"})
    assert status == 415 and b"unsupported content type" in body
    status, _, _ = post(sluice, "/v1/traces", b"x", {**PROTOBUF, "Content-Encoding": "br"})
    assert status == 415
    still_serving(sluice)


def test_json_mapping_and_response_in_json(sluice):
    request = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
            "scopeSpans": [{
                "scope": {"name": "manual", "futureField": True},
                "spans": [{
                    "traceId": "5b8efff798038103d269b633813fc60c",
                    "spanId": "eee19b7ec3c1b174",
                    "name": "checkout",
                    "kind": 2,
                    "startTimeUnixNano": "1544712660000000000",
                    "endTimeUnixNano": 1544712661000000000,
                    "attributes": [
                        {"key": "count", "value": {"intValue": "42"}},
                        {"key": "amount", "value": {"intValue": 7}},
                    ],
                    "someUnknownField": {"ignored": True},
                }],
            }],
        }],
    }
    status, headers, body = post(sluice, "/v1/traces", json.dumps(request).encode(), JSON)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {}
    assert sluice.stop() == 0
    [(service, span)] = spans_in(sluice.lines("traces"))
    assert service == "json-client"
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["kind"] == 2
    assert int(span["startTimeUnixNano"]) == 1544712660000000000
    assert int(span["endTimeUnixNano"]) == 1544712661000000000
    assert {a["key"]: int(a["value"]["intValue"]) for a in span["attributes"]} == {"count": 42, "amount": 7}


def test_invalid_items_are_rejected_with_partial_success(sluice):
    request = traces(3)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01" * 5
    status, _, body = post(sluice, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1
    assert "16-byte trace ID" in response.partial_success.error_message

    bad_json = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok"},
        {"traceId": "", "spanId": "eee19b7ec3c1b174", "name": "no-trace-id"},
    ]}]}]}
    status, _, body = post(sluice, "/v1/traces", json.dumps(bad_json).encode(), JSON)
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
    assert sluice.stop() == 0
    names = sorted(span["name"] for _, span in spans_in(sluice.lines("traces")))
    assert names == ["ok", "span-0", "span-2"]


def test_compressed_bodies(sluice):
    body = traces(4, prefix="gz").SerializeToString()
    status, _, _ = post(sluice, "/v1/traces", gzip.compress(body), {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 200
    body = traces(2, prefix="zs").SerializeToString()
    compressed = zstandard.ZstdCompressor().compress(body)
    status, _, _ = post(sluice, "/v1/traces", compressed, {**PROTOBUF, "Content-Encoding": "zstd"})
    assert status == 200
    status, _, _ = post(sluice, "/v1/traces", b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 400
    assert sluice.stop() == 0
    names = sorted(span["name"] for _, span in spans_in(sluice.lines("traces")))
    assert names == ["gz-0", "gz-1", "gz-2", "gz-3", "zs-0", "zs-1"]


def test_oversized_and_zip_bomb_are_413(sluice):
    # The fixture's HTTP limit is 1 MiB.
    big = traces(1, prefix="x" * (2 << 20)).SerializeToString()
    status, _, body = post(sluice, "/v1/traces", big, PROTOBUF)
    assert status == 413 and b"exceeds the limit" in body
    bomb = gzip.compress(b"\x00" * (64 << 20))
    assert len(bomb) < (1 << 20)
    status, _, _ = post(sluice, "/v1/traces", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 413
    still_serving(sluice)
    assert sluice.metric("sluice_receiver_refused_requests_total", reason="too_large") == 2


def test_grpc_errors_use_grpc_status_codes(sluice):
    with pytest.raises(grpc.RpcError) as error:
        grpc_call(sluice, "traces", b"\x0a\xff\xff\xff\xff\x0f")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    too_big = traces(1, prefix="y" * (5 << 20)).SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        grpc_call(sluice, "traces", too_big)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    with grpc.insecure_channel(sluice.grpc_endpoint) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # A message that is small on the wire but over the limit once decompressed.
    bomb_payload = traces(1, prefix="z" * (6 << 20)).SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        grpc_call(sluice, "traces", bomb_payload, compression=grpc.Compression.Gzip)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    response = grpc_call(sluice, "traces", traces(3, prefix="grpc-gz").SerializeToString(),
                         compression=grpc.Compression.Gzip)
    assert ExportTraceServiceResponse.FromString(response).HasField("partial_success") is False
    still_serving(sluice)
    assert sluice.stop() == 0
    names = {span["name"] for _, span in spans_in(sluice.lines("traces"))}
    assert {"grpc-gz-0", "grpc-gz-1", "grpc-gz-2"} <= names


def test_switched_off_signals_and_transports(make_sluice):
    host = make_sluice("""
        [receivers.otlp]
        type = "otlp"
        signals = ["traces"]
        grpc = {{ enabled = false, address = "{grpc}" }}
        http = {{ address = "{http}" }}

        [exporters.out]
        type = "discard"

        [pipelines.traces]
        signals = ["traces"]
        receivers = ["otlp"]
        exporters = ["out"]
    """)
    assert post(host, "/v1/traces", traces(1).SerializeToString(), PROTOBUF)[0] == 200
    assert post(host, "/v1/logs", b"", PROTOBUF)[0] == 404
    with pytest.raises(grpc.RpcError) as error:
        grpc_call(host, "traces", traces(1).SerializeToString())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # nothing listens on the gRPC port
    assert host.stop() == 0
