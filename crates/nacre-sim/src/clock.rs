//! Each simulated node's own monotonic clock: simulated time seen through
//! the node's rate (drift, a scenario's slowdown). It keeps running while
//! the node is paused, as a host's clock does while a process is stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nacre_server::clock::Clock;
use parking_lot::Mutex;

/// The simulator's current time, shared by every node's clock.
pub type SimNow = Arc<AtomicU64>;

pub struct SimClock {
    sim_now: SimNow,
    rate: Mutex<Rate>,
}

/// Local time is `local_us + (sim - sim_us) * 1000 / period_permille`:
/// a node with `period_permille` 1500 needs 1.5 simulated seconds for one
/// second of its own.
#[derive(Clone, Copy)]
struct Rate {
    sim_us: u64,
    local_us: u64,
    period_permille: u64,
}

impl Rate {
    fn local_at(&self, sim_us: u64) -> u64 {
        self.local_us + (sim_us - self.sim_us) * 1000 / self.period_permille
    }
}

impl SimClock {
    /// A clock reading `local_start_us` now and running at
    /// `period_permille` (see [`Rate`]).
    pub fn new(sim_now: SimNow, period_permille: u64, local_start_us: u64) -> Arc<SimClock> {
        assert!(period_permille > 0);
        let sim_us = sim_now.load(Ordering::Relaxed);
        Arc::new(SimClock {
            sim_now,
            rate: Mutex::new(Rate {
                sim_us,
                local_us: local_start_us,
                period_permille,
            }),
        })
    }

    pub fn period_permille(&self) -> u64 {
        self.rate.lock().period_permille
    }

    /// Changes the rate from now on; the time read so far stays.
    pub fn set_period_permille(&self, period_permille: u64) {
        assert!(period_permille > 0);
        let now = self.sim_now.load(Ordering::Relaxed);
        let mut rate = self.rate.lock();
        *rate = Rate {
            sim_us: now,
            local_us: rate.local_at(now),
            period_permille,
        };
    }

    /// Simulated microseconds that `local_us` of this clock take now.
    pub fn sim_us_for(&self, local_us: u64) -> u64 {
        local_us * self.period_permille() / 1000
    }
}

impl Clock for SimClock {
    fn now_us(&self) -> u64 {
        self.rate
            .lock()
            .local_at(self.sim_now.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_clock_counts_less_and_keeps_what_it_counted() {
        let now: SimNow = Arc::new(AtomicU64::new(1_000));
        let c = SimClock::new(now.clone(), 2_000, 50);
        now.store(3_000, Ordering::Relaxed);
        assert_eq!(c.now_us(), 1_050);
        c.set_period_permille(1_000);
        assert_eq!(c.now_us(), 1_050);
        now.store(3_500, Ordering::Relaxed);
        assert_eq!(c.now_us(), 1_550);
        assert_eq!(c.sim_us_for(10_000), 10_000);
    }
}
