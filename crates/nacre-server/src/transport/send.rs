//! A peer's sender task: dials (with a bounded backoff and jitter), then
//! drains the peer's queue into batch frames until the connection fails,
//! stalls, the address changes or the transport stops.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::frame::{begin_frame, finish_frame, invalid_data, FRAME_HEADER_BYTES, KIND_RAFT_BATCH};
use super::handshake::{connect, VERSION_ACKS};
use super::{PeerLink, Shared, TransportConfig, WRITE_TIMEOUT};

/// One write carries about this much, so a backlog goes out in few
/// syscalls without building huge buffers.
const BATCH_TARGET_BYTES: usize = 1 << 20;

enum PumpEnd {
    Stop,
    AddrChanged,
    Failed(io::Error),
}

/// The wait before the next dial of an unreachable peer: it starts at
/// `reconnect_min_ms`, doubles with every failure up to
/// `reconnect_max_ms`, and starts over after a dial that worked. The cap is
/// what bounds how long a link stays down after a partition heals. Public
/// for the simulator, which has no sockets and models the transport's
/// reconnection with this.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    step_ms: u64,
}

impl Backoff {
    pub fn new(cfg: &TransportConfig) -> Backoff {
        Backoff {
            min_ms: cfg.reconnect_min_ms,
            max_ms: cfg.reconnect_max_ms,
            step_ms: cfg.reconnect_min_ms,
        }
    }

    /// After a dial that worked.
    pub fn reset(&mut self) {
        self.step_ms = self.min_ms;
    }

    /// How long to wait after a failure: between half the current step and
    /// the step (jitter keeps the nodes from redialling in lockstep).
    pub fn after_failure(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.step_ms;
        self.step_ms = step.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(rng.random_range(step.div_ceil(2)..=step))
    }
}

/// Dials in flight at once to one peer, at most.
const DIALS_MAX: usize = 8;

enum Dialled {
    Connected(TcpStream, u16),
    Stop,
    AddrChanged,
}

/// A peer's sender task: keeps a connection up and drains the queue into it.
pub(super) async fn run_sender(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    mut addr_rx: watch::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(&shared.cfg);
    loop {
        if *stop.borrow() {
            return;
        }
        let addr = addr_rx.borrow_and_update().clone();
        let dialled = dial(&shared, &link, &addr, &mut backoff, &mut addr_rx, &mut stop).await;
        let (stream, version) = match dialled {
            Dialled::Connected(stream, version) => (stream, version),
            Dialled::Stop => return,
            Dialled::AddrChanged => continue,
        };
        tracing::debug!(peer = link.id, %addr, version, "connected to peer");
        backoff.reset();
        match pump(&shared, &link, stream, version, &mut addr_rx, &mut stop).await {
            PumpEnd::Stop => return,
            PumpEnd::AddrChanged => continue,
            PumpEnd::Failed(e) => connection_failed(&shared, &link, &addr, &e),
        }
        // Not at once: a peer that accepts and then drops every connection
        // would have us spin.
        let wait = backoff.after_failure(&mut rand::rng());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
            r = addr_rx.changed() => if r.is_err() { return },
        }
    }
}

/// Dials `addr` until a dial works, starting one now and another after each
/// backoff wait. An earlier dial may still be waiting for an answer: one
/// whose packets a partition dropped hangs until `peer_timeout_ms` (TCP
/// would only resend its SYN after a second), and the first dial after the
/// heal must not wait for it. With `DIALS_MAX` in flight, the oldest is
/// abandoned for the new one.
async fn dial(
    shared: &Arc<Shared>,
    link: &PeerLink,
    addr: &str,
    backoff: &mut Backoff,
    addr_rx: &mut watch::Receiver<String>,
    stop: &mut watch::Receiver<bool>,
) -> Dialled {
    // Dropping the set on return abandons the dials still in flight.
    let mut dials = tokio::task::JoinSet::new();
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            if in_flight.len() >= DIALS_MAX {
                if let Some(oldest) = in_flight.pop_front() {
                    tokio::task::AbortHandle::abort(&oldest);
                }
            }
            let (shared, addr) = (shared.clone(), addr.to_string());
            in_flight.push_back(dials.spawn(async move { connect(&shared.cfg, &addr).await }));
            next = Instant::now() + backoff.after_failure(&mut rand::rng());
        }
        tokio::select! {
            _ = stop.changed() => return Dialled::Stop,
            r = addr_rx.changed() => {
                return if r.is_ok() { Dialled::AddrChanged } else { Dialled::Stop };
            }
            Some(done) = dials.join_next_with_id() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                in_flight.retain(|h| h.id() != id);
                match done {
                    Ok((_, Ok((stream, version)))) => return Dialled::Connected(stream, version),
                    Ok((_, Err(e))) => connection_failed(shared, link, addr, &e),
                    Err(e) if e.is_cancelled() => {}
                    // A dial task only ends otherwise by panicking: a failure.
                    Err(e) => connection_failed(shared, link, addr, &io::Error::other(e)),
                }
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// A dial or a connection failed: tell raft the peer is unreachable, once
/// per outage, and drop the backlog. Raft falls back to probing an
/// unreachable peer and resends what it needs, so the backlog is stale.
fn connection_failed(shared: &Shared, link: &PeerLink, addr: &str, error: &io::Error) {
    if link.unreachable.load(Ordering::Acquire) {
        tracing::debug!(peer = link.id, %addr, %error, "peer still unreachable");
    } else {
        tracing::warn!(peer = link.id, %addr, %error, "peer unreachable");
    }
    link.queue.lock().clear();
    shared.report_unreachable(link);
}

/// What the sender knows of the delivery of the frames it wrote on one
/// connection. A version 2 receiver acknowledges each raft batch frame with
/// the count of frames it has read; frames that wait `peer_timeout_ms` with
/// no acknowledgement moving mean the connection stalled (a partition that
/// drops packets leaves TCP silent, not failed). A version 1 receiver sends
/// nothing: then only a write that does not finish in `WRITE_TIMEOUT` does.
struct Delivery {
    acks: bool,
    timeout: Duration,
    sent: u64,
    acked: u64,
    /// Since when frames have waited without an acknowledgement moving.
    waiting_since: Option<Instant>,
    /// When the frame being written began (version 1).
    writing_since: Option<Instant>,
    /// Acknowledgement bytes read; one is 8 bytes, the last one counts.
    buf: [u8; 64],
    filled: usize,
}

impl Delivery {
    fn new(acks: bool, timeout: Duration) -> Delivery {
        Delivery {
            acks,
            timeout,
            sent: 0,
            acked: 0,
            waiting_since: None,
            writing_since: None,
            buf: [0; 64],
            filled: 0,
        }
    }

    fn frame_started(&mut self, now: Instant) {
        self.sent += 1;
        self.waiting_since.get_or_insert(now);
        self.writing_since = Some(now);
    }

    fn frame_written(&mut self) {
        self.writing_since = None;
    }

    /// When the connection counts as stalled, if anything is outstanding.
    fn deadline(&self) -> Option<Instant> {
        if self.acks {
            self.waiting_since.map(|t| t + self.timeout)
        } else {
            self.writing_since.map(|t| t + WRITE_TIMEOUT)
        }
    }

    /// Takes `n` more bytes read into `buf[filled..]`.
    fn received(&mut self, n: usize, now: Instant) -> io::Result<()> {
        if !self.acks {
            return Err(invalid_data("peer sent data after the handshake".into()));
        }
        self.filled += n;
        let whole = self.filled / 8 * 8;
        if whole == 0 {
            return Ok(());
        }
        let mut last = [0u8; 8];
        last.copy_from_slice(&self.buf[whole - 8..whole]);
        let count = u64::from_le_bytes(last);
        self.buf.copy_within(whole..self.filled, 0);
        self.filled -= whole;
        if count > self.sent || count < self.acked {
            return Err(invalid_data(format!(
                "peer acknowledged {count} frames; {} sent, {} acknowledged before",
                self.sent, self.acked
            )));
        }
        if count > self.acked {
            self.acked = count;
            self.waiting_since = (count < self.sent).then_some(now);
        }
        Ok(())
    }
}

/// Writes queued messages to an established connection until it fails,
/// stalls, the address changes or the transport stops.
async fn pump(
    shared: &Shared,
    link: &PeerLink,
    stream: TcpStream,
    version: u16,
    addr_rx: &mut watch::Receiver<String>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let cfg = &shared.cfg;
    let (mut rd, mut wr) = stream.into_split();
    let mut delivery = Delivery::new(
        version >= VERSION_ACKS,
        Duration::from_millis(cfg.peer_timeout_ms),
    );
    let mut buf = Vec::new();
    let mut written = 0;
    let mut count = 0;
    loop {
        if written == buf.len() {
            buf.clear();
            written = 0;
            if let Some(n) = encode_batch(link, &mut buf, cfg.frame_size_max_bytes) {
                count = n;
                delivery.frame_started(Instant::now());
            }
        }
        let writing = written < buf.len();
        let deadline = delivery.deadline();
        let filled = delivery.filled;
        // Reading also notices when the receiver closes, so a dead idle
        // connection is redialled right away instead of on the next message.
        tokio::select! {
            biased;
            _ = stop.changed() => return PumpEnd::Stop,
            r = addr_rx.changed() => {
                return if r.is_ok() { PumpEnd::AddrChanged } else { PumpEnd::Stop };
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return PumpEnd::Failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer acknowledged nothing in time; the connection stalled",
                ));
            }
            r = rd.read(&mut delivery.buf[filled..]) => match r {
                Ok(0) => return PumpEnd::Failed(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "peer closed the connection",
                )),
                Ok(n) => {
                    if let Err(e) = delivery.received(n, Instant::now()) {
                        return PumpEnd::Failed(e);
                    }
                }
                Err(e) => return PumpEnd::Failed(e),
            },
            r = wr.write(&buf[written..]), if writing => match r {
                Ok(0) => return PumpEnd::Failed(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    if written == buf.len() {
                        delivery.frame_written();
                        link.unreachable.store(false, Ordering::Release);
                        tracing::trace!(peer = link.id, count, bytes = buf.len(), "batch sent");
                    }
                }
                Err(e) => return PumpEnd::Failed(e),
            },
            _ = link.ready.notified(), if !writing => {}
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
