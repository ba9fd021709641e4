//! A team of worker threads that run one closure together, each on its share of the work.
//!
//! Decoding a small model issues a few hundred parallel matrix products per token, each a few
//! microseconds long, so the dispatch must cost well under a microsecond: workers spin on an
//! epoch counter for a while after each job and only then sleep on a condition variable.
//! The calling thread is member 0 and takes its share too.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicU64,
    pending: AtomicUsize,
    job: UnsafeCell<Option<Job>>,
    stop: AtomicBool,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the owner between jobs (when no worker reads it) and read by
// workers only after they observe the new epoch (Acquire), which the owner publishes (Release)
// after the write.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// A fixed set of threads that execute jobs together (see the module docs).
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    size: usize,
}

impl Team {
    /// A team of `size` members (the caller plus `size - 1` worker threads); `size` ≥ 1.
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..size)
            .map(|id| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("so8t-engine-{id}"))
                    .spawn(move || worker(&s, id))
                    .expect("spawning an engine thread")
            })
            .collect();
        Self {
            shared,
            workers,
            size,
        }
    }

    /// Number of members, the caller included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `job(member)` on every member (0 on the calling thread) and returns when all are
    /// done. Panics if a member panicked.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.size == 1 {
            job(0);
            return;
        }
        let s = &*self.shared;
        // SAFETY: erase the lifetime; `run` does not return before every worker finished the job.
        let ptr: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
        unsafe { *s.job.get() = Some(ptr) };
        s.pending.store(self.size - 1, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("an engine worker thread panicked");
        }
    }

    /// The `[start, end)` share of `n` items for `member` (contiguous, balanced).
    pub fn share(n: usize, member: usize, members: usize) -> (usize, usize) {
        let per = n / members;
        let extra = n % members;
        let start = member * per + member.min(extra);
        (start, start + per + usize::from(member < extra))
    }
}

fn worker(s: &Shared, id: usize) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen || s.stop.load(Ordering::Relaxed) {
                break e;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                let g = if s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst)
                {
                    s.wake.wait(g).unwrap_or_else(|e| e.into_inner())
                } else {
                    g
                };
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(g);
            } else {
                std::hint::spin_loop();
            }
        };
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = epoch;
        // SAFETY: the owner wrote the job before publishing this epoch and keeps it alive until
        // `pending` reaches zero.
        if let Some(job) = unsafe { *s.job.get() } {
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(id))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Chunks of `n` items for the members of a team job, with stealing: every member owns a
/// contiguous share and takes its chunks front to back; once its share is done it takes chunks
/// from the back of another member's share. A member thus reads its memory in order (what
/// bandwidth-bound kernels want), and one slowed by the memory bus or a busy core is relieved
/// by the others instead of holding them up.
pub struct Shares {
    /// Per member: (next chunk from the front, end chunk) packed as `lo << 32 | hi`.
    ranges: Vec<AtomicU64>,
    chunk: usize,
    n: usize,
}

impl Shares {
    /// Shares of `n` items in chunks of `chunk` items (≥ 1) for `members` members.
    pub fn new(n: usize, chunk: usize, members: usize) -> Self {
        let chunk = chunk.max(1);
        let chunks = n.div_ceil(chunk);
        assert!(chunks < u32::MAX as usize, "too many chunks");
        let ranges = (0..members.max(1))
            .map(|m| {
                let (lo, hi) = Team::share(chunks, m, members.max(1));
                AtomicU64::new(((lo as u64) << 32) | hi as u64)
            })
            .collect();
        Self { ranges, chunk, n }
    }

    /// The next `[start, end)` items for `member`, or None when every chunk is taken.
    pub fn next(&self, member: usize) -> Option<(usize, usize)> {
        let members = self.ranges.len();
        let own = member % members;
        for k in 0..members {
            let victim = (own + k) % members;
            let r = &self.ranges[victim];
            let mut cur = r.load(Ordering::Acquire);
            loop {
                let (lo, hi) = (cur >> 32, cur & 0xFFFF_FFFF);
                if lo >= hi {
                    break;
                }
                // The owner takes from the front, others from the back.
                let (taken, new) = if k == 0 {
                    (lo, ((lo + 1) << 32) | hi)
                } else {
                    (hi - 1, (lo << 32) | (hi - 1))
                };
                match r.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let start = taken as usize * self.chunk;
                        return Some((start, (start + self.chunk).min(self.n)));
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

/// A raw output pointer that team members write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: members only write disjoint index ranges (checked by the callers' share arithmetic).
unsafe impl<T> Sync for SharedMut<T> {}
unsafe impl<T> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps a slice.
    pub(crate) fn new(s: &mut [T]) -> Self {
        Self(s.as_mut_ptr())
    }

    /// `&mut data[start..start + len]`.
    ///
    /// # Safety
    /// No two members may hold overlapping ranges at once, and the range must be in bounds.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_runs_its_share_once() {
        for size in [1, 2, 3, 5] {
            let team = Team::new(size);
            for round in 0..200 {
                let n = 37 + round;
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                team.run(&|m| {
                    let (a, b) = Team::share(n, m, size);
                    for h in &hits[a..b] {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn shares_cover_every_item_once_and_owners_read_in_order() {
        for members in [1, 2, 3, 5] {
            let team = Team::new(members);
            for (n, chunk) in [(0, 4), (1, 4), (37, 4), (1000, 7), (64, 64), (65, 64)] {
                let shares = Shares::new(n, chunk, members);
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                team.run(&|m| {
                    let mut last_own = None;
                    let mut stolen = false;
                    while let Some((a, b)) = shares.next(m) {
                        assert!(a < b && b <= n && b - a <= chunk);
                        let (own_lo, own_hi) = Team::share(n.div_ceil(chunk), m, members);
                        let c = a / chunk;
                        if c >= own_lo && c < own_hi {
                            // Own chunks come front to back, before any stolen one.
                            assert!(!stolen && last_own.is_none_or(|l| l + 1 == c), "member {m}");
                            last_own = Some(c);
                        } else {
                            stolen = true;
                        }
                        for h in &hits[a..b] {
                            h.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n {n}");
            }
        }
        // One member alone steals everything, from the back of the others' shares.
        let shares = Shares::new(40, 10, 2);
        let got: Vec<_> = std::iter::from_fn(|| shares.next(0)).collect();
        assert_eq!(got, [(0, 10), (10, 20), (30, 40), (20, 30)]);
    }

    #[test]
    fn workers_wake_after_sleeping_and_panics_propagate() {
        let team = Team::new(2);
        std::thread::sleep(Duration::from_millis(20));
        let c = AtomicUsize::new(0);
        team.run(&|_| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|m| {
                if m == 1 {
                    panic!("boom")
                }
            })
        }));
        assert!(r.is_err());
        team.run(&|_| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 4);
    }
}
