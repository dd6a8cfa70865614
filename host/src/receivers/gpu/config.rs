//! `type = "gpu"`: its table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::units::HumanDuration;

/// `type = "gpu"`: samples every NVIDIA GPU (and MIG instance) on the host and sends the samples
/// down its pipelines as OTLP metrics.
///
/// ```toml
/// [receivers.gpu]
/// type = "gpu"
/// kind = "nvml"          # the driver's NVML library, loaded at run time
/// interval = "10s"
/// naming = "dcgm"        # dcgm-exporter's names; "otel" for hw.gpu.*, "both" for both
/// processes = true       # per-process GPU memory and utilization
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuReceiverConfig {
    /// Where samples come from.
    pub kind: Spanned<GpuSource>,
    /// Time between samples.
    #[serde(default = "default_gpu_interval")]
    pub interval: Spanned<HumanDuration>,
    /// Which metric names to produce.
    #[serde(default)]
    pub naming: GpuNaming,
    /// Also report each process's GPU memory and utilization.
    #[serde(default)]
    pub processes: bool,
    /// `kind = "nvml"`: the NVML library to load instead of the system's `libnvidia-ml.so.1`.
    #[serde(default)]
    pub library: Option<Spanned<PathBuf>>,
    /// `kind = "scripted"`: the script of samples to replay, relative to the config file.
    #[serde(default)]
    pub script: Option<Spanned<PathBuf>>,
    /// The `Hostname` label and `host.name` attribute; the machine's host name when absent or empty.
    #[serde(default)]
    pub hostname: Option<String>,
}

fn default_gpu_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(10)))
}

/// Where GPU samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuSource {
    /// NVIDIA's NVML, loaded with `dlopen` when the receiver starts.
    Nvml,
    /// A script of samples (`script = "..."`): for tests, demos and dashboards without a GPU.
    Scripted,
}

/// The metric names a GPU receiver produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuNaming {
    /// dcgm-exporter's names and labels (`DCGM_FI_DEV_GPU_UTIL{gpu, UUID, ...}`), so DCGM
    /// dashboards work unchanged.
    #[default]
    Dcgm,
    /// OpenTelemetry's hardware semantic conventions (`hw.gpu.utilization`, ...).
    Otel,
    /// Both sets.
    Both,
}
