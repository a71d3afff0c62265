//! Checkpoints come by bytes as well as by entries, and the tail kept
//! behind them is bounded in bytes too, so that the tlog on disk stays
//! bounded with large values (reported: an 87 MB tlog of 83 entries was
//! never compacted, since checkpoints counted entries alone).

use std::path::Path;

use nacre_client::{Client, ClientOptions};
use nacre_server::ServerConfig;

const MIB: u64 = 1 << 20;
/// Each write's value: 128 of them are 32 MiB of tlog records.
const VALUE_BYTES: usize = 256 << 10;
const WRITES: usize = 128;
/// The tlog keeps each segment written with zeros this far past its last
/// record (`TlogOptions::zero_fill_ahead_bytes`' default).
const ZERO_FILL_BYTES: u64 = MIB;

/// The tlog's segment files: how many, and their bytes on disk (the
/// zero-filled room past the last record included).
fn tlog_files(data_dir: &Path) -> (u64, u64) {
    std::fs::read_dir(data_dir.join("tlog"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .fold((0, 0), |(n, bytes), e| {
            (n + 1, bytes + e.metadata().unwrap().len())
        })
}

fn stat(stats: &[(String, String)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_checkpointed_by_bytes_and_the_tlog_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        etcd_listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        tick_ms: 20,
        // Far more entries than the test writes: only bytes can trigger.
        checkpoint_entries: 100_000,
        tlog_tail_entries: 10_000,
        checkpoint_bytes: 2 * MIB,
        tlog_tail_bytes: MIB,
        tlog_segment_size_bytes: 2 * MIB,
        ..Default::default()
    };
    let entry = VALUE_BYTES as u64 + 1024;
    // Records the tlog may hold: the tail, what came since the last
    // checkpoint, and the entry that crossed the limit (docs/server.md).
    // Only whole segments are deleted, so the oldest one may also hold up
    // to a segment (and one entry) of compacted records; every segment
    // file carries its zero-filled room.
    let live = cfg.tlog_tail_bytes + cfg.checkpoint_bytes + entry;
    let files_max = live.div_ceil(cfg.tlog_segment_size_bytes) + 2;
    let bound = live + cfg.tlog_segment_size_bytes + entry + files_max * ZERO_FILL_BYTES;
    let server = nacre_server::start(cfg.clone()).await.unwrap();
    let client = Client::connect(ClientOptions::new(vec![server.local_addr().to_string()]))
        .await
        .unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    let (mut files, mut largest) = (0, 0);
    for i in 0..WRITES {
        client
            .set(format!("big/{i:03}"), value.clone())
            .await
            .unwrap();
        let (n, bytes) = tlog_files(dir.path());
        files = files.max(n);
        largest = largest.max(bytes);
    }
    let stats = client.statistics().await.unwrap();
    assert!(stat(&stats, "checkpoints") >= 4, "{stats:?}");
    let kept = stat(&stats, "tlog_last_index") + 1 - stat(&stats, "tlog_first_index");
    assert!(
        kept * VALUE_BYTES as u64 <= live,
        "{kept} entries of {VALUE_BYTES} bytes kept in the tlog, over {live} bytes"
    );
    assert!(
        files <= files_max,
        "{files} segment files, over {files_max}"
    );
    assert!(
        largest <= bound,
        "the tlog grew to {largest} bytes, over {bound} (written: {} bytes)",
        WRITES * VALUE_BYTES
    );
    // Compaction kept what the store had not yet made durable: every
    // value is still there after a restart.
    server.shutdown().await.unwrap();
    let server = nacre_server::start(cfg).await.unwrap();
    let client = Client::connect(ClientOptions::new(vec![server.local_addr().to_string()]))
        .await
        .unwrap();
    for i in 0..WRITES {
        let got = client.get(format!("big/{i:03}")).await.unwrap();
        assert_eq!(got.len(), VALUE_BYTES, "big/{i:03}");
    }
    server.shutdown().await.unwrap();
}
