//! What the client commands print: readable text by default, one JSON
//! object per result with `--json` (bytes base64-encoded).

use std::fmt::Write as _;
use std::io::Write;

use base64::Engine;
use nacre_client::{Bytes, ClientError, EventKind, KeyEntry, LeaseInfo, VersionInfo, WatchEvent};
use serde_json::{json, Map, Value};

/// The result of one command, before formatting.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `get`: the value alone; `raw` writes its exact bytes, no newline.
    Value {
        key: Bytes,
        value: Bytes,
        raw: bool,
    },
    Entry(KeyEntry),
    Entries(Vec<KeyEntry>),
    Keys(Vec<Bytes>),
    Values(Vec<(Bytes, Option<Bytes>)>),
    Exists {
        key: Bytes,
        exists: bool,
    },
    /// A write's log index.
    Index(u64),
    /// test_and_set, replace: the previous value.
    Prev {
        index: u64,
        prev: Option<Bytes>,
    },
    /// delete_prefix: how many keys went.
    Deleted {
        index: u64,
        count: u64,
    },
    /// A named number (key_count, get_txid).
    Number {
        name: &'static str,
        n: u64,
    },
    Stats(Vec<(String, String)>),
    /// Formatted by its command: `text` as it is, or the JSON objects.
    Rendered {
        text: String,
        json: Vec<Value>,
    },
    Master(Option<String>),
    Version(VersionInfo),
    Text(String),
    /// `watch`: one change; `prev`: print the previous value too.
    Event {
        event: WatchEvent,
        prev: bool,
    },
    /// `lease grant`: the new lease's id (hex).
    LeaseId(u64),
    /// `lease ttl`, `lease list`, `lease keep-alive`.
    Leases(Vec<LeaseInfo>),
    /// `lock`: the fencing token (alone on its line), the key, the lease.
    Locked {
        token: u64,
        key: Bytes,
        lease: u64,
    },
    /// `elect`: elected with this proposal.
    Elected {
        proposal: Bytes,
        token: u64,
        key: Bytes,
    },
}

/// Marks a missing value in text output.
pub const ABSENT: &str = "(absent)";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn b64_opt(b: &Option<Bytes>) -> Value {
    b.as_ref().map_or(Value::Null, |b| Value::String(b64(b)))
}

/// A one-line, unambiguous rendering of bytes: valid UTF-8 stays as it is
/// except control characters and backslashes, which are escaped (`\n`,
/// `\t`, `\r`, `\\`, `\u{1b}`); bytes that are not UTF-8 become `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

fn entry_json(e: &KeyEntry) -> Value {
    json!({
        "key": b64(&e.key),
        "value": b64(&e.value),
        "create_rev": e.rev.create_rev,
        "mod_rev": e.rev.mod_rev,
        "version": e.rev.version,
    })
}

fn line(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(b'\n');
}

/// Formats a result as the bytes to write to stdout.
pub fn render(o: &Output, json_mode: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if json_mode {
        for v in to_json(o) {
            line(&mut out, &v.to_string());
        }
        return out;
    }
    match o {
        Output::Value {
            value, raw: true, ..
        } => out.extend_from_slice(value),
        Output::Value { value, .. } => match std::str::from_utf8(value) {
            Ok(s) => line(&mut out, s),
            Err(_) => line(&mut out, &escape(value)),
        },
        Output::Entry(e) => {
            line(&mut out, &format!("key: {}", escape(&e.key)));
            line(&mut out, &format!("value: {}", escape(&e.value)));
            line(&mut out, &format!("create_rev: {}", e.rev.create_rev));
            line(&mut out, &format!("mod_rev: {}", e.rev.mod_rev));
            line(&mut out, &format!("version: {}", e.rev.version));
        }
        Output::Entries(es) => {
            for e in es {
                line(
                    &mut out,
                    &format!("{}\t{}", escape(&e.key), escape(&e.value)),
                );
            }
        }
        Output::Keys(ks) => {
            for k in ks {
                line(&mut out, &escape(k));
            }
        }
        Output::Values(vs) => {
            for (_, v) in vs {
                line(
                    &mut out,
                    &v.as_deref().map_or_else(|| ABSENT.to_string(), escape),
                );
            }
        }
        Output::Exists { exists, .. } => line(&mut out, &exists.to_string()),
        Output::Index(i) => line(&mut out, &format!("index: {i}")),
        Output::Prev { prev, .. } => line(
            &mut out,
            &prev.as_deref().map_or_else(|| ABSENT.to_string(), escape),
        ),
        Output::Deleted { count, .. } | Output::Number { n: count, .. } => {
            line(&mut out, &count.to_string())
        }
        Output::Stats(kv) => {
            for (k, v) in kv {
                line(&mut out, &format!("{k}: {v}"));
            }
        }
        Output::Master(m) => line(&mut out, m.as_deref().unwrap_or("(none)")),
        Output::Version(v) => {
            let mut s = format!("{}.{}.{}", v.major, v.minor, v.patch);
            if !v.info.is_empty() {
                let _ = write!(s, " {}", v.info);
            }
            line(&mut out, &s);
        }
        Output::Text(t) => line(&mut out, t),
        Output::Rendered { text, .. } => line(&mut out, text),
        o => render_coordination(&mut out, o),
    }
    out
}

fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    }
}

/// Text of the coordination outputs.
fn render_coordination(out: &mut Vec<u8>, o: &Output) {
    match o {
        Output::Event { event: e, prev } => {
            let mut s = format!(
                "{}\t{}\t{}\t{}",
                kind_name(e.kind),
                escape(&e.key),
                escape(&e.value),
                e.revision()
            );
            if *prev {
                let p = e.prev.as_deref().map_or_else(|| ABSENT.to_string(), escape);
                let _ = write!(s, "\t{p}");
            }
            line(out, &s);
        }
        Output::LeaseId(id) => line(out, &format!("{id:x}")),
        Output::Leases(ls) => {
            for l in ls {
                let mut s = format!(
                    "{:x}\tttl_ms {}\tremaining_ms {}",
                    l.id, l.ttl_ms, l.remaining_ms
                );
                for k in &l.keys {
                    let _ = write!(s, "\t{}", escape(k));
                }
                line(out, &s);
            }
        }
        Output::Locked { token, .. } => line(out, &token.to_string()),
        Output::Elected {
            proposal,
            token,
            key,
        } => line(
            out,
            &format!(
                "elected: {} (token {token}, key {})",
                escape(proposal),
                escape(key)
            ),
        ),
        _ => unreachable!("not a coordination output"),
    }
}

fn coordination_json(o: &Output) -> Vec<Value> {
    match o {
        Output::Event { event: e, .. } => vec![json!({
            "kind": kind_name(e.kind).to_lowercase(),
            "key": b64(&e.key),
            "value": b64(&e.value),
            "revision": e.revision(),
            "create_rev": e.rev.create_rev,
            "version": e.rev.version,
            "prev": b64_opt(&e.prev),
        })],
        Output::LeaseId(id) => vec![json!({ "id": format!("{id:x}") })],
        Output::Leases(ls) => ls
            .iter()
            .map(|l| {
                json!({
                    "id": format!("{:x}", l.id),
                    "ttl_ms": l.ttl_ms,
                    "remaining_ms": l.remaining_ms,
                    "keys": l.keys.iter().map(|k| b64(k)).collect::<Vec<_>>(),
                })
            })
            .collect(),
        Output::Locked { token, key, lease } => {
            vec![json!({"token": token, "key": b64(key), "lease": format!("{lease:x}")})]
        }
        Output::Elected {
            proposal,
            token,
            key,
        } => vec![json!({"elected": b64(proposal), "token": token, "key": b64(key)})],
        _ => unreachable!("not a coordination output"),
    }
}

/// Where a command's results go (stdout), each written as soon as it is
/// there: a paged read prints every page as it arrives instead of holding
/// the whole range. A write that fails is kept for [`Sink::take_error`]
/// and stops the output.
pub struct Sink<'a> {
    out: &'a mut dyn Write,
    json: bool,
    error: Option<std::io::Error>,
}

impl<'a> Sink<'a> {
    pub fn new(out: &'a mut dyn Write, json: bool) -> Sink<'a> {
        Sink {
            out,
            json,
            error: None,
        }
    }

    /// Writes one result, or one page of them; `false` once writing has
    /// failed, so that a reader stops fetching what nobody will see.
    pub fn emit(&mut self, o: &Output) -> bool {
        if self.error.is_some() {
            return false;
        }
        let bytes = render(o, self.json);
        match self.out.write_all(&bytes).and_then(|()| self.out.flush()) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Why writing failed, if it did.
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

fn to_json(o: &Output) -> Vec<Value> {
    match o {
        Output::Value { key, value, .. } => vec![json!({"key": b64(key), "value": b64(value)})],
        Output::Entry(e) => vec![entry_json(e)],
        Output::Entries(es) => es.iter().map(entry_json).collect(),
        Output::Keys(ks) => ks.iter().map(|k| json!({"key": b64(k)})).collect(),
        Output::Values(vs) => vs
            .iter()
            .map(|(k, v)| json!({"key": b64(k), "value": b64_opt(v)}))
            .collect(),
        Output::Exists { key, exists } => vec![json!({"key": b64(key), "exists": exists})],
        Output::Index(i) => vec![json!({ "index": i })],
        Output::Prev { index, prev } => vec![json!({"index": index, "prev": b64_opt(prev)})],
        Output::Deleted { index, count } => vec![json!({"index": index, "count": count})],
        Output::Number { name, n } => {
            let mut m = Map::new();
            m.insert(name.to_string(), json!(n));
            vec![Value::Object(m)]
        }
        Output::Stats(kv) => {
            let m: Map<String, Value> = kv
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            vec![Value::Object(m)]
        }
        Output::Master(m) => vec![json!({ "master": m })],
        Output::Version(v) => {
            vec![json!({"major": v.major, "minor": v.minor, "patch": v.patch, "info": v.info})]
        }
        Output::Text(t) => vec![json!({ "reply": t })],
        Output::Rendered { json, .. } => json.clone(),
        o => coordination_json(o),
    }
}

/// Exit codes, documented in docs/cli.md.
pub mod exit {
    pub const OK: i32 = 0;
    pub const GENERIC: i32 = 1;
    pub const NOT_FOUND: i32 = 2;
    pub const ASSERTION_FAILED: i32 = 3;
    pub const UNAVAILABLE: i32 = 4;
    pub const REFUSED: i32 = 5;
    /// A request or its reply is over a limit (`too_large`): asking again
    /// the same way gets the same answer, so ask for less.
    pub const TOO_LARGE: i32 = 6;
    /// A write fenced by a lock (`set --fence`) was refused: the lock is
    /// no longer held with that token.
    pub const FENCED: i32 = 7;
    /// A watch asked for revisions the node no longer keeps.
    pub const COMPACTED: i32 = 8;
    /// The lease does not exist, or one this command kept alive was lost.
    pub const LEASE_NOT_FOUND: i32 = 9;
    /// `get --wait-rev` / `--wait-for-key`: nothing came within
    /// `--timeout-ms`.
    pub const WAIT_TIMED_OUT: i32 = 10;
    /// `ping`: the node answered, but reports itself unhealthy (no leader
    /// heard from, or applying too far behind; docs/operations.md).
    pub const UNHEALTHY: i32 = 11;
    pub const USAGE: i32 = 64;
    /// `nacre serve`: the node stopped on corrupt data (a checksum, a stored
    /// value that does not decode, a tlog behind its store); EX_DATAERR.
    pub const CORRUPTION: i32 = 65;
    /// `nacre serve`: a thread the node cannot live without panicked or
    /// ended, or an invariant broke; EX_SOFTWARE.
    pub const INTERNAL: i32 = 70;
    /// `nacre serve`: the disk refused an I/O call; EX_IOERR.
    pub const IO: i32 = 74;
    /// `nacre serve`: the store or the tlog refused writes after an earlier
    /// I/O failure; a restart recovers what is durable. EX_TEMPFAIL.
    pub const POISONED: i32 = 75;
    /// `nacre serve`: the cluster removed this node, which stopped; its
    /// configuration no longer describes a member, so a supervisor must
    /// not restart it. EX_CONFIG.
    pub const REMOVED: i32 = 78;
}

/// A failed command: the code name, message, key and leader hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub key: Option<Bytes>,
    pub leader: Option<String>,
    pub exit_code: i32,
}

impl Failure {
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: "bad_input".into(),
            message: message.into(),
            key: None,
            leader: None,
            exit_code: exit::GENERIC,
        }
    }

    pub fn from_client(e: &ClientError) -> Failure {
        use nacre_client::ErrorCode;
        let code = e.code();
        let exit_code = match code {
            _ if matches!(e, ClientError::WaitTimedOut { .. }) => exit::WAIT_TIMED_OUT,
            Some(ErrorCode::Fenced) => exit::FENCED,
            Some(ErrorCode::Compacted) => exit::COMPACTED,
            Some(ErrorCode::LeaseNotFound) => exit::LEASE_NOT_FOUND,
            Some(ErrorCode::NotFound) => exit::NOT_FOUND,
            Some(ErrorCode::AssertionFailed) => exit::ASSERTION_FAILED,
            Some(ErrorCode::WrongCluster | ErrorCode::UnsupportedVersion) => exit::REFUSED,
            Some(ErrorCode::TooLarge) => exit::TOO_LARGE,
            _ if e.is_unavailable() => exit::UNAVAILABLE,
            _ => exit::GENERIC,
        };
        let code_name = match (code, e) {
            (_, ClientError::WaitTimedOut { .. }) => "wait_timed_out".into(),
            (_, ClientError::LeaseLost { .. }) => "lease_lost".into(),
            (Some(c), _) => c.name().to_string(),
            (None, ClientError::ConnectionLost { .. }) => "connection_lost".into(),
            (None, ClientError::NoLeader(_)) => "no_leader".into(),
            (
                None,
                ClientError::AllEndpointsFailed { .. }
                | ClientError::Io(_)
                | ClientError::Disconnected { .. },
            ) => "unavailable".into(),
            (None, ClientError::Protocol(_) | ClientError::UnexpectedResponse { .. }) => {
                "protocol".into()
            }
            (None, _) => "error".into(),
        };
        let message = match e.reply() {
            Some(r) => r.message.clone(),
            None => e.to_string(),
        };
        Failure {
            code: code_name,
            message,
            key: e.key().cloned(),
            leader: e.leader().map(str::to_string),
            exit_code,
        }
    }

    /// A node that answered `ping` but is not healthy: its whole line.
    pub fn unhealthy(line: String) -> Failure {
        Failure {
            code: "unhealthy".into(),
            message: line,
            key: None,
            leader: None,
            exit_code: exit::UNHEALTHY,
        }
    }

    /// The stderr line.
    pub fn text(&self) -> String {
        let mut s = format!("nacre: error [{}]: {}", self.code, self.message);
        if let Some(k) = &self.key {
            let _ = write!(s, " (key: {})", escape(k));
        }
        if let Some(l) = &self.leader {
            let _ = write!(s, " (leader: {l})");
        }
        s
    }

    /// The JSON error object printed on stdout with `--json`.
    pub fn json(&self) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "key": b64_opt(&self.key),
                "leader": self.leader,
                "exit_code": self.exit_code,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_client::{ErrorCode, ErrorReply, Revision};

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn text(o: &Output) -> String {
        String::from_utf8(render(o, false)).unwrap()
    }

    fn json_lines(o: &Output) -> Vec<Value> {
        String::from_utf8(render(o, true))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn escape_keeps_utf8_and_escapes_the_rest() {
        assert_eq!(escape(b"plain"), "plain");
        assert_eq!(escape("h\u{e9}".as_bytes()), "h\u{e9}");
        assert_eq!(escape(b"a\nb\tc\\"), "a\\nb\\tc\\\\");
        assert_eq!(escape(&[0x61, 0xff, 0x00]), "a\\xff\\u{0}");
    }

    #[test]
    fn get_prints_utf8_raw_and_binary_escaped() {
        let v = |value: &[u8], raw| Output::Value {
            key: b("k"),
            value: Bytes::copy_from_slice(value),
            raw,
        };
        assert_eq!(text(&v(b"two\nlines", false)), "two\nlines\n");
        assert_eq!(text(&v(&[1, 0xfe], false)), "\\u{1}\\xfe\n");
        assert_eq!(render(&v(&[1, 0xfe], true), false), vec![1, 0xfe]);
        assert_eq!(
            json_lines(&v(b"1", false)),
            vec![json!({"key": "aw==", "value": "MQ=="})]
        );
    }

    #[test]
    fn entries_and_lists() {
        let e = KeyEntry {
            key: b("a"),
            value: b("1"),
            rev: Revision {
                create_rev: 3,
                mod_rev: 5,
                version: 2,
            },
        };
        assert_eq!(
            text(&Output::Entries(vec![e.clone(), e.clone()])),
            "a\t1\na\t1\n"
        );
        assert_eq!(
            json_lines(&Output::Entries(vec![e.clone()])),
            vec![
                json!({"key": "YQ==", "value": "MQ==", "create_rev": 3, "mod_rev": 5, "version": 2})
            ]
        );
        assert_eq!(
            text(&Output::Entry(e)),
            "key: a\nvalue: 1\ncreate_rev: 3\nmod_rev: 5\nversion: 2\n"
        );
        assert_eq!(text(&Output::Keys(vec![b("x"), b("y\n")])), "x\ny\\n\n");
        assert_eq!(text(&Output::Keys(vec![])), "");
        let vals = Output::Values(vec![(b("a"), Some(b("1"))), (b("b"), None)]);
        assert_eq!(text(&vals), "1\n(absent)\n");
        assert_eq!(
            json_lines(&vals),
            vec![
                json!({"key": "YQ==", "value": "MQ=="}),
                json!({"key": "Yg==", "value": null})
            ]
        );
    }

    #[test]
    fn writes_and_admin() {
        assert_eq!(text(&Output::Index(7)), "index: 7\n");
        assert_eq!(json_lines(&Output::Index(7)), vec![json!({"index": 7})]);
        let p = Output::Prev {
            index: 8,
            prev: None,
        };
        assert_eq!(text(&p), "(absent)\n");
        assert_eq!(json_lines(&p), vec![json!({"index": 8, "prev": null})]);
        let d = Output::Deleted { index: 9, count: 3 };
        assert_eq!(text(&d), "3\n");
        assert_eq!(json_lines(&d), vec![json!({"index": 9, "count": 3})]);
        let n = Output::Number {
            name: "count",
            n: 4,
        };
        assert_eq!(json_lines(&n), vec![json!({"count": 4})]);
        let s = Output::Stats(vec![("a".into(), "1".into()), ("b".into(), "x".into())]);
        assert_eq!(text(&s), "a: 1\nb: x\n");
        assert_eq!(json_lines(&s), vec![json!({"a": "1", "b": "x"})]);
        assert_eq!(text(&Output::Master(None)), "(none)\n");
        assert_eq!(
            json_lines(&Output::Master(Some("h:1".into()))),
            vec![json!({"master": "h:1"})]
        );
        let v = VersionInfo {
            major: 0,
            minor: 1,
            patch: 2,
            info: "nacre".into(),
        };
        assert_eq!(text(&Output::Version(v)), "0.1.2 nacre\n");
        assert_eq!(
            text(&Output::Exists {
                key: b("k"),
                exists: false
            }),
            "false\n"
        );
    }

    #[test]
    fn failures_map_to_exit_codes_and_messages() {
        let nf = ClientError::Server(
            ErrorReply::new(ErrorCode::NotFound, "key not found").with_key(b("k\n")),
        );
        let f = Failure::from_client(&nf);
        assert_eq!(f.exit_code, exit::NOT_FOUND);
        assert_eq!(
            f.text(),
            "nacre: error [not_found]: key not found (key: k\\n)"
        );
        assert_eq!(
            f.json(),
            json!({"error": {"code": "not_found", "message": "key not found", "key": "awo=", "leader": null, "exit_code": 2}})
        );
        let af = ClientError::Server(ErrorReply::new(ErrorCode::AssertionFailed, "no"));
        assert_eq!(Failure::from_client(&af).exit_code, exit::ASSERTION_FAILED);
        let nm = ClientError::Server(
            ErrorReply::new(ErrorCode::NotMaster, "no").with_leader(Some("h:1".into())),
        );
        let f = Failure::from_client(&nm);
        assert_eq!(f.exit_code, exit::UNAVAILABLE);
        assert!(f.text().ends_with("(leader: h:1)"));
        let down = ClientError::AllEndpointsFailed {
            errors: vec![nacre_client::EndpointError {
                endpoint: "x".into(),
                leader_hint: false,
                error: Box::new(ClientError::Io(
                    std::io::ErrorKind::ConnectionRefused.into(),
                )),
            }],
        };
        assert_eq!(Failure::from_client(&down).exit_code, exit::UNAVAILABLE);
        assert_eq!(Failure::from_client(&down).code, "unavailable");
        let refused = ClientError::Refused {
            endpoint: "e".into(),
            code: ErrorCode::WrongCluster,
            node: "n".into(),
            cluster_id: "c".into(),
            message: "m".into(),
        };
        assert_eq!(Failure::from_client(&refused).exit_code, exit::REFUSED);
        let bad = ClientError::Server(ErrorReply::new(ErrorCode::BadInput, "bad"));
        assert_eq!(Failure::from_client(&bad).exit_code, exit::GENERIC);
        // Too large, from the server or caught before sending.
        let big = ErrorReply::new(ErrorCode::TooLarge, "over frame_size_max_bytes");
        let f = Failure::from_client(&ClientError::Server(big.clone()));
        assert_eq!(
            (f.exit_code, f.code.as_str()),
            (exit::TOO_LARGE, "too_large")
        );
        let f = Failure::from_client(&ClientError::Limit(big));
        assert_eq!(f.exit_code, exit::TOO_LARGE);
    }

    #[test]
    fn a_sink_writes_each_page_at_once_and_stops_after_a_failed_write() {
        let mut out = Vec::new();
        let mut sink = Sink::new(&mut out, false);
        assert!(sink.emit(&Output::Keys(vec![b("a")])));
        assert!(sink.emit(&Output::Keys(vec![b("b"), b("c")])));
        assert!(sink.take_error().is_none());
        drop(sink);
        assert_eq!(out, b"a\nb\nc\n");

        /// A pipe whose reader went away.
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut closed = Closed;
        let mut sink = Sink::new(&mut closed, true);
        assert!(!sink.emit(&Output::Keys(vec![b("a")])));
        assert!(!sink.emit(&Output::Keys(vec![b("b")])));
        let e = sink.take_error().expect("the write error is kept");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn coordination_outputs_and_exit_codes() {
        let e = WatchEvent {
            kind: EventKind::Put,
            key: b("k"),
            value: b("v\n"),
            rev: Revision {
                create_rev: 3,
                mod_rev: 9,
                version: 2,
            },
            prev: Some(b("old")),
            etcd: Default::default(),
        };
        let ev = |prev| Output::Event {
            event: e.clone(),
            prev,
        };
        assert_eq!(text(&ev(false)), "PUT\tk\tv\\n\t9\n");
        assert_eq!(text(&ev(true)), "PUT\tk\tv\\n\t9\told\n");
        assert_eq!(
            json_lines(&ev(false)),
            vec![
                json!({"kind": "put", "key": "aw==", "value": "dgo=", "revision": 9,
                "create_rev": 3, "version": 2, "prev": "b2xk"})
            ]
        );
        assert_eq!(text(&Output::LeaseId(255)), "ff\n");
        let locked = Output::Locked {
            token: 12,
            key: b("job/ff"),
            lease: 255,
        };
        assert_eq!(text(&locked), "12\n");
        assert_eq!(
            json_lines(&locked),
            vec![json!({"token": 12, "key": "am9iL2Zm", "lease": "ff"})]
        );
        let code = |e: ClientError| Failure::from_client(&e).exit_code;
        let server = |c| ClientError::Server(ErrorReply::new(c, "m"));
        assert_eq!(code(server(ErrorCode::Fenced)), exit::FENCED);
        assert_eq!(
            code(server(ErrorCode::LeaseNotFound)),
            exit::LEASE_NOT_FOUND
        );
        assert_eq!(
            code(ClientError::LeaseLost { id: 1 }),
            exit::LEASE_NOT_FOUND
        );
        let compacted = ClientError::Compacted {
            requested_rev: 1,
            oldest_rev: 5,
        };
        assert_eq!(code(compacted), exit::COMPACTED);
        let waited = ClientError::WaitTimedOut { after_ms: 5 };
        assert_eq!(Failure::from_client(&waited).code, "wait_timed_out");
        assert_eq!(code(waited), exit::WAIT_TIMED_OUT);
    }
}
