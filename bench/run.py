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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


def cpu_seconds(pid):
    """utime + stime of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
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
}
# The forward mode's noise rule as shipped: seven span-name patterns and an attribute rule.
PROCESSORS["graphistry-noise"] = f"""
[[pipelines.all.processors]]
plugin = "{PLUGINS}/drop-spans.wasm"
config_file = "{REPO}/pipelines/graphistry-noise.rules.toml"
"""
PROCESSORS["chain3"] = PROCESSORS["drop-spans"] + PROCESSORS["set-attributes"] + PROCESSORS["route-by-attribute"]


def sluice_command(exporter, grpc_port, http_port, workdir, sink=None, binary=None):
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
        "file": f'[exporters.out]\ntype = "file"\ndirectory = "{workdir}/data"\nmax_file_size = "256MiB"\nmax_files = 1\n',
    }[exporter]
    if disk:
        exporters += f'queue = {{ type = "disk", directory = "{workdir}/queue", max_size = "4GiB", sync = "{sync}" }}\n'
    config = Path(workdir) / "sluice.toml"
    config.write_text(f"""
[service]
admin_address = "127.0.0.1:{free_port()}"
log_level = "warn"
[receivers.otlp]
type = "otlp"
grpc = {{ address = "127.0.0.1:{grpc_port}" }}
http = {{ address = "127.0.0.1:{http_port}" }}
{exporters}
[pipelines.all]
receivers = ["otlp"]
exporters = ["out"]
{processors}""")
    return [str(binary or REPO / "target" / "release" / "sluice"), "run", "--config", str(config)]


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
    return None  # the published rotel-agent has no file exporter and no Wasm plugins


HOSTS = {"sluice": sluice_command, "rotel": rotel_command}


def one_run(host, exporter, protocol, args):
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
        elif exporter.startswith("forward"):
            # The destination: a Sluice receiving into discard, on the load generator's core.
            sink, sink_http = free_port(), free_port()
            sink_dir = Path(workdir) / "sink"
            sink_dir.mkdir()
            sink_command = sluice_command("discard", sink, sink_http, sink_dir)
            sink_process = subprocess.Popen(["taskset", "-c", str(args.load_core), *sink_command],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(sink, sink_process)
        command = HOSTS[host](exporter, grpc_port, http_port, workdir, sink)
        if command is None:
            if sink_process:
                sink_process.terminate()
            return None
        process = subprocess.Popen(["taskset", "-c", str(args.host_core), *command],
                                   stdout=subprocess.DEVNULL, stderr=open(f"{workdir}/host.err", "wb"))
        try:
            port = grpc_port if protocol == "grpc" else http_port
            wait_port(port, process, timeout=60)
            loadgen = subprocess.Popen(
                ["taskset", "-c", str(args.load_core), str(REPO / "target" / "release" / "sluice-loadgen"),
                 "--protocol", protocol, "--endpoint", f"http://127.0.0.1:{port}",
                 "--connections", str(args.connections), "--batch", str(args.batch),
                 "--attributes", str(args.attributes), "--duration", str(args.duration),
                 "--warmup", str(args.warmup)],
                stdout=subprocess.PIPE, text=True)
            time.sleep(args.warmup)
            cpu_start = cpu_seconds(process.pid)
            time.sleep(args.duration)
            cpu_used = cpu_seconds(process.pid) - cpu_start
            out, _ = loadgen.communicate(timeout=args.duration + 60)
            report = json.loads(out)
            report.update(host=host, exporter=exporter, cpu_seconds=cpu_used,
                          spans_per_cpu_second=report["spans"] / cpu_used if cpu_used else None,
                          peak_rss_kib=peak_rss_kib(process.pid))
            return report
        finally:
            process.terminate()
            process.wait(timeout=30)
            if sink_process:
                sink_process.terminate()
                sink_process.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--attributes", type=int, default=10)
    parser.add_argument("--host-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--scenarios", default="discard/grpc,discard/http,file/grpc,file/http",
                        help="exporter/protocol pairs; the exporter may also be a plugin scenario: "
                             + ", ".join(PROCESSORS) + " (each runs into discard), `forward` (OTLP gRPC out "
                             "to a sink Sluice on the load core), forward-<plugin scenario>, or `webhook` / "
                             "`otlp-json` (the export-webhook plugin / the OTLP http/json exporter to an HTTP sink); "
                             "a `-disk` suffix gives Sluice's exporter a disk queue (discard-disk, forward-disk), "
                             "`-disk-periodic` one with sync = \"periodic\"")
    parser.add_argument("--hosts", default="sluice,rotel")
    parser.add_argument("--baseline", default=None,
                        help="another Sluice binary (an older build, say), run as host `baseline` with the same "
                             "configs beside the others, alternating run by run")
    args = parser.parse_args()
    if args.baseline:
        HOSTS["baseline"] = lambda *a: sluice_command(*a, binary=args.baseline)
        if "baseline" not in args.hosts.split(","):
            args.hosts += ",baseline"

    results = []
    for scenario in args.scenarios.split(","):
        exporter, protocol = scenario.split("/")
        for run in range(args.runs):
            for host in args.hosts.split(","):
                report = one_run(host, exporter, protocol, args)
                if report is None:
                    continue
                report["run"] = run
                results.append(report)
                print(f"{host:7} {exporter:8} {protocol:5} run {run}: {report['spans_per_second']:>12,.0f} spans/s "
                      f"{report['spans_per_cpu_second'] or 0:>12,.0f} spans/cpu-s  rss {report['peak_rss_kib']:>7} KiB "
                      f"p50 {report['p50_ms']:.2f} ms p99 {report['p99_ms']:.2f} ms errors {report['errors']}",
                      file=sys.stderr, flush=True)

    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"{stamp}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))

    print("| scenario | host | spans/s (median) | spans per CPU-second (median) | peak RSS MiB (median) | p50 ms | p99 ms | runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    groups = {}
    for r in results:
        groups.setdefault((r["exporter"], r["protocol"], r["host"]), []).append(r)
    for (exporter, protocol, host), runs in groups.items():
        med = lambda key: statistics.median(r[key] for r in runs)
        print(f"| {exporter} / {protocol} | {host} | {med('spans_per_second'):,.0f} | "
              f"{med('spans_per_cpu_second'):,.0f} | {med('peak_rss_kib') / 1024:.1f} | "
              f"{med('p50_ms'):.2f} | {med('p99_ms'):.2f} | {len(runs)} |")


if __name__ == "__main__":
    main()
