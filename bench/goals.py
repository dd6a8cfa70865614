#!/usr/bin/env python3
"""Every path's cost against its speed goal, in one table from one command.

Runs the measurements that docs/BENCHMARKS.md quotes for each path's limit, one after another,
each with its peer in the same run (this machine's speed drifts by a fifth within an hour, so a
ratio of numbers taken apart says little), and prints one Markdown table of goal, measure and
verdict:

  forward         plain OTLP/gRPC forward, spans per CPU-second against rotel-agent's (≥ 8×)
  compressor      the forward's whole cost per span against the host's gzip alone (≤ 1.3×)
  forward.toml    the shipped pipelines/forward.toml against rotel-agent's plain forward (≥ 4×)
  file, http/json against an older build that decoded into owned messages (≥ 3×; needs --baseline)
  remote write    µs of host CPU per data point (≤ 1), the scrape endpoint's (≤ 0.4); with --baseline,
                  that build's in the same runs beside them
  p99, peak RSS   at 64 connections, at or below rotel-agent's wherever it takes part

  make release && python3 bench/goals.py --baseline <a build of 07ec35d>

Clients gzip their requests (as the OpenTelemetry SDKs do by default) unless --plain-clients.
The runs go to bench/results/ as usual; the table also goes to bench/results/goals-<time>.md.
"""

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import time

from compressor_ratio import compressor_ns, forward_runs
from run import REPO, medians, run_and_read

BENCH = REPO / "bench"


def run_bench(arguments, sources):
    """One `bench/run.py` invocation; its per-run results. Their file's name goes to `sources`."""
    results, name = run_and_read(arguments)
    sources.append(name)
    return results


def prometheus_costs(runs, baseline):
    """µs of host CPU per data point for the scrape and remote-write exporters (medians), keyed
    `scrape`, `remote` and, with a `baseline` build measured alternately, `scrape baseline`,
    `remote baseline`."""
    # prometheus.py builds its requests with the OpenTelemetry protobufs `make venv` installs.
    venv = REPO / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    out = subprocess.run([python, str(BENCH / "prometheus.py"), "--series", "100000", "--rounds", "3",
                          "--runs", str(runs), *(["--baseline", baseline] if baseline else [])],
                         cwd=BENCH, capture_output=True, text=True, check=True).stdout
    return {name: float(value) for name, value in re.findall(r"^(\w+(?: baseline)?) median: ([\d.]+) µs", out, re.M)}


class Table:
    """The rows of the goals table, and whether each goal holds."""

    def __init__(self):
        self.lines = ["| goal | measure | Sluice | reference | result | met |", "|---|---|---:|---:|---:|---|"]

    def row(self, goal, measure, ours, reference, result, met):
        self.lines.append(f"| {goal} | {measure} | {ours} | {reference} | {result} | {'yes' if met else '**no**'} |")

    def ratio(self, goal, measure, ours, reference, at_least):
        """A row comparing two spans-per-CPU-second figures, met when ours ≥ `at_least` × reference."""
        ratio = ours / reference
        self.row(goal, measure, f"{ours:,.0f}", f"{reference:,.0f}", f"{ratio:.2f}×", ratio >= at_least)

    def __str__(self):
        return "\n".join(self.lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per bench/run.py row (medians)")
    parser.add_argument("--pairs", type=int, default=5, help="compressor/forward pairs (median)")
    parser.add_argument("--duration", default="6")
    parser.add_argument("--warmup", default="2")
    parser.add_argument("--baseline", default=None,
                        help="a Sluice build that decoded into owned messages (07ec35d), for the file and "
                             "http/json rows; without it those rows are left out")
    parser.add_argument("--plain-clients", action="store_true",
                        help="the load generator sends uncompressed requests (the forward then compresses)")
    args = parser.parse_args()
    common = ["--duration", args.duration, "--warmup", args.warmup, "--fast-sink",
              *([] if args.plain_clients else ["--client-gzip"])]
    clients = "plain clients" if args.plain_clients else "gzip clients"
    table = Table()
    sources = []

    forward = medians(run_bench(["--runs", str(args.runs), "--connections", "16,64", "--hosts", "sluice,rotel",
                                 "--scenarios", "forward/grpc,forward.toml/grpc", *common], sources))
    for connections in (16, 64):
        rotel = forward[("forward", "grpc", connections, "rotel")]
        table.ratio("forward ≥ 8× rotel-agent", f"spans per CPU-s, {connections} conns, {clients}",
                    forward[("forward", "grpc", connections, "sluice")]["spans_per_cpu_second"],
                    rotel["spans_per_cpu_second"], 8)
        table.ratio("forward.toml ≥ 4× rotel-agent's forward", f"spans per CPU-s, {connections} conns, {clients}",
                    forward[("forward.toml", "grpc", connections, "sluice")]["spans_per_cpu_second"],
                    rotel["spans_per_cpu_second"], 4)

    pairs = {16: [], 64: []}
    for _ in range(args.pairs):
        floor = compressor_ns()
        results, name = forward_runs("16,64", common)
        sources.append(name)
        for result in results:
            pairs[result["connections"]].append((1e9 / result["spans_per_cpu_second"], floor))
    for connections, measured in pairs.items():
        ratios = [forward / floor for forward, floor in measured]
        ratio = statistics.median(ratios)
        table.row("forward ≤ 1.3× the compressor alone",
                  f"ns per span, {connections} conns, {clients}, median of {len(ratios)} pairs",
                  f"{statistics.median(forward for forward, _ in measured):,.0f} ns",
                  f"{statistics.median(floor for _, floor in measured):,.0f} ns",
                  f"{ratio:.2f}× (pairs {min(ratios):.2f}–{max(ratios):.2f})", ratio <= 1.3)

    if args.baseline:
        json_paths = medians(run_bench(["--runs", str(args.runs), "--connections", "16", "--hosts", "sluice",
                                        "--scenarios", "file/grpc,otlp-json/grpc", "--baseline", args.baseline,
                                        "--duration", args.duration, "--warmup", args.warmup], sources))
        for scenario, name in (("file", "file exporter"), ("otlp-json", "OTLP http/json")):
            table.ratio(f"{name} ≥ 3× owned decoding", "spans per CPU-s, 16 conns, against --baseline",
                        json_paths[(scenario, "grpc", 16, "sluice")]["spans_per_cpu_second"],
                        json_paths[(scenario, "grpc", 16, "baseline")]["spans_per_cpu_second"], 3)

    # Five runs: a stretch of this machine running slow can take two of them, not the median.
    prometheus_runs = 5
    costs = prometheus_costs(prometheus_runs, args.baseline)
    for name, measure, goal in (("remote", "remote write", 1.0), ("scrape", "scrape endpoint", 0.4)):
        ours, theirs = costs[name], costs.get(f"{name} baseline")
        # The baseline's own cost, measured alternately, shows how far the path came; the goal is
        # the absolute figure.
        reference, result = (f"{theirs:.3f} µs (--baseline)", f"{ours / theirs:.2f}×") if theirs else ("", "")
        table.row(f"{measure} ≤ {goal} µs per data point",
                  f"µs of host CPU, 100,000 series × 3 rounds, median of {prometheus_runs}",
                  f"{ours:.3f} µs", reference, result, ours <= goal)

    for scenario in ("forward", "forward.toml"):
        ours, rotel = forward[(scenario, "grpc", 64, "sluice")], forward[("forward", "grpc", 64, "rotel")]
        table.row(f"{scenario}: p99 ≤ rotel-agent's", f"64 conns, {clients}", f"{ours['p99_ms']:.2f} ms",
                  f"{rotel['p99_ms']:.2f} ms", "", ours["p99_ms"] <= rotel["p99_ms"])
        for connections in (16, 64):
            ours = forward[(scenario, "grpc", connections, "sluice")]
            rotel = forward[("forward", "grpc", connections, "rotel")]
            table.row(f"{scenario}: peak RSS ≤ rotel-agent's", f"{connections} conns, {clients}",
                      f"{ours['peak_rss_kib'] / 1024:.1f} MiB", f"{rotel['peak_rss_kib'] / 1024:.1f} MiB", "",
                      ours["peak_rss_kib"] <= rotel["peak_rss_kib"])

    command = shlex.join(["python3", "bench/goals.py", *sys.argv[1:]])
    report = f"`{command}`\n\n{table}\n\nRuns: {', '.join(f'bench/results/{name}' for name in sources)}\n"
    print(report)
    (BENCH / "results" / f"goals-{time.strftime('%Y%m%dT%H%M%S')}.md").write_text(report)


if __name__ == "__main__":
    main()
