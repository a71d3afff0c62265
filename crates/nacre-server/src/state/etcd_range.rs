//! etcd's reading rules, shared by Ranges inside a Txn (applied in the
//! state machine) and Range requests (served from a snapshot): the key
//! interval of `key`/`range_end`, the filters, sort, limit and count of a
//! `RangeRequest`, and the compares of a `TxnRequest`.

use std::cmp::Ordering;

use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb::KeyValue;

use super::kv::user_key;
use super::USER_NS;

/// Store-key bounds of etcd's interval: `None` for a single key (empty
/// `range_end`); else the start and the exclusive end (`range_end` "\0"
/// means every key from `key` on, so the end of the user namespace).
pub fn etcd_bounds(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    if range_end.is_empty() {
        return None;
    }
    let start = user_key(key);
    if range_end == [0] {
        return Some((start, Some(vec![USER_NS + 1])));
    }
    if range_end <= key {
        // An empty interval: end where it starts.
        return Some((start.clone(), Some(start)));
    }
    Some((start, Some(user_key(range_end))))
}

/// Applies a `RangeRequest`'s filters, sort order, limit, `keys_only` and
/// `count_only` to every pair in its interval (`kvs`, in key order), as
/// etcd 3.4 does: `count` is every key in the interval, filters and sort
/// come before the limit, and `more` says the limit cut some off.
pub fn shape_range(mut kvs: Vec<KeyValue>, r: &pb::RangeRequest) -> pb::RangeResponse {
    let count = kvs.len() as i64;
    if r.count_only {
        return pb::RangeResponse {
            header: None,
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    kvs.retain(|kv| passes_filters(kv, r));
    // etcd 3.4 reads everything before it sorts only when an order or a
    // filter is named; otherwise it reads `limit + 1` pairs in key order
    // and sorts those (a sort target without an order sorts just them).
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if r.sort_order == 0 && !filtered && r.limit > 0 {
        kvs.truncate(
            usize::try_from(r.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
    }
    sort(&mut kvs, r);
    let mut more = false;
    if let Ok(limit) = usize::try_from(r.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = bytes::Bytes::new();
        }
    }
    pb::RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

fn passes_filters(kv: &KeyValue, r: &pb::RangeRequest) -> bool {
    let above = |v: i64, min: i64| min == 0 || v >= min;
    let below = |v: i64, max: i64| max == 0 || v <= max;
    above(kv.mod_revision, r.min_mod_revision)
        && below(kv.mod_revision, r.max_mod_revision)
        && above(kv.create_revision, r.min_create_revision)
        && below(kv.create_revision, r.max_create_revision)
}

/// etcd sorts ascending when a target other than the key is named without
/// an order; by key ascending is the interval's own order. Stable, so
/// ties stay in key order.
fn sort(kvs: &mut [KeyValue], r: &pb::RangeRequest) {
    use pb::range_request::{SortOrder, SortTarget};
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order == SortOrder::None || (order == SortOrder::Ascend && target == SortTarget::Key) {
        return;
    }
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| by(b, a));
    } else {
        kvs.sort_by(by);
    }
}

/// Whether a compare holds for the pairs in its interval (`kvs`): for each
/// of them; with none, a value compare fails and the others compare with
/// an absent key's zeros, as etcd does.
pub fn compare_holds(c: &pb::Compare, kvs: &[KeyValue]) -> bool {
    use pb::compare::CompareTarget;
    if kvs.is_empty() {
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        return target != CompareTarget::Value && compare_one(c, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_one(c, kv))
}

fn compare_one(c: &pb::Compare, kv: &KeyValue) -> bool {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    // The union's member must be the target's own; another reads as 0
    // (or an empty value), as in etcd.
    let ordering = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value[..].cmp(&v[..]),
        (CompareTarget::Value, _) => kv.value[..].cmp(&[][..]),
        (CompareTarget::Version, u) => kv.version.cmp(match u {
            Some(TargetUnion::Version(n)) => n,
            _ => &0,
        }),
        (CompareTarget::Create, u) => kv.create_revision.cmp(match u {
            Some(TargetUnion::CreateRevision(n)) => n,
            _ => &0,
        }),
        (CompareTarget::Mod, u) => kv.mod_revision.cmp(match u {
            Some(TargetUnion::ModRevision(n)) => n,
            _ => &0,
        }),
        (CompareTarget::Lease, u) => kv.lease.cmp(match u {
            Some(TargetUnion::Lease(n)) => n,
            _ => &0,
        }),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
        CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

/// The pairs in etcd's interval `[key, range_end)` of a snapshot, in key
/// order, as etcd's `KeyValue`s, stopping with `None` once their bytes
/// pass `bytes_max` (a reply that large is refused, not built).
pub fn read_interval(
    txn: &nacre_store::ReadTxn,
    key: &[u8],
    range_end: &[u8],
    bytes_max: usize,
) -> Result<Option<Vec<KeyValue>>, super::StateError> {
    let leases = super::leases::any(txn)?;
    let to_kv = |k: &[u8], raw: &[u8]| -> Result<KeyValue, super::StateError> {
        let (rev, value) = super::kv::decode_stored(k, raw)?;
        let user = &k[1..];
        let lease = if leases {
            super::leases::lease_of_read(txn, user)?
        } else {
            0
        };
        Ok(super::etcd::to_key_value(user, rev, value, lease))
    };
    let Some((start, end)) = etcd_bounds(key, range_end) else {
        let uk = user_key(key);
        return Ok(Some(match txn.get(&uk)? {
            Some(raw) => vec![to_kv(&uk, &raw)?],
            None => Vec::new(),
        }));
    };
    let end_bound = end
        .as_deref()
        .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let mut kvs = Vec::new();
    let mut bytes = 0usize;
    for item in txn.range(std::ops::Bound::Included(&start[..]), end_bound) {
        let (k, raw) = item?;
        bytes += k.len() + raw.len();
        if bytes > bytes_max {
            return Ok(None);
        }
        kvs.push(to_kv(&k, &raw)?);
    }
    Ok(Some(kvs))
}
