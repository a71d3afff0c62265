//! Reads through a `ReadTxn`, compared with the model of the state it
//! shows. A wrong answer panics; an error is returned, for the caller to
//! judge (errors are allowed only once the simulated disk has died).

use std::ops::Bound;

use nacre_store::{Error, ReadTxn};

use super::model::{entries_in, entries_with_prefix, Model};
use super::ops::ReadOp;
use super::{key, prefix};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

pub fn check_read(txn: &ReadTxn, model: &Model, op: &ReadOp, what: &str) -> Result<(), Error> {
    assert_eq!(txn.count(), model.len() as u64, "{what}: count");
    match *op {
        ReadOp::Get { key: k } => check_get(txn, model, &key(k), what),
        ReadOp::Range { lo, hi, limit, rev } => {
            let (lo, hi) = (lo.to_bound(), hi.to_bound());
            let limit = if limit == 0 {
                usize::MAX
            } else {
                limit as usize
            };
            let mut want = entries_in(model, &lo, &hi);
            let iter = if rev {
                want.reverse();
                txn.range_rev(as_ref(&lo), as_ref(&hi))
            } else {
                txn.range(as_ref(&lo), as_ref(&hi))
            };
            want.truncate(limit);
            let got = iter.take(limit).collect::<Result<Entries, _>>()?;
            assert!(
                got == want,
                "{what}: range {lo:?}..{hi:?} rev {rev} limit {limit}"
            );
            Ok(())
        }
        ReadOp::Scan { lo, hi, limit, rev } => {
            check_scan(txn, model, (lo.to_bound(), hi.to_bound()), limit, rev, what)
        }
        ReadOp::Prefix { prefix: p } => {
            let p = prefix(p);
            let got = txn.prefix(&p).collect::<Result<Entries, _>>()?;
            assert!(
                got == entries_with_prefix(model, &p),
                "{what}: prefix {p:?}"
            );
            Ok(())
        }
        ReadOp::Full => check_full(txn, model, what),
    }
}

fn check_get(txn: &ReadTxn, model: &Model, k: &[u8], what: &str) -> Result<(), Error> {
    let want = model.get(k);
    assert_eq!(txn.get(k)?.as_ref(), want, "{what}: get {k:?}");
    assert_eq!(txn.exists(k)?, want.is_some(), "{what}: exists {k:?}");
    let len = txn.get_with(k, |v| v.len())?;
    assert_eq!(len, want.map(Vec::len), "{what}: get_with {k:?}");
    Ok(())
}

/// `scan` offers at least one entry, then stops when the visitor says so.
fn check_scan(
    txn: &ReadTxn,
    model: &Model,
    (lo, hi): (Bound<Vec<u8>>, Bound<Vec<u8>>),
    limit: u8,
    rev: bool,
    what: &str,
) -> Result<(), Error> {
    let mut want = entries_in(model, &lo, &hi);
    if rev {
        want.reverse();
    }
    want.truncate((limit as usize).max(1));
    let mut got = Vec::new();
    let seen = txn.scan(as_ref(&lo), as_ref(&hi), rev, |k, v| {
        got.push((k.to_vec(), v.to_vec()));
        got.len() < limit as usize
    })?;
    assert!(
        got == want,
        "{what}: scan {lo:?}..{hi:?} rev {rev} limit {limit}"
    );
    assert_eq!(seen, got.len() as u64, "{what}: scan's count");
    Ok(())
}

pub fn check_full(txn: &ReadTxn, model: &Model, what: &str) -> Result<(), Error> {
    let got = txn.iter().collect::<Result<Entries, _>>()?;
    if got.len() != model.len() || !got.iter().map(|(k, v)| (k, v)).eq(model.iter()) {
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, _)| !model.contains_key(k))
            .map(|(k, _)| k)
            .take(5)
            .collect();
        let missing: Vec<_> = model
            .keys()
            .filter(|k| !got.iter().any(|(g, _)| g == *k))
            .take(5)
            .collect();
        panic!(
            "{what}: the full scan differs from the model ({} entries, want {}; \
             extra {extra:?}, missing {missing:?})",
            got.len(),
            model.len()
        );
    }
    Ok(())
}
