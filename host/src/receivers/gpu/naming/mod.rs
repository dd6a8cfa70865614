//! From a [`Snapshot`] to OTLP metrics, in dcgm-exporter's names, OpenTelemetry's hardware
//! semantic conventions, or both. The mapping is the table in `table.rs` ([`DEFINITIONS`]);
//! this module turns a sample into OTLP by it.
//!
//! **dcgm** reproduces dcgm-exporter's series: its metric names, its units (MiB, MHz, °C, W, mJ,
//! %), its labels (`gpu`, `UUID`, `device`, `modelName`, `Hostname`, `DCGM_FI_DRIVER_VERSION`,
//! `pci_bus_id`; `GPU_I_PROFILE` and `GPU_I_ID` for MIG) as data point attributes. The metrics
//! are gauges with no OTLP unit, so the Prometheus exporter keeps the names exactly (no unit
//! suffix, no `_total`) and existing DCGM dashboards work unchanged.
//!
//! **otel** follows the hardware semantic conventions: one resource per device (`hw.id`,
//! `hw.vendor`, `hw.model`, `hw.type`, `host.name`), base units (bytes, `Cel`, W, J, ratios
//! 0–1), counters as monotonic sums. Readings the conventions have no name for use the
//! `nvidia.gpu.*` namespace rather than being dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::sample::{Device, Snapshot};
use crate::config::GpuNaming;

mod table;
use table::MIB;
pub use table::{DEFINITIONS, Dcgm, Definition, Kind, Otel, PROCESS_METRICS};

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn int_kv(key: &str, value: impl Into<i64>) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value.into()))
}

fn point(attributes: Vec<KeyValue>, value: f64, start: u64, time: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// The metrics of one resource, merged by name as they are added.
#[derive(Default)]
struct MetricSet {
    by_name: BTreeMap<&'static str, Metric>,
    points: u64,
}

impl MetricSet {
    fn add(&mut self, name: &'static str, unit: &str, help: &str, kind: Kind, point: NumberDataPoint) {
        self.points += 1;
        let metric = self.by_name.entry(name).or_insert_with(|| Metric {
            name: name.into(),
            unit: unit.into(),
            description: help.into(),
            data: Some(match kind {
                Kind::Gauge => metric::Data::Gauge(Gauge { data_points: Vec::new() }),
                Kind::Counter | Kind::IntegratedRate => metric::Data::Sum(Sum {
                    data_points: Vec::new(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            }),
            ..Default::default()
        });
        match &mut metric.data {
            Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
            Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
            _ => {}
        }
    }

    fn into_resource(self, attributes: Vec<KeyValue>) -> Option<ResourceMetrics> {
        if self.by_name.is_empty() {
            return None;
        }
        Some(ResourceMetrics {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                    name: "sluice/gpu".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: self.by_name.into_values().collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

/// Turns snapshots into OTLP, keeping what counters need between samples.
pub struct Translator {
    naming: GpuNaming,
    hostname: String,
    start: u64,
    /// Integrated rates per (device, metric, direction), with the instant of the last reading.
    integrated: HashMap<(String, &'static str, &'static str), (f64, Instant)>,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Translator {
    /// A translator for `naming`, labelling series with `hostname`.
    pub fn new(naming: GpuNaming, hostname: String) -> Self {
        Self { naming, hostname, start: unix_nanos(), integrated: HashMap::new() }
    }

    /// The request for one snapshot, and its number of data points. `None` when it has none.
    pub fn translate(&mut self, snapshot: &Snapshot) -> Option<(ExportMetricsServiceRequest, u64)> {
        let now = unix_nanos();
        let (mut resources, mut points) = (Vec::new(), 0);
        if matches!(self.naming, GpuNaming::Dcgm | GpuNaming::Both) {
            let mut metrics = MetricSet::default();
            for device in &snapshot.devices {
                self.dcgm(device, &snapshot.driver_version, now, &mut metrics);
            }
            points += metrics.points;
            resources.extend(metrics.into_resource(vec![kv("host.name", self.hostname.clone())]));
        }
        if matches!(self.naming, GpuNaming::Otel | GpuNaming::Both) {
            for device in &snapshot.devices {
                let mut metrics = MetricSet::default();
                self.otel(device, now, &mut metrics);
                points += metrics.points;
                resources.extend(metrics.into_resource(self.otel_resource(device, &snapshot.driver_version)));
            }
        }
        (points > 0).then_some((ExportMetricsServiceRequest { resource_metrics: resources }, points))
    }

    fn dcgm_labels(&self, device: &Device, driver_version: &str) -> Vec<KeyValue> {
        let mut labels = vec![
            kv("gpu", device.index.to_string()),
            kv("UUID", device.mig.as_ref().map_or(&device.uuid, |m| &m.parent_uuid).clone()),
            kv("device", format!("nvidia{}", device.minor_number)),
            kv("modelName", device.model.clone()),
            kv("Hostname", self.hostname.clone()),
            kv("DCGM_FI_DRIVER_VERSION", driver_version.to_string()),
        ];
        if !device.pci_bus_id.is_empty() {
            labels.push(kv("pci_bus_id", device.pci_bus_id.clone()));
        }
        if let Some(mig) = &device.mig {
            labels.push(kv("GPU_I_PROFILE", mig.profile.clone()));
            labels.push(kv("GPU_I_ID", mig.gpu_instance_id.to_string()));
        }
        labels
    }

    fn dcgm(&self, device: &Device, driver_version: &str, now: u64, metrics: &mut MetricSet) {
        let labels = self.dcgm_labels(device, driver_version);
        for dcgm in DEFINITIONS.iter().filter_map(|d| d.dcgm.as_ref()) {
            if let Some(value) = (dcgm.value)(&device.readings) {
                metrics.add(dcgm.name, "", dcgm.help, Kind::Gauge, point(labels.clone(), value, 0, now));
            }
        }
        for process in &device.processes {
            let mut labels = labels.clone();
            labels.push(kv("pid", process.pid.to_string()));
            labels.push(kv("process_name", process.name.clone()));
            let [memory, sm] = [&PROCESS_METRICS[0], &PROCESS_METRICS[1]];
            if let Some(bytes) = process.memory_used_bytes {
                metrics.add(
                    memory.0,
                    "",
                    "GPU memory used by a process (in MiB).",
                    Kind::Gauge,
                    point(labels.clone(), bytes as f64 / MIB, 0, now),
                );
            }
            if let Some(util) = process.sm_utilization_percent {
                metrics.add(
                    sm.0,
                    "",
                    "SM utilization of a process (in %).",
                    Kind::Gauge,
                    point(labels, util, 0, now),
                );
            }
        }
    }

    fn otel_resource(&self, device: &Device, driver_version: &str) -> Vec<KeyValue> {
        let mut attributes = vec![
            kv("hw.id", device.uuid.clone()),
            kv("hw.type", "gpu"),
            kv("hw.vendor", "NVIDIA"),
            kv("hw.model", device.model.clone()),
            kv("host.name", self.hostname.clone()),
            int_kv("nvidia.gpu.index", device.index),
            kv("nvidia.driver.version", driver_version.to_string()),
        ];
        if !device.pci_bus_id.is_empty() {
            attributes.push(kv("nvidia.gpu.pci_bus_id", device.pci_bus_id.clone()));
        }
        if let Some(mig) = &device.mig {
            attributes.push(kv("hw.parent", mig.parent_uuid.clone()));
            attributes.push(kv("nvidia.mig.profile", mig.profile.clone()));
            attributes.push(int_kv("nvidia.mig.gpu_instance_id", mig.gpu_instance_id));
        }
        attributes
    }

    fn otel(&mut self, device: &Device, now: u64, metrics: &mut MetricSet) {
        let at = Instant::now();
        for otel in DEFINITIONS.iter().filter_map(|d| d.otel.as_ref()) {
            let Some(mut value) = (otel.value)(&device.readings) else { continue };
            if otel.kind == Kind::IntegratedRate {
                let direction = otel.attributes.first().map_or("", |(_, v)| *v);
                let key = (device.uuid.clone(), otel.name, direction);
                let (total, last) = self.integrated.entry(key).or_insert((0.0, at));
                *total += value * at.duration_since(*last).as_secs_f64();
                *last = at;
                value = *total;
            }
            // hw.id on each point too: resource attributes become target_info, not series labels,
            // in Prometheus, so without it every GPU's series would collide.
            let mut attributes = vec![kv("hw.id", device.uuid.clone())];
            attributes.extend(otel.attributes.iter().map(|(k, v)| kv(k, *v)));
            let start = if otel.kind == Kind::Gauge { 0 } else { self.start };
            metrics.add(otel.name, otel.unit, otel.name, otel.kind, point(attributes, value, start, now));
        }
        for process in &device.processes {
            let attributes = vec![
                kv("hw.id", device.uuid.clone()),
                int_kv("process.pid", process.pid),
                kv("process.executable.name", process.name.clone()),
            ];
            let [memory, sm] = [&PROCESS_METRICS[0], &PROCESS_METRICS[1]];
            if let Some(bytes) = process.memory_used_bytes {
                metrics.add(
                    memory.2,
                    memory.3,
                    memory.4,
                    Kind::Gauge,
                    point(attributes.clone(), bytes as f64, 0, now),
                );
            }
            if let Some(util) = process.sm_utilization_percent {
                metrics.add(sm.2, sm.3, sm.4, Kind::Gauge, point(attributes, util / 100.0, 0, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::gpu::sample::{Mig, Process, Readings};

    fn gpu() -> Device {
        Device {
            index: 1,
            uuid: "GPU-1".into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            pci_bus_id: "00000000:19:00.0".into(),
            minor_number: 3,
            readings: Readings {
                gpu_utilization_percent: Some(75.0),
                memory_used_bytes: Some(2 << 30),
                energy_millijoules: Some(5_000),
                pcie_replays: Some(2),
                ..Readings::default()
            },
            processes: vec![Process {
                pid: 9,
                name: "python".into(),
                memory_used_bytes: Some(1 << 20),
                sm_utilization_percent: None,
            }],
            ..Device::default()
        }
    }

    fn mig() -> Device {
        Device {
            uuid: "MIG-7".into(),
            mig: Some(Mig {
                parent_uuid: "GPU-1".into(),
                profile: "1g.10gb".into(),
                gpu_instance_id: 7,
                compute_instance_id: 0,
            }),
            readings: Readings { memory_used_bytes: Some(1 << 30), ..Readings::default() },
            processes: Vec::new(),
            ..gpu()
        }
    }

    fn snapshot(devices: Vec<Device>) -> Snapshot {
        Snapshot { driver_version: "550.54.15".into(), devices, failures: Vec::new() }
    }

    fn attributes(point: &NumberDataPoint) -> BTreeMap<String, String> {
        point
            .attributes
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => i.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), value)
            })
            .collect()
    }

    fn points<'a>(
        request: &'a ExportMetricsServiceRequest,
        name: &str,
    ) -> Vec<(&'a Metric, &'a NumberDataPoint)> {
        let mut out = Vec::new();
        for metric in request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics)
        {
            if metric.name != name {
                continue;
            }
            match &metric.data {
                Some(metric::Data::Gauge(g)) => out.extend(g.data_points.iter().map(|p| (metric, p))),
                Some(metric::Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| (metric, p))),
                _ => {}
            }
        }
        out
    }

    fn value(point: &NumberDataPoint) -> f64 {
        match point.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            _ => f64::NAN,
        }
    }

    #[test]
    fn dcgm_names_units_and_labels() {
        let mut translator = Translator::new(GpuNaming::Dcgm, "node-a".into());
        let (request, count) = translator.translate(&snapshot(vec![gpu(), mig()])).expect("points");
        assert_eq!(request.resource_metrics.len(), 1, "one resource for the host");
        let [(metric, util)] = points(&request, "DCGM_FI_DEV_GPU_UTIL")[..] else {
            panic!("one GPU_UTIL point")
        };
        assert_eq!(value(util), 75.0);
        assert!(metric.unit.is_empty(), "no OTLP unit, so Prometheus keeps the name");
        assert!(matches!(metric.data, Some(metric::Data::Gauge(_))));
        assert_eq!(
            attributes(util),
            BTreeMap::from([
                ("gpu".into(), "1".into()),
                ("UUID".into(), "GPU-1".into()),
                ("device".into(), "nvidia3".into()),
                ("modelName".into(), "NVIDIA H100 80GB HBM3".into()),
                ("Hostname".into(), "node-a".into()),
                ("DCGM_FI_DRIVER_VERSION".into(), "550.54.15".into()),
                ("pci_bus_id".into(), "00000000:19:00.0".into()),
            ])
        );
        // MiB, and the MIG instance labelled as dcgm-exporter does: parent UUID, profile, ID.
        let fb = points(&request, "DCGM_FI_DEV_FB_USED");
        assert_eq!(fb.iter().map(|(_, p)| value(p)).collect::<Vec<_>>(), [2048.0, 1024.0]);
        let mig_labels = attributes(fb[1].1);
        assert_eq!(mig_labels["UUID"], "GPU-1");
        assert_eq!(mig_labels["GPU_I_PROFILE"], "1g.10gb");
        assert_eq!(mig_labels["GPU_I_ID"], "7");
        let [(_, process)] = points(&request, "GPU_PROCESS_FB_USED")[..] else { panic!("one process point") };
        assert_eq!((value(process), attributes(process)["pid"].as_str()), (1.0, "9"));
        // GPU: util, FB used, energy, replays, process memory; MIG: FB used.
        assert_eq!(count, 6);
    }

    #[test]
    fn otel_names_resources_and_counters() {
        let mut translator = Translator::new(GpuNaming::Otel, "node-a".into());
        let (request, _) = translator.translate(&snapshot(vec![gpu(), mig()])).expect("points");
        assert_eq!(request.resource_metrics.len(), 2, "one resource per device");
        let resource: BTreeMap<String, String> = request.resource_metrics[1]
            .resource
            .as_ref()
            .map(|r| r.attributes.iter().map(|kv| (kv.key.clone(), format!("{:?}", kv.value))).collect())
            .unwrap_or_default();
        for key in ["hw.id", "hw.vendor", "hw.model", "host.name", "hw.parent", "nvidia.mig.profile"] {
            assert!(resource.contains_key(key), "{key} missing from {resource:?}");
        }
        let [(metric, util)] = points(&request, "hw.gpu.utilization")[..] else {
            panic!("one utilization point")
        };
        assert_eq!((metric.unit.as_str(), value(util)), ("1", 0.75));
        assert_eq!(attributes(util)["hw.gpu.task"], "general");
        let [(energy, joules)] = points(&request, "hw.energy")[..] else { panic!("one energy point") };
        assert!(matches!(&energy.data, Some(metric::Data::Sum(s)) if s.is_monotonic));
        assert_eq!((energy.unit.as_str(), value(joules)), ("J", 5.0));
        assert!(joules.start_time_unix_nano > 0, "counters carry their start time");
        let errors = points(&request, "hw.errors");
        assert_eq!(attributes(errors[0].1)["error.type"], "pcie_replay");
        let usage = points(&request, "hw.gpu.memory.usage");
        assert_eq!(
            usage.iter().map(|(_, p)| attributes(p)["hw.id"].clone()).collect::<Vec<_>>(),
            ["GPU-1", "MIG-7"]
        );
    }

    #[test]
    fn both_namings_and_nothing_for_no_devices() {
        let mut translator = Translator::new(GpuNaming::Both, "node-a".into());
        let (request, _) = translator.translate(&snapshot(vec![gpu()])).expect("points");
        assert_eq!(points(&request, "DCGM_FI_DEV_GPU_UTIL").len(), 1);
        assert_eq!(points(&request, "hw.gpu.utilization").len(), 1);
        assert!(translator.translate(&snapshot(Vec::new())).is_none());
    }

    #[test]
    fn every_name_is_in_the_gpu_docs() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/GPU.md"))
            .expect("docs/GPU.md");
        let names = DEFINITIONS
            .iter()
            .flat_map(|d| [d.dcgm.as_ref().map(|m| m.name), d.otel.as_ref().map(|m| m.name)])
            .flatten()
            .chain(PROCESS_METRICS.iter().flat_map(|m| [m.0, m.2]));
        for name in names {
            assert!(docs.contains(&format!("`{name}`")), "docs/GPU.md does not mention `{name}`");
        }
    }
}
