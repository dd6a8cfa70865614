"""Backpressure, fan-out isolation, graceful shutdown, and rotel-agent as an upstream sender."""

import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import PROTOBUF, free_port, grpc_call, post, rotel_binary, wait_port, wait_until
from otlp_payloads import GRPC_METHODS, logs, metrics, points_in, records_in, spans_in, traces

STALLED_PIPELINE = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{ address = "{grpc}" }}
    http = {{ address = "{http}" }}

    [exporters.stalled]
    type = "file"
    directory = "{data}/stalled"
    queue_size = 1

    [exporters.healthy]
    type = "file"
    directory = "{data}/healthy"
    queue_size = 1000

    [pipelines.all]
    signals = ["traces"]
    receivers = ["otlp"]
    exporters = ["stalled", "healthy"]
    queue_size = 2
"""


def test_stalled_exporter_backpressures_without_losing_or_blocking_data(make_sluice, tmp_path):
    # The stalled exporter's file is a FIFO nobody reads yet: opening it blocks, so that exporter
    # stops draining its queue, exactly like a destination that hangs.
    stalled_dir = tmp_path / "host0" / "data" / "stalled"
    stalled_dir.mkdir(parents=True)
    fifo = stalled_dir / "traces.jsonl"
    os.mkfifo(fifo)
    host = make_sluice(STALLED_PIPELINE)
    reader_out = []
    reader = threading.Thread(target=lambda: reader_out.append(fifo.read_text()))
    try:
        check_backpressure(host, fifo, reader, reader_out)
    finally:
        if reader.ident is None:
            reader.start()  # unblock the exporter whatever happened, so the host can stop


def check_backpressure(host, fifo, reader, reader_out):
    accepted, refused_http, retry_after = [], 0, None
    for i in range(40):
        status, headers, _ = post(host, "/v1/traces", traces(1, prefix=f"b{i}").SerializeToString(), PROTOBUF)
        if status == 200:
            accepted.append(f"b{i}-0")
        else:
            assert status == 503
            refused_http += 1
            retry_after = headers.get("retry-after")
    assert refused_http > 0, "a stalled exporter must push back on the receiver"
    assert retry_after == "1"
    with pytest.raises(grpc.RpcError) as error:
        grpc_call(host, "traces", traces(1, prefix="grpc").SerializeToString())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert host.metric("sluice_queue_depth", stage="pipeline", name="all") == 2
    assert host.metric("sluice_receiver_refused_requests_total", reason="busy") >= refused_http

    # The healthy exporter already has every accepted batch but the three held up in front of
    # the stalled one: the batch the fan-out is waiting to hand to it (the stalled exporter is
    # first) and the two in the pipeline's queue. Its own writer holds one and its queue one, so
    # five were accepted and the first two reached the healthy exporter: the stall held back
    # nothing else.
    healthy = host.data / "healthy" / "traces.jsonl"
    assert len(accepted) - 3 >= 2, f"only {len(accepted)} accepted: the stall blocked the fan-out early"
    sent = host.wait_metric("sluice_exporter_sent_items_total", len(accepted) - 3, exporter="healthy")
    assert sent == len(accepted) - 3, f"healthy sent {sent} of {len(accepted)} accepted:\n{host.logs()}"
    healthy_names = [s["name"] for _, s in spans_in(_read(healthy))]
    assert healthy_names == accepted[:len(accepted) - 3]

    # Unblock the destination: everything accepted reaches both exporters, nothing twice.
    reader.start()
    assert host.stop() == 0, host.logs()
    reader.join(timeout=30)
    stalled_names = [s["name"] for _, s in spans_in(_parse(reader_out[0]))]
    healthy_names = [s["name"] for _, s in spans_in(_read(healthy))]
    assert sorted(stalled_names) == sorted(accepted)
    assert sorted(healthy_names) == sorted(accepted)


def _parse(text):
    import json
    return [json.loads(line) for line in text.splitlines() if line]


def _read(path: Path):
    return _parse(path.read_text()) if path.exists() else []


def test_shutdown_drains_everything_acknowledged(sluice):
    """Every request answered 200 before SIGTERM is in the files after exit."""
    sent = []
    stop = threading.Event()

    def sender(worker):
        i = 0
        while not stop.is_set():
            name = f"w{worker}-{i}"
            try:
                status, _, _ = post(sluice, "/v1/traces", traces(20, prefix=name).SerializeToString(), PROTOBUF)
            except OSError:
                return
            if status == 200:
                sent.extend(f"{name}-{k}" for k in range(20))
            i += 1

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    sluice.process.send_signal(15)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert sluice.process.wait(timeout=30) == 0, sluice.logs()
    assert len(sent) > 100
    written = [s["name"] for _, s in spans_in(sluice.lines("traces"))]
    assert len(written) == len(set(written))
    missing = set(sent) - set(written)
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:3]}"
    assert "Shutdown complete" in sluice.logs()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rotel_agent_forwards_into_sluice(sluice, tmp_path, protocol):
    grpc_port, http_port = free_port(), free_port()
    endpoint = f"http://{sluice.grpc_endpoint}" if protocol == "grpc" else sluice.http_base
    rotel = subprocess.Popen(
        [str(rotel_binary()), "start",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--exporter", "otlp", "--otlp-exporter-endpoint", endpoint, "--otlp-exporter-protocol", protocol,
         "--batch-timeout", "50ms", "--pid-file", str(tmp_path / "rotel.pid"),
         "--log-file", str(tmp_path / "rotel.log")],
        stdout=open(tmp_path / "rotel.out", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_port(grpc_port)
        endpoint_in = f"127.0.0.1:{grpc_port}"
        with grpc.insecure_channel(endpoint_in) as channel:
            for signal, payload in (("traces", traces(5, service="via-rotel", prefix="r")),
                                    ("metrics", metrics((3.0, 4.0), service="via-rotel")),
                                    ("logs", logs(("one", "two", "three"), service="via-rotel"))):
                channel.unary_unary(GRPC_METHODS[signal])(payload.SerializeToString(), timeout=10)
        expected = {"traces": 5, "metrics": 2, "logs": 3}

        def accepted():
            return {s: sluice.metric("sluice_receiver_accepted_items_total", transport=protocol, signal=s)
                    for s in expected}
        wait_until(lambda: accepted() == expected, f"rotel forwarded {expected} over {protocol}",
                   lambda: f"accepted: {accepted()}\n" + (tmp_path / "rotel.log").read_text(errors="replace")[-2000:],
                   timeout=20)
    finally:
        rotel.terminate()
        rotel.wait(timeout=20)
    assert sluice.stop() == 0
    spans = spans_in(sluice.lines("traces"))
    assert sorted(s["name"] for _, s in spans) == [f"r-{i}" for i in range(5)]
    assert {svc for svc, _ in spans} == {"via-rotel"}
    assert sorted(p["asDouble"] for _, _, _, p in points_in(sluice.lines("metrics"))) == [3.0, 4.0]
    assert sorted(r["body"]["stringValue"] for _, r in records_in(sluice.lines("logs"))) == ["one", "three", "two"]


def test_a_stuck_exporter_cannot_hold_the_process_past_its_grace_period(make_sluice, tmp_path):
    """Shutdown gives up after `shutdown_grace`, says how much was still queued, and exits 1."""
    stalled_dir = tmp_path / "host0" / "data" / "stalled"
    stalled_dir.mkdir(parents=True)
    os.mkfifo(stalled_dir / "traces.jsonl")  # nobody ever reads it
    host = make_sluice(STALLED_PIPELINE, grace="1s")
    status, _, _ = post(host, "/v1/traces", traces(1, prefix="stuck").SerializeToString(), PROTOBUF)
    assert status == 200
    # The span has left the pipeline and sits with the stalled exporter (the healthy one is done).
    assert host.wait_metric("sluice_pending_items", 1, stage="exporter", name="stalled") == 1, host.logs()
    assert host.wait_metric("sluice_pending_items", 0, stage="pipeline", name="all") == 0, host.logs()
    host.process.send_signal(15)
    assert host.process.wait(timeout=15) == 1
    logs = host.logs()
    assert "Shutdown grace period ran out" in logs
    # The one span is stuck in the exporter writing to the FIFO: counted as lost, once.
    assert "exporter_items=1 " in logs and "pipeline_items=0 " in logs, logs
