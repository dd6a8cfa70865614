"""The load-balancing exporter against real processes: gateway Sluices on 127.0.0.2-5 (one port,
as behind a headless Service), a DNS server on 127.0.0.1 answering for their name, and agent
Sluices whose `loadbalancing` exporter follows that answer."""

import collections
import os
import random
import signal
import time

from conftest import free_port, grpc_call, wait_until
from dns_server import DnsServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from otlp_payloads import kv, spans_in

NAME = "gateways.sluice.test"
TRACES = 1000
SPANS_PER_TRACE = 5
SPANS_PER_REQUEST = 50

GATEWAY = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{{{ address = "{address}" }}}}
    http = {{{{ enabled = false }}}}

    [exporters.archive]
    type = "file"
    directory = "{{data}}"

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["archive"]
"""

AGENT = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{{{ address = "{{grpc}}" }}}}
    http = {{{{ enabled = false }}}}

    [exporters.gateways]
    type = "loadbalancing"
    routing_key = "trace_id"
    resolver = {{{{ dns = {{{{ hostname = "{name}", port = {port}, interval = "200ms", server = "{server}" }}}} }}}}
    timeout = "1s"
    retry = {{{{ initial_backoff = "100ms", max_backoff = "500ms", max_elapsed = "120s" }}}}
    batch = {{{{ timeout = "20ms" }}}}

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["gateways"]
"""


def trace_id(n):
    return n.to_bytes(4, "big") + bytes(12) if n else b"\xff" * 16


def requests(phase, seed):
    """TRACES traces of SPANS_PER_TRACE spans each, shuffled so that a trace's spans are spread
    over several requests; span IDs carry the phase."""
    spans = [(t, s) for t in range(1, TRACES + 1) for s in range(SPANS_PER_TRACE)]
    random.Random(seed).shuffle(spans)
    out = []
    for at in range(0, len(spans), SPANS_PER_REQUEST):
        chunk = spans[at:at + SPANS_PER_REQUEST]
        out.append(ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=[kv("service.name", "checkout")]),
            scope_spans=[ScopeSpans(spans=[
                Span(trace_id=trace_id(t), span_id=bytes([phase, 0, 0, s]) + t.to_bytes(4, "big"),
                     name=f"op-{s}", start_time_unix_nano=1, end_time_unix_nano=2)
                for t, s in chunk])])]).SerializeToString())
    return out


def send(agents, payloads, pause=0.0):
    for n, payload in enumerate(payloads):
        grpc_call(agents[n % len(agents)], "traces", payload)
        time.sleep(pause)


def owners(gateways, phase):
    """{trace id (hex): {gateway address: spans}} for the spans of `phase`."""
    found = collections.defaultdict(collections.Counter)
    for address, gateway in gateways.items():
        for _, span in spans_in(gateway.lines("traces")):
            if bytes.fromhex(span["spanId"])[0] == phase:
                found[span["traceId"]][address] += 1
    return found


def delivered(gateways, phase):
    return sum(sum(c.values()) for c in owners(gateways, phase).values())


def start_gateway(make_sluice, address, port):
    return make_sluice(GATEWAY.format(address=f"{address}:{port}"))


def start_tier(make_sluice, addresses, agents=2):
    port = free_port()
    gateways = {a: start_gateway(make_sluice, a, port) for a in addresses}
    dns = DnsServer(NAME, addresses)
    agent_config = AGENT.format(name=NAME, port=port, server=dns.address)
    return port, gateways, dns, [make_sluice(agent_config) for _ in range(agents)]


def wait_delivered(gateways, phase, expected, agents):
    wait_until(lambda: delivered(gateways, phase) >= expected, f"{expected} spans of phase {phase} delivered",
               lambda: "\n".join(a.logs()[-3000:] for a in agents), timeout=60)
    time.sleep(0.3)
    assert delivered(gateways, phase) == expected, "no span twice"


def whole_owner(found):
    """{trace: its one gateway}, asserting each trace landed whole on one."""
    split = {trace: dict(where) for trace, where in found.items() if len(where) != 1}
    assert not split, f"{len(split)} traces were split over gateways, e.g. {list(split.items())[:3]}"
    return {trace: next(iter(where)) for trace, where in found.items()}


def wait_backends(agents, address):
    for agent in agents:
        wait_until(lambda: address in agent.logs().split("Backends changed")[-1],
                   f"the agent's latest backends include {address}", agent.logs)


def test_traces_land_whole_and_dns_changes_remap_only_the_keys_promised(make_sluice):
    port, gateways, dns, agents = start_tier(make_sluice, ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    try:
        wait_backends(agents, "127.0.0.4")
        send(agents, requests(phase=1, seed=1))
        wait_delivered(gateways, 1, TRACES * SPANS_PER_TRACE, agents)
        before = whole_owner(owners(gateways, 1))
        assert len(before) == TRACES
        # Each gateway's share is a third, off by the ring's own spread (its 256 points a backend
        # are placed by hashing an address whose port changes every run) and the sampling of
        # 1,000 keys: over 20% once in ~120 runs, over 30% once in ~20,000 (simulated).
        shares = collections.Counter(before.values())
        for address in gateways:
            assert abs(shares[address] - TRACES / 3) <= 0.3 * TRACES / 3, f"shares off by over 30%: {shares}"

        # Mid-stream, 127.0.0.4 leaves the answer and 127.0.0.5 joins it. 127.0.0.4 still
        # answers, so what was queued for it is delivered to it.
        gateways["127.0.0.5"] = start_gateway(make_sluice, "127.0.0.5", port)
        stream = requests(phase=2, seed=2)
        send(agents, stream[:30], pause=0.01)
        dns.addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.5"]
        send(agents, stream[30:], pause=0.01)
        wait_delivered(gateways, 2, TRACES * SPANS_PER_TRACE, agents)

        wait_backends(agents, "127.0.0.5")
        send(agents, requests(phase=3, seed=3))
        wait_delivered(gateways, 3, TRACES * SPANS_PER_TRACE, agents)
        after = whole_owner(owners(gateways, 3))
        assert "127.0.0.4" not in set(after.values()), "a departed gateway gets no new keys"
        moved = {t for t in before if before[t] != after[t]}
        wrong = [t for t in moved if before[t] != "127.0.0.4" and after[t] != "127.0.0.5"]
        assert not wrong, f"keys moved between gateways that stayed: {wrong[:5]}"
        # 127.0.0.4's third moves, and the newcomer takes a quarter of the rest (a key that stayed
        # with .2 or .3 lies nearer one of their points than to any of .4's, so a point of .5 falls
        # before it less often than a third of the time): 1/3 + 2/3 × 1/4 = 1/2 in all. With the
        # ring's spread and 1,000 keys, 1 run in 10,000 falls outside 0.42-0.58 (simulated).
        assert 0.4 <= len(moved) / TRACES <= 0.6, f"{len(moved)} of {TRACES} traces moved"
        # Once it has drained, the departed gateway's series leave /metrics (addresses that come
        # and go must not pile up there); the others' stay.
        for agent in agents:
            wait_until(lambda: "127.0.0.4" not in agent.admin("/metrics")[2].decode(),
                       "the departed gateway's series are dropped", lambda: agent.admin("/metrics")[2].decode())
            assert 'backend="http://127.0.0.5:' in agent.admin("/metrics")[2].decode()
    finally:
        dns.close()


def test_a_departed_gateway_that_stops_answering_has_its_queue_rerouted(make_sluice):
    port, gateways, dns, agents = start_tier(make_sluice, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], agents=1)
    agent = agents[0]
    try:
        wait_backends(agents, "127.0.0.4")
        stuck = gateways["127.0.0.4"]
        os.kill(stuck.process.pid, signal.SIGSTOP)
        send(agents, requests(phase=1, seed=4))
        # Failing but still listed: it keeps its keys, and its items are retried for it.
        wait_until(lambda: agent.metric("sluice_exporter_retried_items_total", exporter="gateways") > 0,
                   "retries for the stopped gateway", agent.logs)
        time.sleep(1)
        held = TRACES * SPANS_PER_TRACE - delivered(gateways, 1)
        assert held > 0.2 * TRACES * SPANS_PER_TRACE, f"only {held} spans held for the stopped gateway"
        assert agent.metric("sluice_loadbalancer_rerouted_items_total", exporter="gateways") == 0

        # Gone from DNS and dead: what it held goes to its keys' new owners, nothing is lost.
        dns.addresses = ["127.0.0.2", "127.0.0.3"]
        stuck.process.kill()
        stuck.process.wait()
        wait_delivered(gateways, 1, TRACES * SPANS_PER_TRACE, agents)
        final = whole_owner(owners(gateways, 1))
        assert set(final.values()) == {"127.0.0.2", "127.0.0.3"}, "the stopped gateway wrote nothing"
        # Requests the departed gateway had taken on were handed back; what still waited for
        # room in its queue was simply split again.
        rerouted = agent.metric("sluice_loadbalancer_rerouted_items_total", exporter="gateways")
        assert 0 < rerouted <= held
        assert agent.metric("sluice_exporter_failed_items_total", exporter="gateways") == 0
    finally:
        dns.close()


STATIC_AGENT = """
    [receivers.otlp]
    type = "otlp"
    grpc = {{{{ address = "{{grpc}}" }}}}
    http = {{{{ enabled = false }}}}

    [exporters.gateways]
    type = "loadbalancing"
    resolver = {{{{ static = ["http://127.0.0.2:{port}", "http://127.0.0.3:{port}"] }}}}
    timeout = "1s"
    retry = {{{{ initial_backoff = "100ms", max_backoff = "300ms", max_elapsed = "120s" }}}}
    queue = {{{{ type = "disk", directory = "{queue}" }}}}

    [pipelines.all]
    receivers = ["otlp"]
    exporters = ["gateways"]
"""


def test_split_batches_from_a_disk_queue_survive_kill_9(make_sluice, tmp_path):
    """Each part of a split batch keeps the batch's disk record: a record is settled only once
    every part is delivered, so an agent killed before that delivers all of it after a restart."""
    port = free_port()
    config = STATIC_AGENT.format(port=port, queue=tmp_path / "queue")
    agent = make_sluice(config)
    send([agent], requests(phase=1, seed=5))  # every request answered: on disk, gateways down
    wait_until(lambda: agent.metric("sluice_exporter_retried_items_total", exporter="gateways") > 0,
               "retries while no gateway answers", agent.logs)
    agent.process.kill()
    agent.process.wait()

    gateways = {a: start_gateway(make_sluice, a, port) for a in ("127.0.0.2", "127.0.0.3")}
    restarted = make_sluice(config)
    wait_delivered(gateways, 1, TRACES * SPANS_PER_TRACE, [restarted])
    owner = whole_owner(owners(gateways, 1))
    assert set(owner.values()) == set(gateways), "both gateways own traces"
    assert restarted.metric("sluice_disk_queue_replayed_items_total", exporter="gateways") == TRACES * SPANS_PER_TRACE
    wait_until(lambda: restarted.metric("sluice_disk_queue_items", exporter="gateways") == 0,
               "every record settled once all its parts are delivered", restarted.logs)
