"""The disk queue keeps every promise a 200 made: clients send spans with unique names while
the destination is down, the host is killed with SIGKILL mid-stream (sometimes in the middle of
a disk write), restarted on the same directory, and the destination comes up — every span a
client was told was accepted arrives, and duplicates stay within what docs/OPERATIONS.md
promises."""

import random
import struct
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import PROTOBUF, post, wait_until
from downstream import Downstream, reserve_port
from otlp_payloads import traces

HEADER = struct.Struct("<IIIQQQB")  # magic, payload length, CRC-32, seq, written at, items, signal
MAGIC = int.from_bytes(b"SLQ1", "little")

QUEUE_SIZE = 8
CONCURRENCY = 2
MAX_ITEMS = 100
SPANS_PER_REQUEST = 50


def config(destination_port, queue_dir, max_size="512MiB", pipeline_queue=128, sync="always", compression="none",
           batch_timeout="50ms"):
    return f"""
        [receivers.otlp]
        type = "otlp"
        grpc = {{{{ enabled = false }}}}
        http = {{{{ address = "{{http}}", max_body_size = "16MiB" }}}}

        [exporters.vendor]
        type = "otlp"
        protocol = "http/protobuf"
        endpoint = "http://127.0.0.1:{destination_port}"
        compression = "{compression}"
        timeout = "2s"
        queue_size = {QUEUE_SIZE}
        concurrency = {CONCURRENCY}
        batch = {{{{ max_items = {MAX_ITEMS}, timeout = "{batch_timeout}" }}}}
        retry = {{{{ initial_backoff = "50ms", max_backoff = "200ms", max_elapsed = "10m" }}}}
        queue = {{{{ type = "disk", directory = "{queue_dir}", max_size = "{max_size}", sync = "{sync}" }}}}

        [pipelines.all]
        receivers = ["otlp"]
        exporters = ["vendor"]
        queue_size = {pipeline_queue}
    """


def torn_tail(queue_dir: Path) -> bool:
    """Whether the last segment ends in a partial or unchecked record: a write the kill cut."""
    segments = sorted(queue_dir.glob("*.seg"))
    if not segments:
        return False
    data = segments[-1].read_bytes()
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            return True
        magic, length, crc, *_ = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if magic != MAGIC or end > len(data):
            return True
        if zlib.crc32(data[offset + 12:end]) != crc:
            return True
        offset = end
    return False


class Clients:
    """`count` threads posting requests of unique span names until told to stop or the host
    goes away; `acknowledged` holds the names of every span answered 200."""

    def __init__(self, host, count, pad):
        self.acknowledged = set()
        self.refused = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(host, n, pad), daemon=True) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def run(self, host, client, pad):
        attrs = {"pad": "x" * pad} if pad else None
        for k in range(1_000_000):
            if self.stopped.is_set():
                return
            request = traces(SPANS_PER_REQUEST, prefix=f"c{client}-r{k}", attrs=attrs)
            names = {span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}
            try:
                status, _, _ = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
            except OSError:
                return  # the host was killed
            with self.lock:
                if status == 200:
                    self.acknowledged |= names
                else:
                    self.refused += 1

    def stop(self):
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)


def kill(host):
    host.process.kill()
    host.process.wait()
    host.stdout.close()
    host.stderr.close()


def delivered_names(destination):
    return Counter(destination.delivered())


def run_and_kill(make_sluice, queue_dir, destination_port, seed, pad, sync="always", compression="none"):
    """Starts a host, loads it, kills it at a seeded moment; returns the acknowledged names."""
    host = make_sluice(config(destination_port, queue_dir, sync=sync, compression=compression))
    clients = Clients(host, count=4, pad=pad)
    wait_until(lambda: len(clients.acknowledged) >= SPANS_PER_REQUEST * 4, "requests acknowledged", host.logs)
    time.sleep(random.Random(seed).uniform(0.2, 1.2))
    kill(host)
    clients.stop()
    return clients.acknowledged


def restart_and_deliver(make_sluice, queue_dir, destination, acknowledged, compression="none"):
    host = make_sluice(config(destination.port, queue_dir, compression=compression))
    wait_until(lambda: acknowledged <= set(delivered_names(destination)),
               f"all {len(acknowledged)} acknowledged spans delivered", host.logs, timeout=90)
    wait_until(lambda: host.metric("sluice_disk_queue_items") == 0, "the queue drained", host.logs)
    return host


# (first run's compression, after the restart): a gzip exporter's records are gzip bodies, read
# back whatever the exporter after the restart sends.
GZIP_RUNS = {2: ("gzip", "gzip"), 4: ("gzip", "none"), 5: ("none", "gzip")}


@pytest.mark.parametrize("seed,sync", [(1, "always"), (2, "always"), (3, "always"), (4, "periodic"), (5, "periodic")])
def test_a_killed_host_delivers_everything_it_acknowledged(make_sluice, tmp_path, seed, sync):
    """The destination is down for the whole first run: nothing was delivered before the kill,
    so nothing may arrive twice. `sync = "periodic"` answers before the device has the write,
    which a killed process (unlike a crashed machine) doesn't lose either."""
    queue_dir = tmp_path / "queue"
    port = reserve_port()
    before, after = GZIP_RUNS.get(seed, ("none", "none"))
    acknowledged = run_and_kill(make_sluice, queue_dir, port, seed, pad=0, sync=sync, compression=before)

    destination = Downstream(port=port)
    try:
        host = restart_and_deliver(make_sluice, queue_dir, destination, acknowledged, compression=after)
        encodings = {r["headers"].get("content-encoding") for r in destination.requests}
        assert encodings == {"gzip" if after == "gzip" else None}, encodings
        # Records are merged into requests of up to batch.max_items, their gzip bodies joined.
        assert max(len(r["names"]) for r in destination.requests) > SPANS_PER_REQUEST
        counts = delivered_names(destination)
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        assert duplicates == 0, f"{duplicates} spans arrived twice though none was delivered before the kill"
        replayed = host.metric("sluice_disk_queue_replayed_items_total")
        assert replayed >= len(acknowledged), "every acknowledged span came back from the disk"
        print(f"seed {seed}: {len(acknowledged)} acknowledged, {len(counts)} delivered, replayed {replayed}")
    finally:
        destination.close()


def test_gzip_records_go_out_merged_to_the_batch_size(make_sluice, tmp_path):
    """Records a disk queue holds as gzip bodies are merged into requests of `batch.max_items`
    (their bodies joined), as every queued batch is, even while a sender is free — unlike a
    client's body reaching an idle exporter from memory, which goes on alone."""
    destination = Downstream()
    try:
        host = make_sluice(config(destination.port, tmp_path / "queue", compression="gzip", batch_timeout="10s"))
        for k in range(10):
            request = traces(SPANS_PER_REQUEST, prefix=f"m{k}")
            status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
            assert status == 200, body
        wait_until(lambda: len(delivered_names(destination)) == 10 * SPANS_PER_REQUEST, "every span delivered",
                   host.logs)
        sizes = [len(r["names"]) for r in destination.requests]
        assert sizes == [MAX_ITEMS] * 5, f"requests of {sizes} spans"
        assert {r["headers"].get("content-encoding") for r in destination.requests} == {"gzip"}
    finally:
        destination.close()


def test_batches_a_pipeline_group_routes_to_a_queue_are_merged_into_few_records(make_sluice, tmp_path):
    """Requests that wait together in the pipeline queue are written as records of up to
    `batch.max_items`, not one record each (so under load a gzip record is one compression for
    several requests); every span still arrives once."""
    destination = Downstream()
    try:
        host = make_sluice(config(destination.port, tmp_path / "queue"))
        requests = [traces(10, prefix=f"g{k}") for k in range(64)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda r: post(host, "/v1/traces", r.SerializeToString(), PROTOBUF), requests))
        assert all(status == 200 for status, _, _ in answers), answers
        wait_until(lambda: len(delivered_names(destination)) == 64 * 10, "every span delivered", host.logs)
        assert set(delivered_names(destination).values()) == {1}, "every span arrives once"
        records = host.metric("sluice_disk_queue_records_total")
        # One record per batch would read exactly 64; how many a group takes depends on timing
        # (a clean-clone CI run on 2 cores read 33, this machine's release build far fewer).
        assert records <= len(requests) * 3 / 4, f"{records} records for {len(requests)} concurrent requests"
    finally:
        destination.close()


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_a_kill_during_a_disk_write_loses_nothing_acknowledged(make_sluice, tmp_path, seed):
    """Large requests keep the host writing most of the time, so a kill often lands inside a
    write: whatever it cut is detected by its checksum, cut off and counted, never a crash, and
    every acknowledged span still arrives."""
    queue_dir = tmp_path / "queue"
    port = reserve_port()
    compression = "gzip" if seed % 2 == 0 else "none"
    acknowledged = run_and_kill(make_sluice, queue_dir, port, seed, pad=100_000, compression=compression)
    torn = torn_tail(queue_dir)

    destination = Downstream(port=port)
    try:
        host = restart_and_deliver(make_sluice, queue_dir, destination, acknowledged, compression=compression)
        assert host.metric("sluice_disk_queue_corrupt_records_total") == (1 if torn else 0)
        print(f"seed {seed}: {len(acknowledged)} acknowledged; the kill {'cut' if torn else 'missed'} a write")
    finally:
        destination.close()


def test_a_write_cut_short_is_cut_off_and_counted(make_sluice, tmp_path):
    """What a kill inside a write leaves, made certain: the start of one more record after the
    acknowledged ones. The host starts, counts it, and delivers everything acknowledged."""
    queue_dir = tmp_path / "queue"
    port = reserve_port()
    acknowledged = run_and_kill(make_sluice, queue_dir, port, seed=0, pad=0)
    last = sorted(queue_dir.glob("*.seg"))[-1]
    with last.open("ab") as segment:
        segment.write(HEADER.pack(MAGIC, 4096, 0, 0, 0, 0, 0) + b"half a payload")
    assert torn_tail(queue_dir)

    destination = Downstream(port=port)
    try:
        host = restart_and_deliver(make_sluice, queue_dir, destination, acknowledged)
        assert host.metric("sluice_disk_queue_corrupt_records_total") == 1
        assert "torn write" in host.logs()
    finally:
        destination.close()


def test_duplicates_after_a_kill_stay_within_the_promise(make_sluice, tmp_path):
    """With the destination up and slow during the first run, some batches are delivered and
    some are in flight when the host dies. After the restart duplicates are at most what the
    exporter held — `queue_size` records and `concurrency` requests, each up to
    `batch.max_items`, and the records being merged into the next request — and never more than
    the replayed count."""
    queue_dir = tmp_path / "queue"

    def slow(n, request):
        time.sleep(0.05)
        return 200, {}, b""
    destination = Downstream(answer=slow)
    try:
        acknowledged = run_and_kill(make_sluice, queue_dir, destination.port, seed=7, pad=0)
        before = delivered_names(destination)
        assert before, "some spans were delivered before the kill"
        host = restart_and_deliver(make_sluice, queue_dir, destination, acknowledged)
        counts = delivered_names(destination)
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        replayed = host.metric("sluice_disk_queue_replayed_items_total")
        bound = QUEUE_SIZE * MAX_ITEMS + CONCURRENCY * MAX_ITEMS + MAX_ITEMS
        assert duplicates <= replayed, (duplicates, replayed)
        assert duplicates <= bound, f"{duplicates} duplicates, more than the {bound} the docs promise"
        print(f"{len(acknowledged)} acknowledged, {sum(before.values())} delivered before the kill, "
              f"{duplicates} duplicates, {replayed} replayed")
    finally:
        destination.close()


def test_a_full_disk_queue_pushes_back_and_keeps_what_it_acknowledged(make_sluice, tmp_path):
    """The destination is down and the queue fills: the pipeline waits for room, the requests in
    its queue wait with it, later ones are told to retry (503), and only what was written was
    acknowledged — the kill loses none of it."""
    queue_dir = tmp_path / "queue"
    port = reserve_port()
    host = make_sluice(config(port, queue_dir, max_size="1MiB", pipeline_queue=2))
    clients = Clients(host, count=6, pad=200)
    wait_until(lambda: host.metric("sluice_disk_queue_bytes") > 0.9 * (1 << 20), "the queue is full", host.logs)
    refused = clients.refused
    wait_until(lambda: clients.refused > refused + 20, "clients told to retry", host.logs, timeout=60)
    assert host.metric("sluice_receiver_refused_requests_total", reason="busy") > 0
    kill(host)
    clients.stop()
    acknowledged = clients.acknowledged

    destination = Downstream(port=port)
    try:
        restart_and_deliver(make_sluice, queue_dir, destination, acknowledged)
        print(f"{len(acknowledged)} acknowledged before the queue filled, {clients.refused} refusals")
    finally:
        destination.close()


def test_a_reload_hands_the_queue_to_the_new_exporter(make_sluice, tmp_path):
    """A reload that changes the exporter builds a new one on the same directory: the old one
    keeps what it holds, the new one gets the rest and what comes next, and once the destination
    answers everything acknowledged arrives once."""
    queue_dir = tmp_path / "queue"
    port = reserve_port()
    host = make_sluice(config(port, queue_dir))

    def send(prefix, count):
        names = set()
        for k in range(count):
            request = traces(SPANS_PER_REQUEST, prefix=f"{prefix}-{k}")
            status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
            assert status == 200, body
            names |= {span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}
        return names

    acknowledged = send("before", 20)
    host.config.write_text(host.config.read_text().replace('timeout = "2s"', 'timeout = "3s"'))
    assert host.wait_metric("sluice_reload_total", 1, result="success") == 1, host.logs()
    assert "exporter vendor" in next(l for l in host.logs().splitlines() if "Reloaded" in l), "rebuilt"
    acknowledged |= send("after", 20)

    destination = Downstream(port=port)
    try:
        wait_until(lambda: acknowledged <= set(delivered_names(destination)),
                   f"all {len(acknowledged)} acknowledged spans delivered", host.logs, timeout=60)
        counts = delivered_names(destination)
        assert not [name for name, n in counts.items() if n > 1], "nothing twice: no restart happened"
        assert "in use by another process" not in host.logs()
        assert host.stop() == 0, host.logs()
    finally:
        destination.close()
