"""The GPU receiver through the real pipeline, driven by the scripted backend: dcgm-exporter's
names and labels on the Prometheus endpoint, OpenTelemetry's names and units in OTLP, MIG
instances, per-process metrics, a plugin filtering GPU metrics, a GPU falling off the bus, a
driver call slower than the interval, and a host with no NVML at all."""

import urllib.request

from conftest import ARCHIVE, PROTOBUF, RECEIVER, free_port, post
from otlp_payloads import attributes, logs

GPU0 = "GPU-00000000-0000-0000-0000-000000000000"
GPU1 = "GPU-11111111-0000-0000-0000-000000000000"
MIG = "MIG-22222222-0000-0000-0000-000000000000"

DEVICES = f"""
[[samples.devices]]
index = 0
uuid = "{GPU0}"
model = "NVIDIA A100-SXM4-40GB"
pci_bus_id = "00000000:07:00.0"
minor_number = 0
readings = {{ gpu_utilization_percent = 87, memory_used_bytes = 2147483648, memory_total_bytes = 42949672960, gpu_temperature_celsius = 61, power_watts = 250.5, energy_millijoules = 5000, sm_clock_mhz = 1410 }}
processes = [{{ pid = 4242, name = "python", memory_used_bytes = 1073741824, sm_utilization_percent = 40 }}]

[[samples.devices]]
index = 0
uuid = "{MIG}"
model = "NVIDIA A100-SXM4-40GB"
mig = {{ parent_uuid = "{GPU0}", profile = "1g.5gb", gpu_instance_id = 7 }}
readings = {{ memory_used_bytes = 268435456 }}
"""

GPU1_DEVICE = f"""
[[samples.devices]]
index = 1
uuid = "{GPU1}"
model = "NVIDIA A100-SXM4-40GB"
minor_number = 1
readings = {{ gpu_utilization_percent = 12 }}
"""


SCRAPE_PORT = free_port()


def gpu_pipeline(script_path, naming="dcgm", interval="100ms", extra="", exporters='["scrape"]'):
    """The scripted GPU receiver feeding `exporters`; `scrape` (a Prometheus endpoint on
    SCRAPE_PORT) is defined here, others by the caller."""
    scrape = f"""
    [exporters.scrape]
    type = "prometheus"
    address = "127.0.0.1:{SCRAPE_PORT}"
""" if "scrape" in exporters else ""
    return f"""
    [receivers.gpu]
    type = "gpu"
    kind = "scripted"
    script = "{script_path}"
    interval = "{interval}"
    naming = "{naming}"
    processes = true
    {scrape}
    [pipelines.gpu]
    receivers = ["gpu"]
    exporters = {exporters}
    {extra}
"""


def write_script(tmp_path, *samples):
    path = tmp_path / "gpus.toml"
    path.write_text('driver_version = "550.54.15"\n' + "".join(f"\n[[samples]]\n{s}" for s in samples))
    return path


def series(host):
    body = urllib.request.urlopen(f"http://127.0.0.1:{SCRAPE_PORT}/metrics", timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        parsed = dict(part.split("=", 1) for part in labels.rstrip("}").split('",') if part)
        out.setdefault(name, []).append(({k: v.strip('"') for k, v in parsed.items()}, float(value)))
    return out


def test_dcgm_names_labels_mig_and_processes_on_the_scrape_endpoint(make_sluice, tmp_path):
    host = make_sluice(gpu_pipeline(write_script(tmp_path, DEVICES)))
    assert host.wait_metric("sluice_gpu_devices", 1, receiver="gpu") == 1
    assert host.wait_metric_at_least("sluice_receiver_accepted_items_total", 1, receiver="gpu") >= 1
    scraped = series(host)
    [(labels, util)] = scraped["DCGM_FI_DEV_GPU_UTIL"]
    assert util == 87
    assert labels == {"gpu": "0", "UUID": GPU0, "device": "nvidia0", "modelName": "NVIDIA A100-SXM4-40GB",
                      "Hostname": labels["Hostname"], "DCGM_FI_DRIVER_VERSION": "550.54.15",
                      "pci_bus_id": "00000000:07:00.0"}
    assert labels["Hostname"]
    # MiB, as dcgm-exporter reports; the MIG instance labelled by profile and instance ID.
    fb = {l.get("GPU_I_ID", "gpu"): v for l, v in scraped["DCGM_FI_DEV_FB_USED"]}
    assert fb == {"gpu": 2048, "7": 256}
    mig_labels = next(l for l, _ in scraped["DCGM_FI_DEV_FB_USED"] if "GPU_I_ID" in l)
    assert (mig_labels["UUID"], mig_labels["GPU_I_PROFILE"]) == (GPU0, "1g.5gb")
    assert scraped["DCGM_FI_DEV_POWER_USAGE"][0][1] == 250.5
    assert scraped["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"][0][1] == 5000
    [(process, memory)] = scraped["GPU_PROCESS_FB_USED"]
    assert (process["pid"], process["process_name"], memory) == ("4242", "python", 1024)
    # Readings the script leaves out make no series (no zeros for unsupported counters).
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" not in scraped
    assert host.stop() == 0


def test_otel_names_units_and_resources_in_otlp(make_sluice, tmp_path):
    host = make_sluice(ARCHIVE + gpu_pipeline(write_script(tmp_path, DEVICES), naming="otel", exporters='["archive"]'))
    assert host.wait_metric_at_least("sluice_exporter_sent_items_total", 1, exporter="archive") >= 1
    assert host.stop() == 0
    [first, *_] = host.lines("metrics")
    by_device = {attributes(rm["resource"])["hw.id"]: rm for rm in first["resourceMetrics"]}
    assert set(by_device) == {GPU0, MIG}
    resource = attributes(by_device[GPU0]["resource"])
    assert (resource["hw.vendor"], resource["hw.model"], resource["hw.type"]) == ("NVIDIA", "NVIDIA A100-SXM4-40GB", "gpu")
    assert resource["host.name"]
    assert attributes(by_device[MIG]["resource"])["hw.parent"] == GPU0
    metrics = {m["name"]: m for sm in by_device[GPU0]["scopeMetrics"] for m in sm["metrics"]}
    util = metrics["hw.gpu.utilization"]
    assert util["unit"] == "1"
    [point] = util["gauge"]["dataPoints"]
    assert point["asDouble"] == 0.87 and attributes(point)["hw.gpu.task"] == "general"
    assert metrics["hw.gpu.memory.usage"]["unit"] == "By"
    assert metrics["hw.gpu.memory.limit"]["gauge"]["dataPoints"][0]["asDouble"] == 42949672960
    energy = metrics["hw.energy"]
    assert energy["unit"] == "J" and energy["sum"]["isMonotonic"] is True
    assert energy["sum"]["dataPoints"][0]["asDouble"] == 5.0
    assert metrics["hw.temperature"]["unit"] == "Cel"


def test_plugins_filter_gpu_metrics_like_any_other(make_sluice, tmp_path):
    host = make_sluice(gpu_pipeline(write_script(tmp_path, DEVICES), extra="""
    [[pipelines.gpu.processors]]
    plugin = "{plugins}/drop-spans.wasm"
    config = {{ metric_names = ["DCGM_FI_DEV_SM_CLOCK", "GPU_PROCESS_*"] }}
    """))
    assert host.wait_metric_at_least("sluice_plugin_calls_total", 2, plugin="drop-spans") >= 2
    scraped = series(host)
    assert "DCGM_FI_DEV_GPU_UTIL" in scraped
    assert "DCGM_FI_DEV_SM_CLOCK" not in scraped and "GPU_PROCESS_FB_USED" not in scraped
    assert host.stop() == 0


def test_a_gpu_falling_off_the_bus_is_reported_not_fatal(make_sluice, tmp_path):
    lost = f'failures = [{{ index = 1, uuid = "{GPU1}", kind = "lost", message = "GPU is lost" }}]\n'
    script = write_script(tmp_path, DEVICES + GPU1_DEVICE, lost + DEVICES)
    host = make_sluice(ARCHIVE + gpu_pipeline(script, exporters='["archive"]'))
    assert host.wait_metric_at_least("sluice_gpu_device_errors_total", 3, receiver="gpu", kind="lost") >= 3
    assert host.metric("sluice_gpu_devices", receiver="gpu") == 1
    assert host.stop() == 0
    lines = host.lines("metrics")
    uuids = [{dp_attr["UUID"] for rm in line["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]
              if m["name"] == "DCGM_FI_DEV_GPU_UTIL" for dp_attr in map(attributes, m["gauge"]["dataPoints"])}
             for line in lines]
    assert uuids[0] == {GPU0, GPU1}
    assert all(u == {GPU0} for u in uuids[1:]), "after it is lost, only GPU 0 is reported"
    logged = [line for line in host.logs().splitlines() if "fell off the bus" in line]
    assert len(logged) == 1, "logged when it happens, not every sample"
    assert GPU1 in logged[0]


def test_a_slow_driver_call_delays_only_the_next_sample(make_sluice, tmp_path):
    script = write_script(tmp_path, DEVICES, 'delay = "3s"\n' + DEVICES, DEVICES)
    host = make_sluice(RECEIVER + ARCHIVE + gpu_pipeline(script) + """
    [pipelines.logs]
    receivers = ["otlp"]
    exporters = ["archive"]
    """)
    # A skipped tick: the sampling thread is stuck in the "driver" (for 3 s).
    assert host.wait_metric_at_least("sluice_gpu_samples_skipped_total", 1, receiver="gpu") >= 1, host.logs()
    finished = host.metric("sluice_gpu_sample_duration_seconds_count", receiver="gpu")
    # Meanwhile the host answers, and the logs go through to the file.
    assert post(host, "/v1/logs", logs(("still here",)).SerializeToString(), PROTOBUF)[0] == 200
    assert host.admin("/healthz")[0] == 200
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="archive", signal="logs") == 1
    assert host.metric("sluice_gpu_sample_duration_seconds_count", receiver="gpu") == finished, \
        "all of that happened while the driver call was still running"
    assert host.wait_metric_at_least("sluice_gpu_samples_skipped_total", 3, receiver="gpu") >= 3
    assert "GPU sample still running after a whole interval" in host.logs()
    # And sampling resumes once the call returns.
    before = host.metric("sluice_gpu_sample_duration_seconds_count", receiver="gpu")
    assert host.wait_metric_at_least("sluice_gpu_sample_duration_seconds_count", before + 3, receiver="gpu") >= before + 3
    assert host.stop() == 0


def test_a_host_without_nvml_warns_once_and_runs(make_sluice):
    host = make_sluice(RECEIVER + ARCHIVE + """
    [receivers.gpu]
    type = "gpu"
    kind = "nvml"
    library = "/nonexistent/libnvidia-ml.so.1"
    interval = "100ms"

    [exporters.nowhere]
    type = "discard"

    [pipelines.gpu]
    receivers = ["gpu"]
    exporters = ["nowhere"]

    [pipelines.logs]
    receivers = ["otlp"]
    exporters = ["archive"]
    """)
    assert host.wait_metric_at_least("sluice_gpu_sample_duration_seconds_count", 5, receiver="gpu") >= 5
    _, _, body = host.admin("/metrics")
    assert 'sluice_gpu_devices{receiver="gpu"} 0' in body.decode()
    assert post(host, "/v1/logs", logs(("fine",)).SerializeToString(), PROTOBUF)[0] == 200
    assert host.wait_metric("sluice_exporter_sent_items_total", 1, exporter="archive") == 1
    assert host.stop() == 0
    warnings = [line for line in host.logs().splitlines() if "No NVIDIA driver found" in line]
    assert len(warnings) == 1, host.logs()
    assert "/nonexistent/libnvidia-ml.so.1" in warnings[0]
