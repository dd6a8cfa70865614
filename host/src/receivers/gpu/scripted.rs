//! `kind = "scripted"`: replays samples from a TOML script — for the test suite, demos, and
//! building dashboards on a machine without a GPU. Sample N of the receiver uses the script's
//! sample N; the last one repeats.
//!
//! ```toml
//! driver_version = "550.54.15"
//!
//! [[samples]]
//! delay = "0s"                 # how long the "driver" takes to answer (a slow or hung call)
//!
//! [[samples.devices]]
//! index = 0
//! uuid = "GPU-5d9d8f0a-0000-0000-0000-000000000000"
//! model = "NVIDIA A100-SXM4-40GB"
//! readings = { gpu_utilization_percent = 87, memory_used_bytes = 1073741824 }
//!
//! [[samples]]
//! unavailable = "driver not loaded"   # NVML missing for this sample
//!
//! [[samples]]
//! failures = [{ index = 0, uuid = "GPU-5d9d…", kind = "lost", message = "GPU is lost" }]
//! ```

use std::path::Path;

use serde::Deserialize;

use super::sample::{Backend, BackendError, Device, DeviceFailure, Snapshot};
use crate::config::units::HumanDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[serde(default)]
    driver_version: String,
    samples: Vec<Step>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Step {
    delay: Option<HumanDuration>,
    unavailable: Option<String>,
    devices: Vec<Device>,
    failures: Vec<DeviceFailure>,
}

/// A backend replaying a script.
#[derive(Debug)]
pub struct Scripted {
    driver_version: String,
    steps: Vec<Step>,
    next: usize,
}

impl Scripted {
    /// Reads the script at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let script: Script =
            toml_edit::de::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if script.samples.is_empty() {
            return Err(format!("{}: the script has no [[samples]]", path.display()));
        }
        Ok(Self { driver_version: script.driver_version, steps: script.samples, next: 0 })
    }
}

impl Backend for Scripted {
    fn sample(&mut self, processes: bool) -> Result<Snapshot, BackendError> {
        let step = &self.steps[self.next.min(self.steps.len() - 1)];
        self.next += 1;
        if let Some(delay) = &step.delay {
            std::thread::sleep(delay.0);
        }
        if let Some(reason) = &step.unavailable {
            return Err(BackendError::Unavailable(reason.clone()));
        }
        let mut devices = step.devices.clone();
        if !processes {
            devices.iter_mut().for_each(|d| d.processes.clear());
        }
        Ok(Snapshot { driver_version: self.driver_version.clone(), devices, failures: step.failures.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_steps_and_repeats_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gpus.toml");
        std::fs::write(
            &path,
            r#"
            driver_version = "550.54.15"
            [[samples]]
            unavailable = "no driver"
            [[samples]]
            [[samples.devices]]
            index = 0
            uuid = "GPU-1"
            model = "Test GPU"
            readings = { gpu_utilization_percent = 50 }
            processes = [{ pid = 7, name = "python", memory_used_bytes = 1024 }]
            "#,
        )
        .expect("write");
        let mut backend = Scripted::open(&path).expect("valid script");
        assert_eq!(backend.sample(true), Err(BackendError::Unavailable("no driver".into())));
        for _ in 0..2 {
            let snapshot = backend.sample(false).expect("sample");
            assert_eq!(snapshot.driver_version, "550.54.15");
            assert_eq!(snapshot.devices[0].readings.gpu_utilization_percent, Some(50.0));
            assert!(snapshot.devices[0].processes.is_empty(), "processes only when asked for");
        }
        assert_eq!(backend.sample(true).expect("sample").devices[0].processes[0].pid, 7);
    }

    #[test]
    fn a_bad_script_says_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gpus.toml");
        std::fs::write(&path, "[[samples]]\n[[samples.devices]]\nindex = 0\nuuid = 3\n").expect("write");
        let error = Scripted::open(&path).expect_err("uuid is not a string");
        assert!(error.contains("gpus.toml") && error.contains("line 4"), "{error}");
    }
}
