"""The debug exporter's output, fan-out to several exporters, file rotation, and SIGINT."""

import json
import signal

from conftest import PROTOBUF, post
from otlp_payloads import logs, metrics, spans_in, traces

DEBUG_PIPELINE = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{ address = "{grpc}" }}
    http = {{ address = "{http}" }}

    [exporters.summary]
    type = "debug"

    [exporters.dump]
    type = "debug"
    verbosity = "detailed"

    [exporters.small_files]
    type = "file"
    directory = "{data}"
    max_file_size = "4KiB"
    max_files = 2

    [exporters.null]
    type = "discard"

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["summary", "dump", "small_files", "null"]
"""


def test_debug_summary_and_detailed_dump(make_sluice):
    host = make_sluice(DEBUG_PIPELINE)
    assert post(host, "/v1/traces", traces(3, service="billing").SerializeToString(), PROTOBUF)[0] == 200
    assert post(host, "/v1/metrics", metrics((1.0,), service="gpu-node").SerializeToString(), PROTOBUF)[0] == 200
    assert post(host, "/v1/logs", logs(("a", "b"), service="api").SerializeToString(), PROTOBUF)[0] == 200
    assert host.stop() == 0
    stdout = (host.tmp / "stdout.log").read_text()
    summaries = [line for line in stdout.splitlines() if line.startswith("summary ")]
    assert summaries == [
        "summary traces service.name=billing items=3",
        "summary metrics service.name=gpu-node items=1",
        "summary logs service.name=api items=2",
    ]
    # The detailed dump is a header line and the batch as pretty OTLP JSON.
    header = stdout.index("dump traces items=3\n")
    dumped = json.JSONDecoder().raw_decode(stdout[header + len("dump traces items=3\n"):])[0]
    assert [s["name"] for _, s in spans_in([dumped])] == ["span-0", "span-1", "span-2"]


def test_fan_out_and_rotation(make_sluice):
    host = make_sluice(DEBUG_PIPELINE)
    for i in range(20):
        assert post(host, "/v1/traces", traces(2, prefix=f"r{i}").SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_exporter_sent_items_total", 40, exporter="null", signal="traces") == 40
    assert host.wait_metric("sluice_exporter_sent_items_total", 40, exporter="small_files", signal="traces") == 40
    assert host.stop() == 0
    files = sorted(p.name for p in host.data.iterdir())
    assert files == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    for path in host.data.iterdir():
        assert path.stat().st_size <= 4096
        for line in path.read_text().splitlines():
            json.loads(line)  # every line is a complete JSON object: rotation never splits one
    # The three newest files hold the newest batches; older rotations were deleted.
    kept = [s["name"] for p in sorted(host.data.iterdir()) for _, s in
            spans_in([json.loads(line) for line in p.read_text().splitlines()])]
    assert "r19-1" in kept and "r0-0" not in kept


def test_sigint_drains_like_sigterm(sluice):
    for i in range(5):
        assert post(sluice, "/v1/traces", traces(10, prefix=f"i{i}").SerializeToString(), PROTOBUF)[0] == 200
    sluice.process.send_signal(signal.SIGINT)
    assert sluice.process.wait(timeout=30) == 0
    assert len(spans_in(sluice.lines("traces"))) == 50
    assert "Received SIGINT" in sluice.logs()
