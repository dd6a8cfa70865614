//! What one sample of the host's GPUs holds, and the trait every source of samples implements.
//!
//! Every reading is optional: a GPU that doesn't support a counter (no ECC on a consumer card, no
//! utilization on a MIG instance, no NVLink on a PCIe card) simply has none, and no series is
//! made for it. Values are in base units (bytes, watts, degrees Celsius); each naming scheme
//! converts to its own units.

use serde::Deserialize;

/// A source of GPU samples: NVML, or a script for tests.
pub trait Backend: Send + 'static {
    /// Samples every device. May block (it runs on a thread of its own). An error means the whole
    /// library failed; a single device's trouble is a [`DeviceFailure`] in the snapshot.
    fn sample(&mut self, processes: bool) -> Result<Snapshot, BackendError>;
}

/// Why a backend produced no sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The library isn't there or the driver isn't loaded: a host without NVIDIA GPUs.
    #[error("NVML is not available: {0}")]
    Unavailable(String),
    /// The library is there but failed.
    #[error("NVML failed: {0}")]
    Failed(String),
}

/// Every device at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The driver version, e.g. `550.54.15`.
    pub driver_version: String,
    /// Devices that answered.
    pub devices: Vec<Device>,
    /// Devices that didn't.
    pub failures: Vec<DeviceFailure>,
}

/// One GPU, or one MIG instance of a GPU.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// NVML's index of the (parent) GPU.
    pub index: u32,
    /// The device's UUID (`GPU-…`, or `MIG-…` for a MIG instance).
    pub uuid: String,
    /// The model, e.g. `NVIDIA A100-SXM4-40GB`.
    pub model: String,
    /// The PCI bus ID, e.g. `00000000:07:00.0`.
    #[serde(default)]
    pub pci_bus_id: String,
    /// The device node's minor number (`/dev/nvidia<minor>`).
    #[serde(default)]
    pub minor_number: u32,
    /// Set for a MIG instance.
    #[serde(default)]
    pub mig: Option<Mig>,
    /// The readings.
    #[serde(default)]
    pub readings: Readings,
    /// Processes using the device, when asked for.
    #[serde(default)]
    pub processes: Vec<Process>,
}

/// What identifies a MIG instance within its GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mig {
    /// The parent GPU's UUID.
    pub parent_uuid: String,
    /// The GPU instance profile, e.g. `1g.10gb`.
    pub profile: String,
    /// The GPU instance ID.
    pub gpu_instance_id: u32,
    /// The compute instance ID.
    #[serde(default)]
    pub compute_instance_id: u32,
}

/// A process using a GPU.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Its PID.
    pub pid: u32,
    /// Its executable's name.
    #[serde(default)]
    pub name: String,
    /// GPU memory it uses, in bytes.
    #[serde(default)]
    pub memory_used_bytes: Option<u64>,
    /// Its share of the SM (compute) time, in percent.
    #[serde(default)]
    pub sm_utilization_percent: Option<f64>,
}

/// A device's readings. Percentages are 0–100.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Readings {
    /// Time the GPU was busy over the last sample period, in percent.
    pub gpu_utilization_percent: Option<f64>,
    /// Time memory was being read or written, in percent.
    pub memory_copy_utilization_percent: Option<f64>,
    /// Encoder utilization, in percent.
    pub encoder_utilization_percent: Option<f64>,
    /// Decoder utilization, in percent.
    pub decoder_utilization_percent: Option<f64>,
    /// Framebuffer memory in use, in bytes.
    pub memory_used_bytes: Option<u64>,
    /// Framebuffer memory free, in bytes.
    pub memory_free_bytes: Option<u64>,
    /// Framebuffer memory in all, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// GPU die temperature, °C.
    pub gpu_temperature_celsius: Option<f64>,
    /// Memory (HBM) temperature, °C.
    pub memory_temperature_celsius: Option<f64>,
    /// Power draw, in watts.
    pub power_watts: Option<f64>,
    /// Energy used since the driver loaded, in millijoules.
    pub energy_millijoules: Option<u64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u64>,
    /// Memory clock, MHz.
    pub memory_clock_mhz: Option<u64>,
    /// PCIe transmit throughput over NVML's last 20 ms window, bytes per second.
    pub pcie_tx_bytes_per_second: Option<u64>,
    /// PCIe receive throughput, bytes per second.
    pub pcie_rx_bytes_per_second: Option<u64>,
    /// PCIe replays since the driver loaded.
    pub pcie_replays: Option<u64>,
    /// XID errors seen since the receiver started.
    pub xid_errors: Option<u64>,
    /// The last XID error's code (0: none yet).
    pub last_xid: Option<u64>,
    /// Corrected (single-bit) ECC errors since the driver loaded.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// Rows remapped after correctable errors.
    pub remapped_rows_correctable: Option<u64>,
    /// Rows remapped after uncorrectable errors.
    pub remapped_rows_uncorrectable: Option<u64>,
    /// Whether a remapping waits for a GPU reset.
    pub row_remap_pending: Option<bool>,
    /// Whether a remapping failed.
    pub row_remap_failure: Option<bool>,
    /// NVLink bytes sent over all links since the driver loaded.
    pub nvlink_tx_bytes: Option<u64>,
    /// NVLink bytes received over all links.
    pub nvlink_rx_bytes: Option<u64>,
    /// NVML's clock throttle reasons bitmask (0: not throttled).
    pub throttle_reasons: Option<u64>,
}

/// A device that could not be sampled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFailure {
    /// NVML's index.
    pub index: u32,
    /// Its UUID, when it could still be read.
    #[serde(default)]
    pub uuid: String,
    /// What went wrong.
    pub kind: FailureKind,
    /// The driver's words.
    #[serde(default)]
    pub message: String,
}

/// Kinds of device failure, for the `sluice_gpu_device_errors_total{kind}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The GPU fell off the bus (NVML `GPU_IS_LOST`): it needs a reset or a reboot.
    Lost,
    /// Any other error reading the device.
    Error,
}

impl FailureKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Lost => "lost",
            FailureKind::Error => "error",
        }
    }
}
