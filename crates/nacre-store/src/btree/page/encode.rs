//! Encoding pages, for the write side (`write.rs`, `leaf.rs`) and the
//! cleaner: the byte layouts are documented in `page.rs`.

#[cfg(test)]
use super::Val;
use super::{ChildInfo, ValRef, CHILD_LEN};
use crate::record::{put_ptr, put_u32, put_u64};

/// Where child `i`'s pointer starts in a branch payload.
pub fn branch_child_offset(i: usize) -> usize {
    8 + CHILD_LEN * i
}

pub fn branch_entry_size(sep: &[u8]) -> usize {
    CHILD_LEN + 4 + 4 + sep.len()
}

#[cfg(test)]
pub fn encode_leaf(entries: &[(Vec<u8>, Val)], out: &mut Vec<u8>) {
    out.clear();
    let table = begin_leaf(entries.len(), out);
    for (i, (k, v)) in entries.iter().enumerate() {
        let at = out.len();
        set_entry_offset(out, table, i, at);
        encode_entry(k, v.as_ref(), out);
    }
}

/// Start a leaf of `n` entries at the end of `out` (which then holds its
/// payload from there on): the header and a table of offsets to fill with
/// `set_entry_offset` as the entries are appended, packed and in order.
/// Returns where the table starts in `out`.
pub fn begin_leaf(n: usize, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0, 0, 0, 0]);
    put_u32(out, n as u32);
    let table = out.len();
    out.resize(table + 4 * n, 0);
    table
}

/// Record that entry `i` of the leaf whose table is at `table` in `out`
/// starts at `at` in `out`. Offsets in the page count from the payload
/// start, 8 bytes before the table.
pub fn set_entry_offset(out: &mut [u8], table: usize, i: usize, at: usize) {
    let off = (at - (table - 8)) as u32;
    out[table + 4 * i..table + 4 * i + 4].copy_from_slice(&off.to_le_bytes());
}

/// Append one leaf entry: key length, value tag, value length, key, then
/// the value or the pointer to its record.
pub fn encode_entry(k: &[u8], v: ValRef<'_>, out: &mut Vec<u8>) {
    put_u32(out, k.len() as u32);
    match v {
        ValRef::Inline(b) => {
            out.push(0);
            put_u32(out, b.len() as u32);
            out.extend_from_slice(k);
            out.extend_from_slice(b);
        }
        ValRef::Ext { vlen, ptr } => {
            out.push(1);
            put_u32(out, vlen);
            out.extend_from_slice(k);
            put_ptr(out, ptr);
        }
    }
}

#[cfg(test)]
pub fn encode_branch(level: u8, keys: &[Vec<u8>], children: &[ChildInfo], out: &mut Vec<u8>) {
    out.clear();
    encode_branch_with(
        level,
        keys.len(),
        |i| keys[i].as_slice(),
        |i| children[i],
        out,
    );
}

/// Encode a branch whose separator `i` is `key(i)` and child `i` is
/// `child(i)`, appended to `out` like `begin_leaf` and its entries.
pub fn encode_branch_with<'a>(
    level: u8,
    nkeys: usize,
    key: impl Fn(usize) -> &'a [u8],
    child: impl Fn(usize) -> ChildInfo,
    out: &mut Vec<u8>,
) {
    debug_assert!(level > 0);
    let base = out.len();
    let nchildren = nkeys + 1;
    out.extend_from_slice(&[level, 0, 0, 0]);
    put_u32(out, nchildren as u32);
    for i in 0..nchildren {
        let c = child(i);
        put_ptr(out, c.ptr);
        put_u64(out, c.count);
        put_u64(out, c.bytes);
    }
    let mut off = 8 + CHILD_LEN * nchildren + 4 * nkeys;
    for i in 0..nkeys {
        put_u32(out, off as u32);
        off += 4 + key(i).len();
    }
    for i in 0..nkeys {
        let k = key(i);
        put_u32(out, k.len() as u32);
        out.extend_from_slice(k);
    }
    debug_assert_eq!(out.len() - base, off);
}
