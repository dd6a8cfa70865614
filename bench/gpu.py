#!/usr/bin/env python3
"""GPU sampling: its CPU cost, and a check of the real NVML path against nvidia-smi.

  python3 bench/gpu.py cost --gpus 8 --seconds 60 --runs 3   # scripted backend, any machine
  python3 bench/gpu.py check --seconds 20                    # a machine with an NVIDIA GPU

`cost` runs Sluice pinned to one core with a GPU receiver sampling every GPU once a second
(naming = "both", per-process metrics on) into a Prometheus scrape endpoint, and reports the
host's CPU time over the window as a share of one core. `check` does the same with
kind = "nvml", then compares Sluice's scrape with `nvidia-smi --query-gpu` read right after it.
"""

import argparse
import csv
import io
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from run import REPO, cpu_seconds, free_port, peak_rss_kib, wait_port

READINGS = ("gpu_utilization_percent = {u}, memory_copy_utilization_percent = 20, encoder_utilization_percent = 0, "
            "decoder_utilization_percent = 0, memory_used_bytes = {used}, memory_free_bytes = {free}, "
            "memory_total_bytes = 85899345920, gpu_temperature_celsius = 55, memory_temperature_celsius = 60, "
            "power_watts = 300.5, energy_millijoules = 123456789, sm_clock_mhz = 1980, memory_clock_mhz = 2619, "
            "pcie_tx_bytes_per_second = 1048576, pcie_rx_bytes_per_second = 2097152, pcie_replays = 0, xid_errors = 0, "
            "last_xid = 0, ecc_corrected = 0, ecc_uncorrected = 0, remapped_rows_correctable = 0, "
            "remapped_rows_uncorrectable = 0, row_remap_pending = false, row_remap_failure = false, "
            "nvlink_tx_bytes = 1000000, nvlink_rx_bytes = 1000000, throttle_reasons = 0")


def script(gpus):
    lines = ['driver_version = "550.54.15"', "[[samples]]"]
    for i in range(gpus):
        used = (10 + i) << 30
        lines += ["[[samples.devices]]", f"index = {i}", f'uuid = "GPU-{i:08x}-0000-0000-0000-000000000000"',
                  'model = "NVIDIA H100 80GB HBM3"', f'pci_bus_id = "00000000:{i + 1:02x}:00.0"', f"minor_number = {i}",
                  "readings = { " + READINGS.format(u=50 + i, used=used, free=(80 << 30) - used) + " }",
                  'processes = [{ pid = 1000, name = "python", memory_used_bytes = 1073741824, sm_utilization_percent = 30 },'
                  ' { pid = 1001, name = "triton", memory_used_bytes = 2147483648, sm_utilization_percent = 20 }]']
    return "\n".join(lines) + "\n"


def config(admin, scrape, source):
    return f"""
[service]
admin_address = "127.0.0.1:{admin}"
log_level = "warn"
[receivers.gpu]
type = "gpu"
{source}
interval = "1s"
naming = "both"
processes = true
[exporters.scrape]
type = "prometheus"
address = "127.0.0.1:{scrape}"
[pipelines.gpu]
receivers = ["gpu"]
exporters = ["scrape"]
"""


def start(workdir, source, core):
    admin, scrape = free_port(), free_port()
    path = Path(workdir) / "sluice.toml"
    path.write_text(config(admin, scrape, source))
    host = subprocess.Popen(["taskset", "-c", str(core), str(REPO / "target/release/sluice"), "run",
                             "--config", str(path)], stderr=subprocess.DEVNULL)
    wait_port(scrape, host)
    return host, admin, scrape


def host_metric(admin, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def measure(host, admin, seconds):
    time.sleep(2)  # past the first samples and the scrape endpoint's start
    cpu, samples = cpu_seconds(host.pid), host_metric(admin, "sluice_gpu_sample_duration_seconds_count")
    time.sleep(seconds)
    used = cpu_seconds(host.pid) - cpu
    taken = host_metric(admin, "sluice_gpu_sample_duration_seconds_count") - samples
    return used / seconds * 100, taken


def cost(args):
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "gpus.toml").write_text(script(args.gpus))
        shares = []
        for run in range(args.runs):
            host, admin, _ = start(workdir, 'kind = "scripted"\nscript = "gpus.toml"', args.host_core)
            try:
                share, taken = measure(host, admin, args.seconds)
                shares.append(share)
                print(f"run {run + 1}: {share:.3f}% of one core over {args.seconds} s, {taken:.0f} samples, "
                      f"peak RSS {peak_rss_kib(host.pid) / 1024:.0f} MiB")
            finally:
                host.terminate()
                host.wait(timeout=30)
        print(f"median: {statistics.median(shares):.3f}% of one core sampling {args.gpus} scripted GPUs once a second")


SMI_FIELDS = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,clocks.sm,clocks.mem"
# nvidia-smi field → (Sluice series, scale to nvidia-smi's unit, tolerance: absolute, or relative when < 1)
COMPARED = {
    "utilization.gpu": ("DCGM_FI_DEV_GPU_UTIL", 1, 15),
    "memory.used": ("DCGM_FI_DEV_FB_USED", 1, 0.05),
    "memory.total": ("DCGM_FI_DEV_FB_TOTAL", 1, 0),
    "temperature.gpu": ("DCGM_FI_DEV_GPU_TEMP", 1, 3),
    "power.draw": ("DCGM_FI_DEV_POWER_USAGE", 1, 0.15),
    "clocks.sm": ("DCGM_FI_DEV_SM_CLOCK", 1, 0.15),
    "clocks.mem": ("DCGM_FI_DEV_MEM_CLOCK", 1, 0.15),
}


def scrape_by_uuid(scrape):
    body = urllib.request.urlopen(f"http://127.0.0.1:{scrape}/metrics", timeout=10).read().decode()
    values = {}
    for line in body.splitlines():
        if not line.startswith("DCGM_") or "GPU_I_ID" in line:
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        uuid = labels.split('UUID="', 1)[1].split('"', 1)[0]
        model = labels.split('modelName="', 1)[1].split('"', 1)[0]
        values.setdefault(uuid, {"model": model})[name] = float(value)
    return values


def check(args):
    with tempfile.TemporaryDirectory() as workdir:
        host, admin, scrape = start(workdir, 'kind = "nvml"', args.host_core)
        failures = 0
        try:
            share, taken = measure(host, admin, args.seconds)
            ours = scrape_by_uuid(scrape)
            smi = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, check=True).stdout
            print(f"sluice_gpu_devices = {host_metric(admin, 'sluice_gpu_devices'):.0f}; "
                  f"{share:.3f}% of one core sampling once a second ({taken:.0f} samples in {args.seconds} s)")
            for row in csv.reader(io.StringIO(smi), skipinitialspace=True):
                record = dict(zip(SMI_FIELDS.split(","), row))
                mine = ours.get(record["uuid"])
                print(f"\nGPU {record['index']} {record['uuid']} ({record['name']})")
                if mine is None:
                    print("  MISSING from Sluice's scrape")
                    failures += 1
                    continue
                if mine["model"] != record["name"]:
                    print(f"  model differs: sluice {mine['model']!r}")
                    failures += 1
                print(f"  {'field':<18} {'nvidia-smi':>12} {'sluice':>12} {'diff':>9}")
                for field, (series, scale, tolerance) in COMPARED.items():
                    theirs = record[field]
                    value = mine.get(series)
                    if value is None or theirs in ("[N/A]", "[Not Supported]"):
                        print(f"  {field:<18} {theirs:>12} {'—' if value is None else f'{value:.1f}':>12}")
                        continue
                    theirs, value = float(theirs), value * scale
                    diff = value - theirs
                    allowed = tolerance if tolerance >= 1 or tolerance == 0 else abs(theirs) * tolerance
                    ok = abs(diff) <= max(allowed, 1e-9)
                    failures += not ok
                    print(f"  {field:<18} {theirs:>12.1f} {value:>12.1f} {diff:>+9.1f}{'' if ok else '  OUT OF TOLERANCE'}")
        finally:
            host.terminate()
            host.wait(timeout=30)
        sys.exit(1 if failures else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cost_parser = sub.add_parser("cost", help="CPU cost with the scripted backend")
    cost_parser.add_argument("--gpus", type=int, default=8)
    cost_parser.add_argument("--seconds", type=int, default=60)
    cost_parser.add_argument("--runs", type=int, default=3)
    check_parser = sub.add_parser("check", help="compare the real NVML path with nvidia-smi")
    check_parser.add_argument("--seconds", type=int, default=20)
    for p in (cost_parser, check_parser):
        p.add_argument("--host-core", type=int, default=0)
    args = parser.parse_args()
    cost(args) if args.command == "cost" else check(args)


if __name__ == "__main__":
    main()
