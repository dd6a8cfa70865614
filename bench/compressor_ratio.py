#!/usr/bin/env python3
"""A forward's whole cost per span against the compressor's alone, measured in alternation.

Issue 15 asks a forward to cost at most 1.3x what compressing its bytes costs. The two are
measured by different tools (the forward by `bench/run.py`, the compressor by the
`compress_cost` example on the load generator's own batches), and this machine's speed drifts
by a fifth within an hour, so a ratio of numbers taken at different times says little. This
script takes them in pairs, one right after the other, and reports each pair's ratio and their
median:

  compressor  ns per span for the host's gzip (ISA-L where built with it) on 100-span requests
  forward     ns of host CPU per span forwarded (1e9 / spans per CPU-second), per connection count

  make release && python3 bench/compressor_ratio.py --pairs 5 --client-gzip --fast-sink

Arguments after the known ones go to `bench/run.py` unchanged.
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys

from run import REPO, run_and_read


def compressor_ns():
    """The host compressor's ns per span, from one `compress_cost host` run, built with ISA-L
    where `make release` builds the host with it (nasm and autotools found)."""
    features = ["--features", "isal"] if all(map(shutil.which, ["nasm", "autoreconf", "libtoolize"])) else []
    out = subprocess.run(["cargo", "run", "-q", "--release", "-p", "sluice-host", *features,
                          "--example", "compress_cost", "host"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"host: .*?(\d+) ns per span", out).group(1))


def forward_runs(connections, extra):
    """One `bench/run.py` run of Sluice's plain forward; its results and their file's name."""
    return run_and_read(["--runs", "1", "--hosts", "sluice", "--scenarios", "forward/grpc",
                         "--connections", connections, *extra])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--connections", default="16,64")
    args, extra = parser.parse_known_args()
    ratios = {}
    print("| pair | compressor ns/span | connections | forward ns/span | ratio | results |")
    print("|---:|---:|---:|---:|---:|---|")
    for pair in range(1, args.pairs + 1):
        floor = compressor_ns()
        results, name = forward_runs(args.connections, extra)
        for result in results:
            forward = 1e9 / result["spans_per_cpu_second"]
            ratio = forward / floor
            ratios.setdefault(result["connections"], []).append(ratio)
            print(f"| {pair} | {floor:.0f} | {result['connections']} | {forward:.0f} | {ratio:.2f}x | {name} |",
                  flush=True)
    print()
    for connections, values in sorted(ratios.items()):
        print(f"{connections} connections: median {statistics.median(values):.2f}x "
              f"(range {min(values):.2f}-{max(values):.2f}x over {len(values)} pairs)")


if __name__ == "__main__":
    main()
