//! Runs operations on a store over `SimVfs` and keeps the model and the
//! history in step with it.

use std::sync::Arc;

use nacre_store::{Durability, Error, Options, ReadTxn, Store, WriteTxn};
use nacre_vfs::sim::{SimFault, SimVfs};

use super::model::{entries_in, entries_with_prefix, History, Model, Snaps, State};
use super::ops::{Cut, End, Op, ReadOp, TxnOp};
use super::reads::{as_ref, check_full, check_read};
use super::{key, options, prefix, snapshot_name, value, DIR, SNAPSHOTS_MAX};

/// Read transactions kept open at once.
const HELD_MAX: usize = 4;
const OPEN: &str = "the store is open between operations";

/// A read transaction kept open across later operations, with the data it
/// must go on showing.
struct Held {
    txn: ReadTxn,
    data: Arc<Model>,
    what: String,
}

/// Faults armed and not yet resolved by a reopen, with how power comes back
/// once each one hits.
#[derive(Default)]
struct Armed {
    crash: Option<Cut>,
    sync: Option<Cut>,
}

pub struct Harness {
    sim: SimVfs,
    opts: Options,
    /// `None` only while a reopen is under way.
    store: Option<Store>,
    hist: History,
    held: Vec<Held>,
    armed: Armed,
    /// Puts so far: makes every value unique.
    stamp: u32,
    recoveries: u32,
}

impl Harness {
    pub fn new(sim: SimVfs, shape: u8) -> Harness {
        let opts = options(&sim, shape);
        let store = Store::open(DIR, opts.clone()).expect("creating a store on an empty disk");
        let first = State {
            seq: store.begin_read().seq(),
            data: Arc::default(),
            snaps: Arc::default(),
        };
        Harness {
            sim,
            opts,
            store: Some(store),
            hist: History::new(first),
            held: Vec::new(),
            armed: Armed::default(),
            stamp: 0,
            recoveries: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect(OPEN)
    }

    pub fn step(&mut self, op: &Op) {
        if let Err(e) = self.apply(op) {
            self.recover(e, op);
        }
    }

    /// `op` for messages: a write's operations are left out (the trace
    /// lists them).
    fn label(op: &Op) -> String {
        match op {
            Op::Write { ops, end } => format!("a write of {} operations ending {end:?}", ops.len()),
            _ => format!("{op:?}"),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), Error> {
        match op {
            Op::Write { ops, end } => self.write(ops, *end),
            Op::Read(read) => {
                let data = self.hist.latest().data.clone();
                check_read(&self.store().begin_read(), &data, read, "latest")
            }
            Op::Hold { snapshot } => self.hold(*snapshot),
            Op::ReadHeld { slot, read } => self.read_held(*slot, read),
            Op::Sync => self.sync(),
            Op::CreateSnapshot { name } => self.create_snapshot(&snapshot_name(*name)),
            Op::DropSnapshot { name } => self.drop_snapshot(&snapshot_name(*name)),
            Op::ReadSnapshot { name, read } => self.read_snapshot(&snapshot_name(*name), read),
            Op::Clean => self.clean(),
            Op::Reopen => self.reopen(),
            Op::ArmCrash { after, cut } => {
                self.sim
                    .set_crash_after(Some(self.sim.ops() + u64::from(*after)));
                self.armed.crash = Some(*cut);
                Ok(())
            }
            Op::FailNextSync { then } => {
                self.sim.fail_next_sync(true);
                self.armed.sync = Some(*then);
                Ok(())
            }
            Op::PowerCut { cut } => {
                self.power_cycle(*cut, "a power cut");
                Ok(())
            }
        }
    }

    /// An operation failed: that is allowed only as the effect of an armed
    /// fault. Power then comes back as the fault says, and the store must
    /// recover to a state the history allows.
    fn recover(&mut self, err: Error, op: &Op) {
        let injected = match &err {
            Error::Io { source, .. } => SimFault::of(source).is_some(),
            Error::Poisoned(_) => true,
            _ => false,
        };
        let armed = self.armed.crash.is_some() || self.armed.sync.is_some();
        let op = Self::label(op);
        assert!(
            injected && armed,
            "{op} failed with no fault injected: {err}"
        );
        let cut = if self.sim.is_crashed() {
            self.armed.crash.unwrap_or(Cut::Random)
        } else {
            self.armed.sync.unwrap_or(Cut::Restart)
        };
        self.power_cycle(cut, &format!("{op} failed: {err}"));
    }

    fn cut_power(&self, cut: Cut) {
        match cut {
            Cut::Restart => {}
            Cut::Random => self.sim.crash(),
            Cut::LoseAll => self.sim.crash_lose_all_unsynced(),
        }
    }

    /// Drop the store (and every read transaction) with power coming back
    /// as `cut` says, reopen it and check what it holds.
    fn power_cycle(&mut self, cut: Cut, why: &str) {
        self.held.clear();
        // A disk that died comes back only through a power cycle.
        let cut = if self.sim.is_crashed() && cut == Cut::Restart {
            Cut::Random
        } else {
            cut
        };
        // Power goes before the store does: dropping a store syncs it.
        self.cut_power(cut);
        self.store = None;
        if self.sim.is_crashed() {
            // The armed crash hit the sync of the store being dropped.
            self.cut_power(self.armed.crash.unwrap_or(Cut::Random));
        }
        self.sim.set_crash_after(None);
        self.sim.fail_next_sync(false);
        self.armed = Armed::default();
        self.reopen_and_check(why);
    }

    fn reopen_and_check(&mut self, why: &str) {
        self.recoveries += 1;
        let what = format!("recovery {} (after {why})", self.recoveries);
        let store = Store::open(DIR, self.opts.clone())
            .unwrap_or_else(|e| panic!("{what}: reopening failed: {e}"));
        let seq = store.begin_read().seq();
        let h = &self.hist;
        assert!(
            seq >= h.durable,
            "{what}: came back at seq {seq}, older than the durable seq {}",
            h.durable
        );
        assert!(
            seq <= h.max_seq,
            "{what}: came back at seq {seq}, which was never committed (newest possible {})",
            h.max_seq
        );
        check_state(&store, h.at(seq), &what);
        if std::env::var_os("STORE_API_TRACE").is_some() {
            eprintln!(
                "{what}: back at seq {seq} (durable {}, newest possible {})",
                h.durable, h.max_seq
            );
        }
        self.hist.forget_after(seq);
        // Opening syncs the segment it recovered from before it writes a
        // new one: whatever it came back to is durable now.
        self.hist.durable = seq;
        self.store = Some(store);
    }

    /// The end of an input: the store holds the latest state, and keeps
    /// everything acknowledged as durable through a last power cut.
    pub fn finish(mut self) {
        if self.sim.is_crashed() {
            let cut = self.armed.crash.unwrap_or(Cut::Random);
            self.power_cycle(cut, "the crash countdown ran out");
        }
        let latest = self.hist.latest().clone();
        check_state(self.store(), &latest, "at the end");
        self.power_cycle(Cut::LoseAll, "the final power cut");
    }

    fn write(&mut self, ops: &[TxnOp], end: End) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        let latest = self.hist.latest().clone();
        let mut txn = store.begin_write()?;
        assert!(
            txn.base_seq() >= latest.seq,
            "a transaction starts before the newest commit"
        );
        let mut data = (*latest.data).clone();
        for op in ops {
            txn_op(&mut txn, &mut data, op, &mut self.stamp)?;
            assert_eq!(
                txn.count(),
                data.len() as u64,
                "count in a transaction, after {op:?}"
            );
        }
        let durability = match end {
            End::Abort => {
                txn.abort();
                let count = store.begin_read().count();
                assert_eq!(
                    count,
                    latest.data.len() as u64,
                    "an aborted transaction left changes"
                );
                return Ok(());
            }
            End::Commit(d) => d.unwrap_or(self.opts.durability),
        };
        let seq = txn.base_seq() + 1;
        self.hist.max_seq = self.hist.max_seq.max(seq);
        let snaps = latest.snaps.clone();
        self.hist.push(State {
            seq,
            data: Arc::new(data),
            snaps,
        });
        let info = txn.commit_with(durability)?;
        if info.seq + 1 == seq {
            // The transaction changed nothing, so nothing was committed.
            let unchanged = self.hist.pop();
            assert!(
                unchanged.data == latest.data,
                "a commit that changed data made no new seq"
            );
            self.hist.max_seq = info.seq;
        } else {
            assert_eq!(info.seq, seq, "the commit's seq");
        }
        if durability == Durability::Immediate {
            self.hist.durable = info.seq;
        }
        Ok(())
    }

    fn hold(&mut self, snapshot: Option<u8>) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        let latest = self.hist.latest();
        let held = match snapshot.map(snapshot_name) {
            None => Held {
                txn: store.begin_read(),
                data: latest.data.clone(),
                what: "a held read of the latest state".into(),
            },
            Some(name) => {
                let Some((seq, data)) = latest.snaps.get(&name) else {
                    return Ok(());
                };
                let txn = store.snapshot(&name)?;
                assert_eq!(txn.seq(), *seq, "snapshot {name}'s seq");
                let what = format!("a held read of snapshot {name}");
                Held {
                    txn,
                    data: data.clone(),
                    what,
                }
            }
        };
        if self.held.len() == HELD_MAX {
            self.held.remove(0);
        }
        self.held.push(held);
        Ok(())
    }

    fn read_held(&self, slot: u8, read: &ReadOp) -> Result<(), Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let h = &self.held[slot as usize % self.held.len()];
        check_read(&h.txn, &h.data, read, &h.what)
    }

    fn sync(&mut self) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        let seq = store.begin_read().seq();
        store.sync()?;
        self.hist.durable = self.hist.durable.max(seq);
        Ok(())
    }

    fn create_snapshot(&mut self, name: &str) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        let latest = self.hist.latest().clone();
        if latest.snaps.contains_key(name) {
            let r = store.create_snapshot(name);
            return refused(r, |e| matches!(e, Error::SnapshotExists(_)), name);
        }
        if latest.snaps.len() >= SNAPSHOTS_MAX {
            let r = store.create_snapshot(name);
            return refused(r, |e| matches!(e, Error::TooManySnapshots { .. }), name);
        }
        let base = store.begin_read().seq();
        let mut snaps = (*latest.snaps).clone();
        snaps.insert(name.to_string(), (base, latest.data.clone()));
        push_snapshots(&mut self.hist, base, snaps);
        let info = store.create_snapshot(name)?;
        let want = (base, latest.data.len() as u64);
        assert_eq!((info.seq, info.key_count), want, "snapshot {name}'s info");
        self.snapshots_committed(base + 1);
        Ok(())
    }

    fn drop_snapshot(&mut self, name: &str) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        let latest = self.hist.latest().clone();
        if !latest.snaps.contains_key(name) {
            let r = store.drop_snapshot(name);
            return refused(r, |e| matches!(e, Error::SnapshotNotFound(_)), name);
        }
        let base = store.begin_read().seq();
        let mut snaps = (*latest.snaps).clone();
        snaps.remove(name);
        push_snapshots(&mut self.hist, base, snaps);
        store.drop_snapshot(name)?;
        self.snapshots_committed(base + 1);
        Ok(())
    }

    /// Snapshot changes commit with the store's default durability.
    fn snapshots_committed(&mut self, seq: u64) {
        if self.opts.durability == Durability::Immediate {
            self.hist.durable = seq;
        }
    }

    fn read_snapshot(&self, name: &str, read: &ReadOp) -> Result<(), Error> {
        let store = self.store();
        let snaps = &self.hist.latest().snaps;
        let mut listed: Vec<String> = store.list_snapshots().into_iter().map(|s| s.name).collect();
        listed.sort();
        assert!(listed.iter().eq(snaps.keys()), "list_snapshots: {listed:?}");
        match (snaps.get(name), store.snapshot(name)) {
            (Some((seq, data)), Ok(txn)) => {
                assert_eq!(txn.seq(), *seq, "snapshot {name}'s seq");
                check_read(&txn, data, read, &format!("snapshot {name}"))
            }
            (None, Err(Error::SnapshotNotFound(_))) => Ok(()),
            (want, got) => panic!(
                "snapshot {name}: the model has {:?}, the store answered {:?}",
                want.map(|w| w.0),
                got.map(|t| t.seq())
            ),
        }
    }

    fn clean(&mut self) -> Result<(), Error> {
        let store = self.store.as_ref().expect(OPEN);
        // Cleaning commits as often as it needs to, never changing data.
        self.hist.max_seq = u64::MAX;
        store.clean()?;
        let seq = store.begin_read().seq();
        self.hist.max_seq = seq;
        // It syncs before it deletes a segment (and rolls, which syncs,
        // before it starts): every commit so far is durable.
        self.hist.durable = seq;
        // Readers from before see their state, though segments went.
        for h in &self.held {
            check_full(&h.txn, &h.data, &format!("{}, after cleaning", h.what))?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), Error> {
        self.held.clear();
        let store = self.store.take().expect(OPEN);
        // `close` commits once more, without changing anything.
        self.hist.max_seq = u64::MAX;
        store.close()?;
        let store = Store::open(DIR, self.opts.clone())?;
        let seq = store.begin_read().seq();
        let latest = self.hist.latest().clone();
        assert!(
            seq >= latest.seq,
            "a clean reopen lost commits: seq {seq} < {}",
            latest.seq
        );
        check_state(&store, &latest, "after a clean reopen");
        self.hist.max_seq = seq;
        self.hist.durable = seq;
        self.store = Some(store);
        Ok(())
    }
}

/// A snapshot change is about to commit on top of seq `base`.
fn push_snapshots(hist: &mut History, base: u64, snaps: Snaps) {
    let data = hist.latest().data.clone();
    hist.max_seq = hist.max_seq.max(base + 1);
    let snaps = Arc::new(snaps);
    hist.push(State {
        seq: base + 1,
        data,
        snaps,
    });
}

/// The model says the call must be refused with an error `expected`
/// matches; an injected fault may still get there first.
fn refused<T>(
    r: Result<T, Error>,
    expected: impl Fn(&Error) -> bool,
    name: &str,
) -> Result<(), Error> {
    match r {
        Err(e) if expected(&e) => Ok(()),
        Err(e @ (Error::Io { .. } | Error::Poisoned(_))) => Err(e),
        Err(e) => panic!("snapshot {name}: refused with the wrong error: {e}"),
        Ok(_) => panic!("snapshot {name}: the model says this must be refused"),
    }
}

fn txn_op(
    txn: &mut WriteTxn<'_>,
    data: &mut Model,
    op: &TxnOp,
    stamp: &mut u32,
) -> Result<(), Error> {
    match *op {
        TxnOp::Put { key: k, value: v } => {
            *stamp += 1;
            let (k, v) = (key(k), value(v, *stamp));
            txn.put(&k, &v)?;
            data.insert(k, v);
        }
        TxnOp::Delete { key: k } => {
            let k = key(k);
            let existed = txn.delete(&k)?;
            assert_eq!(existed, data.remove(&k).is_some(), "delete {k:?}'s answer");
        }
        TxnOp::DeleteRange { lo, hi } => {
            let (lo, hi) = (lo.to_bound(), hi.to_bound());
            let gone = entries_in(data, &lo, &hi);
            let n = txn.delete_range(as_ref(&lo), as_ref(&hi))?;
            assert_eq!(n, gone.len() as u64, "delete_range {lo:?}..{hi:?}'s count");
            for (k, _) in &gone {
                data.remove(k);
            }
        }
        TxnOp::DeletePrefix { prefix: p } => {
            let p = prefix(p);
            let gone = entries_with_prefix(data, &p);
            assert_eq!(
                txn.delete_prefix(&p)?,
                gone.len() as u64,
                "delete_prefix {p:?}'s count"
            );
            for (k, _) in &gone {
                data.remove(k);
            }
        }
        TxnOp::Get { key: k } => {
            let k = key(k);
            assert_eq!(
                txn.get(&k)?.as_ref(),
                data.get(&k),
                "get {k:?} in a transaction"
            );
            assert_eq!(
                txn.exists(&k)?,
                data.contains_key(&k),
                "exists {k:?} in a transaction"
            );
        }
        TxnOp::Range { lo, hi } => {
            let (lo, hi) = (lo.to_bound(), hi.to_bound());
            let got = txn.range(as_ref(&lo), as_ref(&hi))?;
            assert!(
                got == entries_in(data, &lo, &hi),
                "range {lo:?}..{hi:?} in a transaction"
            );
        }
    }
    Ok(())
}

/// The store holds `want`: its data, its snapshots and their data.
fn check_state(store: &Store, want: &State, what: &str) {
    let read_ok = |r: Result<(), Error>| {
        if let Err(e) = r {
            panic!("{what}: reading failed: {e}");
        }
    };
    read_ok(check_full(&store.begin_read(), &want.data, what));
    let mut got: Vec<(String, u64, u64)> = store
        .list_snapshots()
        .into_iter()
        .map(|s| (s.name, s.seq, s.key_count))
        .collect();
    got.sort();
    let listed: Vec<_> = want
        .snaps
        .iter()
        .map(|(n, (seq, d))| (n.clone(), *seq, d.len() as u64))
        .collect();
    assert_eq!(got, listed, "{what}: the snapshots");
    for (name, (_, data)) in want.snaps.iter() {
        let txn = store
            .snapshot(name)
            .unwrap_or_else(|e| panic!("{what}: snapshot {name}: {e}"));
        read_ok(check_full(&txn, data, &format!("{what}: snapshot {name}")));
    }
    let stats = store.stats();
    let counts = (stats.key_count, stats.snapshots);
    assert_eq!(
        counts,
        (want.data.len() as u64, want.snaps.len()),
        "{what}: stats"
    );
}
