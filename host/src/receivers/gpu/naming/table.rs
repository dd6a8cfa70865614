//! The naming table: each reading of a [`Readings`] with its dcgm-exporter name, unit and
//! labels and its OpenTelemetry name, unit and instrument. `docs/GPU.md` shows it; a unit test
//! keeps the two in step.

use super::super::sample::Readings;

/// Bytes in a MiB, dcgm-exporter's memory unit.
pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// A dcgm-exporter series.
pub struct Dcgm {
    /// The metric name.
    pub name: &'static str,
    /// Its unit as dcgm-exporter reports it (documentation only: the OTLP unit stays empty).
    pub unit: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The value, in that unit.
    pub value: fn(&Readings) -> Option<f64>,
}

/// How an OpenTelemetry metric aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gauge.
    Gauge,
    /// A monotonic cumulative sum of the reading.
    Counter,
    /// A monotonic cumulative sum of a rate reading (per second) integrated over time.
    IntegratedRate,
}

/// An OpenTelemetry series.
pub struct Otel {
    /// The metric name.
    pub name: &'static str,
    /// The UCUM unit.
    pub unit: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// Data point attributes that tell this series from others of the same name.
    pub attributes: &'static [(&'static str, &'static str)],
    /// The value, in that unit.
    pub value: fn(&Readings) -> Option<f64>,
}

/// One reading in both namings; either side may be absent.
pub struct Definition {
    /// What is measured.
    pub reading: &'static str,
    /// dcgm-exporter's series.
    pub dcgm: Option<Dcgm>,
    /// OpenTelemetry's series.
    pub otel: Option<Otel>,
}

fn ratio(value: Option<f64>) -> Option<f64> {
    value.map(|v| v / 100.0)
}

fn mib(value: Option<u64>) -> Option<f64> {
    value.map(|v| v as f64 / MIB)
}

fn float(value: Option<u64>) -> Option<f64> {
    value.map(|v| v as f64)
}

fn flag(value: Option<bool>) -> Option<f64> {
    value.map(|v| if v { 1.0 } else { 0.0 })
}

macro_rules! dcgm {
    ($name:literal, $unit:literal, $help:literal, $value:expr) => {
        Some(Dcgm { name: $name, unit: $unit, help: $help, value: $value })
    };
}

macro_rules! otel {
    ($name:literal, $unit:literal, $kind:ident, [$(($k:literal, $v:literal)),*], $value:expr) => {
        Some(Otel { name: $name, unit: $unit, kind: Kind::$kind, attributes: &[$(($k, $v)),*], value: $value })
    };
}

/// Every device reading, in both namings.
pub const DEFINITIONS: &[Definition] = &[
    Definition {
        reading: "GPU utilization",
        dcgm: dcgm!("DCGM_FI_DEV_GPU_UTIL", "%", "GPU utilization (in %).", |r| r.gpu_utilization_percent),
        otel: otel!("hw.gpu.utilization", "1", Gauge, [("hw.gpu.task", "general")], |r| ratio(
            r.gpu_utilization_percent
        )),
    },
    Definition {
        reading: "memory copy utilization",
        dcgm: dcgm!("DCGM_FI_DEV_MEM_COPY_UTIL", "%", "Memory utilization (in %).", |r| r
            .memory_copy_utilization_percent),
        otel: otel!("hw.gpu.utilization", "1", Gauge, [("hw.gpu.task", "memory_copy")], |r| ratio(
            r.memory_copy_utilization_percent
        )),
    },
    Definition {
        reading: "encoder utilization",
        dcgm: dcgm!("DCGM_FI_DEV_ENC_UTIL", "%", "Encoder utilization (in %).", |r| r
            .encoder_utilization_percent),
        otel: otel!("hw.gpu.utilization", "1", Gauge, [("hw.gpu.task", "encoder")], |r| ratio(
            r.encoder_utilization_percent
        )),
    },
    Definition {
        reading: "decoder utilization",
        dcgm: dcgm!("DCGM_FI_DEV_DEC_UTIL", "%", "Decoder utilization (in %).", |r| r
            .decoder_utilization_percent),
        otel: otel!("hw.gpu.utilization", "1", Gauge, [("hw.gpu.task", "decoder")], |r| ratio(
            r.decoder_utilization_percent
        )),
    },
    Definition {
        reading: "framebuffer used",
        dcgm: dcgm!("DCGM_FI_DEV_FB_USED", "MiB", "Framebuffer memory used (in MiB).", |r| mib(
            r.memory_used_bytes
        )),
        otel: otel!("hw.gpu.memory.usage", "By", Gauge, [], |r| float(r.memory_used_bytes)),
    },
    Definition {
        reading: "framebuffer free",
        dcgm: dcgm!("DCGM_FI_DEV_FB_FREE", "MiB", "Framebuffer memory free (in MiB).", |r| mib(
            r.memory_free_bytes
        )),
        otel: otel!("nvidia.gpu.memory.free", "By", Gauge, [], |r| float(r.memory_free_bytes)),
    },
    Definition {
        reading: "framebuffer total",
        dcgm: dcgm!("DCGM_FI_DEV_FB_TOTAL", "MiB", "Framebuffer memory in all (in MiB).", |r| mib(
            r.memory_total_bytes
        )),
        otel: otel!("hw.gpu.memory.limit", "By", Gauge, [], |r| float(r.memory_total_bytes)),
    },
    Definition {
        reading: "GPU temperature",
        dcgm: dcgm!("DCGM_FI_DEV_GPU_TEMP", "°C", "GPU temperature (in C).", |r| r.gpu_temperature_celsius),
        otel: otel!("hw.temperature", "Cel", Gauge, [("hw.sensor_location", "gpu")], |r| r
            .gpu_temperature_celsius),
    },
    Definition {
        reading: "memory temperature",
        dcgm: dcgm!("DCGM_FI_DEV_MEMORY_TEMP", "°C", "Memory temperature (in C).", |r| r
            .memory_temperature_celsius),
        otel: otel!("hw.temperature", "Cel", Gauge, [("hw.sensor_location", "memory")], |r| r
            .memory_temperature_celsius),
    },
    Definition {
        reading: "power draw",
        dcgm: dcgm!("DCGM_FI_DEV_POWER_USAGE", "W", "Power draw (in W).", |r| r.power_watts),
        otel: otel!("hw.power", "W", Gauge, [], |r| r.power_watts),
    },
    Definition {
        reading: "energy since the driver loaded",
        dcgm: dcgm!(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "mJ",
            "Total energy consumption since boot (in mJ).",
            |r| { float(r.energy_millijoules) }
        ),
        otel: otel!("hw.energy", "J", Counter, [], |r| r.energy_millijoules.map(|mj| mj as f64 / 1000.0)),
    },
    Definition {
        reading: "SM clock",
        dcgm: dcgm!("DCGM_FI_DEV_SM_CLOCK", "MHz", "SM clock frequency (in MHz).", |r| float(r.sm_clock_mhz)),
        otel: otel!("nvidia.gpu.clock.sm", "MHz", Gauge, [], |r| float(r.sm_clock_mhz)),
    },
    Definition {
        reading: "memory clock",
        dcgm: dcgm!("DCGM_FI_DEV_MEM_CLOCK", "MHz", "Memory clock frequency (in MHz).", |r| float(
            r.memory_clock_mhz
        )),
        otel: otel!("nvidia.gpu.clock.memory", "MHz", Gauge, [], |r| float(r.memory_clock_mhz)),
    },
    Definition {
        reading: "PCIe transmit throughput",
        dcgm: dcgm!("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "KB/s", "PCIe TX throughput (in KB/s).", |r| r
            .pcie_tx_bytes_per_second
            .map(|b| b as f64 / 1024.0)),
        otel: otel!("hw.gpu.io", "By", IntegratedRate, [("network.io.direction", "transmit")], |r| float(
            r.pcie_tx_bytes_per_second
        )),
    },
    Definition {
        reading: "PCIe receive throughput",
        dcgm: dcgm!("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "KB/s", "PCIe RX throughput (in KB/s).", |r| r
            .pcie_rx_bytes_per_second
            .map(|b| b as f64 / 1024.0)),
        otel: otel!("hw.gpu.io", "By", IntegratedRate, [("network.io.direction", "receive")], |r| float(
            r.pcie_rx_bytes_per_second
        )),
    },
    Definition {
        reading: "PCIe replays",
        dcgm: dcgm!("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "count", "Total number of PCIe retries.", |r| float(
            r.pcie_replays
        )),
        otel: otel!(
            "hw.errors",
            "{error}",
            Counter,
            [("error.type", "pcie_replay"), ("hw.type", "gpu")],
            |r| float(r.pcie_replays)
        ),
    },
    Definition {
        reading: "XID errors",
        dcgm: dcgm!("DCGM_FI_DEV_XID_ERRORS", "code", "Value of the last XID error encountered.", |r| float(
            r.last_xid
        )),
        otel: otel!("hw.errors", "{error}", Counter, [("error.type", "xid"), ("hw.type", "gpu")], |r| float(
            r.xid_errors
        )),
    },
    Definition {
        reading: "ECC corrected errors (volatile)",
        dcgm: dcgm!(
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            "count",
            "Total number of single-bit volatile ECC errors.",
            |r| { float(r.ecc_corrected) }
        ),
        otel: otel!(
            "hw.errors",
            "{error}",
            Counter,
            [("error.type", "ecc_corrected"), ("hw.type", "gpu")],
            |r| float(r.ecc_corrected)
        ),
    },
    Definition {
        reading: "ECC uncorrected errors (volatile)",
        dcgm: dcgm!(
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "count",
            "Total number of double-bit volatile ECC errors.",
            |r| { float(r.ecc_uncorrected) }
        ),
        otel: otel!(
            "hw.errors",
            "{error}",
            Counter,
            [("error.type", "ecc_uncorrected"), ("hw.type", "gpu")],
            |r| { float(r.ecc_uncorrected) }
        ),
    },
    Definition {
        reading: "rows remapped (correctable)",
        dcgm: dcgm!(
            "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
            "count",
            "Number of remapped rows for correctable errors.",
            |r| { float(r.remapped_rows_correctable) }
        ),
        otel: otel!(
            "nvidia.gpu.remapped_rows",
            "{row}",
            Counter,
            [("nvidia.remap.cause", "correctable")],
            |r| float(r.remapped_rows_correctable)
        ),
    },
    Definition {
        reading: "rows remapped (uncorrectable)",
        dcgm: dcgm!(
            "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
            "count",
            "Number of remapped rows for uncorrectable errors.",
            |r| float(r.remapped_rows_uncorrectable)
        ),
        otel: otel!(
            "nvidia.gpu.remapped_rows",
            "{row}",
            Counter,
            [("nvidia.remap.cause", "uncorrectable")],
            |r| float(r.remapped_rows_uncorrectable)
        ),
    },
    Definition {
        reading: "row remapping pending",
        dcgm: dcgm!(
            "DCGM_FI_DEV_ROW_REMAP_PENDING",
            "0/1",
            "Whether a row remapping waits for a GPU reset.",
            |r| flag(r.row_remap_pending)
        ),
        otel: otel!("nvidia.gpu.row_remap.pending", "1", Gauge, [], |r| flag(r.row_remap_pending)),
    },
    Definition {
        reading: "row remapping failed",
        dcgm: dcgm!("DCGM_FI_DEV_ROW_REMAP_FAILURE", "0/1", "Whether remapping of rows has failed.", |r| {
            flag(r.row_remap_failure)
        }),
        otel: otel!("nvidia.gpu.row_remap.failure", "1", Gauge, [], |r| flag(r.row_remap_failure)),
    },
    Definition {
        reading: "NVLink traffic sent",
        dcgm: None,
        otel: otel!(
            "nvidia.gpu.nvlink.io",
            "By",
            Counter,
            [("network.io.direction", "transmit")],
            |r| float(r.nvlink_tx_bytes)
        ),
    },
    Definition {
        reading: "NVLink traffic received",
        dcgm: None,
        otel: otel!("nvidia.gpu.nvlink.io", "By", Counter, [("network.io.direction", "receive")], |r| float(
            r.nvlink_rx_bytes
        )),
    },
    Definition {
        reading: "NVLink traffic, both directions",
        dcgm: dcgm!(
            "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
            "KiB",
            "Total NVLink traffic over all links (in KiB).",
            |r| {
                match (r.nvlink_tx_bytes, r.nvlink_rx_bytes) {
                    (None, None) => None,
                    (tx, rx) => Some((tx.unwrap_or(0) + rx.unwrap_or(0)) as f64 / 1024.0),
                }
            }
        ),
        otel: None,
    },
    Definition {
        reading: "clock throttle reasons",
        dcgm: dcgm!(
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
            "bitmask",
            "Current clock throttle reasons (bitmask).",
            |r| { float(r.throttle_reasons) }
        ),
        otel: otel!("nvidia.gpu.clock.throttle_reasons", "1", Gauge, [], |r| float(r.throttle_reasons)),
    },
];

/// Per-process series: (dcgm name, dcgm unit, otel name, otel unit, what).
pub const PROCESS_METRICS: &[(&str, &str, &str, &str, &str)] = &[
    ("GPU_PROCESS_FB_USED", "MiB", "nvidia.gpu.process.memory.usage", "By", "GPU memory a process uses"),
    ("GPU_PROCESS_SM_UTIL", "%", "nvidia.gpu.process.utilization", "1", "a process's share of SM time"),
];
