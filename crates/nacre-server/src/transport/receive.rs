//! The receiving side: the listener and one task per accepted
//! connection, which hands raft batches to the loop and writes snapshot
//! chunks to a file.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::frame::{
    check_pairs, invalid_data, read_frame, take_bytes, take_u32, KIND_RAFT_BATCH,
    KIND_SNAPSHOT_CHUNK, KIND_SNAPSHOT_END,
};
use super::handshake::{
    accept_handshake, HANDSHAKE_TIMEOUT, STATUS_OK, STATUS_SNAPSHOT_FAILED, VERSION_ACKS,
};
use super::snapshot::{finish_snapshot, IncomingSnapshot};
use super::{Inbound, Shared};
use crate::state::check_snapshot_pair;

/// A snapshot sender silent for this long mid-transfer is dropped, so a
/// vanished leader does not pin the temp file forever.
const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn run_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    // Owning the connection tasks here means they are aborted when the
    // listener ends.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    conns.spawn(serve_connection(shared.clone(), stream, remote));
                }
                Err(e) => {
                    // Typically out of file descriptors: pause instead of
                    // spinning on the error.
                    tracing::warn!(error = %e, "accepting peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, mut stream: TcpStream, remote: SocketAddr) {
    if let Err(e) = serve(&shared, &mut stream).await {
        tracing::warn!(%remote, error = %e, "peer connection closed");
    }
}

async fn serve(shared: &Shared, stream: &mut TcpStream) -> io::Result<()> {
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let (from, version) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(stream, cfg))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer handshake timed out"))??;
    tracing::debug!(from, version, "peer connected");
    let mut incoming: Option<IncomingSnapshot> = None;
    let mut body = Vec::new();
    let mut batches = 0u64;
    // Set by the first raft batch: changes when the peer opens a newer
    // raft connection, which ends this one.
    let mut newer: Option<watch::Receiver<()>> = None;
    loop {
        let next = read_frame(stream, &mut body, cfg.frame_size_max_bytes);
        let kind = if incoming.is_some() {
            tokio::time::timeout(SNAPSHOT_STALL_TIMEOUT, next)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "snapshot sender stalled"))??
        } else if let Some(newer) = newer.as_mut() {
            tokio::select! {
                kind = next => kind?,
                _ = newer.changed() => {
                    tracing::debug!(from, "peer opened a newer connection; closing this one");
                    return Ok(());
                }
            }
        } else {
            next.await?
        };
        let Some(kind) = kind else {
            return Ok(());
        };
        match kind {
            KIND_RAFT_BATCH => {
                deliver_batch(shared, from, &body)?;
                if newer.is_none() {
                    newer = Some(shared.claim_raft_connection(from));
                }
                if version >= VERSION_ACKS {
                    batches += 1;
                    stream.write_all(&batches.to_le_bytes()).await?;
                }
            }
            KIND_SNAPSHOT_CHUNK => {
                // A pair that does not decode as its namespace says is
                // refused here, before the leader hears the snapshot
                // arrived; raft tries again later.
                check_pairs(&body, |key, value| {
                    check_snapshot_pair(key, value)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                })?;
                let snap = match incoming.as_mut() {
                    Some(snap) => snap,
                    None => {
                        incoming.insert(IncomingSnapshot::create(&cfg.snapshot_dir, from).await?)
                    }
                };
                body = snap.append(body).await?;
            }
            KIND_SNAPSHOT_END => {
                let snap = match incoming.take() {
                    Some(snap) => snap,
                    // An empty store streams no chunks.
                    None => IncomingSnapshot::create(&cfg.snapshot_dir, from).await?,
                };
                let status = match finish_snapshot(shared, from, &body, snap).await {
                    Ok(()) => STATUS_OK,
                    Err(e) => {
                        tracing::warn!(from, error = %e, "incoming snapshot rejected");
                        STATUS_SNAPSHOT_FAILED
                    }
                };
                stream.write_u16_le(status).await?;
            }
            other => return Err(invalid_data(format!("unknown frame kind {other}"))),
        }
    }
}

fn deliver_batch(shared: &Shared, from: u64, body: &[u8]) -> io::Result<()> {
    let mut rest = body;
    let count = take_u32(&mut rest)?;
    let mut dropped = 0u32;
    for _ in 0..count {
        let len = take_u32(&mut rest)? as usize;
        let bytes = take_bytes(&mut rest, len)?;
        let msg = Message::parse_from_bytes(bytes).map_err(|e| invalid_data(e.to_string()))?;
        if msg.from != from || msg.to != shared.cfg.node_id {
            // A misconfigured address book would otherwise feed raft
            // messages meant for another node.
            return Err(invalid_data(format!(
                "message {} -> {} on a connection from {from} to {}",
                msg.from, msg.to, shared.cfg.node_id
            )));
        }
        match shared.inbound.try_send(Inbound::Raft(msg)) {
            Ok(()) => {}
            // Raft retransmits; a busy raft loop must not stall the socket.
            Err(TrySendError::Full(_)) => dropped += 1,
            Err(TrySendError::Disconnected(_)) => {
                return Err(io::Error::other("raft loop has stopped"))
            }
        }
    }
    if !rest.is_empty() {
        return Err(invalid_data("trailing bytes after raft batch".into()));
    }
    if dropped > 0 {
        tracing::debug!(from, dropped, "raft loop busy; inbound messages dropped");
    }
    Ok(())
}
