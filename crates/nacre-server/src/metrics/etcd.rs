//! Calls of the etcd v3 API, by method and gRPC status, in a fixed array
//! like the native requests' (`requests.rs`): the label sets are bounded
//! by construction (the methods Nacre serves, the 17 gRPC codes).
//!
//! The time is to the response's headers: a unary call's whole answer,
//! a stream's start (Watch, LeaseKeepAlive, Snapshot, Observe, Campaign
//! run on). The code is the one the headers carry (tonic puts an error's
//! status there, a "trailers-only" response); a response without one is
//! counted `ok`, as a successful unary call or a stream that started is.

use std::time::Duration;

use super::histogram::{Histogram, HistogramGrid};

/// Every method of the etcd API, as `Service/Method` (its gRPC path
/// without the package); any other path counts as `other`.
pub const METHODS: [&str; 46] = [
    "KV/Range",
    "KV/Put",
    "KV/DeleteRange",
    "KV/Txn",
    "KV/Compact",
    "Watch/Watch",
    "Lease/LeaseGrant",
    "Lease/LeaseRevoke",
    "Lease/LeaseKeepAlive",
    "Lease/LeaseTimeToLive",
    "Lease/LeaseLeases",
    "Cluster/MemberAdd",
    "Cluster/MemberRemove",
    "Cluster/MemberUpdate",
    "Cluster/MemberList",
    "Cluster/MemberPromote",
    "Maintenance/Alarm",
    "Maintenance/Status",
    "Maintenance/Defragment",
    "Maintenance/Hash",
    "Maintenance/HashKV",
    "Maintenance/Snapshot",
    "Maintenance/MoveLeader",
    "Lock/Lock",
    "Lock/Unlock",
    "Election/Campaign",
    "Election/Proclaim",
    "Election/Leader",
    "Election/Observe",
    "Election/Resign",
    "Auth/AuthEnable",
    "Auth/AuthDisable",
    "Auth/Authenticate",
    "Auth/UserAdd",
    "Auth/UserGet",
    "Auth/UserList",
    "Auth/UserDelete",
    "Auth/UserChangePassword",
    "Auth/UserGrantRole",
    "Auth/UserRevokeRole",
    "Auth/RoleAdd",
    "Auth/RoleGet",
    "Auth/RoleList",
    "Auth/RoleDelete",
    "Auth/RoleGrantPermission",
    "Auth/RoleRevokePermission",
];
const OTHER: &str = "other";
const METHOD_COUNT: usize = METHODS.len() + 1;

/// gRPC's status codes by number (0 to 16), as the `code` label.
const CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];
/// A status number outside gRPC's codes is counted as `unknown` (2).
const CODE_UNKNOWN: usize = 2;

/// The method of a gRPC path (`/etcdserverpb.KV/Range`): its index in
/// [`METHODS`], or the index of `other`.
pub fn method_of(path: &str) -> usize {
    let short = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('.'))
        .map_or("", |(_, rest)| rest);
    METHODS
        .iter()
        .position(|m| *m == short)
        .unwrap_or(METHOD_COUNT - 1)
}

/// The etcd API's call latencies, by method and code.
#[derive(Debug)]
pub struct EtcdCallMetrics(HistogramGrid);

impl Default for EtcdCallMetrics {
    fn default() -> Self {
        EtcdCallMetrics(HistogramGrid::new(METHOD_COUNT, CODES.len()))
    }
}

impl EtcdCallMetrics {
    /// Records one call of `method` ([`method_of`]) answered with the
    /// gRPC status number `code` (`None`: no status in the headers, `ok`)
    /// after `took`.
    pub fn observe(&self, method: usize, code: Option<i32>, took: Duration) {
        let code = match code {
            None => 0,
            Some(c) => usize::try_from(c)
                .ok()
                .filter(|c| *c < CODES.len())
                .unwrap_or(CODE_UNKNOWN),
        };
        self.0.observe(method.min(METHOD_COUNT - 1), code, took);
    }

    /// Every (method, code, histogram) that has seen a call.
    pub fn used(&self) -> impl Iterator<Item = (&'static str, &'static str, &Histogram)> {
        self.0.used().map(|(method, code, h)| {
            let method = METHODS.get(method).copied().unwrap_or(OTHER);
            (method, CODES[code], h)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_method_and_anything_else_to_other() {
        assert_eq!(METHODS[method_of("/etcdserverpb.KV/Range")], "KV/Range");
        assert_eq!(METHODS[method_of("/v3lockpb.Lock/Unlock")], "Lock/Unlock");
        let e = method_of("/v3electionpb.Election/Observe");
        assert_eq!(METHODS[e], "Election/Observe");
        for odd in ["", "/", "/etcdserverpb.KV/Nope", "KV/Range", "/x/KV/Range"] {
            assert_eq!(method_of(odd), METHOD_COUNT - 1, "{odd:?}");
        }
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let m = EtcdCallMetrics::default();
        let put = method_of("/etcdserverpb.KV/Put");
        m.observe(put, None, Duration::from_micros(300));
        m.observe(put, Some(0), Duration::from_micros(300));
        m.observe(put, Some(5), Duration::from_micros(300));
        m.observe(put, Some(99), Duration::from_micros(300));
        m.observe(METHOD_COUNT - 1, Some(-1), Duration::from_micros(300));
        let used: Vec<_> = m.used().map(|(a, b, h)| (a, b, h.count())).collect();
        assert_eq!(
            used,
            [
                ("KV/Put", "ok", 2),
                ("KV/Put", "unknown", 1),
                ("KV/Put", "not_found", 1),
                ("other", "unknown", 1),
            ]
        );
    }
}
