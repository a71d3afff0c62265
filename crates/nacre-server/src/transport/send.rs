//! A peer's sender task: dials (with backoff and jitter), then drains the
//! peer's queue into batch frames until the connection fails, the address
//! changes or the transport stops.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::frame::{begin_frame, finish_frame, invalid_data, FRAME_HEADER_BYTES, KIND_RAFT_BATCH};
use super::handshake::connect;
use super::{PeerLink, Shared, WRITE_TIMEOUT};

/// One write carries about this much, so a backlog goes out in few
/// syscalls without building huge buffers.
const BATCH_TARGET_BYTES: usize = 1 << 20;

enum PumpEnd {
    Stop,
    AddrChanged,
    Failed(io::Error),
}

/// A peer's sender task: keeps a connection up and drains the queue into it.
pub(super) async fn run_sender(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    mut addr_rx: watch::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let mut backoff_ms = cfg.reconnect_min_ms;
    loop {
        if *stop.borrow() {
            return;
        }
        let addr = addr_rx.borrow_and_update().clone();
        let connected = tokio::select! {
            r = connect(cfg, &addr) => r,
            _ = stop.changed() => return,
            r = addr_rx.changed() => match r {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let failure = match connected {
            Ok(stream) => {
                tracing::debug!(peer = link.id, %addr, "connected to peer");
                backoff_ms = cfg.reconnect_min_ms;
                match pump(&shared, &link, stream, &mut addr_rx, &mut stop).await {
                    PumpEnd::Stop => return,
                    PumpEnd::AddrChanged => continue,
                    PumpEnd::Failed(e) => e,
                }
            }
            Err(e) => e,
        };
        if link.unreachable.load(Ordering::Acquire) {
            tracing::debug!(peer = link.id, %addr, error = %failure, "peer still unreachable");
        } else {
            tracing::warn!(peer = link.id, %addr, error = %failure, "peer unreachable");
        }
        // Raft falls back to probing an unreachable peer and resends what
        // it needs, so the backlog is stale: drop it rather than replay it.
        link.queue.lock().clear();
        shared.report_unreachable(&link);

        // Jitter keeps the nodes of a cluster from redialling in lockstep.
        let sleep_ms = rand::rng().random_range(backoff_ms / 2..=backoff_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            _ = stop.changed() => return,
            r = addr_rx.changed() => if r.is_err() { return },
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(cfg.reconnect_max_ms);
    }
}

/// Writes queued messages to an established connection until it fails,
/// the address changes or the transport stops.
async fn pump(
    shared: &Shared,
    link: &PeerLink,
    stream: TcpStream,
    addr_rx: &mut watch::Receiver<String>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    // The receiver never writes after the handshake; reading only notices
    // when it closes, so a dead idle connection is redialled right away
    // instead of on the next message.
    let mut probe = [0u8; 1];
    loop {
        while let Some(count) = encode_batch(link, &mut buf, shared.cfg.frame_size_max_bytes) {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
                Ok(Ok(())) => {
                    link.unreachable.store(false, Ordering::Release);
                    tracing::trace!(peer = link.id, count, bytes = buf.len(), "batch sent");
                }
                Ok(Err(e)) => return PumpEnd::Failed(e),
                Err(_) => {
                    return PumpEnd::Failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    ))
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return PumpEnd::Stop,
            r = addr_rx.changed() => {
                return if r.is_ok() { PumpEnd::AddrChanged } else { PumpEnd::Stop };
            }
            r = rd.read(&mut probe) => {
                return PumpEnd::Failed(match r {
                    Ok(0) => io::Error::new(io::ErrorKind::ConnectionReset, "peer closed the connection"),
                    Ok(_) => invalid_data("peer sent data after the handshake".into()),
                    Err(e) => e,
                });
            }
            _ = link.ready.notified() => {}
        }
    }
}

/// Moves queued messages into one raft batch frame in `buf`, up to about
/// `BATCH_TARGET_BYTES`; None when the queue is empty.
fn encode_batch(link: &PeerLink, buf: &mut Vec<u8>, frame_size_max_bytes: usize) -> Option<usize> {
    // Pick under the lock, encode after releasing it, so the raft thread's
    // `send` never waits for serialization.
    let mut picked = Vec::new();
    {
        let mut queue = link.queue.lock();
        let mut batch_bytes = FRAME_HEADER_BYTES + 4;
        while let Some(msg) = queue.front() {
            let size = 4 + msg.compute_size() as usize;
            if size + 4 > frame_size_max_bytes {
                // The receiver would close the connection over it; raft
                // copes with a lost message, not with a wedged link.
                tracing::error!(
                    peer = link.id,
                    bytes = size,
                    "raft message exceeds frame limit; dropped"
                );
                queue.pop_front();
                continue;
            }
            if !picked.is_empty()
                && (batch_bytes + size > BATCH_TARGET_BYTES
                    || batch_bytes + size - FRAME_HEADER_BYTES > frame_size_max_bytes)
            {
                break;
            }
            batch_bytes += size;
            picked.extend(queue.pop_front());
        }
    }
    if picked.is_empty() {
        return None;
    }
    begin_frame(buf);
    buf.extend_from_slice(&(picked.len() as u32).to_le_bytes());
    let mut count = 0u32;
    for msg in &picked {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        if let Err(e) = msg.write_to_vec(buf) {
            tracing::error!(peer = link.id, error = %e, "cannot encode raft message; dropped");
            buf.truncate(start);
            continue;
        }
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        count += 1;
    }
    buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 4].copy_from_slice(&count.to_le_bytes());
    finish_frame(buf, KIND_RAFT_BATCH);
    Some(count as usize)
}
