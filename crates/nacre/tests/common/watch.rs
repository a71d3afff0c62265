//! Reading watches in the end-to-end tests.

use std::time::Duration;

use nacre_client::{WatchEvent, WatchStream};

/// Takes events from the watch until `n` came, within `within` at most
/// (the test fails otherwise, or if the watch ends or errs).
pub async fn take(w: &mut WatchStream, n: usize, within: Duration) -> Vec<WatchEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut all = Vec::new();
    while all.len() < n {
        let b = tokio::time::timeout_at(deadline, w.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} events in {within:?}", all.len()))
            .expect("the watch goes on")
            .expect("no watch error");
        all.extend(b.events);
    }
    all
}
