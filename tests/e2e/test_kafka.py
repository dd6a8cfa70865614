"""Kafka between the tiers, against a real Kafka-protocol broker (`tansu`, memory storage, on
loopback): an agent Sluice writes, two gateway Sluices in one consumer group read. Every span
arrives exactly once in normal operation; a gateway killed with SIGKILL hands its partitions to
the other and nothing is lost; the agent holds what it cannot write while the broker is down;
librdkafka's Python client (confluent-kafka) reads what Sluice writes and writes what it reads;
mutual TLS and SASL/SCRAM to the brokers hold, and a wrong certificate or password is refused;
every compression shrinks what goes on the wire; a full gateway pipeline pauses reading."""

import asyncio
import os
import ssl
import subprocess
import threading
import time
from collections import Counter

import pytest
import trustme

from conftest import (ARCHIVE, FILE_PIPELINE, PROTOBUF, RECEIVER, TOPICS, Broker, free_port, pipeline, post,
                      shipped_sluice,
                      tansu_binary, wait_until)
from downstream import Downstream
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_payloads import spans_in, traces

@pytest.fixture
def broker(tmp_path):
    running = Broker(tmp_path)
    yield running
    running.stop()


def agent(make_sluice, broker, extra="", delivery_timeout="60s", **kwargs):
    """An agent from OTLP to the broker; `extra`: more exporter keys (braces doubled);
    `kwargs` go to the harness (`extra_env`)."""
    return make_sluice(RECEIVER + f"""
        [exporters.kafka]
        type = "kafka"
        brokers = ["{broker.address}"]
        delivery_timeout = "{delivery_timeout}"
        {extra}
    """ + pipeline('["kafka"]'), **kwargs)


def gateway(make_sluice, broker, extra="", group="gateways", **kwargs):
    """A gateway reading the topics in consumer group `group` into its archive; `extra`: more
    receiver keys (TOML, braces doubled for the harness's formatting); `kwargs` go to the
    harness."""
    return make_sluice(f"""
        [receivers.kafka]
        type = "kafka"
        brokers = ["{broker.address}"]
        group_id = "{group}"
        session_timeout = "6s"
        {extra}
    """ + ARCHIVE + """
        [pipelines.all]
        receivers = ["kafka"]
        exporters = ["archive"]
    """, **kwargs)


def send_traces(host, count, prefix, spans=5):
    """`count` traces of `spans` spans each, one request per trace; returns the span names."""
    names = []
    for t in range(count):
        request = traces(spans, trace_id=os.urandom(16), prefix=f"{prefix}{t}")
        status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
        assert status == 200, body
        names += [f"{prefix}{t}-{i}" for i in range(spans)]
    return names


def send_interleaved(host, count, prefix, spans=4, per_request=10):
    """`count` traces of `spans` spans whose spans come in different requests, each request
    holding one span of each of `per_request` traces; returns the span names."""
    ids = [os.urandom(16) for _ in range(count)]
    names = []
    for first in range(0, count, per_request):
        for i in range(spans):
            request = traces(0)
            for t in range(first, min(first + per_request, count)):
                span = traces(1, trace_id=ids[t], prefix=f"{prefix}{t}").resource_spans[0].scope_spans[0].spans[0]
                span.name = f"{prefix}{t}-{i}"
                request.resource_spans[0].scope_spans[0].spans.append(span)
                names.append(span.name)
            status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
            assert status == 200, body
    return names


def assignment(host):
    """The partitions `host` consumes now: those of its last assignment, unless revoked since."""
    held = set()
    for line in host.logs().splitlines():
        if "Kafka partitions revoked" in line:
            held = set()
        elif "Kafka partitions assigned" in line:
            # An empty assignment logs `partitions=` with nothing after it.
            listed = line.split("partitions=", 1)[1].split()
            held = set(filter(None, listed[0].split(","))) if listed else set()
    return held


def wait_for_balance(gateways):
    """Waits until the group has settled: every one of the 9 partitions owned, and by one
    gateway only, each gateway with a share."""
    def balanced():
        shares = [assignment(g) for g in gateways]
        owned = [p for share in shares for p in share]
        return all(shares) and len(owned) == len(set(owned)) == 3 * len(TOPICS)
    wait_until(balanced, "the group shares the partitions", lambda: [assignment(g) for g in gateways], timeout=60)


def names_at(host):
    return [span["name"] for _, span in spans_in(host.lines("traces"))]


def wait_for(gateways, expected, what):
    def arrived():
        return set(expected) <= {name for g in gateways for name in names_at(g)}
    wait_until(arrived, what, lambda: "\n".join(g.logs()[-3000:] for g in gateways), timeout=60)


def test_every_span_arrives_once_across_a_consumer_group(make_sluice, broker):
    gateways = [gateway(make_sluice, broker) for _ in range(2)]
    wait_for_balance(gateways)
    sender = agent(make_sluice, broker)
    sent = send_interleaved(sender, 200, "t")
    wait_for(gateways, sent, "every span reaches a gateway")
    time.sleep(1)  # anything sent twice would show up now
    seen = [names_at(g) for g in gateways]
    together = Counter(seen[0] + seen[1])
    assert sorted(together) == sorted(sent) and max(together.values()) == 1, "exactly once"
    assert all(seen), f"both gateways read a share: {[len(s) for s in seen]}"
    # A trace's spans, sent in four requests, are keyed by its ID and so share a partition:
    # each trace lands whole on one gateway.
    for names in seen:
        traces_here = Counter(name.rsplit("-", 1)[0] for name in names)
        assert set(traces_here.values()) == {4}, traces_here
    assert sender.metric("sluice_exporter_sent_items_total", exporter="kafka") == len(sent)
    assert sender.metric("sluice_exporter_failed_items_total", exporter="kafka") == 0
    # Once everything is read, the lag the statistics report drops to 0.
    wait_until(lambda: all(g.metric("sluice_kafka_consumer_lag") == 0 for g in gateways)
               and any("sluice_kafka_consumer_lag{" in g.admin("/metrics")[2].decode() for g in gateways),
               "the lag gauge reads 0", timeout=30)


def test_a_killed_gateway_hands_its_partitions_over_and_nothing_is_lost(make_sluice, broker):
    survivor, victim = gateway(make_sluice, broker), gateway(make_sluice, broker)
    wait_for_balance((survivor, victim))
    sender = agent(make_sluice, broker)
    first = send_traces(sender, 100, "before")
    wait_for((survivor, victim), first, "the first traces arrive")
    victim_had = names_at(victim)
    assert victim_had, "the victim read a share before it died"
    victim.process.kill()  # SIGKILL: no commit, no leaving the group
    victim.process.wait()
    second = send_traces(sender, 100, "after")
    # The group notices after session_timeout (6s) and the survivor takes every partition.
    wait_for((survivor, victim), first + second, "every span arrives after the kill")
    everything = Counter(names_at(survivor) + victim_had)
    assert set(everything) == set(first + second), "nothing lost"
    duplicates = sum(count - 1 for count in everything.values())
    # Only what the victim took on after its last commit (once a second) can come twice.
    assert duplicates <= len(victim_had), duplicates
    assert "Kafka partitions assigned" in survivor.logs()


def test_the_agent_holds_what_it_cannot_write_while_the_broker_is_down(make_sluice, broker):
    sender = agent(make_sluice, broker)
    broker.stop()
    held = send_traces(sender, 20, "down")  # accepted: the exporter's queue and the producer hold them
    time.sleep(2)
    assert sender.metric("sluice_exporter_failed_items_total", exporter="kafka") == 0
    # Memory storage: the broker comes back empty, topics made again. The reader starts now so
    # that its group reads from the start (a reader from before would resume past offsets the
    # empty broker reuses).
    broker.start()
    reader = gateway(make_sluice, broker)
    wait_for((reader,), held, "what the agent held arrives once the broker is back")
    assert sender.metric("sluice_exporter_failed_items_total", exporter="kafka") == 0
    assert sorted(names_at(reader)) == sorted(held), "each once"


def test_standard_clients_read_what_sluice_writes_and_sluice_reads_what_they_write(make_sluice, broker):
    from confluent_kafka import Consumer, Producer
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    sender = agent(make_sluice, broker)
    sent = send_traces(sender, 10, "interop")
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "python-reader",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["otlp_spans"])
    read, keys_ok = [], True
    deadline = time.time() + 30
    while len(read) < len(sent) and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        request = ExportTraceServiceRequest.FromString(message.value())
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        keys_ok &= all(s.trace_id == message.key() for s in spans)
        read += [s.name for s in spans]
    consumer.close()
    assert sorted(read) == sorted(sent), "confluent-kafka decodes every span Sluice wrote"
    assert keys_ok, "each record is keyed by its trace ID"

    # The Collector's format the other way: protobuf export requests written by a standard
    # producer, read by a Sluice gateway.
    reader = gateway(make_sluice, broker, extra='initial_offset = "latest"', group="collector-format")
    wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins", reader.logs, timeout=30)
    time.sleep(1)
    producer = Producer({"bootstrap.servers": broker.address})
    written = []
    for t in range(5):
        request = traces(3, trace_id=os.urandom(16), prefix=f"collector{t}")
        producer.produce("otlp_spans", value=request.SerializeToString())
        written += [f"collector{t}-{i}" for i in range(3)]
    producer.produce("otlp_spans", value=b"\xff not protobuf")
    assert producer.flush(10) == 0
    wait_for((reader,), written, "Sluice reads what a standard producer wrote")
    wait_until(lambda: reader.metric("sluice_receiver_refused_requests_total", transport="kafka",
                                     reason="malformed") == 1, "the bad record is counted, not retried forever")


def test_otlp_json_records_both_ways(make_sluice, broker):
    json_topics = 'encoding = "otlp_json"\ntopics = {{ traces = "json_spans", metrics = "json_metrics", logs = "json_logs" }}'
    for topic in ("json_spans", "json_metrics", "json_logs"):
        subprocess.run([tansu_binary(), "topic", "create", topic, "--broker", broker.url],
                       check=True, capture_output=True, timeout=30)
    reader = gateway(make_sluice, broker, extra=json_topics)
    wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins", reader.logs, timeout=30)
    sender = agent(make_sluice, broker, extra=json_topics)
    sent = send_traces(sender, 10, "json")
    wait_for((reader,), sent, "OTLP/JSON records arrive")


def test_the_shipped_kafka_pipelines_carry_graphistry_traffic(make_sluice, broker, tmp_path):
    """pipelines/agent-kafka.toml and pipelines/gateway-kafka.toml as shipped: OTLP into the
    agent, through the broker, the gateway's Graphistry rules, on to an OTLP destination."""
    destination = make_sluice(FILE_PIPELINE)
    hosts = []
    try:
        for name, env in (("gateway-kafka.toml", {"SLUICE_OTLP_ENDPOINT": destination.http_base,
                                                  "SLUICE_OTLP_USERNAME": "gateway", "SLUICE_OTLP_PASSWORD": "secret",
                                                  "GRAPHISTRY_INSTANCE": "lab-7"}),
                          ("agent-kafka.toml", {})):
            folder = tmp_path / name.removesuffix(".toml")
            folder.mkdir()
            hosts.append(shipped_sluice(folder, name, SLUICE_KAFKA_BROKERS=broker.address, **env))
        gateway_host, agent_host = hosts
        wait_until(lambda: "Kafka partitions assigned" in gateway_host.logs(), "the gateway joins", gateway_host.logs,
                   timeout=30)
        request = traces(4, trace_id=os.urandom(16), service="graphistry-api")
        for span, name in zip(request.resource_spans[0].scope_spans[0].spans,
                              ["GET /healthz", "upload_dataset", "check_workers", "render"]):
            span.name = name
        status, _, body = post(agent_host, "/v1/traces", request.SerializeToString(), PROTOBUF)
        assert status == 200, body
        wait_until(lambda: sorted(names_at(destination)) == ["render", "upload_dataset"],
                   "the kept spans reach the destination", lambda: gateway_host.logs()[-3000:], timeout=60)
        [line] = destination.lines("traces")
        resource = {a["key"]: a["value"]["stringValue"] for a in line["resourceSpans"][0]["resource"]["attributes"]}
        assert resource["system"] == "graphistry" and resource["graphistry.instance"] == "lab-7", resource
    finally:
        for host in hosts:
            assert host.stop() == 0, host.logs()


class Relay:
    """A relay in front of a broker (the broker advertises the relay's port, so every client
    connection passes it), counting the bytes clients send. With `tls` (an SSLContext) it
    terminates TLS with Python's ssl module and the bytes go on to the broker in clear: tansu
    0.6.0 cannot serve TLS itself (its `--cert` and `--key` flags exclude each other)."""

    def __init__(self, tls=None):
        self.tls, self.port, self.upstream_port = tls, free_port(), None
        self.sessions = self.client_bytes = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self.run, args=(started,), daemon=True).start()
        assert started.wait(10), "the relay starts"

    def run(self, started):
        asyncio.set_event_loop(self.loop)
        # A client that fails the handshake never reaches `serve`; asyncio's log of it is noise.
        self.loop.set_exception_handler(lambda loop, context: None)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self.serve, "127.0.0.1", self.port, ssl=self.tls))
        started.set()
        self.loop.run_forever()

    async def serve(self, reader, writer):
        self.sessions += 1  # with TLS, the handshake has succeeded
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self.relay(reader, upstream_writer, counted=True),
                             self.relay(upstream_reader, writer, counted=False))

    async def relay(self, reader, writer, counted):
        try:
            while data := await reader.read(65536):
                if counted:
                    self.client_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.shut_down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def shut_down(self):
        self.server.close()
        sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)


def relayed_broker(tmp_path, tls=None):
    """A broker whose clients all go through a [`Relay`]."""
    relay = Relay(tls)
    running = Broker(tmp_path, advertised_port=relay.port)
    relay.upstream_port = running.port
    return running, relay


def write_client_files(folder, ca, client_ca=None):
    """ca.pem (the brokers' CA) and, with `client_ca`, client.pem and client.key it issued."""
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    if client_ca:
        client = client_ca.issue_cert("sluice-client")
        client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
        client.private_key_pem.write_to_path(str(folder / "client.key"))


@pytest.fixture
def tls_broker(tmp_path):
    """A broker behind mutual TLS: its certificate (for localhost and 127.0.0.1) from
    `server_ca`, its clients' from `client_ca`."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    client_ca.configure_trust(context)
    running, relay = relayed_broker(tmp_path, tls=context)
    yield running, relay, server_ca, client_ca
    relay.close()
    running.stop()


def test_mutual_tls_to_the_brokers_carries_spans_and_a_wrong_certificate_is_refused(make_sluice, tls_broker,
                                                                                    tmp_path):
    broker, relay, server_ca, client_ca = tls_broker
    trusted, untrusted, anonymous = (tmp_path / name for name in ("trusted", "untrusted", "anonymous"))
    for folder in (trusted, untrusted, anonymous):
        folder.mkdir()
    write_client_files(trusted, server_ca, client_ca)
    write_client_files(untrusted, trustme.CA(), client_ca)  # trusts some other CA than the brokers'
    write_client_files(anonymous, server_ca)  # no client certificate

    def tls(folder):
        files = f'ca_file = "{folder}/ca.pem"'
        if (folder / "client.pem").exists():
            files += f', cert_file = "{folder}/client.pem", key_file = "{folder}/client.key"'
        return f"tls = {{{{ {files} }}}}"

    reader = gateway(make_sluice, broker, extra=tls(trusted), group="tls-readers")
    wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins over mutual TLS",
               reader.logs, timeout=30)

    def writer(folder):
        return agent(make_sluice, broker, extra=tls(folder), delivery_timeout="4s")

    sender = writer(trusted)
    sent = send_traces(sender, 10, "tls")
    wait_for((reader,), sent, "spans written and read over mutual TLS arrive")
    assert sender.metric("sluice_exporter_failed_items_total", exporter="kafka") == 0

    # A broker certificate from the wrong CA, or no client certificate: nothing is written, the
    # batch counts as failed once the producer gives up, and librdkafka's reason is in the log.
    sessions = relay.sessions
    # (TLS 1.3: a client without a certificate hears the broker's refusal as a closed
    # connection or a `certificate required` alert, as timing has it.)
    for folder, reasons in ((untrusted, ["certificate verify failed"]),
                            (anonymous, ["SSL connection closed by peer", "certificate required"])):
        refused = writer(folder)
        send_traces(refused, 2, folder.name)
        wait_until(lambda: refused.metric("sluice_exporter_failed_items_total", exporter="kafka") == 10,
                   f"the {folder.name} writer's spans fail", refused.logs, timeout=30)
        assert refused.metric("sluice_exporter_sent_items_total", exporter="kafka") == 0
        assert any(reason in refused.logs() for reason in reasons), refused.logs()[-3000:]
    assert relay.sessions == sessions, "neither refused writer got a session"
    time.sleep(1)
    assert sorted(names_at(reader)) == sorted(sent), "nothing from the refused writers"


def send_compressible(host, count, prefix, spans=50):
    """`count` requests of one trace each, `spans` spans with long, repetitive attributes;
    returns the span names."""
    names = []
    attrs = {"http.route": "/api/v1/datasets/{dataset}/render/{layout}", "db.statement":
             "SELECT id, name, owner, created_at FROM datasets WHERE owner = $1 ORDER BY created_at DESC"}
    for t in range(count):
        request = traces(spans, trace_id=os.urandom(16), prefix=f"{prefix}{t}", attrs=attrs)
        status, _, body = post(host, "/v1/traces", request.SerializeToString(), PROTOBUF)
        assert status == 200, body
        names += [f"{prefix}{t}-{i}" for i in range(spans)]
    return names


def test_compressed_records_are_smaller_on_the_wire_and_read_back(make_sluice, tmp_path):
    """Each `compression` the producer offers: the bytes the agent sends the broker, counted by
    a relay, against `none`; and a gateway reads every span back."""
    broker, relay = relayed_broker(tmp_path)
    try:
        reader = gateway(make_sluice, broker)
        wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins", reader.logs, timeout=30)
        sent_bytes = {}
        for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
            sender = agent(make_sluice, broker, extra=f'compression = "{codec}"')
            before = relay.client_bytes
            names = send_compressible(sender, 20, codec)
            wait_for((reader,), names, f"{codec} records are read back")
            sent_bytes[codec] = relay.client_bytes - before
            assert sender.stop() == 0
        # The relay also counts the gateway's fetch requests, a few hundred bytes a second.
        assert all(sent_bytes[codec] < sent_bytes["none"] / 2 for codec in sent_bytes if codec != "none"), sent_bytes
    finally:
        relay.close()
        broker.stop()


def test_a_full_pipeline_pauses_reading_and_nothing_is_lost(make_sluice, broker):
    """A gateway whose destination answers 503: its exporter and pipeline queues (one batch
    each) fill and the receiver stops taking records, each refused offer counted as `busy`.
    Once the destination answers, every span arrives, once."""
    blocked = threading.Event()
    blocked.set()

    def answer(n, request):
        if blocked.is_set():
            return 503, {"Retry-After": "0"}, b""
        return 200, {}, ExportTraceServiceResponse().SerializeToString()

    destination = Downstream(answer=answer)
    try:
        reader = make_sluice(f"""
            [receivers.kafka]
            type = "kafka"
            brokers = ["{broker.address}"]
            group_id = "slow-readers"
            signals = ["traces"]
            [exporters.slow]
            type = "otlp"
            protocol = "http/protobuf"
            endpoint = "{destination.url}"
            compression = "none"
            concurrency = 1
            queue_size = 1
            batch = {{{{ max_items = 5 }}}}
            retry = {{{{ initial_backoff = "50ms", max_backoff = "100ms", max_elapsed = "10m" }}}}
            [pipelines.all]
            receivers = ["kafka"]
            exporters = ["slow"]
            queue_size = 1
        """)
        wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins", reader.logs, timeout=30)
        sender = agent(make_sluice, broker)
        sent = send_traces(sender, 40, "held")
        wait_until(lambda: reader.metric("sluice_receiver_refused_requests_total", transport="kafka",
                                         reason="busy") >= 3, "the receiver pauses on a full pipeline", reader.logs)
        time.sleep(2)
        accepted = reader.metric("sluice_receiver_accepted_items_total", transport="kafka")
        assert accepted < len(sent), f"paused: {accepted} of {len(sent)} spans taken"
        assert destination.delivered() == [], "the destination took nothing yet"
        blocked.clear()
        wait_until(lambda: destination.delivered() == sorted(sent), "every held span arrives",
                   lambda: (sorted(set(sent) - set(destination.delivered())), reader.logs()[-3000:]), timeout=60)
        time.sleep(1)
        assert destination.delivered() == sorted(sent), "each once"
        assert reader.metric("sluice_exporter_failed_items_total", exporter="slow") == 0
        assert reader.metric("sluice_receiver_refused_requests_total", transport="kafka", reason="malformed") == 0
    finally:
        destination.close()


def test_sasl_scram_with_credentials_from_a_file_and_the_environment(make_sluice, tmp_path):
    """A broker that requires SASL/SCRAM (tansu with SQLite storage, which keeps its users):
    an agent authenticating with SCRAM-SHA-512 and a password file, a gateway with
    SCRAM-SHA-256 and a password in the environment. A wrong password delivers nothing, fails
    the batch, and says why."""
    storage = "sqlite://tansu.db"
    # Users are made while the broker does not yet ask for them, on the storage the
    # authenticating broker then opens.
    setup = Broker(tmp_path, storage=storage)
    for user, password, mechanism in (("agent", "agent-secret", "scram512"), ("gateway", "gateway-secret", "scram256")):
        subprocess.run([tansu_binary(), "user", "create", user, password, "--broker", setup.url,
                        "--mechanism", mechanism], check=True, capture_output=True, timeout=30)
    setup.stop()
    broker = Broker(tmp_path, storage=storage, authentication=True, make_topics=False)
    try:
        (tmp_path / "agent-password").write_text("agent-secret\n")
        (tmp_path / "wrong-password").write_text("not-the-secret\n")
        reader = gateway(make_sluice, broker, extra='sasl = {{ mechanism = "SCRAM-SHA-256", username = "gateway", '
                                                    'password = {{ env = "KAFKA_PASSWORD" }} }}',
                         group="authenticated", extra_env={"KAFKA_PASSWORD": "gateway-secret"})
        assert reader.process.poll() is None
        wait_until(lambda: "Kafka partitions assigned" in reader.logs(), "the gateway joins with SCRAM-SHA-256",
                   reader.logs, timeout=30)

        def writer(password_file):
            return agent(make_sluice, broker, delivery_timeout="4s",
                         extra='sasl = {{ mechanism = "SCRAM-SHA-512", username = "agent", '
                               f'password = {{{{ file = "{password_file}" }}}} }}}}')

        sender = writer(tmp_path / "agent-password")
        sent = send_traces(sender, 10, "scram")
        wait_for((reader,), sent, "spans written and read with SCRAM arrive")
        assert sender.metric("sluice_exporter_failed_items_total", exporter="kafka") == 0
        refused = writer(tmp_path / "wrong-password")
        send_traces(refused, 2, "wrong")
        wait_until(lambda: refused.metric("sluice_exporter_failed_items_total", exporter="kafka") == 10,
                   "a wrong password's spans fail", refused.logs, timeout=30)
        assert "SASL authentication error" in refused.logs(), refused.logs()[-3000:]
        assert "not-the-secret" not in refused.logs() and "agent-secret" not in sender.logs(), "no password in a log"
        time.sleep(1)
        assert sorted(names_at(reader)) == sorted(sent), "nothing from the refused writer"
    finally:
        broker.stop()
