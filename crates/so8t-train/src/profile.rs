//! Where a training step's time goes, for `RUST_LOG=so8t_train=debug`: the step is cut into
//! phases, and with debug logging on the device is synchronized at every phase boundary (so GPU
//! work is charged to the phase that queued it) and the totals are logged once per step. With
//! debug logging off nothing is synchronized and nothing is timed.

use std::time::Instant;

use candle_core::Device;

use crate::error::Result;

/// Phase times of one step.
pub(crate) struct Phases {
    device: Option<Device>,
    last: Instant,
    totals: Vec<(&'static str, f64)>,
}

impl Phases {
    /// Starts timing on `device` when debug logging is on for this crate.
    pub(crate) fn start(device: &Device) -> Result<Self> {
        let device = tracing::enabled!(tracing::Level::DEBUG).then(|| device.clone());
        if let Some(d) = &device {
            d.synchronize()?;
        }
        Ok(Self {
            device,
            last: Instant::now(),
            totals: Vec::new(),
        })
    }

    /// Ends the phase `name` here (phases of the same name add up).
    pub(crate) fn mark(&mut self, name: &'static str) -> Result<()> {
        let Some(d) = &self.device else {
            return Ok(());
        };
        d.synchronize()?;
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64();
        self.last = now;
        match self.totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += dt,
            None => self.totals.push((name, dt)),
        }
        Ok(())
    }

    /// Logs the totals (debug level), `what` naming the step.
    pub(crate) fn log(&self, what: &str) {
        if self.device.is_none() {
            return;
        }
        let parts: Vec<String> = self
            .totals
            .iter()
            .map(|(n, t)| format!("{n} {:.1} ms", t * 1e3))
            .collect();
        tracing::debug!("{what}: {}", parts.join(", "));
    }
}
