//! The state machine: applies committed guarded batches to the store.
//!
//! Deterministic and free of I/O of its own beyond the store: every node
//! that applies the same entries reaches the same bytes. Keys live in the
//! store under one-byte namespaces so that service data (the applied
//! index, later scripts and sessions) never mixes with user keys:
//!
//! | store key       | value                                          |
//! |-----------------|------------------------------------------------|
//! | `u` + user key  | revision (24 bytes: create, mod, version) + value |
//! | `m/applied`     | applied index u64 LE + its term u64 LE         |
//! | `m/member/` + id (u64 BE) | a member's name, client and peer addresses |
//! | `m/session/` + epoch + client id + seq (u64 BE each) | index u64 LE + the outcome, for deduplicating retries |
//!
//! Entries of one raft `Ready` are applied in one store transaction (one
//! commit instead of one per entry). A batch whose guard or check fails
//! part-way is undone inside that transaction from an undo log of the
//! stored values it replaced, so it leaves nothing behind.

use std::collections::BTreeMap;
use std::ops::Bound;

fn bad_meta(what: &str) -> nacre_store::Error {
    nacre_store::Error::Corruption {
        position: 0,
        what: format!("undecodable {what} in the service keyspace"),
    }
}

use bytes::Bytes;
use nacre_proto::{Batch, Command, ErrorCode, Guard, KeyEntry, Op, RangeQuery, Revision};
use nacre_store::{Durability, ReadTxn, Store, WriteTxn};

/// Namespace byte of user keys.
pub const USER_NS: u8 = b'u';
/// Namespace byte of service metadata.
pub const META_NS: u8 = b'm';
const APPLIED_KEY: &[u8] = b"m/applied";
/// The last snapshot installed from a leader: index, term and raft conf
/// state, written in the same commit as its data, so that a node that
/// crashed before its tlog recorded the snapshot can finish the install
/// when it restarts.
const INSTALLED_KEY: &[u8] = b"m/local/installed";
/// Keys under this prefix describe this node, not the replicated state:
/// snapshots do not carry them, and replicas need not agree on them.
const LOCAL_PREFIX: &[u8] = b"m/local/";

/// Whether a stored key is this node's own (see `LOCAL_PREFIX`).
pub fn is_local_key(key: &[u8]) -> bool {
    key.starts_with(LOCAL_PREFIX)
}
const MEMBER_PREFIX: &[u8] = b"m/member/";
const SESSION_PREFIX: &[u8] = b"m/session/";

/// A member's addresses, kept in the replicated state so that every node
/// (and a node restored from a snapshot) knows how to reach the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub name: String,
    pub client: String,
    pub peer: String,
}

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = nacre_proto::wire::Writer::new();
        w.str(&self.name);
        w.str(&self.client);
        w.str(&self.peer);
        w.into_inner()
    }

    pub fn decode(b: &[u8]) -> Option<MemberRecord> {
        let mut r = nacre_proto::wire::Reader::new(Bytes::copy_from_slice(b));
        let m = MemberRecord {
            name: r.string("name").ok()?,
            client: r.string("client").ok()?,
            peer: r.string("peer").ok()?,
        };
        r.finish("member").ok()?;
        Some(m)
    }
}

fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Session records live in epochs of `session_retention_entries` log
/// entries: a lookup checks the current epoch and the one before, and
/// forgetting old records is one range delete of whole epochs (dropped
/// subtree by subtree, never read), not a scan. A record is kept for one
/// to two windows.
fn session_epoch_key(epoch: u64) -> Vec<u8> {
    let mut k = SESSION_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn session_key(epoch: u64, client_id: u64, seq: u64) -> Vec<u8> {
    let mut k = session_epoch_key(epoch);
    k.extend_from_slice(&client_id.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode_outcome(index: u64, o: &Outcome) -> Vec<u8> {
    let mut w = nacre_proto::wire::Writer::new();
    w.u64(index);
    match o {
        Outcome::Applied { prev, count } => {
            w.u8(0);
            w.opt_bytes(prev.as_deref());
            w.u64(*count);
        }
        Outcome::Failed {
            code,
            key,
            current,
            message,
        } => {
            w.u8(1);
            w.u16(code.to_u16());
            w.bytes(key);
            w.opt_bytes(current.as_deref());
            w.str(message);
        }
    }
    w.into_inner()
}

fn decode_outcome(b: &[u8]) -> Option<(u64, Outcome)> {
    let mut r = nacre_proto::wire::Reader::new(Bytes::copy_from_slice(b));
    let index = r.u64("index").ok()?;
    let o = match r.u8("outcome").ok()? {
        0 => Outcome::Applied {
            prev: r.opt_bytes("prev").ok()?,
            count: r.u64("count").ok()?,
        },
        1 => Outcome::Failed {
            code: ErrorCode::from_u16(r.u16("code").ok()?),
            key: r.bytes("key").ok()?,
            current: r.opt_bytes("current").ok()?,
            message: r.string("message").ok()?,
        },
        _ => return None,
    };
    Some((index, o))
}
const REV_BYTES: usize = Revision::ENCODED_BYTES;

/// What applying one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All guards held and every op applied. `prev` is the value the last
    /// set / delete / remove replaced; `count` sums delete_prefix counts.
    Applied { prev: Option<Bytes>, count: u64 },
    /// Nothing changed: `code` is `NotFound` (a delete of a missing key) or
    /// `AssertionFailed` (a guard or check), about `key`, whose value at
    /// that point is `current`.
    Failed {
        code: ErrorCode,
        key: Bytes,
        current: Option<Bytes>,
        message: String,
    },
}

/// One committed log entry to apply; `data` empty is a no-op (a leader's
/// first entry of its term).
pub struct Committed<'a> {
    pub index: u64,
    pub term: u64,
    pub data: &'a [u8],
}

pub struct StateMachine {
    store: Store,
    applied: u64,
    applied_term: u64,
    session_retention_entries: u64,
    /// A planted bug for the simulator (crates/nacre-sim): batches apply
    /// as if they had no guards. Off in production.
    planted_skip_guards: bool,
}

pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_NS);
    k.extend_from_slice(key);
    k
}

fn encode_stored(rev: Revision, value: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; REV_BYTES + value.len()];
    let head: &mut [u8; REV_BYTES] = (&mut v[..REV_BYTES]).try_into().expect("24 bytes");
    rev.encode_into(head);
    v[REV_BYTES..].copy_from_slice(value);
    v
}

fn stored_rev(raw: &[u8]) -> Revision {
    // Every user value was written by `encode_stored`; a shorter one means
    // the store returned bytes we never wrote, which its checksums exclude.
    Revision::decode_from(raw).expect("stored value carries its revision")
}

fn stored_value(raw: &[u8]) -> &[u8] {
    &raw[REV_BYTES..]
}

/// The exclusive end of the keys that start with `prefix` (none at the
/// end of the key space): the store's own rule, so ranges agree.
pub use nacre_store::prefix_end;

impl StateMachine {
    pub fn open(store: Store) -> nacre_store::Result<StateMachine> {
        Self::open_with(store, 100_000)
    }

    /// `session_retention_entries`: how long (in log entries) a session's
    /// write outcome is remembered for deduplicating a retry.
    pub fn open_with(
        store: Store,
        session_retention_entries: u64,
    ) -> nacre_store::Result<StateMachine> {
        let (applied, applied_term) = match store.begin_read().get(APPLIED_KEY)? {
            Some(v) if v.len() == 16 => (
                u64::from_le_bytes(v[0..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(v[8..16].try_into().expect("8 bytes")),
            ),
            Some(_) => {
                return Err(nacre_store::Error::Corruption {
                    position: 0,
                    what: "applied index record has the wrong size".into(),
                })
            }
            None => (0, 0),
        };
        Ok(StateMachine {
            store,
            applied,
            applied_term,
            // An epoch of zero entries would divide by zero; the config
            // refuses it, and one entry is the least that means anything.
            session_retention_entries: session_retention_entries.max(1),
            planted_skip_guards: false,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Plants a bug for the simulator: every batch's guards are skipped.
    pub fn plant_skip_guards(&mut self, on: bool) {
        self.planted_skip_guards = on;
    }

    /// The last applied index and its term.
    pub fn applied(&self) -> (u64, u64) {
        (self.applied, self.applied_term)
    }

    /// Applies committed entries in order, in one store transaction,
    /// committed lazily: the tlog already made them durable, and a
    /// checkpoint ([`StateMachine::checkpoint`]) makes the store durable up
    /// to the applied index so the tlog can be compacted.
    pub fn apply(&mut self, entries: &[Committed<'_>]) -> nacre_store::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let Some(last) = entries.last() else {
            return Ok(outcomes);
        };
        let mut txn = self.store.begin_write()?;
        let mut index_prev = self.applied;
        for e in entries {
            // Raft hands entries over once, in order; anything else means
            // the driver is broken and applying would corrupt the state.
            assert!(e.index > index_prev, "entries applied out of order");
            index_prev = e.index;
            if e.data.is_empty() {
                outcomes.push(Outcome::Applied {
                    prev: None,
                    count: 0,
                });
                continue;
            }
            let decoded = Command::decode(Bytes::copy_from_slice(e.data)).map(|mut c| {
                if self.planted_skip_guards {
                    c.batch.guards.clear();
                }
                c
            });
            let outcome = match decoded {
                Ok(Command {
                    session: Some(session),
                    batch,
                }) => {
                    let epoch = e.index / self.session_retention_entries;
                    let key = session_key(epoch, session.client_id, session.seq);
                    let mut first = txn.get(&key)?;
                    if first.is_none() && epoch > 0 {
                        first = txn.get(&session_key(epoch - 1, session.client_id, session.seq))?;
                    }
                    match first.as_deref().and_then(decode_outcome) {
                        // A retry of a write that already applied: answer as
                        // the first time, change nothing.
                        Some((_, first)) => first,
                        None => {
                            let o = apply_batch(&mut txn, e.index, &batch)?;
                            // Only effects need guarding against a second
                            // apply; a failed batch changed nothing, and its
                            // retry (a script re-run after a conflict, say)
                            // must be evaluated afresh.
                            if matches!(o, Outcome::Applied { .. }) {
                                txn.put(&key, &encode_outcome(e.index, &o))?;
                            }
                            o
                        }
                    }
                }
                Ok(cmd) => apply_batch(&mut txn, e.index, &cmd.batch)?,
                // Every node decodes the same bytes the same way, so this
                // fails identically everywhere and stays deterministic.
                Err(err) => Outcome::Failed {
                    code: ErrorCode::BadInput,
                    key: Bytes::new(),
                    current: None,
                    message: format!("undecodable command: {err}"),
                },
            };
            outcomes.push(outcome);
            // A rule of the index alone, so every replica (and every replica
            // restored from a snapshot) forgets the same records.
            if e.index % self.session_retention_entries == 0 {
                self.prune_sessions(&mut txn, e.index)?;
            }
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&last.index.to_le_bytes());
        applied[8..].copy_from_slice(&last.term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        txn.commit_with(Durability::Lazy)?;
        self.applied = last.index;
        self.applied_term = last.term;
        Ok(outcomes)
    }

    /// Forgets the session epochs before the previous one.
    fn prune_sessions(&self, txn: &mut WriteTxn<'_>, index: u64) -> nacre_store::Result<()> {
        let epoch = index / self.session_retention_entries;
        if epoch < 2 {
            return Ok(());
        }
        let end = session_epoch_key(epoch - 1);
        txn.delete_range(Bound::Included(SESSION_PREFIX), Bound::Excluded(&end[..]))?;
        Ok(())
    }

    /// The member table.
    pub fn members(&self) -> nacre_store::Result<BTreeMap<u64, MemberRecord>> {
        let end = prefix_end(MEMBER_PREFIX).expect("prefix below 0xff");
        let mut out = BTreeMap::new();
        let r = self.store.begin_read();
        for kv in r.range(Bound::Included(MEMBER_PREFIX), Bound::Excluded(&end[..])) {
            let (k, v) = kv?;
            let id = u64::from_be_bytes(
                k[MEMBER_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| bad_meta("member key"))?,
            );
            out.insert(
                id,
                MemberRecord::decode(&v).ok_or_else(|| bad_meta("member record"))?,
            );
        }
        Ok(out)
    }

    /// Records membership changes (`None` removes) at `index`, which is a
    /// conf-change entry: the applied index moves with them.
    pub fn apply_members(
        &mut self,
        index: u64,
        term: u64,
        changes: &[(u64, Option<MemberRecord>)],
    ) -> nacre_store::Result<()> {
        assert!(index > self.applied, "entries applied out of order");
        let mut txn = self.store.begin_write()?;
        for (id, m) in changes {
            match m {
                Some(m) => txn.put(&member_key(*id), &m.encode())?,
                None => {
                    txn.delete(&member_key(*id))?;
                }
            }
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&index.to_le_bytes());
        applied[8..].copy_from_slice(&term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        txn.commit_with(Durability::Lazy)?;
        self.applied = index;
        self.applied_term = term;
        Ok(())
    }

    /// Replaces the whole state with a leader's snapshot (all namespaces),
    /// durable when this returns.
    pub fn install_snapshot(
        &mut self,
        pairs: impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>>,
        index: u64,
        term: u64,
        conf: &raft::eraftpb::ConfState,
    ) -> nacre_store::Result<()> {
        let mut txn = self.store.begin_write()?;
        txn.delete_range(Bound::Unbounded, Bound::Unbounded)?;
        for kv in pairs {
            let (k, v) = kv.map_err(|source| nacre_store::Error::Io {
                op: "read snapshot file",
                source,
            })?;
            txn.put(&k, &v)?;
        }
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&index.to_le_bytes());
        applied[8..].copy_from_slice(&term.to_le_bytes());
        txn.put(APPLIED_KEY, &applied)?;
        let mut installed = applied.to_vec();
        installed.extend(protobuf::Message::write_to_bytes(conf).map_err(|e| {
            nacre_store::Error::Corruption {
                position: 0,
                what: format!("cannot encode a conf state: {e}"),
            }
        })?);
        txn.put(INSTALLED_KEY, &installed)?;
        txn.commit_with(Durability::Immediate)?;
        self.applied = index;
        self.applied_term = term;
        Ok(())
    }

    /// The last snapshot installed from a leader, as (index, term, conf
    /// state), if any.
    pub fn installed_snapshot(
        &self,
    ) -> nacre_store::Result<Option<(u64, u64, raft::eraftpb::ConfState)>> {
        let Some(v) = self.store.begin_read().get(INSTALLED_KEY)? else {
            return Ok(None);
        };
        let bad = |what: String| nacre_store::Error::Corruption { position: 0, what };
        if v.len() < 16 {
            return Err(bad("installed snapshot record is too short".into()));
        }
        let index = u64::from_le_bytes(v[0..8].try_into().expect("8 bytes"));
        let term = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
        let conf = <raft::eraftpb::ConfState as protobuf::Message>::parse_from_bytes(&v[16..])
            .map_err(|e| bad(format!("installed snapshot's conf state: {e}")))?;
        Ok(Some((index, term, conf)))
    }

    /// Makes everything applied so far durable in the store; returns the
    /// applied index it covers.
    pub fn checkpoint(&self) -> nacre_store::Result<u64> {
        self.store.sync()?;
        Ok(self.applied)
    }
}

/// Stored values a failed batch must restore, newest last.
type Undo = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn rollback(txn: &mut WriteTxn<'_>, undo: Undo) -> nacre_store::Result<()> {
    for (key, old) in undo.into_iter().rev() {
        match old {
            Some(v) => txn.put(&key, &v)?,
            None => {
                txn.delete(&key)?;
            }
        }
    }
    Ok(())
}

fn current_value(txn: &WriteTxn<'_>, key: &[u8]) -> nacre_store::Result<Option<Bytes>> {
    Ok(txn
        .get(&user_key(key))?
        .map(|raw| Bytes::copy_from_slice(stored_value(&raw))))
}

/// Checks one guard against the transaction's current state; `Some`
/// describes the failure.
fn check(txn: &mut WriteTxn<'_>, guard: &Guard) -> nacre_store::Result<Option<String>> {
    let failure = match guard {
        Guard::Absent(k) => txn.exists(&user_key(k))?.then(|| "key exists".to_string()),
        Guard::Present(k) => (!txn.exists(&user_key(k))?).then(|| "key does not exist".to_string()),
        Guard::ValueEquals(k, v) => match txn.get(&user_key(k))? {
            Some(raw) if stored_value(&raw) == &v[..] => None,
            Some(_) => Some("value differs".to_string()),
            None => Some("key does not exist".to_string()),
        },
        Guard::VersionEquals(k, want) => {
            let have = txn
                .get(&user_key(k))?
                .map_or(0, |raw| stored_rev(&raw).version);
            (have != *want).then(|| format!("version is {have}, expected {want}"))
        }
        Guard::PrefixKeysEqual { prefix, keys } => {
            let start = user_key(prefix);
            let end = prefix_end(&start);
            let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let found = txn.range(Bound::Included(&start[..]), end_bound)?;
            let same = found.len() == keys.len()
                && found
                    .iter()
                    .zip(keys)
                    .all(|((k, _), want)| k[1..] == want[..]);
            (!same).then(|| {
                format!(
                    "{} keys under the prefix, not the {} expected",
                    found.len(),
                    keys.len()
                )
            })
        }
    };
    Ok(failure)
}

fn apply_batch(txn: &mut WriteTxn<'_>, index: u64, batch: &Batch) -> nacre_store::Result<Outcome> {
    for g in &batch.guards {
        if let Some(why) = check(txn, g)? {
            let key = g.key().clone();
            let current = current_value(txn, &key)?;
            return Ok(Outcome::Failed {
                code: ErrorCode::AssertionFailed,
                key,
                current,
                message: why,
            });
        }
    }
    let mut undo: Undo = Vec::new();
    let mut prev = None;
    let mut count = 0;
    for op in &batch.ops {
        match op {
            Op::Set(k, v) => {
                let uk = user_key(k);
                let old = txn.get(&uk)?;
                let rev = match &old {
                    Some(raw) => {
                        let r = stored_rev(raw);
                        Revision {
                            create_rev: r.create_rev,
                            mod_rev: index,
                            version: r.version + 1,
                        }
                    }
                    None => Revision {
                        create_rev: index,
                        mod_rev: index,
                        version: 1,
                    },
                };
                txn.put(&uk, &encode_stored(rev, v))?;
                prev = old
                    .as_deref()
                    .map(|raw| Bytes::copy_from_slice(stored_value(raw)));
                undo.push((uk, old));
            }
            Op::Delete(k) | Op::Remove(k) => {
                let uk = user_key(k);
                let old = txn.get(&uk)?;
                match old {
                    Some(raw) => {
                        txn.delete(&uk)?;
                        prev = Some(Bytes::copy_from_slice(stored_value(&raw)));
                        undo.push((uk, Some(raw)));
                    }
                    None if matches!(op, Op::Delete(_)) => {
                        rollback(txn, undo)?;
                        return Ok(Outcome::Failed {
                            code: ErrorCode::NotFound,
                            key: k.clone(),
                            current: None,
                            message: "delete of a key that does not exist".into(),
                        });
                    }
                    None => prev = None,
                }
            }
            Op::DeletePrefix(p) => {
                let start = user_key(p);
                let end = prefix_end(&start);
                let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let doomed = txn.range(Bound::Included(&start[..]), end_bound)?;
                count += txn.delete_prefix(&start)?;
                undo.extend(doomed.into_iter().map(|(k, v)| (k, Some(v))));
            }
            Op::Check(g) => {
                if let Some(why) = check(txn, g)? {
                    let key = g.key().clone();
                    let current = current_value(txn, &key)?;
                    rollback(txn, undo)?;
                    return Ok(Outcome::Failed {
                        code: ErrorCode::AssertionFailed,
                        key,
                        current,
                        message: why,
                    });
                }
            }
            op => match apply_script_op(txn, index, op, &mut undo)? {
                Ok(version) => count = version,
                Err((code, message)) => {
                    rollback(txn, undo)?;
                    return Ok(Outcome::Failed {
                        code,
                        key: Bytes::new(),
                        current: None,
                        message,
                    });
                }
            },
        }
    }
    Ok(Outcome::Applied { prev, count })
}

/// Namespace byte of Lua scripts (docs/scripts.md). A script's head
/// record `s` + name holds its live version (0: deleted) and the latest
/// version number, u64 LE each; version records `s` + name + 0x00 +
/// version (u64 BE, so they sort) hold the installing index (u64 LE) and
/// the source. Names never hold 0x00 (the server checks), so the head of
/// one name never sorts among the versions of another.
pub const SCRIPT_NS: u8 = b's';

pub fn script_head_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(SCRIPT_NS);
    k.extend_from_slice(name);
    k
}

pub fn script_version_key(name: &[u8], version: u64) -> Vec<u8> {
    let mut k = script_head_key(name);
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// (live, latest) from a head record.
pub fn decode_script_head(raw: &[u8]) -> Option<(u64, u64)> {
    let live = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    let latest = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    Some((live, latest))
}

fn encode_script_head(live: u64, latest: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&live.to_le_bytes());
    h[8..].copy_from_slice(&latest.to_le_bytes());
    h
}

fn put_undoable(
    txn: &mut WriteTxn<'_>,
    key: Vec<u8>,
    value: &[u8],
    undo: &mut Undo,
) -> nacre_store::Result<()> {
    let old = txn.get(&key)?;
    txn.put(&key, value)?;
    undo.push((key, old));
    Ok(())
}

/// Applies one script op; `Ok(Ok(version))` is the version it installed
/// or made live, `Ok(Err(..))` fails the batch.
#[allow(clippy::type_complexity)]
fn apply_script_op(
    txn: &mut WriteTxn<'_>,
    index: u64,
    op: &Op,
    undo: &mut Undo,
) -> nacre_store::Result<Result<u64, (ErrorCode, String)>> {
    let head = |txn: &WriteTxn<'_>, name: &[u8]| -> nacre_store::Result<Option<(u64, u64)>> {
        match txn.get(&script_head_key(name))? {
            None => Ok(None),
            Some(raw) => decode_script_head(&raw)
                .map(Some)
                .ok_or_else(|| bad_script_meta(name)),
        }
    };
    let shown = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
    Ok(match op {
        Op::ScriptPut { name, source } => {
            let (_, latest) = head(txn, name)?.unwrap_or((0, 0));
            let v = latest + 1;
            let mut rec = Vec::with_capacity(8 + source.len());
            rec.extend_from_slice(&index.to_le_bytes());
            rec.extend_from_slice(source);
            put_undoable(txn, script_version_key(name, v), &rec, undo)?;
            put_undoable(txn, script_head_key(name), &encode_script_head(v, v), undo)?;
            Ok(v)
        }
        Op::ScriptActivate { name, version } => match head(txn, name)? {
            Some((_, latest)) if *version >= 1 && *version <= latest => {
                let h = encode_script_head(*version, latest);
                put_undoable(txn, script_head_key(name), &h, undo)?;
                Ok(*version)
            }
            _ => Err((
                ErrorCode::NotFound,
                format!("script {:?} has no version {version}", shown(name)),
            )),
        },
        Op::ScriptDelete(name) => match head(txn, name)? {
            Some((live, latest)) if live != 0 => {
                let h = encode_script_head(0, latest);
                put_undoable(txn, script_head_key(name), &h, undo)?;
                Ok(live)
            }
            _ => Err((
                ErrorCode::NotFound,
                format!("script {:?} not found", shown(name)),
            )),
        },
        Op::ScriptLive { name, version } => match head(txn, name)? {
            Some((live, _)) if live == *version => Ok(live),
            h => Err((
                ErrorCode::AssertionFailed,
                format!(
                    "script {:?} version {version} is no longer live (live: {})",
                    shown(name),
                    h.map_or(0, |h| h.0)
                ),
            )),
        },
        op => unreachable!("not a script op: {op:?}"),
    })
}

fn bad_script_meta(name: &[u8]) -> nacre_store::Error {
    nacre_store::Error::Corruption {
        position: 0,
        what: format!(
            "script head record of {:?} has the wrong size",
            String::from_utf8_lossy(name)
        ),
    }
}

/// Keys of the script namespace, which `key_count` leaves out.
fn script_key_count(txn: &ReadTxn) -> nacre_store::Result<u64> {
    let ns = [SCRIPT_NS];
    let end = [SCRIPT_NS + 1];
    txn.scan(
        Bound::Included(&ns[..]),
        Bound::Excluded(&end[..]),
        false,
        |_, _| true,
    )
}

/// Reads against one consistent snapshot of the store.
pub struct Reader {
    txn: ReadTxn,
}

impl Reader {
    pub fn new(store: &Store) -> Reader {
        Reader {
            txn: store.begin_read(),
        }
    }

    pub fn get(&self, key: &[u8]) -> nacre_store::Result<Option<Bytes>> {
        self.txn.get_with(&user_key(key), |raw| {
            Bytes::copy_from_slice(stored_value(raw))
        })
    }

    pub fn get_entry(&self, key: &[u8]) -> nacre_store::Result<Option<KeyEntry>> {
        self.txn.get_with(&user_key(key), |raw| KeyEntry {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(stored_value(raw)),
            rev: stored_rev(raw),
        })
    }

    pub fn exists(&self, key: &[u8]) -> nacre_store::Result<bool> {
        self.txn.exists(&user_key(key))
    }

    /// User keys: all keys minus the (few) service keys.
    pub fn key_count(&self) -> nacre_store::Result<u64> {
        let meta = [META_NS];
        let end = prefix_end(&meta).expect("namespace byte below 0xff");
        let service = self.txn.scan(
            Bound::Included(&meta[..]),
            Bound::Excluded(&end[..]),
            false,
            |_, _| true,
        )?;
        Ok(self.txn.count() - service - script_key_count(&self.txn)?)
    }

    /// Visits the user entries of a range query, at most `max_results`.
    fn scan_range(
        &self,
        q: &RangeQuery,
        max_results: u32,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> nacre_store::Result<()> {
        let first = q.first.as_deref().map(user_key);
        let last = q.last.as_deref().map(user_key);
        let ns = [USER_NS];
        let ns_end = [USER_NS + 1];
        let start = match &first {
            Some(k) if q.first_inclusive => Bound::Included(&k[..]),
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Included(&ns[..]),
        };
        let end = match &last {
            Some(k) if q.last_inclusive => Bound::Included(&k[..]),
            Some(k) => Bound::Excluded(&k[..]),
            None => Bound::Excluded(&ns_end[..]),
        };
        let max = q.max.min(max_results) as u64;
        if max == 0 {
            return Ok(());
        }
        let mut seen = 0u64;
        self.txn.scan(start, end, q.reverse, |k, v| {
            visit(&k[1..], v);
            seen += 1;
            seen < max
        })?;
        Ok(())
    }

    pub fn range_keys(&self, q: &RangeQuery, max_results: u32) -> nacre_store::Result<Vec<Bytes>> {
        let mut keys = Vec::new();
        self.scan_range(q, max_results, |k, _| keys.push(Bytes::copy_from_slice(k)))?;
        Ok(keys)
    }

    pub fn range_entries(
        &self,
        q: &RangeQuery,
        max_results: u32,
    ) -> nacre_store::Result<Vec<KeyEntry>> {
        let mut entries = Vec::new();
        self.scan_range(q, max_results, |k, raw| {
            entries.push(KeyEntry {
                key: Bytes::copy_from_slice(k),
                value: Bytes::copy_from_slice(stored_value(raw)),
                rev: stored_rev(raw),
            })
        })?;
        Ok(entries)
    }

    pub fn prefix_keys(&self, prefix: &[u8], max: u32) -> nacre_store::Result<Vec<Bytes>> {
        let start = user_key(prefix);
        let end = prefix_end(&start);
        let end_bound = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = Vec::new();
        if max == 0 {
            return Ok(keys);
        }
        self.txn
            .scan(Bound::Included(&start[..]), end_bound, false, |k, _| {
                keys.push(Bytes::copy_from_slice(&k[1..]));
                keys.len() < max as usize
            })?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_proto::Batch;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn open() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
        (dir, StateMachine::open(store).unwrap())
    }

    fn apply(sm: &mut StateMachine, index: u64, batch: Batch) -> Outcome {
        let data = Command {
            session: None,
            batch,
        }
        .encode();
        let mut out = sm
            .apply(&[Committed {
                index,
                term: 1,
                data: &data,
            }])
            .unwrap();
        out.pop().unwrap()
    }

    fn ops(ops: Vec<Op>) -> Batch {
        Batch {
            guards: vec![],
            ops,
        }
    }

    #[test]
    fn revisions_follow_etcd() {
        let (_d, mut sm) = open();
        apply(&mut sm, 1, ops(vec![Op::Set(b("a"), b("1"))]));
        apply(&mut sm, 2, ops(vec![Op::Set(b("a"), b("2"))]));
        let e = Reader::new(sm.store()).get_entry(b"a").unwrap().unwrap();
        assert_eq!(e.value, b("2"));
        assert_eq!(
            e.rev,
            Revision {
                create_rev: 1,
                mod_rev: 2,
                version: 2
            }
        );
        apply(&mut sm, 3, ops(vec![Op::Delete(b("a"))]));
        apply(&mut sm, 4, ops(vec![Op::Set(b("a"), b("3"))]));
        let e = Reader::new(sm.store()).get_entry(b"a").unwrap().unwrap();
        assert_eq!(
            e.rev,
            Revision {
                create_rev: 4,
                mod_rev: 4,
                version: 1
            }
        );
        assert_eq!(sm.applied(), (4, 1));
    }

    #[test]
    fn failed_batch_leaves_nothing_behind() {
        let (_d, mut sm) = open();
        apply(
            &mut sm,
            1,
            ops(vec![
                Op::Set(b("p/1"), b("x")),
                Op::Set(b("p/2"), b("y")),
                Op::Set(b("k"), b("v")),
            ]),
        );
        let out = apply(
            &mut sm,
            2,
            ops(vec![
                Op::Set(b("k"), b("changed")),
                Op::Set(b("new"), b("n")),
                Op::DeletePrefix(b("p/")),
                Op::Check(Guard::Present(b("p/1"))),
            ]),
        );
        match out {
            Outcome::Failed { code, key, .. } => {
                assert_eq!(code, ErrorCode::AssertionFailed);
                assert_eq!(key, b("p/1"));
            }
            o => panic!("expected a failure, got {o:?}"),
        }
        let r = Reader::new(sm.store());
        assert_eq!(r.get(b"k").unwrap(), Some(b("v")));
        assert_eq!(r.get(b"new").unwrap(), None);
        assert_eq!(r.get(b"p/1").unwrap(), Some(b("x")));
        assert_eq!(r.get(b"p/2").unwrap(), Some(b("y")));
        assert_eq!(r.key_count().unwrap(), 3);
        // The revision of a restored key is the old one, not a new version.
        assert_eq!(r.get_entry(b"k").unwrap().unwrap().rev.version, 1);
        // The failed entry still advances the applied index.
        assert_eq!(sm.applied().0, 2);
    }

    #[test]
    fn delete_of_missing_key_is_not_found_and_remove_is_not() {
        let (_d, mut sm) = open();
        let out = apply(
            &mut sm,
            1,
            ops(vec![Op::Set(b("a"), b("1")), Op::Delete(b("zz"))]),
        );
        assert!(matches!(
            out,
            Outcome::Failed {
                code: ErrorCode::NotFound,
                ..
            }
        ));
        assert_eq!(Reader::new(sm.store()).get(b"a").unwrap(), None);
        let out = apply(&mut sm, 2, ops(vec![Op::Remove(b("zz"))]));
        assert_eq!(
            out,
            Outcome::Applied {
                prev: None,
                count: 0
            }
        );
    }

    #[test]
    fn guards_check_values_versions_and_prefixes() {
        let (_d, mut sm) = open();
        apply(
            &mut sm,
            1,
            ops(vec![
                Op::Set(b("a"), b("1")),
                Op::Set(b("a/x"), b("")),
                Op::Set(b("a/y"), b("")),
            ]),
        );
        let guarded = |g: Guard| Batch {
            guards: vec![g],
            ops: vec![Op::Set(b("out"), b("1"))],
        };
        let cases = [
            (Guard::Absent(b("a")), false),
            (Guard::Absent(b("b")), true),
            (Guard::Present(b("a")), true),
            (Guard::ValueEquals(b("a"), b("1")), true),
            (Guard::ValueEquals(b("a"), b("2")), false),
            (Guard::VersionEquals(b("a"), 1), true),
            (Guard::VersionEquals(b("a"), 2), false),
            (Guard::VersionEquals(b("b"), 0), true),
            (
                Guard::PrefixKeysEqual {
                    prefix: b("a/"),
                    keys: vec![b("a/x"), b("a/y")],
                },
                true,
            ),
            (
                Guard::PrefixKeysEqual {
                    prefix: b("a/"),
                    keys: vec![b("a/x")],
                },
                false,
            ),
        ];
        for (i, (g, ok)) in cases.into_iter().enumerate() {
            let index = 2 + 2 * i as u64;
            let out = apply(&mut sm, index, guarded(g.clone()));
            assert_eq!(matches!(out, Outcome::Applied { .. }), ok, "guard {g:?}");
            apply(&mut sm, index + 1, ops(vec![Op::Remove(b("out"))]));
        }
    }

    #[test]
    fn delete_prefix_counts_and_ranges_clamp() {
        let (_d, mut sm) = open();
        let sets = (0..20)
            .map(|i| Op::Set(b(&format!("k{i:02}")), b("v")))
            .collect();
        apply(&mut sm, 1, ops(sets));
        let r = Reader::new(sm.store());
        let q = RangeQuery {
            first: Some(b("k05")),
            first_inclusive: false,
            last: Some(b("k10")),
            last_inclusive: true,
            max: 100,
            reverse: false,
        };
        let keys = r.range_keys(&q, 1000).unwrap();
        assert_eq!(
            keys,
            (6..=10).map(|i| b(&format!("k{i:02}"))).collect::<Vec<_>>()
        );
        assert_eq!(r.range_keys(&q, 2).unwrap().len(), 2);
        let rev = r
            .range_entries(
                &RangeQuery {
                    reverse: true,
                    ..q.clone()
                },
                1000,
            )
            .unwrap();
        assert_eq!(rev.first().unwrap().key, b("k10"));
        assert_eq!(
            r.prefix_keys(b"k1", 3).unwrap(),
            vec![b("k10"), b("k11"), b("k12")]
        );
        drop(r);
        let out = apply(&mut sm, 2, ops(vec![Op::DeletePrefix(b("k1"))]));
        assert_eq!(
            out,
            Outcome::Applied {
                prev: None,
                count: 10
            }
        );
        assert_eq!(Reader::new(sm.store()).key_count().unwrap(), 10);
    }

    #[test]
    fn applied_index_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
            let mut sm = StateMachine::open(store).unwrap();
            apply(&mut sm, 7, ops(vec![Op::Set(b("a"), b("1"))]));
            assert_eq!(sm.checkpoint().unwrap(), 7);
        }
        let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
        let sm = StateMachine::open(store).unwrap();
        assert_eq!(sm.applied(), (7, 1));
        assert_eq!(Reader::new(sm.store()).key_count().unwrap(), 1);
    }

    #[test]
    fn a_session_retry_applies_once_and_answers_as_the_first_time() {
        let (_d, mut sm) = open();
        let session = Some(nacre_proto::Session {
            client_id: 7,
            seq: 1,
        });
        let set = |v: &str| {
            Command {
                session,
                batch: ops(vec![Op::Set(b("k"), b(v))]),
            }
            .encode()
        };
        let first = sm
            .apply(&[Committed {
                index: 1,
                term: 1,
                data: &set("a"),
            }])
            .unwrap();
        // The same stamp again (a retry after a failover), even with other
        // contents: nothing applies, the first outcome comes back.
        let again = sm
            .apply(&[Committed {
                index: 2,
                term: 1,
                data: &set("b"),
            }])
            .unwrap();
        assert_eq!(first, again);
        let e = Reader::new(sm.store()).get_entry(b"k").unwrap().unwrap();
        assert_eq!((e.value, e.rev.version), (b("a"), 1));
        // A failed stamped batch is not remembered: its retry runs afresh.
        let guarded = |seq| {
            Command {
                session: Some(nacre_proto::Session { client_id: 7, seq }),
                batch: Batch {
                    guards: vec![Guard::ValueEquals(b("k"), b("b"))],
                    ops: vec![Op::Set(b("k"), b("c"))],
                },
            }
            .encode()
        };
        let failed = sm
            .apply(&[Committed {
                index: 3,
                term: 1,
                data: &guarded(2),
            }])
            .unwrap();
        assert!(matches!(failed[0], Outcome::Failed { .. }));
        apply(&mut sm, 4, ops(vec![Op::Set(b("k"), b("b"))]));
        let retried = sm
            .apply(&[Committed {
                index: 5,
                term: 1,
                data: &guarded(2),
            }])
            .unwrap();
        assert!(matches!(retried[0], Outcome::Applied { .. }), "{retried:?}");
        assert_eq!(Reader::new(sm.store()).get(b"k").unwrap(), Some(b("c")));
    }

    #[test]
    fn session_records_are_pruned_after_the_retention_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s"), nacre_store::Options::default()).unwrap();
        let mut sm = StateMachine::open_with(store, 10).unwrap();
        let stamped = Command {
            session: Some(nacre_proto::Session {
                client_id: 1,
                seq: 1,
            }),
            batch: ops(vec![Op::Set(b("x"), b("1"))]),
        }
        .encode();
        sm.apply(&[Committed {
            index: 5,
            term: 1,
            data: &stamped,
        }])
        .unwrap();
        let sessions = |sm: &StateMachine| {
            let end = prefix_end(SESSION_PREFIX).unwrap();
            sm.store()
                .begin_read()
                .range(Bound::Included(SESSION_PREFIX), Bound::Excluded(&end[..]))
                .count()
        };
        assert_eq!(sessions(&sm), 1);
        // Index 10 starts epoch 1: epoch 0 (index 5) is still kept, and a
        // retry of it is still recognised.
        apply(&mut sm, 10, ops(vec![Op::Set(b("y"), b("1"))]));
        assert_eq!(sessions(&sm), 1);
        let retry = sm
            .apply(&[Committed {
                index: 11,
                term: 1,
                data: &stamped,
            }])
            .unwrap();
        assert!(matches!(retry[0], Outcome::Applied { .. }));
        assert_eq!(
            Reader::new(sm.store())
                .get_entry(b"x")
                .unwrap()
                .unwrap()
                .rev
                .version,
            1
        );
        // Index 20 starts epoch 2: epoch 0 goes.
        apply(&mut sm, 20, ops(vec![Op::Set(b("y"), b("2"))]));
        assert_eq!(sessions(&sm), 0);
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
