//! The time a node decides by. The raft loop never reads the system clock
//! itself: it asks a [`Clock`], so that the simulator can give each node a
//! clock of its own (drifting, slowed down, running on while the node is
//! paused) and replay it from a seed.

use std::sync::Arc;

/// A monotonic clock in microseconds. Only differences between two
/// readings mean anything; it never goes back.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> u64;
}

/// The host's clock. On Linux it is `CLOCK_BOOTTIME`, which, unlike
/// `CLOCK_MONOTONIC` (what `std::time::Instant` reads), keeps counting
/// while the machine is suspended: a leader whose host slept through an
/// election must see that its lease ran out, not resume believing that no
/// time passed. Elsewhere it falls back on `Instant`.
#[derive(Debug)]
pub struct HostClock {
    #[cfg(not(target_os = "linux"))]
    origin: std::time::Instant,
}

impl HostClock {
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(HostClock {
            #[cfg(not(target_os = "linux"))]
            origin: std::time::Instant::now(),
        })
    }
}

impl Clock for HostClock {
    #[cfg(target_os = "linux")]
    fn now_us(&self) -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // Both fields are non-negative for CLOCK_BOOTTIME.
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
    }

    #[cfg(not(target_os = "linux"))]
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_clock_moves_forward_with_real_time() {
        let clock = HostClock::shared();
        let a = clock.now_us();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = clock.now_us();
        assert!(b >= a + 20_000, "{a} then {b}");
        // And not absurdly far (a unit mistake would show here).
        assert!(b < a + 20_000_000, "{a} then {b}");
    }
}
