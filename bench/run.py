#!/usr/bin/env python3
"""Sluice vs rotel-agent, side by side on the same load, each pinned to one core.

For every scenario and host the script starts the host pinned to --host-core, drives it with
`sluice-loadgen` pinned to --load-core (closed loop), and records:
  spans/s           what the load generator got acknowledged per wall-clock second
  spans/cpu-s       spans per CPU-second the host process used (utime+stime) — "per core"
  RSS               the host's peak resident set (VmHWM) at the end of the run
  p50 / p99         request latency seen by the generator
Runs alternate between hosts (A B A B …) so drift on a shared machine hits both alike; the
summary quotes medians. Results go to bench/results/<timestamp>.json and a Markdown table to stdout.

  python3 bench/run.py --runs 3 --duration 10
  python3 bench/run.py --baseline /path/to/older/sluice   # this build against an older one, same run
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"host exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def stat_fields(pid):
    """The fields of `/proc/<pid>/stat` after the command name (which may hold spaces): the
    process state is `[0]`, field N of proc(5) is `[N - 3]`."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """CPU time of a process and all its threads, to the nanosecond.

    Read from the process's CPU-time clock (Linux's clock id for another process's
    `CLOCK_PROCESS_CPUTIME_ID`, as `clock_getcpuclockid` makes it). `/proc/<pid>/stat` counts
    in clock ticks (10 ms): on a run of 0.1 CPU-seconds that is ±10%. It is the fallback where the
    clock cannot be read."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rotel_binary():
    try:
        import rotel
        return Path(rotel.__file__).parent / "rotel-agent"
    except ImportError:
        return REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
            "site-packages" / "rotel" / "rotel-agent"


PLUGINS = REPO / "plugins" / "dist"

# The rules each plugin scenario runs; the load generator names every 10th span "GET /healthz".
PROCESSORS = {
    "drop-spans": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/drop-spans.wasm"
config = {{ span_names = ["GET /healthz"], span_attributes = {{ "http.route" = ["/internal/*"] }} }}
""",
    "set-attributes": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/set-attributes.wasm"
config = {{ resource = [{{ key = "system", value = "graphistry" }}, {{ key = "graphistry.instance", value = "bench" }}] }}
""",
    "route-by-attribute": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/route-by-attribute.wasm"
config = {{ attribute = "tenant", routes = {{ acme = "acme" }} }}
""",
    "sample-traces": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/sample-traces.wasm"
config = {{ percentage = 50.0 }}
""",
    # One rule three ways — a name list and one attribute's values — walked in the guest by the
    # Rust SDK, asked of the host's batch view by Rust, and by Python (docs/BENCHMARKS.md).
    "rule-rust-walk": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/drop-spans.wasm"
config = {{ span_names = ["GET /healthz"], span_attributes = {{ "attribute.key.3" = ["never"] }} }}
""",
    "rule-rust-view": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/fixture-view-filter.wasm"
config = {{ span_names = ["GET /healthz"], attribute = "attribute.key.3", values = ["never"] }}
""",
    "rule-python": f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/drop-health-checks.wasm"
config = {{ span_names = ["GET /healthz"], attribute = "attribute.key.3", values = ["never"] }}
""",
}
# The forward mode's noise rule as shipped: seven span-name patterns and an attribute rule.
PROCESSORS["graphistry-noise"] = f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/drop-spans.wasm"
config_file = "{REPO}/pipelines/graphistry-noise.rules.toml"
"""
# Both Graphistry rules as pipelines/forward.toml runs them (noise filter, then tags).
PROCESSORS["graphistry"] = PROCESSORS["graphistry-noise"] + f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/set-attributes.wasm"
config_file = "{REPO}/pipelines/graphistry-tags.rules.toml"
"""
PROCESSORS["chain3"] = PROCESSORS["drop-spans"] + PROCESSORS["set-attributes"] + PROCESSORS["route-by-attribute"]


# The load-balancing exporter's backends: three receivers of one sink Sluice, on one port of three
# loopback addresses (as gateways behind a headless Service).
BACKENDS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def sluice_command(exporter, grpc_port, http_port, workdir, sink=None, binary=None, also_listen=(), admin_port=None):
    admin_port = admin_port or free_port()
    if exporter == "forward.toml":
        # The shipped forward mode as users run it: the Graphistry rules, OTLP/HTTP with gzip to
        # the sink, a disk queue (synced before each answer) and the GPU receiver (idle here).
        settings = {"SLUICE_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}", "SLUICE_OTLP_USERNAME": "bench",
                    "SLUICE_OTLP_PASSWORD": "bench", "SLUICE_DATA_DIR": f"{workdir}/data",
                    "SLUICE_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}",
                    "SLUICE_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}", "SLUICE_HTTP_ADDRESS": f"127.0.0.1:{http_port}"}
        return ["env", *(f"{k}={v}" for k, v in settings.items()), str(binary or REPO / "target" / "release" / "sluice"),
                "run", "--config", str(REPO / "pipelines" / "forward.toml")]
    # `-disk` on any scenario: the exporter keeps a disk queue in the run's directory (synced
    # before each answer; `-disk-periodic`: once a second).
    sync = "periodic" if exporter.endswith("-disk-periodic") else "always"
    disk = exporter.endswith(("-disk", "-disk-periodic"))
    exporter = exporter.removesuffix("-periodic").removesuffix("-disk")
    processors = PROCESSORS.get(exporter.removeprefix("forward-"), "")
    if exporter.startswith("forward"):
        exporter = "forward"
    elif processors:
        exporter = "discard"
    exporters = {
        "forward": f'[exporters.out]\ntype = "otlp"\nprotocol = "grpc"\nendpoint = "http://127.0.0.1:{sink}"\n',
        # Exporter plugin vs the built-in OTLP/JSON exporter, both to the same HTTP sink.
        "webhook": f'[exporters.out]\ntype = "plugin"\nplugin = "{REPO}/plugins/dist/export-webhook.wasm"\n'
                   f'endpoint = "http://127.0.0.1:{sink}"\n',
        "otlp-json": f'[exporters.out]\ntype = "otlp"\nprotocol = "http/json"\ncompression = "none"\n'
                     f'endpoint = "http://127.0.0.1:{sink}"\n',
        "discard": '[exporters.out]\ntype = "discard"\n',
        # Records of trace ID (one per request here) to a tansu broker on the load core.
        "kafka": f'[exporters.out]\ntype = "kafka"\nbrokers = ["127.0.0.1:{sink}"]\n',
        # Each span to the backend owning its trace ID (loadgen --traces sets how many per request).
        "loadbalancing": '[exporters.out]\ntype = "loadbalancing"\nprotocol = "grpc"\nrouting_key = "trace_id"\n'
                         f'resolver = {{ static = {json.dumps([f"http://{a}:{sink}" for a in BACKENDS])} }}\n',
        "file": f'[exporters.out]\ntype = "file"\ndirectory = "{workdir}/data"\nmax_file_size = "256MiB"\nmax_files = 1\n',
    }[exporter]
    if disk:
        exporters += f'queue = {{ type = "disk", directory = "{workdir}/queue", max_size = "4GiB", sync = "{sync}" }}\n'
    also_receivers = "".join(f'[receivers.also{n}]\ntype = "otlp"\ngrpc = {{ address = "{address}:{grpc_port}" }}\n'
                             'http = { enabled = false }\n' for n, address in enumerate(also_listen))
    receivers = f"""[receivers.otlp]
type = "otlp"
grpc = {{ address = "127.0.0.1:{grpc_port}" }}
http = {{ address = "127.0.0.1:{http_port}" }}
{also_receivers}"""
    names = ["otlp"] + [f"also{n}" for n in range(len(also_listen))]
    config = write_config(workdir, admin_port, receivers, names, exporters, processors)
    return [str(binary or REPO / "target" / "release" / "sluice"), "run", "--config", str(config)]


def write_config(workdir, admin_port, receivers, names, exporters, processors=""):
    """WORKDIR/sluice.toml: the admin listener on `admin_port`, `receivers` and `exporters`
    (TOML tables; one exporter, `out`), and the pipeline `all` from the receivers `names` to
    `out` through `processors`."""
    config = Path(workdir) / "sluice.toml"
    config.write_text(f"""
[service]
admin_address = "127.0.0.1:{admin_port}"
log_level = "warn"
{receivers}
{exporters}
[pipelines.all]
receivers = {json.dumps(names)}
exporters = ["out"]
{processors}""")
    return config


def loadgen_command(args, protocol, port, duration, warmup):
    """`sluice-loadgen` on the load core against 127.0.0.1:`port`, shaped by `args`."""
    return ["taskset", "-c", str(args.load_core), str(REPO / "target" / "release" / "sluice-loadgen"),
            "--protocol", protocol, "--endpoint", f"http://127.0.0.1:{port}",
            "--connections", str(args.connections), "--batch", str(args.batch),
            "--attributes", str(args.attributes), "--traces", str(args.traces),
            "--duration", str(duration), "--warmup", str(warmup), *(["--gzip"] if args.client_gzip else [])]


def rotel_command(exporter, grpc_port, http_port, workdir, sink=None):
    if "-disk" in exporter:
        return None  # rotel-agent keeps its queues in memory
    common = [str(rotel_binary()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
              "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
              "--pid-file", f"{workdir}/rotel.pid", "--log-file", f"{workdir}/rotel.log"]
    if exporter == "discard":
        return common + ["--exporter", "blackhole"]
    if exporter == "forward":
        return common + ["--exporter", "otlp", "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink}",
                         "--otlp-exporter-protocol", "grpc"]
    if exporter == "kafka":
        # Protobuf records, acknowledged by every in-sync replica (Sluice's default acks).
        return common + ["--exporter", "kafka", "--kafka-exporter-brokers", f"127.0.0.1:{sink}",
                         "--kafka-exporter-format", "protobuf", "--kafka-exporter-acks", "all"]
    return None  # the published rotel-agent has no file exporter and no Wasm plugins


HOSTS = {"sluice": sluice_command, "rotel": rotel_command}


def start_broker(core, topics=("otlp_spans", "otlp_metrics", "otlp_logs")):
    """A tansu broker (memory storage) pinned to `core`, `topics` made with 3 partitions (tansu's
    default). Returns the process and its port."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    tansu = shutil.which("tansu") or str(Path.home() / ".cargo" / "bin" / "tansu")
    broker = subprocess.Popen(["taskset", "-c", str(core), tansu, "broker", "--listener-url", url,
                               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, broker)
    for topic in topics:
        subprocess.run([tansu, "topic", "create", topic, "--broker", url], check=True, capture_output=True)
    return broker, port


def scraped_total(admin_port, metric):
    """The sum of every series of `metric` on a Sluice admin listener (0 while it has none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as answer:
        return sum(float(line.rsplit(" ", 1)[1]) for line in answer.read().decode().splitlines()
                   if line.startswith(metric + "{") or line.startswith(metric + " "))


def kafka_read_run(host, protocol, args):
    """Kafka → discard: the load generator fills the topic through an agent Sluice for
    --kafka-fill seconds, then a gateway Sluice (a `kafka` receiver in a new consumer group, from the
    earliest offset, into discard) reads all of it. Measured from its first accepted span to its
    last: the gateway's CPU-seconds and the wall clock. rotel-agent has no Kafka receiver."""
    if host not in ("sluice", "baseline"):
        return None
    binary = Path(args.baseline) if host == "baseline" else REPO / "target" / "release" / "sluice"
    with tempfile.TemporaryDirectory() as workdir:
        broker, broker_port = start_broker(args.load_core)
        agent_dir, gateway_dir = Path(workdir) / "agent", Path(workdir) / "gateway"
        agent_dir.mkdir()
        gateway_dir.mkdir()
        grpc_port, http_port, agent_admin = free_port(), free_port(), free_port()
        agent = subprocess.Popen(["taskset", "-c", str(args.host_core),
                                  *sluice_command("kafka", grpc_port, http_port, agent_dir, broker_port,
                                                  binary=binary, admin_port=agent_admin)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gateway = None
        try:
            port = grpc_port if protocol == "grpc" else http_port
            wait_port(port, agent, timeout=60)
            out = subprocess.run(loadgen_command(args, protocol, port, args.kafka_fill, 0),
                                 capture_output=True, text=True, check=True).stdout
            filled = json.loads(out)["spans"]
            deadline = time.time() + 60
            while scraped_total(agent_admin, "sluice_exporter_sent_items_total") < filled:
                if time.time() > deadline:
                    raise RuntimeError("the agent did not deliver every span to the broker")
                time.sleep(0.1)
            agent.terminate()
            agent.wait(timeout=30)

            gateway_admin = free_port()
            # A new group from the earliest offset. tansu holds every fetch for the whole wait,
            # records waiting or not (bench/broker_read_rate.py), hence the short one.
            receiver = f"""[receivers.kafka]
type = "kafka"
brokers = ["127.0.0.1:{broker_port}"]
group_id = "bench"
signals = ["traces"]
fetch_max_wait = "10ms"
"""
            config = write_config(gateway_dir, gateway_admin, receiver, ["kafka"],
                                  '[exporters.out]\ntype = "discard"\n')
            gateway = subprocess.Popen(["taskset", "-c", str(args.host_core), str(binary), "run", "--config", str(config)],
                                       stdout=subprocess.DEVNULL, stderr=open(gateway_dir / "host.err", "wb"))
            wait_port(gateway_admin, gateway, timeout=60)
            accepted = "sluice_receiver_accepted_items_total"
            first = None
            deadline = time.time() + 120
            while True:
                count, now, cpu = scraped_total(gateway_admin, accepted), time.time(), cpu_seconds(gateway.pid)
                if first is None and count > 0:
                    first = (count, now, cpu)
                if count >= filled or time.time() > deadline:
                    break
                time.sleep(0.02)
            if count < filled:
                raise RuntimeError(f"the gateway read {count:.0f} of {filled} spans")
            spans, wall, cpu_used = count - first[0], now - first[1], cpu - first[2]
            return {"host": host, "exporter": "kafka-read", "protocol": protocol, "spans": spans,
                    "spans_per_second": spans / wall, "cpu_seconds": cpu_used,
                    "spans_per_cpu_second": spans / cpu_used if cpu_used else None,
                    "peak_rss_kib": peak_rss_kib(gateway.pid), "errors": 0, "p50_ms": None, "p99_ms": None}
        finally:
            for process in (agent, gateway, broker):
                if process and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=30)


def one_run(host, exporter, protocol, args):
    if exporter == "kafka-read":
        return kafka_read_run(host, protocol, args)
    with tempfile.TemporaryDirectory() as workdir:
        grpc_port, http_port = free_port(), free_port()
        sink_process = None
        sink = None
        if exporter in ("webhook", "otlp-json"):
            # The destination: an HTTP sink answering 200, on the load generator's core.
            sink = free_port()
            sink_process = subprocess.Popen(["taskset", "-c", str(args.load_core), sys.executable,
                                             str(REPO / "bench" / "sink.py"), str(sink)])
            wait_port(sink, sink_process)
        elif exporter == "kafka":
            sink_process, sink = start_broker(args.load_core)
        elif exporter.startswith("forward") and args.fast_sink:
            # The destination: sluice-sink (reads each body, answers success, decodes nothing),
            # gRPC and HTTP on one port, on the load generator's core.
            sink = free_port()
            sink_process = subprocess.Popen(["taskset", "-c", str(args.load_core),
                                             str(REPO / "target" / "release" / "sluice-sink"), str(sink)])
            wait_port(sink, sink_process)
        elif exporter.startswith(("forward", "loadbalancing")):
            # The destination: a Sluice receiving into discard, on the load generator's core.
            sink, sink_http = free_port(), free_port()
            sink_dir = Path(workdir) / "sink"
            sink_dir.mkdir()
            also = BACKENDS[1:] if exporter.startswith("loadbalancing") else ()
            sink_command = sluice_command("discard", sink, sink_http, sink_dir, also_listen=also)
            sink_process = subprocess.Popen(["taskset", "-c", str(args.load_core), *sink_command],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(sink, sink_process)
            if exporter == "forward.toml":
                sink = sink_http  # the shipped pipeline sends OTLP/HTTP
        admin_port = free_port()
        tapped = host == "sluice+tap"
        command = sluice_command(exporter, grpc_port, http_port, workdir, sink, admin_port=admin_port) if tapped \
            else HOSTS[host](exporter, grpc_port, http_port, workdir, sink)
        if command is None:
            if sink_process:
                sink_process.terminate()
            return None
        process = subprocess.Popen(["taskset", "-c", str(args.host_core), *command],
                                   stdout=subprocess.DEVNULL, stderr=open(f"{workdir}/host.err", "wb"))
        tap = None
        try:
            port = grpc_port if protocol == "grpc" else http_port
            wait_port(port, process, timeout=60)
            if tapped:
                # Someone watching every item as received, as JSON, at the tap's --rate; the
                # reader sits on the load core, the rendering is the host's.
                tap = subprocess.Popen(["taskset", "-c", str(args.load_core), str(REPO / "target" / "release" / "sluice"),
                                        "tap", "--address", f"127.0.0.1:{admin_port}", "--format", "json",
                                        "--rate", str(args.tap_rate)], stdout=subprocess.DEVNULL)
            loadgen = subprocess.Popen(loadgen_command(args, protocol, port, args.duration, args.warmup),
                                       stdout=subprocess.PIPE, text=True)
            time.sleep(args.warmup)
            cpu_start = cpu_seconds(process.pid)
            profile = start_profile(process.pid, args, f"{exporter}-{protocol}-c{args.connections}") \
                if getattr(args, "profile_this_run", False) else None
            time.sleep(args.duration)
            cpu_used = cpu_seconds(process.pid) - cpu_start
            if profile:
                finish_profile(*profile)
            out, _ = loadgen.communicate(timeout=args.duration + 60)
            report = json.loads(out)
            report.update(host=host, exporter=exporter, cpu_seconds=cpu_used,
                          spans_per_cpu_second=report["spans"] / cpu_used if cpu_used else None,
                          peak_rss_kib=peak_rss_kib(process.pid))
            return report
        finally:
            if tap:
                tap.terminate()
                tap.wait(timeout=30)
            process.terminate()
            process.wait(timeout=30)
            if sink_process:
                sink_process.terminate()
                sink_process.wait(timeout=30)


def start_profile(pid, args, name):
    """`perf record` on the host for the measured window (DWARF call stacks: release builds keep
    no frame pointers), to be drawn as args.flamegraphs/NAME.svg."""
    data = Path(tempfile.mkdtemp()) / "perf.data"
    perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", str(data),
                             "-p", str(pid), "--", "sleep", str(min(args.duration, 4))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return perf, data, Path(args.flamegraphs) / f"{name}.svg"


def finish_profile(perf, data, svg):
    """perf script | inferno-collapse-perf | inferno-flamegraph (`cargo install inferno`)."""
    perf.wait(timeout=60)
    svg.parent.mkdir(parents=True, exist_ok=True)
    script = subprocess.run(["perf", "script", "--no-inline", "-i", str(data)], capture_output=True, check=True).stdout
    folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True, check=True).stdout
    svg.write_bytes(subprocess.run(["inferno-flamegraph", "--title", svg.stem, "--width", "1400"], input=folded,
                                   capture_output=True, check=True).stdout)
    data.unlink()
    print(f"flame graph: {svg}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", default="8",
                        help="concurrent requests; a comma-separated list runs every scenario at each")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--attributes", type=int, default=10)
    parser.add_argument("--traces", type=int, default=1,
                        help="traces the spans of each request belong to (default 1; --batch: one per span)")
    parser.add_argument("--host-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--scenarios", default="discard/grpc,discard/http,file/grpc,file/http",
                        help="exporter/protocol pairs; the exporter may also be a plugin scenario: "
                             + ", ".join(PROCESSORS) + " (each runs into discard), `forward` (OTLP gRPC out "
                             "to a sink Sluice on the load core), forward-<plugin scenario>, `forward.toml` (the "
                             "shipped pipelines/forward.toml, OTLP/HTTP to the sink), or `webhook` / "
                             "`otlp-json` (the export-webhook plugin / the OTLP http/json exporter to an HTTP sink), "
                             "`loadbalancing` (by trace ID over three receivers of the sink Sluice), `kafka` "
                             "(records to a tansu broker on the load core), `kafka-read` (a gateway reading a "
                             "topic the load filled for --kafka-fill seconds, into discard; Sluice only); "
                             "a `-disk` suffix gives Sluice's exporter a disk queue (discard-disk, forward-disk), "
                             "`-disk-periodic` one with sync = \"periodic\"")
    parser.add_argument("--hosts", default="sluice,rotel",
                        help="comma-separated: sluice, rotel, and sluice+tap (Sluice with `sluice tap` watching "
                             "items as received, at most --tap-rate a second, as JSON)")
    parser.add_argument("--kafka-fill", type=float, default=2.0,
                        help="kafka-read: seconds of load written to the topic before the gateway reads it")
    parser.add_argument("--tap-rate", type=int, default=1000, help="sluice+tap's `sluice tap --rate`")
    parser.add_argument("--client-gzip", action="store_true",
                        help="the load generator sends gzip-compressed requests (compressed once up front)")
    parser.add_argument("--fast-sink", action="store_true",
                        help="forward scenarios send to sluice-sink (reads each body and answers success, decodes "
                             "nothing) instead of a sink Sluice, so that the destination keeps up")
    parser.add_argument("--flamegraphs", default=None, metavar="DIR",
                        help="also profile Sluice in one extra run per scenario (not counted in the table) and "
                             "draw DIR/<scenario>-<protocol>-c<connections>.svg (needs perf and `cargo install "
                             "inferno`)")
    parser.add_argument("--baseline", default=None,
                        help="another Sluice binary (an older build, say), run as host `baseline` with the same "
                             "configs beside the others, alternating run by run")
    args = parser.parse_args()
    missing = [tool for tool in ("perf", "inferno-collapse-perf", "inferno-flamegraph") if not shutil.which(tool)]
    if args.flamegraphs and missing:
        parser.error(f"--flamegraphs needs {', '.join(missing)} (perf from linux-perf; cargo install inferno)")
    if args.baseline:
        HOSTS["baseline"] = lambda *a: sluice_command(*a, binary=args.baseline)
        if "baseline" not in args.hosts.split(","):
            args.hosts += ",baseline"

    results = []
    for connections in [int(c) for c in str(args.connections).split(",")]:
        for scenario in args.scenarios.split(","):
            exporter, protocol = scenario.split("/")
            for run in range(args.runs):
                for host in args.hosts.split(","):
                    report = one_run(host, exporter, protocol, argparse.Namespace(**{**vars(args),
                                                                                    "connections": connections}))
                    if report is None:
                        continue
                    report.update(run=run, connections=connections)
                    results.append(report)
                    if args.flamegraphs and run == 0 and host == "sluice":
                        try:
                            one_run(host, exporter, protocol, argparse.Namespace(
                                **{**vars(args), "connections": connections, "profile_this_run": True}))
                        except (OSError, subprocess.SubprocessError) as error:
                            # A profile is extra: losing it must not lose the measured runs.
                            print(f"no flame graph for {scenario}: {error}", file=sys.stderr, flush=True)
                    print(f"{host:7} {exporter:8} {protocol:5} c{connections} run {run}: "
                          f"{report['spans_per_second']:>12,.0f} spans/s "
                          f"{report['spans_per_cpu_second'] or 0:>12,.0f} spans/cpu-s  "
                          f"rss {report['peak_rss_kib']:>7} KiB p50 {ms(report['p50_ms'])} ms "
                          f"p99 {ms(report['p99_ms'])} ms errors {report['errors']}", file=sys.stderr, flush=True)

    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"{stamp}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))

    print(table(results))


def run_and_read(arguments):
    """Runs this script with `arguments` in a process of its own (for scripts that build on its
    runs) and returns the results it wrote, and the name of their file in bench/results/."""
    results = REPO / "bench" / "results"
    before = set(results.glob("*.json"))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), *arguments], cwd=REPO, capture_output=True,
                   check=True)
    (written,) = set(results.glob("*.json")) - before
    return json.loads(written.read_text())["results"], written.name


def ms(value):
    """A latency for the table; `—` where a scenario has none (kafka-read has no requests)."""
    return "—" if value is None else f"{value:.2f}"


def median(values):
    """The median, or None where any run had no value."""
    values = list(values)
    return None if None in values else statistics.median(values)


def medians(results):
    """The median of each figure per (exporter, protocol, connections, host), and how many runs
    it is over (`runs`)."""
    groups = {}
    for r in results:
        groups.setdefault((r["exporter"], r["protocol"], r.get("connections"), r["host"]), []).append(r)
    return {key: {**{field: median(r[field] for r in runs) for field in
                     ("spans_per_second", "spans_per_cpu_second", "peak_rss_kib", "p50_ms", "p99_ms")},
                  "runs": len(runs)}
            for key, runs in groups.items()}


def table(results):
    """The Markdown table: medians per scenario, connections and host, and each Sluice row's
    spans per CPU-second against rotel-agent's in the same run — the same scenario, or rotel's
    plain forward for a forward scenario with plugins (rotel-agent runs no Wasm rules)."""
    figures = medians(results)
    lines = ["| scenario | conns | host | spans/s (median) | spans per CPU-second (median) | × rotel per CPU-s "
             "| peak RSS MiB (median) | p50 ms | p99 ms | runs |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (exporter, protocol, connections, host), m in figures.items():
        ratio = ""
        if host != "rotel":
            peer = figures.get((exporter, protocol, connections, "rotel"))
            peer_name = ""
            if peer is None and exporter.startswith(("forward", "loadbalancing")) and exporter != "forward":
                peer, peer_name = figures.get(("forward", protocol, connections, "rotel")), " (rotel forward)"
            if peer:
                ratio = f"{m['spans_per_cpu_second'] / peer['spans_per_cpu_second']:.2f}×{peer_name}"
        lines.append(f"| {exporter} / {protocol} | {connections} | {host} | {m['spans_per_second']:,.0f} | "
                     f"{m['spans_per_cpu_second']:,.0f} | {ratio} | {m['peak_rss_kib'] / 1024:.1f} | "
                     f"{ms(m['p50_ms'])} | {ms(m['p99_ms'])} | {m['runs']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
