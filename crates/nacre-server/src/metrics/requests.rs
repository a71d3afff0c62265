//! Client request latency by operation and outcome: one [`Histogram`] per
//! (op, outcome) pair, all made when the node starts, so that recording a
//! request is an index into an array (no lock, no map, no allocation) and
//! the label sets are bounded by construction: the ops are the protocol's
//! opcodes, the outcomes `ok` and the error codes.

use std::time::Duration;

use nacre_proto::{ErrorCode, Request, Response};

use super::histogram::{Histogram, HistogramGrid};

/// Every op of the native protocol, by opcode, with its label. A request
/// stamped with a session is counted as the request inside it.
pub const OPS: [(u8, &str); 41] = [
    (1, "ping"),
    (2, "version"),
    (3, "who_master"),
    (4, "statistics"),
    (5, "get_txid"),
    (10, "get"),
    (11, "get_entry"),
    (12, "exists"),
    (13, "multi_get"),
    (14, "multi_get_option"),
    (15, "range"),
    (16, "range_entries"),
    (17, "prefix_keys"),
    (18, "key_count"),
    (30, "set"),
    (31, "delete"),
    (32, "confirm"),
    (33, "test_and_set"),
    (34, "replace"),
    (35, "delete_prefix"),
    (36, "sequence"),
    (37, "nop"),
    (40, "cluster_status"),
    (41, "add_learner"),
    (42, "promote"),
    (43, "remove_node"),
    (44, "transfer_leader"),
    (50, "call"),
    (51, "script_put"),
    (52, "script_list"),
    (53, "script_show"),
    (54, "script_history"),
    (55, "script_rollback"),
    (56, "script_delete"),
    (60, "watch"),
    (61, "watch_cancel"),
    (62, "lease_grant"),
    (63, "lease_revoke"),
    (64, "lease_keep_alive"),
    (65, "lease_ttl"),
    (66, "lease_list"),
];

/// The label of an opcode missing from [`OPS`] (a newer protocol's).
const OTHER: &str = "other";
/// Ops with a label: those of [`OPS`] and `other`.
pub const OP_COUNT: usize = OPS.len() + 1;

/// Error codes 1 to this have a name of their own; any other is
/// `unknown`. Checked against `nacre_proto::ErrorCode` by a test, so a
/// new code fails it until it is counted here.
const ERROR_CODE_MAX: u16 = 23;
/// Outcomes with a label: `ok`, each error code, and `unknown`.
pub const OUTCOME_COUNT: usize = ERROR_CODE_MAX as usize + 2;

/// Index into [`OPS`] by opcode (`OPS.len()`: other).
const OP_INDEX: [u8; 256] = {
    let mut t = [OPS.len() as u8; 256];
    let mut i = 0;
    while i < OPS.len() {
        t[OPS[i].0 as usize] = i as u8;
        i += 1;
    }
    t
};

/// What a request is counted as: its op's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op(u8);

impl Op {
    pub fn of(req: &Request) -> Op {
        let req = match req {
            Request::Session { request, .. } => request,
            r => r,
        };
        Op(OP_INDEX[usize::from(req.opcode())])
    }

    pub fn name(self) -> &'static str {
        OPS.get(usize::from(self.0)).map_or(OTHER, |(_, n)| n)
    }
}

/// The outcome label of index `i` (`ok`, an error code's name, `unknown`).
pub fn outcome_name(i: usize) -> &'static str {
    match u16::try_from(i) {
        Ok(0) => "ok",
        Ok(c) if c <= ERROR_CODE_MAX => ErrorCode::from_u16(c).name(),
        _ => "unknown",
    }
}

fn outcome_index(resp: &Response) -> usize {
    match resp {
        Response::Error(e) => match e.code.to_u16() {
            c @ 1..=ERROR_CODE_MAX => usize::from(c),
            _ => OUTCOME_COUNT - 1,
        },
        _ => 0,
    }
}

/// The latency histograms of client requests, by op and outcome.
#[derive(Debug)]
pub struct RequestMetrics(HistogramGrid);

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics(HistogramGrid::new(OP_COUNT, OUTCOME_COUNT))
    }
}

impl RequestMetrics {
    /// Records one request of `op` answered with `resp` after `took`.
    pub fn observe(&self, op: Op, resp: &Response, took: Duration) {
        self.0.observe(usize::from(op.0), outcome_index(resp), took);
    }

    /// Every (op, outcome, histogram) that has seen a request.
    pub fn used(&self) -> impl Iterator<Item = (&'static str, &'static str, &Histogram)> {
        self.0.used().map(|(op, outcome, h)| {
            let op = Op(u8::try_from(op).unwrap_or(u8::MAX));
            (op.name(), outcome_name(outcome), h)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nacre_proto::{ErrorReply, Session};

    #[test]
    fn every_error_code_has_its_own_outcome() {
        for c in 1..=ERROR_CODE_MAX {
            let code = ErrorCode::from_u16(c);
            assert!(!matches!(code, ErrorCode::Unknown(_)), "code {c}");
            assert_eq!(outcome_name(usize::from(c)), code.name());
        }
        // A code added to the protocol must be added here too.
        let next = ErrorCode::from_u16(ERROR_CODE_MAX + 1);
        assert!(matches!(next, ErrorCode::Unknown(_)), "{next:?}");
        assert_eq!(outcome_name(0), "ok");
        assert_eq!(outcome_name(OUTCOME_COUNT - 1), "unknown");
    }

    #[test]
    fn opcodes_and_labels_are_distinct() {
        let mut codes: Vec<u8> = OPS.iter().map(|(c, _)| *c).collect();
        let mut names: Vec<&str> = OPS.iter().map(|(_, n)| *n).collect();
        codes.sort_unstable();
        codes.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!((codes.len(), names.len()), (OPS.len(), OPS.len()));
    }

    #[test]
    fn a_session_write_counts_as_the_write_inside() {
        let set = Request::Set {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
        };
        assert_eq!(Op::of(&set).name(), "set");
        let stamped = Request::Session {
            session: Session {
                client_id: 1,
                seq: 1,
            },
            request: Box::new(set),
        };
        assert_eq!(Op::of(&stamped).name(), "set");
        assert_eq!(Op::of(&Request::Ping).name(), "ping");
    }

    #[test]
    fn requests_land_in_their_cell_and_only_used_cells_are_listed() {
        let m = RequestMetrics::default();
        let not_found = Response::Error(ErrorReply::new(ErrorCode::NotFound, "x"));
        m.observe(
            Op::of(&Request::Ping),
            &Response::Unit,
            Duration::from_micros(3),
        );
        m.observe(
            Op::of(&Request::Ping),
            &Response::Unit,
            Duration::from_micros(3),
        );
        m.observe(Op::of(&Request::Ping), &not_found, Duration::from_micros(3));
        let used: Vec<(&str, &str, u64)> = m.used().map(|(o, r, h)| (o, r, h.count())).collect();
        assert_eq!(used, vec![("ping", "ok", 2), ("ping", "not_found", 1)]);
    }
}
