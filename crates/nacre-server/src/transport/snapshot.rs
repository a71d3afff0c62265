//! Snapshot streaming: the sender reads the store's pairs on a blocking
//! thread and sends them as chunk frames on a connection of its own; the
//! receiver writes them to a file, makes it durable and hands it to the
//! raft loop, which reads it back with [`read_snapshot_file`].

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::frame::{
    begin_frame, finish_frame, invalid_data, push_pair, FRAME_HEADER_BYTES, KIND_SNAPSHOT_CHUNK,
    KIND_SNAPSHOT_END,
};
use super::handshake::{connect, STATUS_OK};
use super::{deliver_blocking, Inbound, Shared, SnapshotSource, WRITE_TIMEOUT};

/// The receiver fsyncs the whole snapshot before answering the end frame.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Left-overs of a previous run: no Inbound::Snapshot survives a restart,
/// so nobody will install these.
pub(super) fn remove_stale_snapshots(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("incoming-") && (name.ends_with(".tmp") || name.ends_with(".snap")) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Streams one snapshot to a peer and reports how it went to our raft loop.
pub(super) async fn send_snapshot(
    shared: Arc<Shared>,
    addr: String,
    msg: Message,
    mut stop: watch::Receiver<bool>,
) {
    let to = msg.to;
    let index = msg.get_snapshot().get_metadata().index;
    let result = tokio::select! {
        r = transfer_snapshot(&shared, &addr, &msg) => r,
        _ = stop.changed() => return,
    };
    let ok = match result {
        Ok(bytes) => {
            tracing::info!(to, index, bytes, "snapshot sent");
            true
        }
        Err(e) => {
            tracing::warn!(to, index, %addr, error = %e, "snapshot transfer failed");
            false
        }
    };
    deliver_blocking(&shared, Inbound::SnapshotStatus { to, ok }).await;
}

/// Returns the number of pair bytes sent.
async fn transfer_snapshot(shared: &Shared, addr: &str, msg: &Message) -> io::Result<u64> {
    let cfg = &shared.cfg;
    // A snapshot connection carries no raft batches, so it is never
    // acknowledged whatever the version.
    let (mut stream, _version) = connect(cfg, addr).await?;
    // A small channel keeps the reader at most a couple of chunks ahead of
    // the socket, so memory stays bounded whatever the store's size.
    let (tx, mut rx) = mpsc::channel(2);
    let source = shared.snapshots.clone();
    let snapshot = msg.get_snapshot().clone();
    let chunk_bytes = cfg.snapshot_chunk_bytes;
    let frame_max = cfg.frame_size_max_bytes;
    tokio::task::spawn_blocking(move || {
        produce_chunks(&source, &snapshot, chunk_bytes, frame_max, &tx)
    });
    let mut sent_bytes = 0u64;
    while let Some(frame) = rx.recv().await {
        let frame: Vec<u8> = frame?;
        sent_bytes += (frame.len() - FRAME_HEADER_BYTES) as u64;
        write_timed(&mut stream, &frame).await?;
    }
    let mut end = Vec::new();
    begin_frame(&mut end);
    msg.write_to_vec(&mut end).map_err(io::Error::other)?;
    if end.len() - FRAME_HEADER_BYTES > frame_max {
        return Err(invalid_data("snapshot message exceeds frame limit".into()));
    }
    finish_frame(&mut end, KIND_SNAPSHOT_END);
    write_timed(&mut stream, &end).await?;
    let status = tokio::time::timeout(SNAPSHOT_ACK_TIMEOUT, stream.read_u16_le())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no snapshot acknowledgement"))??;
    if status != STATUS_OK {
        return Err(io::Error::other(format!(
            "peer refused snapshot (status {status})"
        )));
    }
    Ok(sent_bytes)
}

async fn write_timed(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))?
}

/// Runs on a blocking thread: reads the snapshot's pairs and sends chunk
/// frames; stops early when the transfer is abandoned (channel closed).
fn produce_chunks(
    source: &SnapshotSource,
    snapshot: &Snapshot,
    chunk_bytes: usize,
    frame_max: usize,
    tx: &mpsc::Sender<io::Result<Vec<u8>>>,
) {
    let fail = |e: io::Error| {
        let _ = tx.blocking_send(Err(e));
    };
    let pairs = match source(snapshot) {
        Ok(pairs) => pairs,
        Err(e) => return fail(e),
    };
    let mut frame = Vec::new();
    begin_frame(&mut frame);
    for pair in pairs {
        let (key, value) = match pair {
            Ok(pair) => pair,
            Err(e) => return fail(e),
        };
        let pair_bytes = 8 + key.len() + value.len();
        if pair_bytes > frame_max {
            return fail(invalid_data(format!(
                "a {pair_bytes}-byte pair exceeds the frame limit"
            )));
        }
        let body_bytes = frame.len() - FRAME_HEADER_BYTES;
        if body_bytes > 0 && body_bytes + pair_bytes > chunk_bytes {
            finish_frame(&mut frame, KIND_SNAPSHOT_CHUNK);
            if tx.blocking_send(Ok(std::mem::take(&mut frame))).is_err() {
                return;
            }
            begin_frame(&mut frame);
        }
        if let Err(e) = push_pair(&mut frame, &key, &value) {
            return fail(e);
        }
    }
    if frame.len() > FRAME_HEADER_BYTES {
        finish_frame(&mut frame, KIND_SNAPSHOT_CHUNK);
        let _ = tx.blocking_send(Ok(frame));
    }
}

pub(super) async fn finish_snapshot(
    shared: &Shared,
    from: u64,
    body: &[u8],
    snap: IncomingSnapshot,
) -> io::Result<()> {
    let msg = Message::parse_from_bytes(body).map_err(|e| invalid_data(e.to_string()))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot
        || msg.from != from
        || msg.to != shared.cfg.node_id
    {
        return Err(invalid_data(format!(
            "snapshot end carries {:?} {} -> {}",
            msg.get_msg_type(),
            msg.from,
            msg.to
        )));
    }
    let index = msg.get_snapshot().get_metadata().index;
    let path = snap.persist(from, index).await?;
    if !deliver_blocking(
        shared,
        Inbound::Snapshot {
            msg,
            path: path.clone(),
        },
    )
    .await
    {
        let _ = std::fs::remove_file(&path);
        return Err(io::Error::other("raft loop has stopped"));
    }
    Ok(())
}

/// A snapshot being received; its temp file is removed unless persisted.
pub(super) struct IncomingSnapshot {
    file: Option<std::fs::File>,
    dir: PathBuf,
    tmp_path: PathBuf,
}

/// Distinguishes temp files of concurrent transfers from the same peer
/// (the snapshot index is only known at the end frame).
static INCOMING_SEQ: AtomicU64 = AtomicU64::new(0);

impl IncomingSnapshot {
    pub(super) async fn create(dir: &Path, from: u64) -> io::Result<IncomingSnapshot> {
        let seq = INCOMING_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!("incoming-{from}-{seq}.tmp"));
        let file = {
            let tmp_path = tmp_path.clone();
            tokio::task::spawn_blocking(move || std::fs::File::create(tmp_path))
                .await
                .map_err(io::Error::other)??
        };
        Ok(IncomingSnapshot {
            file: Some(file),
            dir: dir.to_path_buf(),
            tmp_path,
        })
    }

    /// Appends a chunk body; hands the buffer back for reuse.
    pub(super) async fn append(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file closed"))?;
        let (file, chunk) =
            tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| (file, chunk)))
                .await
                .map_err(io::Error::other)??;
        self.file = Some(file);
        Ok(chunk)
    }

    /// Makes the file durable under its final name
    /// `incoming-<from>-<index>.snap`.
    async fn persist(mut self, from: u64, index: u64) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file closed"))?;
        let tmp_path = self.tmp_path.clone();
        let dir = self.dir.clone();
        let path = dir.join(format!("incoming-{from}-{index}.snap"));
        let final_path = path.clone();
        let persisted = tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp_path, &final_path)?;
            // The rename itself must survive a crash too.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?;
        match persisted {
            Ok(()) => {
                // Renamed away: nothing left for Drop to clean up.
                self.tmp_path = PathBuf::new();
                Ok(path)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Reads a snapshot file written by the transport: the key/value pairs in
/// the order the leader streamed them.
pub fn read_snapshot_file(
    path: impl AsRef<Path>,
) -> io::Result<impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>> {
    let file = std::fs::File::open(path)?;
    let remaining_bytes = file.metadata()?.len();
    Ok(SnapshotFilePairs {
        reader: BufReader::new(file),
        remaining_bytes,
        failed: false,
    })
}

struct SnapshotFilePairs {
    reader: BufReader<std::fs::File>,
    /// Bounds every length read from the file, so a corrupt length fails
    /// instead of allocating gigabytes.
    remaining_bytes: u64,
    failed: bool,
}

impl SnapshotFilePairs {
    fn read_field(&mut self) -> io::Result<Vec<u8>> {
        if self.remaining_bytes < 4 {
            return Err(invalid_data("snapshot file truncated".into()));
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        self.remaining_bytes -= 4;
        let len = u64::from(u32::from_le_bytes(len));
        if len > self.remaining_bytes {
            return Err(invalid_data("snapshot file truncated".into()));
        }
        let mut field = vec![0u8; len as usize];
        self.reader.read_exact(&mut field)?;
        self.remaining_bytes -= len;
        Ok(field)
    }
}

impl Iterator for SnapshotFilePairs {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining_bytes == 0 {
            return None;
        }
        let pair = self
            .read_field()
            .and_then(|key| self.read_field().map(|value| (key, value)));
        self.failed = pair.is_err();
        Some(pair)
    }
}
