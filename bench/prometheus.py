#!/usr/bin/env python3
"""Cost of the Prometheus exporters: CPU per data point into the scrape endpoint, scrape latency
and RSS with --series live series, and CPU per data point through remote write (to a local
sink that answers 200). Sluice is pinned to --host-core; the sender and the sink run on the other
cores, off Sluice's.

  python3 bench/prometheus.py --series 100000 --rounds 3 --runs 3

With --baseline <another build>, that build is measured too, run for run alternating with this one:
this machine's speed drifts by a fifth or more within minutes, so a ratio of the two builds taken
in one run is steadier than either build's µs. With --per-round, each round's cost and page faults
too: the first round creates the series, the later ones update them.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from run import REPO, cpu_seconds, free_port, peak_rss_kib, stat_fields, wait_port


def request(first, count, value):
    points = [NumberDataPoint(as_double=value, time_unix_nano=time.time_ns(),
                              attributes=[KeyValue(key="series", value=AnyValue(string_value=str(i))),
                                          KeyValue(key="gpu", value=AnyValue(string_value=str(i % 8)))])
              for i in range(first, first + count)]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]),
        scope_metrics=[ScopeMetrics(metrics=[Metric(name="bench.value", unit="By", gauge=Gauge(data_points=points))])])
    ]).SerializeToString()


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            time.sleep(0.01)


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def minor_faults(pid):
    """Page faults the process took that needed no I/O: first touches of fresh memory."""
    return int(stat_fields(pid)[7])


def measure(exporter, binary, config, ports, bodies, args):
    """Runs the host `binary` with `exporter` alone, sends every body and returns µs CPU per data
    point, and what else this exporter reports."""
    http_port, scrape_port = ports
    text = config.read_text()
    other = "remote" if exporter == "scrape" else "scrape"
    config.write_text(text.replace(f'exporters = ["{other}"]', f'exporters = ["{exporter}"]'))
    host = subprocess.Popen(["taskset", "-c", str(args.host_core), binary, "run",
                             "--config", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_port(http_port, host)
        cpu = cpu_seconds(host.pid)
        # With --per-round: µs per data point and page faults of each round (the first creates
        # the series, the later ones update them), read after the exporter had time to finish it.
        rounds, mark = [], (cpu, minor_faults(host.pid))
        bodies_per_round = len(bodies) // args.rounds
        for sent, body in enumerate(bodies, 1):
            post(http_port, body)
            if args.per_round and sent % bodies_per_round == 0:
                time.sleep(0.3)
                now = (cpu_seconds(host.pid), minor_faults(host.pid))
                rounds.append(((now[0] - mark[0]) / args.series * 1e6, now[1] - mark[1]))
                mark = now
        time.sleep(1.0)  # let the exporter finish what it was given
        points = args.series * args.rounds
        used = cpu_seconds(host.pid) - cpu
        extra = ""
        if rounds:
            extra = ("; per round " + ", ".join(f"{cost:.3f}" for cost, _ in rounds) + " µs, page faults "
                     + ", ".join(f"{faults:,}" for _, faults in rounds))
        if exporter == "scrape":
            latencies = []
            for _ in range(5):
                started = time.perf_counter()
                body = urllib.request.urlopen(f"http://127.0.0.1:{scrape_port}/metrics", timeout=60).read()
                latencies.append((time.perf_counter() - started) * 1000)
            series = sum(1 for line in body.decode().splitlines() if line.startswith("bench_value_bytes"))
            extra += (f"; scrape of {series:,} series: median {statistics.median(latencies):.0f} ms, "
                     f"{len(body) / 1e6:.1f} MB")
        extra += f"; peak RSS {peak_rss_kib(host.pid) / 1024:.0f} MiB"
        return used / points * 1e6, extra
    finally:
        host.terminate()
        host.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each exporter, alternating (the first host started pays more for "
                             "fresh pages); the medians are reported")
    parser.add_argument("--host-core", type=int, default=0)
    parser.add_argument("--per-round", action="store_true",
                        help="also report each round's cost and page faults (adds 0.3 s of idle per round)")
    parser.add_argument("--sluice", default=str(REPO / "target/release/sluice"), help="the host binary")
    parser.add_argument("--baseline", default=None,
                        help="another build, measured alternately with --sluice; ratios are reported")
    args = parser.parse_args()
    others = set(range(os.cpu_count() or 1)) - {args.host_core}
    if others:
        os.sched_setaffinity(0, others)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as workdir:
        http_port, scrape_port, admin = free_port(), free_port(), free_port()
        config = Path(workdir) / "sluice.toml"
        config.write_text(f"""
[service]
admin_address = "127.0.0.1:{admin}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
grpc = {{ enabled = false }}
http = {{ address = "127.0.0.1:{http_port}", max_body_size = "64MiB" }}
[exporters.scrape]
type = "prometheus"
address = "127.0.0.1:{scrape_port}"
[exporters.remote]
type = "prometheus_remote_write"
endpoint = "http://127.0.0.1:{sink.server_address[1]}/api/v1/write"
[pipelines.scrape]
signals = ["metrics"]
receivers = ["otlp"]
exporters = ["scrape"]
""")
        bodies = [request(first, 5000, float(r)) for r in range(args.rounds) for first in range(0, args.series, 5000)]
        builds = {"sluice": args.sluice, **({"baseline": args.baseline} if args.baseline else {})}
        costs = {(exporter, build): [] for exporter in ("scrape", "remote") for build in builds}
        points = args.series * args.rounds
        for _ in range(args.runs):
            for exporter, build in costs:
                cost, extra = measure(exporter, builds[build], config, (http_port, scrape_port), bodies, args)
                costs[exporter, build].append(cost)
                print(f"{exporter} ({build}): {points:,} data points, {cost:.3f} µs CPU per data point{extra}",
                      flush=True)
        for (exporter, build), runs in costs.items():
            listed = ", ".join(f"{c:.3f}" for c in runs)
            # A neighbour's load only adds to a run's CPU: the fastest run is the least disturbed.
            name = exporter if build == "sluice" else f"{exporter} {build}"
            print(f"{name} median: {statistics.median(runs):.3f} µs CPU per data point ({listed}); "
                  f"fastest {min(runs):.3f}")
        if args.baseline:
            for exporter in ("scrape", "remote"):
                ratios = [ours / theirs for ours, theirs in zip(costs[exporter, "sluice"], costs[exporter, "baseline"])]
                listed = ", ".join(f"{r:.3f}" for r in ratios)
                print(f"{exporter} ratio median: {statistics.median(ratios):.3f} of the baseline's CPU per data "
                      f"point, run by run ({listed})")
    sink.shutdown()


if __name__ == "__main__":
    main()
