//! Device names as users write them (`auto`, `cpu`, `cuda`, `cuda:N`) and the candle device.

use candle_core::Device;

use crate::error::{Error, Result};

/// What a device name means, before any device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA GPU 0 when this build has CUDA and a GPU is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Device(format!(
                "unknown device {s:?}: expected auto, cpu, cuda or cuda:N"
            ))
        };
        Ok(match s.trim() {
            "auto" => Self::Auto,
            "cpu" => Self::Cpu,
            "cuda" | "gpu" => Self::Cuda(0),
            d => {
                let n = d.strip_prefix("cuda:").ok_or_else(bad)?;
                Self::Cuda(n.parse().map_err(|_| bad())?)
            }
        })
    }
}

/// True when this binary was built with CUDA (`--features cuda`).
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}

impl DeviceSpec {
    /// Opens the device. `auto` falls back to the CPU when CUDA is not built in or no GPU
    /// answers; an explicit `cuda` that cannot be opened is an error saying why.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if !cuda_built() => Ok(Device::Cpu),
            Self::Auto => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
            Self::Cuda(n) if !cuda_built() => Err(Error::Device(format!(
                "cuda:{n} asked for, but this so8t was built without CUDA (build it with \
                 `--features cuda`, see scripts/build-cuda.sh)"
            ))),
            Self::Cuda(n) => {
                Device::new_cuda(n).map_err(|e| Error::Device(format!("cannot open cuda:{n}: {e}")))
            }
        }
    }
}

/// Parses and opens a device name in one go.
pub fn open(name: &str) -> Result<Device> {
    name.parse::<DeviceSpec>()?.open()
}

/// A short name of an opened device for logs and run records (`cpu`, `cuda:0`).
pub fn name_of(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["tpu", "cuda:", "cuda:x", "cuda3"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn auto_and_cpu_open_here() {
        assert!(open("cpu").unwrap().is_cpu());
        let d = open("auto").unwrap();
        assert_eq!(d.is_cpu(), !cuda_built() || Device::new_cuda(0).is_err());
        if !cuda_built() {
            let e = open("cuda:0").unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
        assert_eq!(name_of(&Device::Cpu), "cpu");
    }
}
