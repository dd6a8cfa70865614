#!/usr/bin/env python3
"""Reload latency and throughput during a reload storm.

1. Latency: the config file is rewritten (a processor's config toggles, so its pipeline is rebuilt
   with a fresh plugin instance) 20 times; each time we measure from the write until
   sluice_reload_total{result="success"} moves — the new pipeline is serving by then.
2. Throughput: sluice-loadgen (gRPC, closed loop) for --duration seconds with no reloads, then
   with the file rewritten every 0.5 s, each pinned as in run.py.

  python3 bench/reload.py --duration 10
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from run import PLUGINS, REPO, free_port, wait_port

CONFIG = """
[service]
admin_address = "127.0.0.1:{admin}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
grpc = {{ address = "127.0.0.1:{grpc}" }}
http = {{ address = "127.0.0.1:{http}" }}
[exporters.out]
type = "discard"
[pipelines.all]
receivers = ["otlp"]
exporters = ["out"]
[[pipelines.all.processors]]
plugin = "{plugins}/drop-spans.wasm"
config = {{ span_names = ["GET /healthz", "{variant}"] }}
"""


def reloads(admin):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith('sluice_reload_total{result="success"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def write(path, ports, variant):
    staged = path.with_suffix(".new")
    staged.write_text(CONFIG.format(plugins=PLUGINS, variant=variant, **ports))
    staged.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--host-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "sluice.toml"
        ports = {"admin": free_port(), "grpc": free_port(), "http": free_port()}
        write(config, ports, "v0")
        host = subprocess.Popen(["taskset", "-c", str(args.host_core), str(REPO / "target/release/sluice"), "run",
                                 "--config", str(config)], stderr=subprocess.DEVNULL)
        try:
            wait_port(ports["grpc"], host, timeout=60)
            latencies = []
            for i in range(1, 21):
                before = reloads(ports["admin"])
                started = time.perf_counter()
                write(config, ports, f"v{i}")
                while reloads(ports["admin"]) == before:
                    time.sleep(0.005)
                latencies.append((time.perf_counter() - started) * 1000)
            print(f"write → serving over 20 reloads: median {statistics.median(latencies):.0f} ms, "
                  f"max {max(latencies):.0f} ms, min {min(latencies):.0f} ms")

            def load():
                out = subprocess.run(["taskset", "-c", str(args.load_core), str(REPO / "target/release/sluice-loadgen"),
                                      "--endpoint", f"http://127.0.0.1:{ports['grpc']}", "--connections", "64",
                                      "--duration", str(args.duration), "--warmup", "1"],
                                     capture_output=True, text=True, check=True).stdout
                return json.loads(out)

            steady = load()
            storm_reloads = reloads(ports["admin"])
            loader = subprocess.Popen(["taskset", "-c", str(args.load_core), str(REPO / "target/release/sluice-loadgen"),
                                       "--endpoint", f"http://127.0.0.1:{ports['grpc']}", "--connections", "64",
                                       "--duration", str(args.duration), "--warmup", "1"],
                                      stdout=subprocess.PIPE, text=True)
            deadline = time.time() + args.duration + 1
            i = 100
            while time.time() < deadline:
                write(config, ports, f"v{i}")
                i += 1
                time.sleep(0.5)
            storm = json.loads(loader.communicate()[0])
            done = reloads(ports["admin"]) - storm_reloads
            print(f"steady: {steady['spans_per_second']:,.0f} spans/s (errors {steady['errors']}); "
                  f"during {done:.0f} reloads: {storm['spans_per_second']:,.0f} spans/s (errors {storm['errors']}); "
                  f"ratio {storm['spans_per_second'] / steady['spans_per_second']:.2f}")
        finally:
            host.terminate()
            host.wait(timeout=30)


if __name__ == "__main__":
    main()
