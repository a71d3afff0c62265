//! The native protocol's `Backup` request: after a read barrier (so the
//! backup holds every write acknowledged before the request), one read
//! snapshot of the store is streamed to the client as `Response::Backup`
//! chunk frames under the request's id, then an end frame with the
//! figures and checksum. Each chunk is encoded off the async workers and
//! handed to the connection's writer, whose bounded queue (and behind it
//! the socket) paces the stream: at most one chunk is encoded ahead of
//! what the connection has room for, never the whole store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nacre_proto::{
    encode_response, BackupFrame, BackupSummary, Consistency, ErrorCode, ErrorReply, Response,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::format::BackupWriter;
use crate::server::{off_the_workers, wait_for, Shared};

/// A client that takes no chunk for this long is given up on: the stream
/// ends and its read snapshot is let go (a snapshot held forever would
/// keep the store from reclaiming the space of what changed since).
const STALL_MAX_MS: u64 = 60_000;

/// Streams one backup under request `id` into the connection's writer
/// `tx`; `permit` (the connection's in-flight slot) is held until the
/// stream ends.
pub(crate) async fn serve_backup(
    shared: Arc<Shared>,
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    permit: OwnedSemaphorePermit,
) {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = stream(&shared, id, &tx).await {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = e {
            tracing::debug!(error = %e.message, "backup ended early");
            let _ = send(&tx, id, &Response::Error(e)).await;
        }
    }
    drop(permit);
}

/// The stream; `Err(None)` when the client is gone (nothing to tell it).
async fn stream(
    shared: &Arc<Shared>,
    id: u64,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<(), Option<ErrorReply>> {
    // As a consistent read: only the leader, once it has applied every
    // write acknowledged before now.
    wait_for(shared, Consistency::Consistent).await?;
    let store = shared.store.clone();
    let mut writer = off_the_workers(shared, move || {
        BackupWriter::start(&store).map_err(ErrorReply::from)
    })
    .await?;
    tracing::info!(
        applied = writer.applied(),
        pairs = writer.pairs(),
        bytes = writer.file_bytes(),
        "streaming a backup"
    );
    loop {
        if shared.node.status.stopped.load(Ordering::Acquire) {
            return Err(Some(ErrorReply::new(
                ErrorCode::GoingDown,
                "the node stopped during the backup",
            )));
        }
        let next = off_the_workers(shared, move || {
            let chunk = writer.next_chunk().map_err(ErrorReply::from)?;
            Ok((writer, chunk))
        })
        .await?;
        writer = next.0;
        let Some((data, _remaining)) = next.1 else {
            break;
        };
        send(tx, id, &Response::Backup(BackupFrame::Chunk(data))).await?;
    }
    let sha = writer
        .sha256()
        .expect("the trailer went out before the end");
    let end = BackupSummary {
        applied: writer.applied(),
        revision: writer.revision(),
        pairs: writer.pairs(),
        size_bytes: writer.file_bytes(),
        sha256: Bytes::copy_from_slice(&sha),
    };
    send(tx, id, &Response::Backup(BackupFrame::End(end))).await
}

/// Queues one frame for the connection's writer, waiting for room at most
/// [`STALL_MAX_MS`].
async fn send(
    tx: &mpsc::Sender<Vec<u8>>,
    id: u64,
    resp: &Response,
) -> Result<(), Option<ErrorReply>> {
    let mut frame = Vec::new();
    encode_response(id, resp, &mut frame);
    match tokio::time::timeout(Duration::from_millis(STALL_MAX_MS), tx.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            tracing::warn!("a backup's client took nothing for {STALL_MAX_MS} ms: giving up");
            Err(None)
        }
    }
}
