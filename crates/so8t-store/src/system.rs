//! The machine's load while training: CPU %, this process's resident memory, system RAM, and
//! (with the `nvml` feature and an NVIDIA driver present) GPU utilization, VRAM and temperature.
//! Sampling is throttled: [`SystemSampler::sample`] re-reads at most once per `min_interval`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One reading; a field is None where the machine does not tell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemSample {
    /// CPU use of the whole machine, percent (0–100).
    pub cpu_pct: Option<f64>,
    /// Resident memory of this process, bytes.
    pub rss_bytes: Option<u64>,
    /// RAM in use on the machine, bytes.
    pub ram_used_bytes: Option<u64>,
    /// RAM of the machine, bytes.
    pub ram_total_bytes: Option<u64>,
    /// GPU 0 utilization, percent.
    pub gpu_util_pct: Option<f64>,
    /// GPU 0 memory in use, bytes.
    pub vram_used_bytes: Option<u64>,
    /// GPU 0 memory, bytes.
    pub vram_total_bytes: Option<u64>,
    /// GPU 0 temperature, °C.
    pub gpu_temp_c: Option<f64>,
}

/// Reads [`SystemSample`]s.
pub struct SystemSampler {
    sys: System,
    pid: Pid,
    last: Option<(Instant, SystemSample)>,
    min_interval: Duration,
    #[cfg(feature = "nvml")]
    nvml: Option<nvml_wrapper::Nvml>,
}

impl SystemSampler {
    /// A sampler that re-reads at most every `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        let mut sys = System::new();
        // CPU % is a difference between two readings: take the first one now.
        sys.refresh_cpu_usage();
        Self {
            sys,
            pid: Pid::from_u32(std::process::id()),
            last: None,
            min_interval,
            #[cfg(feature = "nvml")]
            nvml: nvml_wrapper::Nvml::init().ok(),
        }
    }

    /// The current load (or the previous reading when it is younger than `min_interval`).
    pub fn sample(&mut self) -> SystemSample {
        if let Some((t, s)) = &self.last {
            if t.elapsed() < self.min_interval {
                return s.clone();
            }
        }
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let total = self.sys.total_memory();
        let mut s = SystemSample {
            cpu_pct: Some(self.sys.global_cpu_usage() as f64),
            rss_bytes: self.sys.process(self.pid).map(|p| p.memory()),
            ram_used_bytes: (total > 0).then(|| self.sys.used_memory()),
            ram_total_bytes: (total > 0).then_some(total),
            ..Default::default()
        };
        #[cfg(feature = "nvml")]
        if let Some(nvml) = &self.nvml {
            if let Ok(dev) = nvml.device_by_index(0) {
                if let Ok(u) = dev.utilization_rates() {
                    s.gpu_util_pct = Some(u.gpu as f64);
                }
                if let Ok(m) = dev.memory_info() {
                    s.vram_used_bytes = Some(m.used);
                    s.vram_total_bytes = Some(m.total);
                }
                if let Ok(t) =
                    dev.temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                {
                    s.gpu_temp_c = Some(t as f64);
                }
            }
        }
        self.last = Some((Instant::now(), s.clone()));
        s
    }
}

/// Whether a live (not zombie) process with this id exists on this machine (Linux:
/// `/proc/PID/stat`; elsewhere assumed gone, so a stale session never blocks a resume).
pub fn process_alive(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `PID (comm) STATE …`: comm may hold spaces and parentheses, the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}
