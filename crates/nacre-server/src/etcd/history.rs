//! A Range at an older revision. Nacre's store keeps only the newest
//! version of each key, so an older revision is rebuilt from the newest
//! state and the node's watch history (the same bounded history watches
//! replay from): every key the history shows changing after the revision
//! is put back as its last change at or before it said. A revision whose
//! changes the history no longer holds gets etcd's "compacted" error,
//! never a guess.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb::KeyValue;
use nacre_proto::{ErrorCode, ErrorReply, WatchEvent};

use crate::state::{to_key_value, COMPACTED};
use crate::watch::WatchHub;

/// How long a read waits for the history to catch up with the snapshot it
/// read (the raft loop publishes right after it applies).
const HISTORY_WAIT_MS: u64 = 2_000;

/// Whether `key` lies in etcd's interval `[start, range_end)`.
pub(super) fn in_interval(key: &[u8], start: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn compacted() -> ErrorReply {
    ErrorReply::new(ErrorCode::Compacted, COMPACTED)
}

/// The pairs of `r`'s interval as of `rev`, from `current` (the interval
/// in a snapshot at applied index `applied`).
pub(super) fn as_of(
    hub: &WatchHub,
    applied: u64,
    rev: u64,
    r: &pb::RangeRequest,
    current: Vec<KeyValue>,
) -> Result<Vec<KeyValue>, ErrorReply> {
    let deadline = Instant::now() + Duration::from_millis(HISTORY_WAIT_MS);
    while hub.applied() < applied {
        if Instant::now() > deadline {
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "the watch history did not catch up with the store in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (_, after) = hub
        .changes_after(rev, |k| in_interval(k, &r.key, &r.range_end))
        .ok_or_else(compacted)?;
    // Changes the snapshot does not hold yet are not undone either.
    let mut first_after: BTreeMap<&[u8], &WatchEvent> = BTreeMap::new();
    for e in after.iter().filter(|e| e.revision() <= applied) {
        first_after.entry(&e.key[..]).or_insert(e);
    }
    let mut out: BTreeMap<Vec<u8>, KeyValue> = current
        .into_iter()
        .filter(|kv| !first_after.contains_key(&kv.key[..]))
        .map(|kv| (kv.key.to_vec(), kv))
        .collect();
    // A key's first change after `rev` says what it was at `rev`.
    for (key, first) in first_after {
        match (&first.prev, first.etcd.prev_rev) {
            (Some(value), Some(prev_rev)) => {
                let kv = to_key_value(key, prev_rev, value, first.etcd.prev_lease);
                out.insert(key.to_vec(), kv);
            }
            (None, _) => {}
            (Some(_), None) => return Err(compacted()),
        }
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::in_interval;

    #[test]
    fn intervals_follow_etcds_range_end() {
        assert!(in_interval(b"a", b"a", b""));
        assert!(!in_interval(b"ab", b"a", b""));
        assert!(in_interval(b"zz", b"a", b"\0"));
        assert!(!in_interval(b"0", b"a", b"\0"));
        assert!(in_interval(b"ab", b"a", b"b"));
        assert!(!in_interval(b"b", b"a", b"b"));
    }
}
