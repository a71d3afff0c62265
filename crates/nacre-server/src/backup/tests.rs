//! The backup format: a written backup reads back pair for pair; a damaged
//! one (a flipped bit anywhere, a cut, bytes added) is refused.

use super::format::CHUNK_BYTES;
use super::*;
use crate::state::{check_snapshot_pair, StateMachine};
use nacre_proto::{Batch, Command, Op, Revision};

fn store(dir: &std::path::Path) -> nacre_store::Store {
    nacre_store::Store::open(dir.join("store"), nacre_store::Options::default()).unwrap()
}

/// A store with `n` user keys (some overwritten, one deleted) applied
/// through the state machine, as a node applies them.
fn filled(dir: &std::path::Path, n: u64) -> nacre_store::Store {
    let st = store(dir);
    let mut sm = StateMachine::open(st.clone()).unwrap();
    let mut index = 1;
    for round in 0..2 {
        for i in 0..n {
            let value = format!("v{round}-{i}").repeat(1 + (i as usize % 50));
            let batch = Batch {
                guards: vec![],
                ops: vec![Op::Set(
                    format!("k{i:05}").into_bytes().into(),
                    value.into_bytes().into(),
                )],
            };
            index += 1;
            apply(&mut sm, index, batch);
        }
    }
    index += 1;
    let delete = Batch {
        guards: vec![],
        ops: vec![Op::Delete(b"k00000".to_vec().into())],
    };
    apply(&mut sm, index, delete);
    st
}

fn apply(sm: &mut StateMachine, index: u64, batch: Batch) {
    let data = Command {
        session: None,
        batch,
    }
    .encode();
    let entry = crate::state::Committed {
        index,
        term: 1,
        data: &data,
    };
    sm.apply(&[entry]).unwrap();
}

/// The whole file, chunk by chunk, and the writer's figures.
fn write_all(st: &nacre_store::Store) -> (Vec<u8>, BackupWriter) {
    let mut w = BackupWriter::start(st).unwrap();
    let mut file = Vec::new();
    while let Some((chunk, _)) = w.next_chunk().unwrap() {
        assert!(chunk.len() <= CHUNK_BYTES);
        file.extend_from_slice(&chunk);
    }
    (file, w)
}

#[test]
fn a_backup_reads_back_pair_for_pair() {
    let dir = tempfile::tempdir().unwrap();
    let st = filled(dir.path(), 300);
    let (file, w) = write_all(&st);
    assert_eq!(file.len() as u64, w.file_bytes());
    assert_eq!(file.len() % 512, SHA_BYTES);
    let mut pairs = Vec::new();
    let info = read_backup(&file[..], |k, v| {
        pairs.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(info.applied, 602);
    assert_eq!(info.applied, w.applied());
    assert_eq!(info.pairs, pairs.len() as u64);
    assert_eq!(info.user_keys, 299);
    assert_eq!(info.size_bytes, file.len() as u64);
    assert_eq!(Some(info.sha256), w.sha256());
    assert_eq!(&info.sha256[..], &file[file.len() - SHA_BYTES..]);
    // Every pair of the store but the node's own, in order.
    let txn = st.begin_read();
    let want: Vec<(Vec<u8>, Vec<u8>)> = txn
        .iter()
        .map(Result::unwrap)
        .filter(|(k, _)| !crate::state::is_local_key(k))
        .collect();
    assert_eq!(pairs, want);
    let k1 = pairs.iter().find(|(k, _)| k == b"uk00001").unwrap();
    let rev = Revision::decode_from(&k1.1).unwrap();
    assert_eq!((rev.create_rev, rev.mod_rev, rev.version), (3, 303, 2));
    assert!(pairs.iter().all(|(k, v)| check_snapshot_pair(k, v).is_ok()));
}

#[test]
fn an_empty_store_backs_up_to_its_records_alone() {
    let dir = tempfile::tempdir().unwrap();
    let st = filled(dir.path(), 0);
    let (file, _) = write_all(&st);
    assert_eq!(file.len(), 512 + SHA_BYTES);
    let info = read_backup(&file[..], |_, _| Ok(())).unwrap();
    assert_eq!(info.user_keys, 0);
}

#[test]
fn damage_anywhere_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let st = filled(dir.path(), 200);
    let (file, _) = write_all(&st);
    // A bit flipped in the header, in pairs, in the padding, in the trailer.
    let step = (file.len() / 97).max(1);
    for at in (0..file.len())
        .step_by(step)
        .chain([file.len() - 1, file.len() - 40])
    {
        let mut damaged = file.clone();
        damaged[at] ^= 0x10;
        let r = read_backup(&damaged[..], |_, _| Ok(()));
        assert!(
            r.is_err(),
            "a flipped bit at {at} of {} went unseen",
            file.len()
        );
    }
    for cut in [0, 8, 31, 32, 600, file.len() - SHA_BYTES, file.len() - 1] {
        let r = read_backup(&file[..cut], |_, _| Ok(()));
        assert!(
            matches!(
                r,
                Err(BackupError::Truncated(_) | BackupError::BadPair { .. })
            ),
            "cut at {cut}: {r:?}"
        );
    }
    let mut longer = file.clone();
    longer.push(0);
    let r = read_backup(&longer[..], |_, _| Ok(()));
    assert!(matches!(r, Err(BackupError::TrailingBytes)), "{r:?}");
    let mut other = file.clone();
    other[..8].copy_from_slice(b"NOTABACK");
    assert!(matches!(
        read_backup(&other[..], |_, _| Ok(())),
        Err(BackupError::NotABackup)
    ));
}

#[test]
fn a_pair_the_state_machine_never_writes_is_refused() {
    // A well-formed file (right checksum) holding a key in no namespace.
    let mut body = Vec::new();
    body.extend_from_slice(BACKUP_MAGIC);
    for n in [5u64, 5, 1] {
        body.extend_from_slice(&n.to_le_bytes());
    }
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(b"zv");
    body.resize(512, 0);
    let sha: [u8; 32] =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&body)).into();
    body.extend_from_slice(&sha);
    let r = read_backup(&body[..], |_, _| Ok(()));
    assert!(
        matches!(r, Err(BackupError::BadPair { index: 0, .. })),
        "{r:?}"
    );
}

#[test]
fn bodies_pad_to_512() {
    assert_eq!(format::padded(32), 512);
    assert_eq!(format::padded(512), 512);
    assert_eq!(format::padded(513), 1024);
}
