//! The script namespace (service metadata): head and version records of
//! Lua scripts and the ops that install, activate and delete them.

use std::ops::Bound;

use nacre_proto::{ErrorCode, Op};
use nacre_store::{ReadTxn, WriteTxn};

use super::kv::{put_undoable, Undo};
use super::{Corruption, StateError};

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

/// Applies one script op; `Ok(Ok(version))` is the version it installed
/// or made live, `Ok(Err(..))` fails the batch.
#[allow(clippy::type_complexity)]
pub(super) fn apply_script_op(
    txn: &mut WriteTxn<'_>,
    index: u64,
    op: &Op,
    undo: &mut Undo,
) -> Result<Result<u64, (ErrorCode, String)>, StateError> {
    let head = |txn: &WriteTxn<'_>, name: &[u8]| -> Result<Option<(u64, u64)>, StateError> {
        let key = script_head_key(name);
        match txn.get(&key)? {
            None => Ok(None),
            Some(raw) => Ok(Some(decode_script_head(&raw).ok_or_else(|| {
                Corruption::new(&key, "script head record", "shorter than 16 bytes")
            })?)),
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
        // The caller hands over only the ops it does not handle itself;
        // failing the batch (on every replica alike) beats a panic.
        op => Err((ErrorCode::BadInput, format!("not a script op: {op:?}"))),
    })
}

/// Checks a record of the script namespace: a head is two u64s, a version
/// record (name, 0x00, u64 version) holds at least its installing index.
pub(super) fn check_script_record(key: &[u8], value: &[u8]) -> Result<(), Corruption> {
    let name_and_version = key.get(1..).unwrap_or_default();
    match name_and_version.iter().position(|b| *b == 0) {
        None if value.len() == 16 => Ok(()),
        None => Err(Corruption::new(
            key,
            "script head record",
            format!("{} bytes, not 16", value.len()),
        )),
        Some(at) if name_and_version.len() - at - 1 != 8 => Err(Corruption::new(
            key,
            "script version key",
            "not a name, 0x00 and an 8-byte version",
        )),
        Some(_) if value.len() < 8 => Err(Corruption::new(
            key,
            "script version record",
            format!("{} bytes, shorter than its 8-byte index", value.len()),
        )),
        Some(_) => Ok(()),
    }
}

/// Keys of the script namespace, which `key_count` leaves out.
pub(super) fn script_key_count(txn: &ReadTxn) -> Result<u64, StateError> {
    let ns = [SCRIPT_NS];
    let end = [SCRIPT_NS + 1];
    Ok(txn.scan(
        Bound::Included(&ns[..]),
        Bound::Excluded(&end[..]),
        false,
        |_, _| true,
    )?)
}
