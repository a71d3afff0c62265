//! Differential test of the etcd v3 API: the same seeded, randomized
//! sequence of etcd v3 requests (KV Put/DeleteRange/Range/Txn/Compact,
//! Lease Grant/Revoke/TimeToLive, and one Watch over the whole key space)
//! goes to two servers, and every answer must match field by field,
//! errors included (gRPC code and message).
//!
//! - `etcd_vs_nacre` (the real test): a real etcd (one member) against one
//!   Nacre node serving its etcd API (`etcd_api = true`, `etcd_listen`).
//! - `etcd_vs_etcd_selftest` (with `NACRE_DIFF_ETCD_SELFTEST=1`): two
//!   independent etcds, the second with "revision noise" (writes to a key
//!   outside the key space the test uses, before and during the run), to
//!   validate the test itself and its normalization of revisions.
//!
//! Both need the `etcd` binary (etcd 3.4: Debian's `etcd-server`), found in
//! `PATH` or at `NACRE_ETCD_BIN`. Without it the tests print a note and
//! pass, unless `NACRE_REQUIRE_ETCD_TOOLS=1` (CI), when they fail.
//!
//! Knobs: `NACRE_DIFF_SEED=S` runs seed S alone (a failure prints its
//! seed); `NACRE_DIFF_SEEDS=N` (default 4) seeds from `NACRE_DIFF_SEED_BASE`
//! on; `NACRE_DIFF_OPS=N` (default 300) random operations per seed, after a
//! fixed prologue of edge cases; `NACRE_DIFF_VERBOSE=1` prints every
//! request and the first server's normalized answer (`=2`: and its raw
//! answer); `NACRE_DIFF_INJECT=N`
//! (self-test only) changes a key behind the second etcd's back after
//! operation N, to see the test catch it. Each seed starts fresh servers,
//! so a seed replays exactly.
//!
//! # Revisions: the normalization
//!
//! The claim under test is "a client cannot tell the servers apart", except
//! by arithmetic on revision numbers. Nacre's revisions are Raft log
//! indexes: strictly increasing with every write that changes something,
//! but they may skip numbers and do not start where etcd's do. So every
//! revision is translated, per server, to the number of the write that
//! produced it:
//!
//! - Per server, `W` is the list of the revisions of the writes that
//!   changed the store, in order, as each answer shows them
//!   (`header.revision` of the answer): a Put (always, even of the same
//!   value); a DeleteRange that deleted at least one key; a Txn whose
//!   executed branch (nested Txns included) holds a Put or a DeleteRange
//!   that deleted something; a LeaseRevoke of a lease that had keys
//!   attached (a range just before the revoke tells). Each must be above
//!   the one before, else the test fails. `base` is the revision the server
//!   answers before the first write.
//! - A revision that names a write (`create_revision` and `mod_revision`
//!   of kvs, prev_kvs and watch events; a watch's `compact_revision`)
//!   becomes its 1-based position in `W`; 0 stays 0. One that is not in
//!   `W` is shown as `1125899906842624 + r` (`UNMAPPED + r`) and fails.
//! - `header.revision` becomes the number of writes in `W` at or below it:
//!   the last write the answer reflects (0: none yet). A server may move
//!   its revision on for log entries of its own between writes without
//!   answers differing. A header revision below `base` shows as
//!   `UNMAPPED + r`; a header revision of 0 (etcd's LeaseTimeToLive of a
//!   missing lease) as -1.
//! - A request that carries a revision (`Range.revision`, the
//!   min/max mod/create revision filters, Compare on `mod_revision` or
//!   `create_revision`, `Compact.revision`) is generated with a write
//!   number k and sent to each server as its `W[k]`; 0 stays 0; "a future
//!   revision" (k = `FUTURE`) is sent as the highest revision the server
//!   has shown + 1,000,000. The translation is strictly increasing, so
//!   every comparison of revisions (filters, GREATER/LESS compares, the
//!   compacted and future checks) means the same on both servers.
//! - `cluster_id`, `member_id` and `raft_term` of headers are zeroed;
//!   LeaseTimeToLive's `TTL` (which counts down) becomes 1 when positive
//!   and its `keys` are sorted (etcd lists them from a map).
//! - The watch: its first answer (`created`) is compared as an answer;
//!   then the events of all answers, concatenated, must be equal (how a
//!   server groups events into answers is not compared). Before a Compact
//!   and at the end, the test waits until each watch delivered the last
//!   write: etcd reads a watch event's prev_kv at `mod_revision - 1` when
//!   it sends the event, and leaves prev_kv out if that revision was
//!   compacted meanwhile.

// Struct literals end in `..Default::default()` even when they name every
// field today: the protos grow, and a new field must not break this test.
#![allow(clippy::needless_update)]

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nacre_etcd_proto::etcdserverpb as pb;
use nacre_etcd_proto::mvccpb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::request_op::Request;
use pb::response_op::Response;
use pb::watch_client::WatchClient;
use tonic::transport::Channel;

// ---------------------------------------------------------------- knobs

/// The keys every request is about: 8 keys under 2 prefixes.
const KEYS: [&str; 8] = ["a/1", "a/2", "a/3", "a/4", "b/1", "b/2", "b/3", "b/4"];
/// Prefixes for prefix ranges (`"a"` covers `a/...` too).
const PREFIXES: [&str; 3] = ["a/", "b/", "a"];
const VALUES: [&str; 5] = ["", "x", "y", "xy", "zzz"];
/// Lease ids the test grants (ids chosen by the client, so both servers
/// use the same), and one it never grants.
const LEASES: [i64; 3] = [0x1001, 0x1002, 0x1003];
const MISSING_LEASE: i64 = 0x7777;
const LEASE_TTL: i64 = 600;
/// The watch and the "whole key space" ranges: every key from `a/` on.
const SPACE_START: &[u8] = b"a/";
const SPACE_END: &[u8] = b"\0";
/// Where the self-test's noise writes go: outside the key space.
const NOISE_KEY: &[u8] = b"0/noise";
/// A normalized request revision meaning "in the future".
const FUTURE: i64 = 1 << 40;
/// A normalized revision that no tracked write produced: `UNMAPPED + r`.
const UNMAPPED: i64 = 1 << 50;
/// etcd's default `--max-txn-ops`.
const TXN_OPS_MAX: usize = 128;
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("NACRE_DIFF_SEED") {
        return vec![seed];
    }
    let base = env_u64("NACRE_DIFF_SEED_BASE").unwrap_or(0xD1FF_0000);
    let n = env_u64("NACRE_DIFF_SEEDS").unwrap_or(4);
    (base..base + n).collect()
}

// ---------------------------------------------------------------- PRNG

/// splitmix64: tiny, seeded, the same sequence on every build.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

// ---------------------------------------------------------------- servers

/// The `etcd` binary, or `None` (with a note) when there is none and
/// `NACRE_REQUIRE_ETCD_TOOLS` is not set.
fn etcd_binary() -> Option<PathBuf> {
    let found = match std::env::var_os("NACRE_ETCD_BIN") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        let msg = "no etcd binary (in PATH or at NACRE_ETCD_BIN): the etcd differential \
                   test needs etcd 3.4 (Debian: apt-get install etcd-server)";
        assert!(
            !env_flag("NACRE_REQUIRE_ETCD_TOOLS"),
            "{msg}, and NACRE_REQUIRE_ETCD_TOOLS=1"
        );
        eprintln!("note: {msg}; skipped");
    }
    found
}

/// A real etcd, one member, on free loopback ports, in a temporary data
/// directory; killed when dropped.
struct EtcdProc {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EtcdProc {
    /// Starts it; [`EtcdProc::ready`] waits until it answers.
    fn spawn(bin: &Path, name: &str) -> EtcdProc {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_ports(2);
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let log = dir.path().join("etcd.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            // A single member elects itself after one election timeout.
            .args(["--heartbeat-interval", "20", "--election-timeout", "100"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        EtcdProc {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    async fn ready(&mut self) {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_etcd_api(&self.addr, "etcd", || {
            let exited = child
                .try_wait()
                .unwrap()
                .map(|s| format!("exited with {s}"));
            (exited, format!("etcd's log:\n{}", read(&log)))
        })
        .await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A Nacre node (a single-node cluster) with its etcd API on.
struct NacreEtcd {
    server: common::ServerProc,
    addr: String,
    _dir: tempfile::TempDir,
}

impl NacreEtcd {
    /// Starts `nacre serve` with a config that turns the etcd API on, and
    /// waits until it listens for its own clients.
    fn spawn() -> NacreEtcd {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_ports(3);
        let listen = format!("127.0.0.1:{port}");
        let etcd = format!("127.0.0.1:{}", port + 2);
        let data = dir.path().join("data");
        let config = dir.path().join("nacre.toml");
        let text = format!(
            "node_name = \"n1\"\ndata_dir = {data:?}\nlisten = \"{listen}\"\n\
             peer_listen = \"127.0.0.1:{}\"\netcd_listen = \"{etcd}\"\netcd_api = true\n",
            port + 1
        );
        std::fs::write(&config, text).unwrap();
        let server = common::ServerProc::start_args(
            &["serve", "--config", config.to_str().unwrap()],
            &listen,
            data,
            dir.path().join("server.log"),
        );
        NacreEtcd {
            server,
            addr: etcd,
            _dir: dir,
        }
    }

    async fn ready(&self) {
        let server = &self.server;
        wait_etcd_api(&self.addr, "nacre's etcd API", || {
            (None, format!("the node's log:\n{}", server.log()))
        })
        .await;
    }
}

/// Waits, at most 30 s, until a Range at `addr` succeeds. `state` tells
/// whether the server is gone (and why), and its log.
async fn wait_etcd_api(
    addr: &str,
    what: &str,
    mut state: impl FnMut() -> (Option<String>, String),
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let (Some(why), log) = state() {
            panic!("{what} at {addr} {why}\n{log}");
        }
        let last = match connect(addr).await {
            Ok(ch) => {
                let req = pb::RangeRequest {
                    key: Bytes::from_static(b"probe"),
                    ..Default::default()
                };
                match tokio::time::timeout(RPC_TIMEOUT, KvClient::new(ch).range(req)).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(status)) => format!("{status:?}"),
                    Err(_) => "timeout".into(),
                }
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!(
                "{what} at {addr} did not answer a Range within 30 s: {last}\n{}",
                state().1
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(addr: &str) -> Result<Channel, String> {
    let endpoint = Channel::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

// ---------------------------------------------------------------- revisions

/// One server's revisions, translated as the module comment says.
#[derive(Default)]
struct Revisions {
    base: i64,
    /// `W`: the revision of each write that changed the store.
    writes: Vec<i64>,
    /// The highest revision any answer showed.
    highest: i64,
}

impl Revisions {
    fn record_write(&mut self, rev: i64) -> Result<(), String> {
        let last = self.writes.last().copied().unwrap_or(self.base);
        if rev <= last {
            return Err(format!(
                "a write that changed the store answered revision {rev}, \
                 not above the previous write's (or the start's) {last}"
            ));
        }
        self.writes.push(rev);
        Ok(())
    }

    /// A revision that names a write.
    fn exact(&self, rev: i64) -> i64 {
        if rev == 0 {
            return 0;
        }
        match self.writes.binary_search(&rev) {
            Ok(i) => i as i64 + 1,
            Err(_) => UNMAPPED + rev,
        }
    }

    /// A header's revision: the writes it reflects.
    fn floor(&self, rev: i64) -> i64 {
        if rev == 0 {
            -1
        } else if rev < self.base {
            UNMAPPED + rev
        } else {
            self.writes.partition_point(|&w| w <= rev) as i64
        }
    }

    /// The revision to send for the normalized `k`.
    fn actual(&self, k: i64) -> i64 {
        match k {
            0 => 0,
            FUTURE => self.highest.max(self.base) + 1_000_000,
            k if k > 0 => self.writes.get(k as usize - 1).copied().unwrap_or_else(|| {
                panic!("request names write {k}; only {} made", self.writes.len())
            }),
            k => k,
        }
    }

    fn see(&mut self, header: Option<&pb::ResponseHeader>) {
        if let Some(h) = header {
            self.highest = self.highest.max(h.revision);
        }
    }
}

// ------------------------------------------------------ requests, answers

/// One step of a run. Revisions in it are normalized (write numbers).
#[derive(Debug, Clone)]
enum Op {
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Range(pb::RangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(pb::LeaseRevokeRequest),
    LeaseTtl(pb::LeaseTimeToLiveRequest),
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Put(pb::PutResponse),
    Delete(pb::DeleteRangeResponse),
    Range(pb::RangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    LeaseTtl(pb::LeaseTimeToLiveResponse),
    Error { code: tonic::Code, message: String },
}

impl Answer {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        match self {
            Answer::Put(r) => r.header.as_ref(),
            Answer::Delete(r) => r.header.as_ref(),
            Answer::Range(r) => r.header.as_ref(),
            Answer::Txn(r) => r.header.as_ref(),
            Answer::Compact(r) => r.header.as_ref(),
            Answer::LeaseGrant(r) => r.header.as_ref(),
            Answer::LeaseRevoke(r) => r.header.as_ref(),
            Answer::LeaseTtl(r) => r.header.as_ref(),
            Answer::Error { .. } => None,
        }
    }

    /// Did the request change the store (and so make a revision)?
    /// `revoked_keys`: a LeaseRevoke's lease had keys attached.
    fn changed(&self, revoked_keys: bool) -> bool {
        match self {
            Answer::Put(_) => true,
            Answer::Delete(d) => d.deleted > 0,
            Answer::Txn(t) => txn_changed(t),
            Answer::LeaseRevoke(_) => revoked_keys,
            _ => false,
        }
    }
}

fn txn_changed(t: &pb::TxnResponse) -> bool {
    t.responses.iter().any(|r| match &r.response {
        Some(Response::ResponsePut(_)) => true,
        Some(Response::ResponseDeleteRange(d)) => d.deleted > 0,
        Some(Response::ResponseTxn(t)) => txn_changed(t),
        _ => false,
    })
}

fn translate_range(r: &mut pb::RangeRequest, revs: &Revisions) {
    r.revision = revs.actual(r.revision);
    r.min_mod_revision = revs.actual(r.min_mod_revision);
    r.max_mod_revision = revs.actual(r.max_mod_revision);
    r.min_create_revision = revs.actual(r.min_create_revision);
    r.max_create_revision = revs.actual(r.max_create_revision);
}

fn translate_txn(t: &mut pb::TxnRequest, revs: &Revisions) {
    for c in &mut t.compare {
        if let Some(TargetUnion::ModRevision(r) | TargetUnion::CreateRevision(r)) =
            &mut c.target_union
        {
            *r = revs.actual(*r);
        }
    }
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match &mut op.request {
            Some(Request::RequestRange(r)) => translate_range(r, revs),
            Some(Request::RequestTxn(t)) => translate_txn(t, revs),
            _ => {}
        }
    }
}

fn norm_header(h: &mut Option<pb::ResponseHeader>, revs: &Revisions) {
    if let Some(x) = h {
        *x = pb::ResponseHeader {
            revision: revs.floor(x.revision),
            ..Default::default()
        };
    }
}

fn norm_kv(kv: &mut mvccpb::KeyValue, revs: &Revisions) {
    kv.create_revision = revs.exact(kv.create_revision);
    kv.mod_revision = revs.exact(kv.mod_revision);
}

fn norm_range(r: &mut pb::RangeResponse, revs: &Revisions) {
    norm_header(&mut r.header, revs);
    r.kvs.iter_mut().for_each(|kv| norm_kv(kv, revs));
}

fn norm_put(r: &mut pb::PutResponse, revs: &Revisions) {
    norm_header(&mut r.header, revs);
    if let Some(kv) = &mut r.prev_kv {
        norm_kv(kv, revs);
    }
}

fn norm_delete(r: &mut pb::DeleteRangeResponse, revs: &Revisions) {
    norm_header(&mut r.header, revs);
    r.prev_kvs.iter_mut().for_each(|kv| norm_kv(kv, revs));
}

fn norm_txn(t: &mut pb::TxnResponse, revs: &Revisions) {
    norm_header(&mut t.header, revs);
    for op in &mut t.responses {
        match &mut op.response {
            Some(Response::ResponseRange(r)) => norm_range(r, revs),
            Some(Response::ResponsePut(r)) => norm_put(r, revs),
            Some(Response::ResponseDeleteRange(r)) => norm_delete(r, revs),
            Some(Response::ResponseTxn(t)) => norm_txn(t, revs),
            None => {}
        }
    }
}

fn normalize(mut a: Answer, revs: &Revisions) -> Answer {
    match &mut a {
        Answer::Put(r) => norm_put(r, revs),
        Answer::Delete(r) => norm_delete(r, revs),
        Answer::Range(r) => norm_range(r, revs),
        Answer::Txn(t) => norm_txn(t, revs),
        Answer::Compact(r) => norm_header(&mut r.header, revs),
        Answer::LeaseGrant(r) => norm_header(&mut r.header, revs),
        Answer::LeaseRevoke(r) => norm_header(&mut r.header, revs),
        Answer::LeaseTtl(r) => {
            norm_header(&mut r.header, revs);
            if r.ttl > 0 {
                r.ttl = 1;
            }
            r.keys.sort();
        }
        Answer::Error { .. } => {}
    }
    a
}

fn norm_event(e: &mut mvccpb::Event, revs: &Revisions) {
    if let Some(kv) = &mut e.kv {
        norm_kv(kv, revs);
    }
    if let Some(kv) = &mut e.prev_kv {
        norm_kv(kv, revs);
    }
}

// ---------------------------------------------------------------- a side

/// What a watch received so far.
#[derive(Default)]
struct WatchLog {
    answers: Vec<pb::WatchResponse>,
    /// Why the stream ended, if it did.
    ended: Option<String>,
}

impl WatchLog {
    fn highest_event(&self) -> i64 {
        self.answers
            .iter()
            .flat_map(|a| &a.events)
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
            .unwrap_or(0)
    }
}

/// One of the two servers, as the test's client sees it.
struct Side {
    name: String,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    revs: Revisions,
    watch_log: Arc<Mutex<WatchLog>>,
    /// Keeps the watch's request stream open.
    watch_requests: Option<tokio::sync::mpsc::Sender<pb::WatchRequest>>,
    watch_task: Option<tokio::task::JoinHandle<()>>,
    /// Writes outside the key space now and then (the self-test's second
    /// etcd): revisions that skip numbers, as Nacre's do.
    noisy: bool,
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some(t) = self.watch_task.take() {
            t.abort();
        }
    }
}

fn status(s: &tonic::Status) -> Answer {
    Answer::Error {
        code: s.code(),
        message: s.message().to_string(),
    }
}

async fn rpc<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<Result<T, tonic::Status>, String> {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(r) => Ok(r.map(tonic::Response::into_inner)),
        Err(_) => Err(format!("{what}: no answer within {RPC_TIMEOUT:?}")),
    }
}

impl Side {
    async fn connect(name: &str, addr: &str, noisy: bool) -> Result<Side, String> {
        let ch = connect(addr).await?;
        let mut side = Side {
            name: name.to_string(),
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch.clone()),
            watch: WatchClient::new(ch),
            revs: Revisions::default(),
            watch_log: Arc::default(),
            watch_requests: None,
            watch_task: None,
            noisy,
        };
        if noisy {
            for _ in 0..3 {
                side.noise().await?;
            }
        }
        let start = side.range_space(false).await?;
        side.revs.base = start.header.map_or(0, |h| h.revision);
        side.revs.highest = side.revs.base;
        Ok(side)
    }

    /// A write outside the key space.
    async fn noise(&mut self) -> Result<(), String> {
        let put = pb::PutRequest {
            key: Bytes::from_static(NOISE_KEY),
            value: Bytes::from_static(b"noise"),
            ..Default::default()
        };
        let r = rpc("noise put", self.kv.put(put)).await?;
        let r = r.map_err(|s| format!("{}: noise put: {s:?}", self.name))?;
        self.revs.see(r.header.as_ref());
        Ok(())
    }

    /// Every key of the key space (not compared: the test's own look).
    async fn range_space(&mut self, keys_only: bool) -> Result<pb::RangeResponse, String> {
        let req = pb::RangeRequest {
            key: Bytes::from_static(SPACE_START),
            range_end: Bytes::from_static(SPACE_END),
            keys_only,
            ..Default::default()
        };
        let r = rpc("range", self.kv.range(req)).await?;
        r.map_err(|s| format!("{}: range of the key space: {s:?}", self.name))
    }

    /// Sends `op` (with this side's revisions); the raw answer, and for a
    /// LeaseRevoke whether the lease had keys attached.
    async fn send(&mut self, op: &Op) -> Result<(Answer, bool), String> {
        let revs = &self.revs;
        let mut revoked_keys = false;
        let answer = match op.clone() {
            Op::Put(r) => rpc("put", self.kv.put(r)).await?.map(Answer::Put),
            Op::Delete(r) => rpc("delete", self.kv.delete_range(r))
                .await?
                .map(Answer::Delete),
            Op::Range(mut r) => {
                translate_range(&mut r, revs);
                rpc("range", self.kv.range(r)).await?.map(Answer::Range)
            }
            Op::Txn(mut t) => {
                translate_txn(&mut t, revs);
                rpc("txn", self.kv.txn(t)).await?.map(Answer::Txn)
            }
            Op::Compact(mut c) => {
                c.revision = revs.actual(c.revision);
                rpc("compact", self.kv.compact(c))
                    .await?
                    .map(Answer::Compact)
            }
            Op::LeaseGrant(r) => rpc("grant", self.lease.lease_grant(r))
                .await?
                .map(Answer::LeaseGrant),
            Op::LeaseRevoke(r) => {
                let space = self.range_space(true).await?;
                revoked_keys = space.kvs.iter().any(|kv| kv.lease == r.id);
                let answer = rpc("revoke", self.lease.lease_revoke(r)).await?;
                answer.map(Answer::LeaseRevoke)
            }
            Op::LeaseTtl(r) => rpc("ttl", self.lease.lease_time_to_live(r))
                .await?
                .map(Answer::LeaseTtl),
        };
        Ok((answer.unwrap_or_else(|s| status(&s)), revoked_keys))
    }

    /// Sends `op`, records the write it made (if it made one), and returns
    /// the answer raw and normalized.
    async fn apply(&mut self, op: &Op) -> Result<(Answer, Answer), String> {
        let (answer, revoked_keys) = self.send(op).await?;
        if answer.changed(revoked_keys) {
            let Some(h) = answer.header() else {
                return Err(format!("{}: a write answered without a header", self.name));
            };
            self.revs
                .record_write(h.revision)
                .map_err(|e| format!("{}: {e}", self.name))?;
        }
        self.revs.see(answer.header());
        let normalized = normalize(answer.clone(), &self.revs);
        Ok((answer, normalized))
    }

    /// Opens the watch over the whole key space, with prev_kv.
    async fn open_watch(&mut self) -> Result<(), String> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = pb::WatchCreateRequest {
            key: Bytes::from_static(SPACE_START),
            range_end: Bytes::from_static(SPACE_END),
            prev_kv: true,
            ..Default::default()
        };
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            ..Default::default()
        };
        tx.send(req).await.unwrap();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let answers = rpc("watch", self.watch.watch(stream)).await?;
        let mut answers = answers.map_err(|s| format!("{}: watch: {s:?}", self.name))?;
        let log = self.watch_log.clone();
        self.watch_task = Some(tokio::spawn(async move {
            loop {
                let next = answers.message().await;
                let mut log = log.lock().unwrap();
                match next {
                    Ok(Some(a)) => log.answers.push(a),
                    Ok(None) => log.ended = Some("the stream ended".into()),
                    Err(s) => log.ended = Some(format!("{s:?}")),
                }
                if log.ended.is_some() {
                    return;
                }
            }
        }));
        self.watch_requests = Some(tx);
        // The `created` answer comes first.
        self.wait_watch(|log| !log.answers.is_empty(), "the created answer")
            .await
    }

    async fn wait_watch(&self, done: impl Fn(&WatchLog) -> bool, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + RPC_TIMEOUT;
        loop {
            {
                let log = self.watch_log.lock().unwrap();
                if done(&log) {
                    return Ok(());
                }
                if let Some(why) = &log.ended {
                    return Err(format!(
                        "{}: the watch ended before {what}: {why}",
                        self.name
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: the watch sent no {what} within {RPC_TIMEOUT:?}",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the watch delivered the last write.
    async fn drain_watch(&self) -> Result<(), String> {
        let Some(&last) = self.revs.writes.last() else {
            return Ok(());
        };
        let what = format!("event of revision {last} (the last write)");
        self.wait_watch(|log| log.highest_event() >= last, &what)
            .await
    }

    /// The watch's answers without events (normalized), and its events.
    fn watch_record(&self) -> (Vec<pb::WatchResponse>, Vec<mvccpb::Event>) {
        let log = self.watch_log.lock().unwrap();
        let mut others = Vec::new();
        let mut events = Vec::new();
        for a in &log.answers {
            for e in &a.events {
                let mut e = e.clone();
                norm_event(&mut e, &self.revs);
                events.push(e);
            }
            if a.events.is_empty() {
                let mut a = a.clone();
                norm_header(&mut a.header, &self.revs);
                a.compact_revision = self.revs.exact(a.compact_revision);
                others.push(a);
            }
        }
        (others, events)
    }
}

// ---------------------------------------------------------------- generator

/// What the generator knows of the store (from the first server's answers;
/// the second's are equal, or the run already failed).
#[derive(Default)]
struct Model {
    writes: i64,
    /// The write number compacted to; 0: none.
    compacted: i64,
    leases: BTreeSet<i64>,
    existing: Vec<Bytes>,
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn prefix_end(p: &[u8]) -> Bytes {
    let mut end = p.to_vec();
    *end.last_mut().unwrap() += 1;
    Bytes::from(end)
}

/// A key, a prefix, `[a, b)` (either order), or from a key on.
fn gen_span(rng: &mut Rng) -> (Bytes, Bytes) {
    match rng.below(100) {
        0..=39 => (b(rng.pick(&KEYS)), Bytes::new()),
        40..=69 => {
            let p = rng.pick(&PREFIXES);
            (b(p), prefix_end(p.as_bytes()))
        }
        70..=89 => (b(rng.pick(&KEYS)), b(rng.pick(&KEYS))),
        _ => (b(rng.pick(&KEYS)), Bytes::from_static(SPACE_END)),
    }
}

/// A revision readable now: from the last compaction on.
fn readable_rev(rng: &mut Rng, m: &Model) -> i64 {
    if m.writes == 0 {
        0
    } else {
        rng.between(m.compacted.max(1), m.writes)
    }
}

/// A revision for a filter or a compare: 0 or any write's.
fn any_rev(rng: &mut Rng, m: &Model) -> i64 {
    if m.writes == 0 || rng.chance(20) {
        0
    } else {
        rng.between(1, m.writes)
    }
}

fn gen_lease(rng: &mut Rng, m: &Model) -> i64 {
    let granted: Vec<i64> = m.leases.iter().copied().collect();
    if !granted.is_empty() && rng.chance(85) {
        rng.pick(&granted)
    } else if rng.chance(50) {
        MISSING_LEASE
    } else {
        rng.pick(&LEASES)
    }
}

fn gen_put(rng: &mut Rng, m: &Model, in_txn: bool) -> pb::PutRequest {
    let mut p = pb::PutRequest {
        key: b(rng.pick(&KEYS)),
        value: b(rng.pick(&VALUES)),
        prev_kv: rng.chance(50),
        ..Default::default()
    };
    if !in_txn && rng.chance(2) {
        p.key = Bytes::new(); // an error
    }
    if rng.chance(if in_txn { 5 } else { 10 }) {
        p.ignore_value = true;
        if !m.existing.is_empty() && !in_txn && rng.chance(80) {
            p.key = rng.pick(&m.existing);
        }
        if rng.chance(85) {
            p.value = Bytes::new();
        }
    }
    if rng.chance(20) {
        p.lease = gen_lease(rng, m);
    }
    if rng.chance(5) {
        p.ignore_lease = true;
        if rng.chance(80) {
            p.lease = 0;
        }
    }
    p
}

fn gen_delete(rng: &mut Rng) -> pb::DeleteRangeRequest {
    let (key, range_end) = gen_span(rng);
    pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: rng.chance(50),
        ..Default::default()
    }
}

fn gen_range(rng: &mut Rng, m: &Model) -> pb::RangeRequest {
    let (key, range_end) = gen_span(rng);
    let mut r = pb::RangeRequest {
        key,
        range_end,
        keys_only: rng.chance(15),
        count_only: rng.chance(10),
        serializable: rng.chance(20),
        ..Default::default()
    };
    if rng.chance(30) {
        r.limit = rng.between(1, 4);
    }
    if rng.chance(40) {
        r.sort_order = rng.between(0, 2) as i32;
    }
    if rng.chance(40) {
        r.sort_target = rng.between(0, 4) as i32;
    }
    match rng.below(100) {
        0..=24 => r.revision = readable_rev(rng, m),
        25..=26 => r.revision = FUTURE,
        27..=28 if m.compacted > 1 => r.revision = rng.between(1, m.compacted - 1),
        _ => {}
    }
    for filter in [
        &mut r.min_mod_revision,
        &mut r.max_mod_revision,
        &mut r.min_create_revision,
        &mut r.max_create_revision,
    ] {
        if rng.chance(10) {
            *filter = any_rev(rng, m);
        }
    }
    r
}

fn gen_compare(rng: &mut Rng, m: &Model) -> pb::Compare {
    let (key, range_end) = if rng.chance(10) {
        let p = rng.pick(&PREFIXES);
        (b(p), prefix_end(p.as_bytes()))
    } else {
        (b(rng.pick(&KEYS)), Bytes::new())
    };
    let target = rng.between(0, 4) as i32;
    let value = match CompareTarget::try_from(target).unwrap() {
        CompareTarget::Version => TargetUnion::Version(rng.between(0, 3)),
        CompareTarget::Create => TargetUnion::CreateRevision(any_rev(rng, m)),
        CompareTarget::Mod => TargetUnion::ModRevision(any_rev(rng, m)),
        CompareTarget::Value => TargetUnion::Value(b(rng.pick(&VALUES))),
        CompareTarget::Lease => {
            TargetUnion::Lease(if rng.chance(40) { 0 } else { gen_lease(rng, m) })
        }
    };
    pb::Compare {
        result: rng.between(0, 3) as i32,
        target,
        key,
        range_end,
        target_union: Some(value),
        ..Default::default()
    }
}

/// Keys a txn writes: in "careful" mode each write of the whole txn takes
/// a key of its own (etcd refuses a txn that puts a key twice, or puts and
/// deletes it, in one branch); otherwise anything goes.
struct TxnKeys {
    careful: bool,
    free: Vec<&'static str>,
}

fn gen_txn_op(rng: &mut Rng, m: &Model, depth: u32, keys: &mut TxnKeys) -> pb::RequestOp {
    let roll = rng.below(100);
    let request = if roll < 55 && keys.careful && keys.free.is_empty() {
        Request::RequestRange(gen_range(rng, m))
    } else if roll < 35 {
        let mut p = gen_put(rng, m, true);
        if keys.careful {
            p.key = b(keys.free.pop().unwrap());
        }
        Request::RequestPut(p)
    } else if roll < 55 {
        let mut d = gen_delete(rng);
        if keys.careful {
            d.key = b(keys.free.pop().unwrap());
            d.range_end = Bytes::new();
        }
        Request::RequestDeleteRange(d)
    } else if roll < 92 || depth >= 2 {
        Request::RequestRange(gen_range(rng, m))
    } else {
        Request::RequestTxn(gen_txn_level(rng, m, depth + 1, keys))
    };
    pb::RequestOp {
        request: Some(request),
        ..Default::default()
    }
}

fn gen_txn_level(rng: &mut Rng, m: &Model, depth: u32, keys: &mut TxnKeys) -> pb::TxnRequest {
    let compare = (0..rng.below(4)).map(|_| gen_compare(rng, m)).collect();
    let success = (0..rng.below(4))
        .map(|_| gen_txn_op(rng, m, depth, keys))
        .collect();
    let failure = (0..rng.below(4))
        .map(|_| gen_txn_op(rng, m, depth, keys))
        .collect();
    pb::TxnRequest {
        compare,
        success,
        failure,
        ..Default::default()
    }
}

fn gen_txn(rng: &mut Rng, m: &Model) -> pb::TxnRequest {
    if rng.chance(1) {
        return too_many_ops(rng.chance(50));
    }
    let mut free = KEYS.to_vec();
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut keys = TxnKeys {
        careful: rng.chance(75),
        free,
    };
    gen_txn_level(rng, m, 0, &mut keys)
}

/// A txn of `TXN_OPS_MAX + 1` ranges (or compares).
fn too_many_ops(compares: bool) -> pb::TxnRequest {
    let range = pb::RequestOp {
        request: Some(Request::RequestRange(pb::RangeRequest {
            key: b("a/1"),
            ..Default::default()
        })),
        ..Default::default()
    };
    let compare = pb::Compare {
        key: b("a/1"),
        target: CompareTarget::Version as i32,
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    };
    pb::TxnRequest {
        compare: if compares {
            vec![compare; TXN_OPS_MAX + 1]
        } else {
            vec![]
        },
        success: if compares {
            vec![]
        } else {
            vec![range; TXN_OPS_MAX + 1]
        },
        ..Default::default()
    }
}

fn gen_compact(rng: &mut Rng, m: &Model) -> pb::CompactionRequest {
    let revision = if m.writes == 0 || rng.chance(8) {
        FUTURE
    } else if m.compacted > 0 && (rng.chance(10) || m.compacted >= m.writes) {
        rng.between(1, m.compacted) // already compacted: an error
    } else {
        rng.between(m.compacted + 1, m.writes)
    };
    pb::CompactionRequest {
        revision,
        physical: rng.chance(50),
        ..Default::default()
    }
}

fn gen_op(rng: &mut Rng, m: &Model) -> Op {
    match rng.below(100) {
        0..=29 => Op::Put(gen_put(rng, m, false)),
        30..=41 => Op::Delete(gen_delete(rng)),
        42..=65 => Op::Range(gen_range(rng, m)),
        66..=87 => Op::Txn(gen_txn(rng, m)),
        88..=90 => Op::Compact(gen_compact(rng, m)),
        91..=93 => {
            let free: Vec<i64> = LEASES
                .iter()
                .copied()
                .filter(|l| !m.leases.contains(l))
                .collect();
            let id = if !free.is_empty() && rng.chance(85) {
                rng.pick(&free)
            } else {
                rng.pick(&LEASES)
            };
            Op::LeaseGrant(pb::LeaseGrantRequest {
                id,
                ttl: LEASE_TTL,
                ..Default::default()
            })
        }
        94..=96 => Op::LeaseRevoke(pb::LeaseRevokeRequest {
            id: gen_lease(rng, m),
            ..Default::default()
        }),
        _ => Op::LeaseTtl(pb::LeaseTimeToLiveRequest {
            id: gen_lease(rng, m),
            keys: rng.chance(70),
            ..Default::default()
        }),
    }
}

// ---------------------------------------------------------------- prologue
//
// Edge cases every seed starts with. Revisions in them are write numbers;
// the comments say what etcd 3.4 answers.

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

/// A Put of `key`, changed by `f`.
fn put_op(key: &str, value: &str, f: impl FnOnce(&mut pb::PutRequest)) -> Op {
    let mut p = put(key, value);
    f(&mut p);
    Op::Put(p)
}

fn grant(id: i64) -> Op {
    let ttl = LEASE_TTL;
    Op::LeaseGrant(pb::LeaseGrantRequest {
        id,
        ttl,
        ..Default::default()
    })
}

fn revoke(id: i64) -> Op {
    Op::LeaseRevoke(pb::LeaseRevokeRequest {
        id,
        ..Default::default()
    })
}

fn ttl_keys(id: i64) -> Op {
    Op::LeaseTtl(pb::LeaseTimeToLiveRequest {
        id,
        keys: true,
        ..Default::default()
    })
}

fn space_range() -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::from_static(SPACE_START),
        range_end: Bytes::from_static(SPACE_END),
        ..Default::default()
    }
}

fn request(r: Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(r),
        ..Default::default()
    }
}

fn op_put(key: &str, value: &str, f: impl FnOnce(&mut pb::PutRequest)) -> pb::RequestOp {
    let mut p = put(key, value);
    f(&mut p);
    request(Request::RequestPut(p))
}

fn op_range(key: &str, range_end: &'static [u8]) -> pb::RequestOp {
    let (key, range_end) = (b(key), Bytes::from_static(range_end));
    request(Request::RequestRange(pb::RangeRequest {
        key,
        range_end,
        ..Default::default()
    }))
}

fn op_delete(key: &str, range_end: &'static [u8]) -> pb::RequestOp {
    let (key, range_end) = (b(key), Bytes::from_static(range_end));
    let d = pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv: true,
        ..Default::default()
    };
    request(Request::RequestDeleteRange(d))
}

/// "version of `key` is 0" (it does not exist), or greater than 0.
fn absent(key: &str, yes: bool) -> pb::Compare {
    let result = if yes {
        CompareResult::Equal
    } else {
        CompareResult::Greater
    };
    pb::Compare {
        key: b(key),
        result: result as i32,
        target: CompareTarget::Version as i32,
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    }
}

fn txn(
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success,
        failure,
        ..Default::default()
    }
}

// A table: one request a line, with what etcd answers.
#[rustfmt::skip]
fn prologue_puts() -> Vec<Op> {
    let none = |_: &mut pb::PutRequest| {};
    vec![
        Op::Range(space_range()),
        put_op("", "v", none),                               // InvalidArgument "key is not provided"
        put_op("a/1", "", |p| p.ignore_value = true),        // InvalidArgument "key not found"
        put_op("a/1", "v", |p| p.ignore_lease = true),       // InvalidArgument "key not found"
        put_op("a/1", "v", |p| p.lease = MISSING_LEASE),     // NotFound "requested lease not found"
        put_op("a/1", "v", |p| p.prev_kv = true),            // no prev_kv
        put_op("a/1", "v", |p| p.prev_kv = true),            // the same value: a new revision all the same
        put_op("a/1", "x", |p| p.ignore_value = true),       // InvalidArgument "value is provided"
        put_op("a/1", "", |p| (p.ignore_value, p.prev_kv) = (true, true)), // a write, value kept
        put_op("a/1", "v", |p| (p.ignore_lease, p.lease) = (true, LEASES[0])), // "lease is provided"
        revoke(MISSING_LEASE),                               // NotFound "requested lease not found"
        ttl_keys(MISSING_LEASE),                             // not an error: TTL -1, grantedTTL 0
        grant(LEASES[0]),
        grant(LEASES[0]),                                    // FailedPrecondition "lease already exists"
        grant(LEASES[1]),
        revoke(LEASES[1]),                                   // no keys: not a write
        put_op("a/2", "leased", |p| p.lease = LEASES[0]),
        put_op("b/2", "leased", |p| p.lease = LEASES[0]),
        put_op("a/2", "kept", |p| (p.ignore_lease, p.prev_kv) = (true, true)),
        ttl_keys(LEASES[0]),
        revoke(LEASES[0]),                                   // deletes both keys: one write
        revoke(LEASES[0]),
        Op::Range(space_range()),
        Op::Delete(pb::DeleteRangeRequest { key: b("a/9"), prev_kv: true, ..Default::default() }),
        put_op("b/1", "b1", none),
        put_op("b/3", "b3", none),
    ]
}

// A table: one request a line, with what etcd answers.
#[rustfmt::skip]
fn prologue_txns() -> Vec<Op> {
    let nested = |c, success, failure| request(Request::RequestTxn(txn(vec![c], success, failure)));
    let none = |_: &mut pb::PutRequest| {};
    let ignore_value = |p: &mut pb::PutRequest| p.ignore_value = true;
    let mut ranges_max = too_many_ops(false);
    ranges_max.success.pop();
    vec![
        too_many_ops(false), // InvalidArgument "too many operations in txn request"
        too_many_ops(true),
        ranges_max,
        // InvalidArgument "duplicate key given in txn request":
        txn(vec![], vec![op_put("a/1", "1", none), op_put("a/1", "2", none)], vec![]),
        txn(vec![], vec![op_put("a/1", "1", none), op_delete("a/", b"a0")], vec![]),
        txn(vec![], vec![op_put("a/3", "1", none), nested(absent("a/3", true), vec![op_put("a/3", "2", none)], vec![])], vec![]),
        // Overlapping deletes are allowed; so is a key in both branches.
        txn(vec![], vec![op_delete("a/1", b""), op_delete("a/", b"a0")], vec![]),
        txn(vec![], vec![nested(absent("a/3", true), vec![op_put("a/3", "t", none)], vec![op_put("a/3", "f", none)])], vec![]),
        // A nested txn's compare sees the store before the outer txn ran; a
        // range after a put in the same txn sees the put.
        txn(
            vec![],
            vec![op_put("a/4", "x", none), op_range("a/4", b""), nested(absent("a/4", true), vec![op_range("a/3", b"")], vec![])],
            vec![],
        ),
        txn(vec![absent("b/1", false)], vec![op_range("b/", b"b0")], vec![op_put("b/1", "f", none)]),
        // The revision in each inner header: the txn's old one before its
        // first change, the new one from it on.
        txn(
            vec![],
            vec![op_range("b/1", b""), op_delete("b/8", b""), op_put("b/4", "v", none), op_delete("b/9", b""), op_range("b/4", b"")],
            vec![],
        ),
        // A delete of nothing: not a write.
        txn(vec![absent("b/9", true)], vec![op_delete("b/9", b"")], vec![]),
        // InvalidArgument "key not found"; but only the branch that runs is checked.
        txn(vec![], vec![op_put("b/9", "", ignore_value)], vec![]),
        txn(vec![absent("b/1", true)], vec![op_put("b/9", "", ignore_value)], vec![op_range("b/1", b"")]),
        txn(vec![], vec![op_put("b/4", "v", |p| p.lease = MISSING_LEASE)], vec![]), // NotFound
    ]
    .into_iter()
    .map(Op::Txn)
    .collect()
}

// A table: one request a line, with what etcd answers.
#[rustfmt::skip]
fn prologue_revisions() -> Vec<Op> {
    let range_at = |revision| Op::Range(pb::RangeRequest { revision, ..space_range() });
    let compact = |revision| Op::Compact(pb::CompactionRequest { revision, ..Default::default() });
    let sorted = |sort_order, sort_target, limit| {
        Op::Range(pb::RangeRequest { sort_order, sort_target, limit, ..space_range() })
    };
    vec![
        range_at(1),
        range_at(FUTURE),   // OutOfRange "mvcc: required revision is a future revision"
        compact(FUTURE),    // the same
        compact(2),         // not a write
        compact(2),         // OutOfRange "mvcc: required revision has been compacted"
        compact(1),         // the same
        range_at(1),        // the same
        range_at(2),
        sorted(2, 1, 0),    // by version, descending: ties in ascending key order
        sorted(1, 1, 2),
        sorted(0, 4, 3),    // by value; no order given means ascending
        Op::Range(pb::RangeRequest { count_only: true, limit: 1, ..space_range() }),
        // `count` counts before the filters and the limit.
        Op::Range(pb::RangeRequest { min_mod_revision: 3, max_create_revision: 9, limit: 1, ..space_range() }),
    ]
}

fn prologue() -> Vec<Op> {
    let mut ops = prologue_puts();
    ops.extend(prologue_txns());
    ops.extend(prologue_revisions());
    ops
}

// ---------------------------------------------------------------- a run

/// The two servers of a run.
#[derive(Clone, Copy, Debug)]
enum Pair {
    EtcdEtcd,
    EtcdNacre,
}

/// Keeps a run's server processes alive.
enum Server {
    Etcd(EtcdProc),
    Nacre(NacreEtcd),
}

impl Server {
    fn log(&self) -> String {
        match self {
            Server::Etcd(e) => read(&e.log),
            Server::Nacre(n) => n.server.log(),
        }
    }
}

async fn start_servers(pair: Pair, etcd: &Path) -> (Server, Server, Side, Side) {
    let mut a = EtcdProc::spawn(etcd, "etcd-a");
    let b = match pair {
        Pair::EtcdEtcd => Server::Etcd(EtcdProc::spawn(etcd, "etcd-b")),
        Pair::EtcdNacre => Server::Nacre(NacreEtcd::spawn()),
    };
    a.ready().await;
    let (b, b_addr, b_name, noisy) = match b {
        Server::Etcd(mut e) => {
            e.ready().await;
            let addr = e.addr.clone();
            (Server::Etcd(e), addr, "etcd-b", true)
        }
        Server::Nacre(n) => {
            n.ready().await;
            let addr = n.addr.clone();
            (Server::Nacre(n), addr, "nacre", false)
        }
    };
    let side_a = Side::connect("etcd", &a.addr, false).await.unwrap();
    let side_b = Side::connect(b_name, &b_addr, noisy).await.unwrap();
    (Server::Etcd(a), b, side_a, side_b)
}

/// A failed run's story.
struct Mismatch {
    op_no: usize,
    what: String,
    request: String,
    a: String,
    b: String,
}

fn pretty(v: &impl Debug) -> String {
    format!("{v:#?}")
}

/// Both texts, line by line, differing lines marked.
fn line_diff(a_name: &str, a: &str, b_name: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    for i in 0..al.len().max(bl.len()) {
        match (al.get(i), bl.get(i)) {
            (Some(x), Some(y)) if x == y => out += &format!("  {x}\n"),
            (x, y) => {
                if let Some(x) = x {
                    out += &format!("- {x}\n");
                }
                if let Some(y) = y {
                    out += &format!("+ {y}\n");
                }
            }
        }
    }
    out
}

struct Run {
    seed: u64,
    rng: Rng,
    model: Model,
    a: Side,
    b: Side,
    history: Vec<String>,
    /// `NACRE_DIFF_VERBOSE`: 1 prints each request and the first server's
    /// normalized answer, 2 its raw answer too.
    verbose: u64,
    /// Self-test: after this op, change a key behind the second server's back.
    inject: Option<usize>,
}

impl Run {
    async fn step(&mut self, n: usize, op: &Op) -> Result<(), Mismatch> {
        let fail = |what: String| Mismatch {
            op_no: n,
            what,
            request: format!("{op:#?}"),
            a: String::new(),
            b: String::new(),
        };
        if matches!(op, Op::Compact(_)) {
            // etcd reads a watch event's prev_kv when it sends it: let the
            // watches catch up before anything is compacted.
            self.a.drain_watch().await.map_err(fail)?;
            self.b.drain_watch().await.map_err(fail)?;
        }
        let (raw, a) = self.a.apply(op).await.map_err(fail)?;
        let (_, b) = self.b.apply(op).await.map_err(fail)?;
        self.history.push(format!("#{n} {op:?}\n    => {a:?}"));
        if self.verbose > 0 {
            eprintln!("#{n} {op:?}\n    => {a:?}");
        }
        if self.verbose > 1 {
            eprintln!("    raw {raw:?}");
        }
        if a != b {
            return Err(Mismatch {
                op_no: n,
                what: "the answers differ".into(),
                request: format!("{op:#?}"),
                a: pretty(&a),
                b: pretty(&b),
            });
        }
        let (wa, wb) = (self.a.revs.writes.len(), self.b.revs.writes.len());
        if wa != wb {
            return Err(fail(format!(
                "equal answers, but {} counts {wa} writes and {} {wb}",
                self.a.name, self.b.name
            )));
        }
        self.learn(op, &a).await.map_err(fail)?;
        if self.b.noisy && self.rng.chance(10) {
            self.b.noise().await.map_err(fail)?;
        }
        if self.inject == Some(n) {
            let put = put(KEYS[0], "injected behind the test's back");
            self.b
                .kv
                .put(put)
                .await
                .map_err(|s| fail(format!("{s:?}")))?;
        }
        Ok(())
    }

    /// Updates the generator's model after `op` answered `a` (normalized).
    async fn learn(&mut self, op: &Op, a: &Answer) -> Result<(), String> {
        let writes = self.a.revs.writes.len() as i64;
        let wrote = writes != self.model.writes;
        self.model.writes = writes;
        match (op, a) {
            (Op::Compact(c), Answer::Compact(_)) if c.revision != FUTURE => {
                self.model.compacted = c.revision;
            }
            (Op::LeaseGrant(g), Answer::LeaseGrant(r)) if r.error.is_empty() => {
                self.model.leases.insert(g.id);
            }
            (Op::LeaseRevoke(r), Answer::LeaseRevoke(_)) => {
                self.model.leases.remove(&r.id);
            }
            _ => {}
        }
        if wrote {
            let space = self.a.range_space(true).await?;
            self.model.existing = space.kvs.into_iter().map(|kv| kv.key).collect();
        }
        Ok(())
    }

    /// Waits for both watches to deliver every write, then compares them.
    async fn compare_watches(&mut self, n: usize) -> Result<(), Mismatch> {
        let fail = |what: String| Mismatch {
            op_no: n,
            what,
            request: "(the watch)".into(),
            a: String::new(),
            b: String::new(),
        };
        self.a.drain_watch().await.map_err(fail)?;
        self.b.drain_watch().await.map_err(fail)?;
        // Anything sent after the last write would be in by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (ao, ae) = self.a.watch_record();
        let (bo, be) = self.b.watch_record();
        if self.verbose > 0 {
            eprintln!("watch: {ao:?}");
            ae.iter().for_each(|e| eprintln!("watch event: {e:?}"));
        }
        if ao != bo {
            return Err(Mismatch {
                op_no: n,
                what: "the watch's answers without events differ".into(),
                request: "(the watch)".into(),
                a: pretty(&ao),
                b: pretty(&bo),
            });
        }
        if let Some(i) = (0..ae.len().max(be.len())).find(|&i| ae.get(i) != be.get(i)) {
            let around = |ev: &[mvccpb::Event]| {
                pretty(&ev[i.saturating_sub(2)..(i + 3).min(ev.len())].to_vec())
            };
            return Err(Mismatch {
                op_no: n,
                what: format!(
                    "the watch events differ at event {i} ({} has {} events, {} has {}); events {}.. shown",
                    self.a.name,
                    ae.len(),
                    self.b.name,
                    be.len(),
                    i.saturating_sub(2)
                ),
                request: "(the watch)".into(),
                a: around(&ae),
                b: around(&be),
            });
        }
        eprintln!("seed {:#x}: {} watch events equal", self.seed, ae.len());
        Ok(())
    }

    async fn run(&mut self, ops: usize) -> Result<(), Mismatch> {
        let open = |what: String| Mismatch {
            op_no: 0,
            what,
            request: "(open the watch)".into(),
            a: String::new(),
            b: String::new(),
        };
        self.a.open_watch().await.map_err(open)?;
        self.b.open_watch().await.map_err(open)?;
        let mut n = 0;
        for op in prologue() {
            n += 1;
            self.step(n, &op).await?;
        }
        for _ in 0..ops {
            n += 1;
            let op = gen_op(&mut self.rng, &self.model);
            self.step(n, &op).await?;
        }
        n += 1;
        self.step(n, &Op::Range(space_range())).await?;
        self.compare_watches(n).await
    }
}

async fn run_seed(pair: Pair, etcd: &Path, seed: u64, ops: usize) {
    let started = Instant::now();
    let (server_a, server_b, a, b) = start_servers(pair, etcd).await;
    let mut run = Run {
        seed,
        rng: Rng::new(seed),
        model: Model::default(),
        a,
        b,
        history: Vec::new(),
        verbose: env_u64("NACRE_DIFF_VERBOSE").unwrap_or(0),
        inject: env_u64("NACRE_DIFF_INJECT")
            .map(|n| n as usize)
            .filter(|_| matches!(pair, Pair::EtcdEtcd)),
    };
    let result = run.run(ops).await;
    let Err(m) = result else {
        eprintln!(
            "seed {seed:#x}: {} operations ({} writes) answered alike by {} and {} in {:.1?}",
            run.history.len(),
            run.a.revs.writes.len(),
            run.a.name,
            run.b.name,
            started.elapsed()
        );
        return;
    };
    let tail: Vec<&String> = run.history.iter().rev().take(12).rev().collect();
    let test = match pair {
        Pair::EtcdEtcd => {
            "NACRE_DIFF_ETCD_SELFTEST=1 cargo test -p nacre --test etcd_differential etcd_vs_etcd"
        }
        Pair::EtcdNacre => "cargo test -p nacre --test etcd_differential etcd_vs_nacre",
    };
    let log_b = server_b.log();
    let log_b = &log_b[log_b.len().saturating_sub(4000)..];
    drop(server_a);
    panic!(
        "etcd differential mismatch ({} vs {}), seed {seed:#x}, operation #{}: {}\n\
         replay: NACRE_DIFF_SEED={seed:#x} NACRE_DIFF_OPS={ops} {test}\n\
         (revisions are normalized to write numbers: see the test's module comment)\n\n\
         request: {}\n\n{}\n\
         the last operations that answered alike (answers of {}):\n{}\n\n\
         the end of {}'s log:\n{log_b}",
        run.a.name,
        run.b.name,
        m.op_no,
        m.what,
        m.request,
        line_diff(&run.a.name, &m.a, &run.b.name, &m.b),
        run.a.name,
        tail.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        run.b.name,
    );
}

async fn run_pair(pair: Pair, etcd: &Path) {
    let ops = env_u64("NACRE_DIFF_OPS").unwrap_or(300) as usize;
    for seed in seeds() {
        run_seed(pair, etcd, seed, ops).await;
    }
}

/// Two independent etcds, the second with revision noise: validates the
/// test (its requests, its normalization) against etcd itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_vs_etcd_selftest() {
    if !env_flag("NACRE_DIFF_ETCD_SELFTEST") {
        eprintln!("note: the etcd-vs-etcd self-test runs with NACRE_DIFF_ETCD_SELFTEST=1");
        return;
    }
    let Some(etcd) = etcd_binary() else { return };
    run_pair(Pair::EtcdEtcd, &etcd).await;
}

/// etcd against a Nacre node's etcd API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_vs_nacre() {
    let Some(etcd) = etcd_binary() else { return };
    run_pair(Pair::EtcdNacre, &etcd).await;
}
