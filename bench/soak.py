#!/usr/bin/env python3
"""Soak: a host under steady load for a long time, with everything that goes wrong in production
going wrong on a schedule, checked for flat lines and for losing nothing.

- load: --senders threads post OTLP/HTTP traces (50 spans a request, each request tagged with a
  unique `request.id`) at --rate requests per second in all;
- a reload every 10 s: the config is rewritten with another value for a `set-attributes` rule, so
  its pipeline is rebuilt under load;
- a destination that flaps: the OTLP/HTTP destination answers 503 for 15 s of every 60 s;
- a plugin that faults now and then: every 25th request carries a span named `trap`, on which
  the `fixture-trap` plugin traps (`on_error = "pass"`: the batch goes on, the fault is counted).

Every 10 s it records the host's resident size, open files, threads, queued batches, pending
items, reloads and faults, and the spans acknowledged to the senders against the spans the
destination received. At the end the load stops, the destination stays up, and the script waits
until every acknowledged span has arrived. Results: bench/results/soak-<timestamp>.json and a
PNG plot beside it (--plot to choose where).

  python3 bench/soak.py --minutes 30 --plot docs/soak.png
"""

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from run import PLUGINS, REPO, free_port, wait_port

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from otlp_payloads import kv, traces  # noqa: E402 (found through the path set just above)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

CONFIG = """
[service]
admin_address = "127.0.0.1:{admin}"
log_level = "warn"

[receivers.otlp]
type = "otlp"
grpc = {{ enabled = false }}
http = {{ address = "127.0.0.1:{http}" }}

[exporters.vendor]
type = "otlp"
protocol = "http/protobuf"
endpoint = "http://127.0.0.1:{sink}"
retry = {{ max_elapsed = "10m" }}

[pipelines.all]
signals = ["traces"]
receivers = ["otlp"]
exporters = ["vendor"]

[[pipelines.all.processors]]
plugin = "{plugins}/fixture-trap.wasm"
on_error = "pass"

[[pipelines.all.processors]]
plugin = "{plugins}/set-attributes.wasm"
config = {{ resource = [{{ key = "soak.generation", value = "{generation}" }}] }}
"""

SPANS_PER_REQUEST = 50


class Sink:
    """The destination: records which requests arrived (by `request.id`) and how many spans,
    answering 503 while `down` is set."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = {}
        self.duplicates = 0
        self.down = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if sink.down.is_set():
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.record(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, request):
        with self.lock:
            for rs in request.resource_spans:
                ids = [a.value.string_value for a in rs.resource.attributes if a.key == "request.id"]
                spans = sum(len(ss.spans) for ss in rs.scope_spans)
                for request_id in ids:
                    if request_id in self.spans:
                        self.duplicates += spans
                    self.spans[request_id] = self.spans.get(request_id, 0) + spans

    def received(self):
        with self.lock:
            return dict(self.spans)


def proc(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def scrape(admin, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=40, help="requests per second, all senders together")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--sluice", default=str(REPO / "target" / "release" / "sluice"))
    parser.add_argument("--plot", default=None, help="where to write the PNG (default: beside the JSON)")
    args = parser.parse_args()

    sink = Sink()
    tmp = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    ports = {"admin": free_port(), "http": free_port(), "sink": sink.port}
    config = tmp / "soak.toml"

    def write_config(generation):
        staged = config.with_suffix(".new")
        staged.write_text(CONFIG.format(plugins=PLUGINS, generation=generation, **ports))
        staged.replace(config)

    write_config(0)
    log = open(tmp / "sluice.log", "wb")
    host = subprocess.Popen([args.sluice, "run", "--config", str(config)], stdout=log, stderr=log)
    wait_port(ports["http"], host)

    stop = threading.Event()
    lock = threading.Lock()
    acknowledged = {}
    refused = {"count": 0}
    template = traces(SPANS_PER_REQUEST, attrs={"http.route": "/api/items", "tenant": "soak"})

    def send(sender):
        interval = args.senders / args.rate
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            request_id = f"{sender}-{n}"
            request = ExportTraceServiceRequest()
            request.CopyFrom(template)
            resource = request.resource_spans[0].resource
            del resource.attributes[:]
            resource.attributes.extend([kv("service.name", "soak"), kv("request.id", request_id)])
            if n % 25 == 0:
                request.resource_spans[0].scope_spans[0].spans[0].name = "trap"
            post = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v1/traces",
                                          data=request.SerializeToString(), method="POST",
                                          headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(post, timeout=10) as answer:
                    if answer.status == 200:
                        with lock:
                            acknowledged[request_id] = SPANS_PER_REQUEST
            except (urllib.error.HTTPError, OSError):
                with lock:
                    refused["count"] += 1
            n += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def reload_and_flap():
        started = time.monotonic()
        generation = 0
        while not stop.wait(10):
            generation += 1
            write_config(generation)
            # 15 s of 503s in every 60 s.
            if int(time.monotonic() - started) % 60 < 15:
                sink.down.set()
            else:
                sink.down.clear()
        sink.down.clear()

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in range(args.senders)]
    threads.append(threading.Thread(target=reload_and_flap, daemon=True))
    for thread in threads:
        thread.start()

    samples = []
    started = time.monotonic()

    def sample():
        with lock:
            acked = sum(acknowledged.values())
        samples.append({
            "t": round(time.monotonic() - started, 1),
            "rss_mib": round(proc(host.pid, "VmRSS") / 1024, 1),
            "open_files": len(list(Path(f"/proc/{host.pid}/fd").iterdir())),
            "threads": proc(host.pid, "Threads"),
            "queued_batches": scrape(ports["admin"], "sluice_queue_depth"),
            "pending_items": scrape(ports["admin"], "sluice_pending_items"),
            "acknowledged": acked,
            "delivered": sum(sink.received().values()) - sink.duplicates,
            "reloads": scrape(ports["admin"], 'sluice_reload_total{result="success"}'),
            "faults": scrape(ports["admin"], "sluice_plugin_faults_total"),
            "sink_down": sink.down.is_set(),
        })
        print(json.dumps(samples[-1]), flush=True)

    deadline = started + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(10, max(0.0, deadline - time.monotonic())))
        sample()
    stop.set()
    for thread in threads:
        thread.join(15)
    sink.down.clear()
    # Everything acknowledged must arrive.
    drain_deadline = time.monotonic() + 180
    while time.monotonic() < drain_deadline:
        received = sink.received()
        missing = [r for r in acknowledged if r not in received]
        if not missing:
            break
        time.sleep(1)
    sample()
    host.terminate()
    host.wait(60)
    received = sink.received()
    missing = [r for r in acknowledged if r not in received]
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "requests_acknowledged": len(acknowledged),
        "spans_acknowledged": sum(acknowledged.values()),
        "requests_refused_or_failed": refused["count"],
        "requests_missing": len(missing),
        "spans_duplicated": sink.duplicates,
        "rss_mib_first_last_max": [samples[0]["rss_mib"], samples[-1]["rss_mib"], max(s["rss_mib"] for s in samples)],
        "open_files_first_last_max": [samples[0]["open_files"], samples[-1]["open_files"],
                                      max(s["open_files"] for s in samples)],
        "threads_first_last_max": [samples[0]["threads"], samples[-1]["threads"], max(s["threads"] for s in samples)],
        "reloads": samples[-1]["reloads"],
        "plugin_faults": samples[-1]["faults"],
        "exit_code": host.returncode,
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = results / f"soak-{stamp}.json"
    out.write_text(json.dumps({"summary": summary, "samples": samples, "command": sys.argv}, indent=1))
    plot(samples, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    print(f"results: {out}")
    sys.exit(0 if not missing and host.returncode == 0 else 1)


def plot(samples, path):
    """Four panels against minutes: resident size; open files and threads; queued batches and
    pending items; acknowledged and delivered spans."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    minutes = [s["t"] / 60 for s in samples]
    figure, panels = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    panels[0].plot(minutes, [s["rss_mib"] for s in samples])
    panels[0].set_ylabel("resident MiB")
    panels[0].set_ylim(bottom=0)
    panels[1].plot(minutes, [s["open_files"] for s in samples], label="open files")
    panels[1].plot(minutes, [s["threads"] for s in samples], label="threads")
    panels[1].set_ylim(bottom=0)
    panels[1].legend()
    panels[2].plot(minutes, [s["queued_batches"] for s in samples], label="queued batches")
    panels[2].plot(minutes, [s["pending_items"] / SPANS_PER_REQUEST for s in samples],
                   label=f"pending items / {SPANS_PER_REQUEST}")
    panels[2].legend()
    panels[3].plot(minutes, [s["acknowledged"] for s in samples], label="spans acknowledged")
    panels[3].plot(minutes, [s["delivered"] for s in samples], label="spans delivered", linestyle="--")
    panels[3].legend()
    panels[3].set_xlabel("minutes")
    for panel in panels:
        for s in samples:
            if s["sink_down"]:
                panel.axvline(s["t"] / 60, color="red", alpha=0.08)
    figure.suptitle("Sluice soak: load, a reload every 10 s, a destination down 15 s a minute, plugin faults")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
