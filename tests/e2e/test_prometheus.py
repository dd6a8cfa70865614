"""Debian's real Prometheus scrapes Sluice's `prometheus` exporter; the series the Python SDK's
gauge, counter, histogram and a metric with units produce are queried back through its API."""

import json
import subprocess
import urllib.parse

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from conftest import RECEIVER, free_port, http, require_tool, wait_until
from test_sdk import exporters


def query(port, promql):
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    status, _, body = http("GET", url)
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def metrics_host(make_sluice, exporter_toml):
    """A Sluice taking metrics over OTLP into the one exporter `exporter_toml` defines as `out`."""
    return make_sluice(RECEIVER + exporter_toml + """
        [pipelines.metrics]
        signals = ["metrics"]
        receivers = ["otlp"]
        exporters = ["out"]
    """)


def sdk_meter(host):
    """A Python SDK meter exporting to `host` over HTTP when its provider is flushed."""
    resource = Resource.create({"service.name": "gpu-api", "service.instance.id": "node-7"})
    _, metric_exporter, _ = exporters("http", host)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    return provider, provider.get_meter("e2e")


def test_prometheus_scrapes_sdk_metrics(make_sluice, tmp_path):
    scrape_port = free_port()
    host = metrics_host(make_sluice, f"""
        [exporters.out]
        type = "prometheus"
        address = "127.0.0.1:{scrape_port}"
        const_labels = {{{{ deployment = "e2e" }}}}
    """)
    provider, meter = sdk_meter(host)
    meter.create_gauge("gpu.temperature", unit="Cel").set(71.5, {"gpu": "0"})
    counter = meter.create_counter("jobs.done")
    counter.add(5, {"queue": "render"})
    counter.add(2, {"queue": "render"})
    histogram = meter.create_histogram("job.duration", unit="s")
    for value in (0.2, 3.0, 12.0):
        histogram.record(value)
    meter.create_up_down_counter("memory.used", unit="By").add(2048)
    provider.force_flush()

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: sluice
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{scrape_port}"]
""")
    prometheus = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        def scraped():
            try:
                return query(prom_port, "gpu_temperature_celsius")
            except (OSError, AssertionError):
                return []  # Prometheus not up yet
        [gauge] = wait_until(scraped, "Prometheus has scraped the gauge",
                             lambda: (tmp_path / "prometheus.log").read_text()[-2000:], timeout=60, interval=0.5)
        assert gauge["metric"]["job"] == "gpu-api" and gauge["metric"]["instance"] == "node-7"
        assert gauge["metric"]["gpu"] == "0" and gauge["metric"]["deployment"] == "e2e"
        assert float(gauge["value"][1]) == 71.5

        [jobs] = query(prom_port, "jobs_done_total")
        assert jobs["metric"]["queue"] == "render" and float(jobs["value"][1]) == 7

        [count] = query(prom_port, "job_duration_seconds_count")
        assert float(count["value"][1]) == 3
        [total] = query(prom_port, "job_duration_seconds_sum")
        assert float(total["value"][1]) == pytest.approx(15.2)
        buckets = {b["metric"]["le"]: float(b["value"][1]) for b in query(prom_port, "job_duration_seconds_bucket")}
        assert buckets["+Inf"] == 3 and buckets["5"] == 2, buckets

        [memory] = query(prom_port, "memory_used_bytes")
        assert float(memory["value"][1]) == 2048
        [info] = query(prom_port, "target_info")
        assert info["metric"]["job"] == "gpu-api" and "telemetry_sdk_language" in info["metric"]
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        provider.shutdown()
    assert host.stop() == 0


def test_remote_write_into_prometheus(make_sluice, tmp_path):
    prom_port = free_port()
    prometheus = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={write_empty_config(tmp_path)}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
         "--web.enable-remote-write-receiver"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        def ready():
            try:
                return http("GET", f"http://127.0.0.1:{prom_port}/-/ready")[0] == 200
            except OSError:
                return False
        wait_until(ready, "Prometheus is ready", lambda: (tmp_path / "prometheus.log").read_text()[-2000:],
                   timeout=60, interval=0.2)
        host = metrics_host(make_sluice, f"""
            [exporters.out]
            type = "prometheus_remote_write"
            endpoint = "http://127.0.0.1:{prom_port}/api/v1/write"
        """)
        provider, meter = sdk_meter(host)
        meter.create_gauge("gpu.temperature", unit="Cel").set(64.0, {"gpu": "1"})
        meter.create_counter("jobs.done").add(9, {"queue": "render"})
        histogram = meter.create_histogram("job.duration", unit="s")
        for value in (0.2, 3.0):
            histogram.record(value)
        provider.force_flush()
        # Three data points: the gauge's, the counter's and the histogram's.
        assert host.wait_metric("sluice_exporter_sent_items_total", 3, exporter="out") == 3, host.logs()
        [gauge] = wait_until(lambda: query(prom_port, "gpu_temperature_celsius"), "the gauge is queryable",
                             lambda: (tmp_path / "prometheus.log").read_text()[-2000:], timeout=30, interval=0.2)
        assert gauge["metric"]["job"] == "gpu-api" and gauge["metric"]["gpu"] == "1"
        assert float(gauge["value"][1]) == 64.0
        [jobs] = query(prom_port, "jobs_done_total")
        assert float(jobs["value"][1]) == 9 and jobs["metric"]["queue"] == "render"
        [count] = query(prom_port, "job_duration_seconds_count")
        assert float(count["value"][1]) == 2
        assert host.metric("sluice_exporter_failed_items_total", exporter="out") == 0
        provider.shutdown()
        assert host.stop() == 0
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def write_empty_config(tmp_path):
    config = tmp_path / "prometheus-empty.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    return config
