use super::*;
use nacre_vfs::OsVfs;

/// Bytes of the head segment's file past its last record: the zero fill.
fn zero_fill(log: &Log) -> u64 {
    let app = log.app.lock();
    let len = app.head.file.len().unwrap();
    assert!(
        len >= app.off,
        "records missing from the file: {len} < {}",
        app.off
    );
    len - app.off
}

/// Append `records` records of `len` bytes and make them durable, as a
/// commit does: hand them to the OS, then sync.
fn durable(log: &Log, records: usize, len: usize) {
    for i in 0..records {
        log.append(Kind::Value, &vec![i as u8; len]).unwrap();
    }
    log.flush().unwrap();
    log.sync_to(log.written_upto()).unwrap();
    assert_eq!(log.synced_upto(), log.written_upto());
}

#[test]
fn only_syncs_after_small_writes_zero_fill_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Arc::new(OsVfs::default()), 64 << 20)
        .unwrap()
        .log;
    durable(&log, 1, 100);
    assert!(
        zero_fill(&log) >= ZERO_AHEAD * 3 / 4,
        "a small durable write leaves zeros ahead: {}",
        zero_fill(&log)
    );
    // Four megabytes in one sync: zeros now would be synced by this
    // fsync and then written over.
    durable(&log, 64, 64 << 10);
    assert_eq!(zero_fill(&log), 0, "zeros written after a large sync");
    // Small writes again: the fill comes back.
    durable(&log, 1, 100);
    assert!(zero_fill(&log) >= ZERO_AHEAD * 3 / 4);
}
