//! Phase-transition detection on the loss curve (spec §2): the step window where training
//! changes regime, found from the data rather than from the α schedule's midpoint.
//!
//! The loss is smoothed with an exponential moving average; its slope (one-step difference) is
//! compared with the mean ± 2σ band of the previous `window` slopes. A transition opens when the
//! slope stays outside the band for `confirm` steps in a row (its start is the first of them)
//! and closes after `settle` steps back inside (its end is the last step outside). The detector
//! is a pure function of the loss sequence, so a resumed run rebuilds it by replaying the
//! checkpoint's loss history and reports the same windows.

use std::collections::VecDeque;

use serde::Serialize;

/// Which way the curve turned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The loss falls faster than before (a drop).
    Steeper,
    /// The loss falls slower than before, or rises.
    Flatter,
}

/// One detected transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// First step outside the band.
    pub start: u64,
    /// Last step outside the band.
    pub end: u64,
    /// Sign of the largest deviation.
    pub direction: Direction,
    /// Largest |z| of the slope inside the window.
    pub peak_z: f64,
}

/// What one new loss value tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The smoothed loss.
    pub smooth: f64,
    /// z-score of the smoothed slope against the band (None while the band fills).
    pub z: Option<f64>,
    /// Whether this step is inside a confirmed, still open transition.
    pub in_transition: bool,
    /// The start of a transition confirmed at this step.
    pub opened: Option<u64>,
    /// A transition that closed at this step.
    pub closed: Option<Transition>,
}

/// The detector's settings and state.
#[derive(Debug, Clone)]
pub struct TransitionDetector {
    ema: f64,
    window: usize,
    band_sigmas: f64,
    strong_sigmas: f64,
    confirm: usize,
    settle: usize,
    smooth: Option<f64>,
    slopes: VecDeque<f64>,
    recent: VecDeque<f64>,
    outside: Vec<(u64, f64, f64)>,
    open: Option<Transition>,
    inside_run: usize,
}

impl TransitionDetector {
    /// A detector with an EMA span of `span` steps, a band over `window` slopes of ±2σ, 3 steps
    /// (one beyond 3.5σ) to confirm and 3 to settle.
    pub fn new(span: usize, window: usize) -> Self {
        Self {
            ema: 2.0 / (span.max(1) as f64 + 1.0),
            window: window.max(4),
            band_sigmas: 2.0,
            strong_sigmas: 3.5,
            confirm: 3,
            settle: 3,
            smooth: None,
            slopes: VecDeque::new(),
            recent: VecDeque::new(),
            outside: Vec::new(),
            open: None,
            inside_run: 0,
        }
    }

    /// Settings scaled to a run of `total_steps`: span T/50 (5–50), window T/10 (10–200).
    pub fn for_run(total_steps: u64) -> Self {
        let t = total_steps as usize;
        Self::new((t / 50).clamp(5, 50), (t / 10).clamp(10, 200))
    }

    /// Whether a confirmed transition is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Feeds the loss of `step`.
    pub fn observe(&mut self, step: u64, loss: f64) -> Observation {
        let prev = self.smooth;
        let smooth = match prev {
            Some(s) if loss.is_finite() => s + self.ema * (loss - s),
            Some(s) => s,
            None => loss,
        };
        self.smooth = Some(smooth);
        let mut obs = Observation {
            smooth,
            z: None,
            in_transition: false,
            opened: None,
            closed: None,
        };
        let Some(prev) = prev else {
            return obs;
        };
        let slope = smooth - prev;
        if self.slopes.len() >= self.window {
            let n = self.slopes.len() as f64;
            let mean = self.slopes.iter().sum::<f64>() / n;
            let var = self.slopes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
            // A floor keeps a perfectly flat curve from turning rounding noise into transitions.
            let sd = var.sqrt().max(1e-9 * (1.0 + smooth.abs()));
            let z = (slope - mean) / sd;
            obs.z = Some(z);
            self.track(step, slope, z, &mut obs);
        }
        self.recent.push_back(slope);
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
        if self.open.is_none() && self.outside.is_empty() {
            self.push_baseline(slope);
        }
        obs.in_transition = self.open.is_some();
        obs
    }

    fn push_baseline(&mut self, slope: f64) {
        self.slopes.push_back(slope);
        if self.slopes.len() > self.window {
            self.slopes.pop_front();
        }
    }

    fn track(&mut self, step: u64, slope: f64, z: f64, obs: &mut Observation) {
        let out = z.abs() > self.band_sigmas;
        match &mut self.open {
            Some(t) => {
                if out {
                    self.inside_run = 0;
                    t.end = step;
                    if z.abs() > t.peak_z {
                        t.peak_z = z.abs();
                        t.direction = direction(z);
                    }
                    if (step - t.start) as usize >= self.window {
                        // The curve settled into a new regime: it becomes the baseline.
                        obs.closed = self.open.take();
                        self.slopes = self.recent.clone();
                    }
                } else {
                    self.inside_run += 1;
                    self.push_baseline(slope);
                    if self.inside_run >= self.settle {
                        obs.closed = self.open.take();
                        self.inside_run = 0;
                    }
                }
            }
            None => {
                if !out {
                    // Not confirmed: the held slopes were noise and belong to the band.
                    let held: Vec<f64> = self.outside.drain(..).map(|(_, s, _)| s).collect();
                    for s in held {
                        self.push_baseline(s);
                    }
                    return;
                }
                self.outside.push((step, slope, z));
                let strong = self.outside.iter().any(|o| o.2.abs() >= self.strong_sigmas);
                if self.outside.len() >= self.confirm && strong {
                    let start = self.outside[0].0;
                    let peak = self.outside.iter().map(|o| o.2).fold(0.0f64, |a, z| {
                        if z.abs() > a.abs() {
                            z
                        } else {
                            a
                        }
                    });
                    self.open = Some(Transition {
                        start,
                        end: step,
                        direction: direction(peak),
                        peak_z: peak.abs(),
                    });
                    obs.opened = Some(start);
                    self.outside.clear();
                    self.inside_run = 0;
                }
            }
        }
    }

    /// Closes a transition still open when the run ends.
    pub fn finish(&mut self) -> Option<Transition> {
        self.open.take()
    }
}

fn direction(z: f64) -> Direction {
    if z < 0.0 {
        Direction::Steeper
    } else {
        Direction::Flatter
    }
}
