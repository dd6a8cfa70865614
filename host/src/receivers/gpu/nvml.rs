//! `kind = "nvml"`: samples through NVIDIA's NVML, loaded with `dlopen` when the receiver starts
//! (`nvml-wrapper` binds every symbol at run time). A host without the driver gets
//! [`BackendError::Unavailable`]; nothing about the driver is needed to build or link Sluice.
//!
//! Every call here can block inside the driver; the receiver runs this backend on a thread of
//! its own, so a slow call delays only the next sample.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor,
};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device as NvmlDevice, EventSet};

use super::sample::{
    Backend, BackendError, Device, DeviceFailure, FailureKind, Mig, Process, Readings, Snapshot,
};

/// The library, initialized once per process and kept: NVML's init is reference-counted and
/// costly, and device handles borrow it.
static LIBRARY: OnceLock<Nvml> = OnceLock::new();

fn library(path: Option<&Path>) -> Result<&'static Nvml, BackendError> {
    if let Some(nvml) = LIBRARY.get() {
        return Ok(nvml);
    }
    let nvml = match path {
        Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
        None => Nvml::init(),
    }
    .map_err(|error| match error {
        NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded | NvmlError::LibraryNotFound => {
            BackendError::Unavailable(error.to_string())
        }
        other => BackendError::Failed(other.to_string()),
    })?;
    Ok(LIBRARY.get_or_init(|| nvml))
}

/// Per-GPU XID error tallies, filled from NVML's event set.
#[derive(Debug, Default, Clone, Copy)]
struct Xids {
    count: u64,
    last: u64,
}

/// The NVML backend.
pub struct NvmlBackend {
    path: Option<PathBuf>,
    nvml: Option<&'static Nvml>,
    events: Option<EventSet<'static>>,
    xids: HashMap<String, Xids>,
}

impl NvmlBackend {
    /// A backend that loads `library` (the system's `libnvidia-ml.so.1` when `None`) on its first
    /// sample, and retries on later ones while it can't.
    pub fn new(library: Option<PathBuf>) -> Self {
        Self { path: library, nvml: None, events: None, xids: HashMap::new() }
    }

    fn nvml(&mut self) -> Result<&'static Nvml, BackendError> {
        if let Some(nvml) = self.nvml {
            return Ok(nvml);
        }
        let nvml = library(self.path.as_deref())?;
        self.nvml = Some(nvml);
        self.events = xid_events(nvml);
        Ok(nvml)
    }

    /// Takes every XID event waiting, without blocking.
    fn drain_xid_events(&mut self) {
        let Some(events) = &self.events else { return };
        while let Ok(event) = events.wait(0) {
            let Ok(uuid) = event.device.uuid() else { continue };
            let tally = self.xids.entry(uuid).or_default();
            tally.count += 1;
            if let Some(XidError::Value(code)) = event.event_data {
                tally.last = code;
            }
        }
    }
}

/// An event set with every GPU that supports XID events registered; `None` when none does (or
/// registering failed, which consumes the set: XID counts are then not reported).
fn xid_events(nvml: &'static Nvml) -> Option<EventSet<'static>> {
    let mut set = nvml.create_event_set().ok()?;
    let mut registered = false;
    for index in 0..nvml.device_count().unwrap_or(0) {
        let Ok(device) = nvml.device_by_index(index) else { continue };
        let supported =
            device.supported_event_types().is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            continue;
        }
        match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(kept) => {
                set = kept;
                registered = true;
            }
            Err(error) => {
                tracing::warn!(gpu = index, error = %error.error, "Cannot watch XID errors; they will not be reported");
                return None;
            }
        }
    }
    registered.then_some(set)
}

fn failure(index: u32, uuid: String, error: &NvmlError) -> DeviceFailure {
    let kind = if matches!(error, NvmlError::GpuLost) { FailureKind::Lost } else { FailureKind::Error };
    DeviceFailure { index, uuid, kind, message: error.to_string() }
}

impl Backend for NvmlBackend {
    fn sample(&mut self, processes: bool) -> Result<Snapshot, BackendError> {
        let nvml = self.nvml()?;
        self.drain_xid_events();
        let driver_version = nvml.sys_driver_version().unwrap_or_default();
        let count = nvml.device_count().map_err(|e| BackendError::Failed(e.to_string()))?;
        let mut snapshot = Snapshot { driver_version, ..Snapshot::default() };
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(error) => {
                    snapshot.failures.push(failure(index, String::new(), &error));
                    continue;
                }
            };
            // A GPU that fell off the bus fails its first query; its readings would all be gone.
            let uuid = match device.uuid() {
                Ok(uuid) => uuid,
                Err(error) => {
                    snapshot.failures.push(failure(index, String::new(), &error));
                    continue;
                }
            };
            let identity = Device {
                index,
                model: device.name().unwrap_or_default(),
                pci_bus_id: device.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                minor_number: device.minor_number().unwrap_or(index),
                uuid: uuid.clone(),
                ..Device::default()
            };
            let xids = self.xids.get(&uuid).copied().unwrap_or_default();
            let mut readings = read_device(&device);
            if self.events.is_some() {
                readings.xid_errors = Some(xids.count);
                readings.last_xid = Some(xids.last);
            }
            let process_list = if processes { read_processes(&device) } else { Vec::new() };
            snapshot.devices.extend(mig_instances(&device, &identity));
            snapshot.devices.push(Device { readings, processes: process_list, ..identity });
        }
        Ok(snapshot)
    }
}

/// Reads every supported counter of a GPU; unsupported ones stay `None`.
fn read_device(device: &NvmlDevice<'_>) -> Readings {
    let utilization = device.utilization_rates().ok();
    let memory = device.memory_info().ok();
    let fields = device
        .field_values_for(&[
            FieldId(NVML_FI_DEV_MEMORY_TEMP),
            FieldId(NVML_FI_DEV_REMAPPED_COR),
            FieldId(NVML_FI_DEV_REMAPPED_UNC),
            FieldId(NVML_FI_DEV_REMAPPED_PENDING),
            FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
            FieldId(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX),
            FieldId(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX),
        ])
        .unwrap_or_default();
    let field = |n: usize| fields.get(n).and_then(|f| f.as_ref().ok()).and_then(field_value);
    // GPUs without NVLink answer the throughput fields with 0 rather than "not supported": no
    // traffic at all since the driver loaded means no NVLink series.
    let (nvlink_tx_bytes, nvlink_rx_bytes) = match (field(5), field(6)) {
        (Some(tx), Some(rx)) if tx + rx > 0.0 => (Some(tx as u64 * 1024), Some(rx as u64 * 1024)),
        _ => (None, None),
    };
    Readings {
        gpu_utilization_percent: utilization.as_ref().map(|u| f64::from(u.gpu)),
        memory_copy_utilization_percent: utilization.as_ref().map(|u| f64::from(u.memory)),
        encoder_utilization_percent: device.encoder_utilization().ok().map(|u| f64::from(u.utilization)),
        decoder_utilization_percent: device.decoder_utilization().ok().map(|u| f64::from(u.utilization)),
        memory_used_bytes: memory.as_ref().map(|m| m.used),
        memory_free_bytes: memory.as_ref().map(|m| m.free),
        memory_total_bytes: memory.as_ref().map(|m| m.total),
        gpu_temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
        memory_temperature_celsius: field(0).filter(|&t| t > 0.0),
        power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        energy_millijoules: device.total_energy_consumption().ok(),
        sm_clock_mhz: device.clock_info(Clock::SM).ok().map(u64::from),
        memory_clock_mhz: device.clock_info(Clock::Memory).ok().map(u64::from),
        // NVML reports KB/s over a 20 ms window.
        pcie_tx_bytes_per_second: device
            .pcie_throughput(PcieUtilCounter::Send)
            .ok()
            .map(|k| u64::from(k) * 1024),
        pcie_rx_bytes_per_second: device
            .pcie_throughput(PcieUtilCounter::Receive)
            .ok()
            .map(|k| u64::from(k) * 1024),
        pcie_replays: device.pcie_replay_counter().ok().map(u64::from),
        xid_errors: None,
        last_xid: None,
        ecc_corrected: device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok(),
        ecc_uncorrected: device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok(),
        remapped_rows_correctable: field(1).map(|v| v as u64),
        remapped_rows_uncorrectable: field(2).map(|v| v as u64),
        row_remap_pending: field(3).map(|v| v != 0.0),
        row_remap_failure: field(4).map(|v| v != 0.0),
        nvlink_tx_bytes,
        nvlink_rx_bytes,
        throttle_reasons: device.current_throttle_reasons().ok().map(|r| r.bits()),
    }
}

fn field_value(sample: &FieldValueSample) -> Option<f64> {
    match sample.value.as_ref().ok()? {
        SampleValue::F64(v) => Some(*v),
        SampleValue::U32(v) => Some(f64::from(*v)),
        SampleValue::U64(v) => Some(*v as f64),
        SampleValue::I64(v) => Some(*v as f64),
    }
}

/// The MIG instances of a GPU in MIG mode: memory readings (NVML has no utilization for them).
fn mig_instances(device: &NvmlDevice<'_>, parent: &Device) -> Vec<Device> {
    let enabled = device.mig_mode().is_ok_and(|mode| mode.current == 1);
    if !enabled {
        return Vec::new();
    }
    let count = device.mig_device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| device.mig_device_by_index(i).ok())
        .filter_map(|mig| {
            let uuid = mig.uuid().ok()?;
            let name = mig.name().unwrap_or_default();
            // NVML names a MIG device "<model> MIG <profile>", e.g. "NVIDIA A100-SXM4-40GB MIG 1g.5gb".
            let profile = name.rsplit_once(" MIG ").map(|(_, p)| p.to_string()).unwrap_or_default();
            let memory = mig.memory_info().ok();
            let readings = Readings {
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                memory_free_bytes: memory.as_ref().map(|m| m.free),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                ..Readings::default()
            };
            let (gpu_instance_id, compute_instance_id) = instance_ids(&mig);
            let mig_info =
                Mig { parent_uuid: parent.uuid.clone(), profile, gpu_instance_id, compute_instance_id };
            Some(Device { uuid, mig: Some(mig_info), readings, processes: Vec::new(), ..parent.clone() })
        })
        .collect()
}

/// A MIG device's GPU and compute instance IDs, which `nvml-wrapper` doesn't wrap.
#[allow(unsafe_code)]
fn instance_ids(mig: &NvmlDevice<'_>) -> (u32, u32) {
    let Some(nvml) = LIBRARY.get() else { return (0, 0) };
    let lib = nvml.lib();
    let (mut gpu_instance, mut compute_instance) = (0u32, 0u32);
    // SAFETY: both symbols were resolved from the loaded library (checked with `as_ref`), the
    // handle is a live MIG device handle from that library, and each call writes one `c_uint`
    // through a pointer to a local that outlives the call.
    unsafe {
        if let Ok(get) = lib.nvmlDeviceGetGpuInstanceId.as_ref() {
            get(mig.handle(), &mut gpu_instance);
        }
        if let Ok(get) = lib.nvmlDeviceGetComputeInstanceId.as_ref() {
            get(mig.handle(), &mut compute_instance);
        }
    }
    (gpu_instance, compute_instance)
}

/// Compute processes with their memory, plus SM utilization where NVML has samples.
fn read_processes(device: &NvmlDevice<'_>) -> Vec<Process> {
    let Ok(running) = device.running_compute_processes() else { return Vec::new() };
    let utilization: HashMap<u32, u32> = device
        .process_utilization_stats(None)
        .map(|samples| samples.into_iter().map(|s| (s.pid, s.sm_util)).collect())
        .unwrap_or_default();
    running
        .into_iter()
        .map(|p| Process {
            pid: p.pid,
            // The name is only readable when Sluice shares the host's PID namespace.
            name: std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            memory_used_bytes: match p.used_gpu_memory {
                UsedGpuMemory::Used(bytes) => Some(bytes),
                UsedGpuMemory::Unavailable => None,
            },
            sm_utilization_percent: utilization.get(&p.pid).map(|&u| f64::from(u)),
        })
        .collect()
}
