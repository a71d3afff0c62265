//! An in-process TCP proxy in front of each node's peer port, so a test
//! can cut any pair of real `nacre serve` processes apart (and heal them)
//! without network namespaces or root.
//!
//! A cut comes in two kinds. `cut` resets: live connections close and new
//! ones are closed at once, as a stopped peer or a rejecting firewall does.
//! `cut_dropping` drops packets, as a partition usually does: connections
//! stay open and carry nothing, and a new one hangs. A connection that had
//! bytes to carry during such a cut stays frozen after the heal, as a TCP
//! connection does until its retransmission timer fires (seconds after a
//! long cut); the proxy never thaws it, so a sender must notice and dial
//! again. A connection idle through the cut works on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cut {
    Reset,
    Drop,
}

/// Pairs (from, to) of raft ids whose traffic is cut, and the live
/// proxied connections so a new cut also breaks them.
#[derive(Default)]
pub struct Net {
    blocked: Mutex<HashMap<(u64, u64), Cut>>,
    live: Mutex<Vec<(u64, u64, tokio::task::AbortHandle)>>,
}

impl Net {
    /// Cuts a and b apart, both ways, closing their connections.
    pub fn cut(&self, a: u64, b: u64) {
        self.blocked
            .lock()
            .extend([((a, b), Cut::Reset), ((b, a), Cut::Reset)]);
        for (f, t, h) in self.live.lock().iter() {
            if (*f == a && *t == b) || (*f == b && *t == a) {
                h.abort();
            }
        }
    }

    /// Cuts a and b apart, both ways, by dropping what they send.
    pub fn cut_dropping(&self, a: u64, b: u64) {
        self.blocked
            .lock()
            .extend([((a, b), Cut::Drop), ((b, a), Cut::Drop)]);
    }

    pub fn heal(&self) {
        self.blocked.lock().clear();
    }

    fn cut_between(&self, from: u64, to: u64) -> Option<Cut> {
        self.blocked.lock().get(&(from, to)).copied()
    }
}

/// Reads the peer handshake far enough to learn the sender's raft id:
/// magic (4), version (2), cluster id length (2) and bytes, node id (8).
async fn sender_id(s: &mut TcpStream) -> std::io::Result<(u64, Vec<u8>)> {
    let mut head = vec![0u8; 8];
    s.read_exact(&mut head).await?;
    let len = u16::from_le_bytes([head[6], head[7]]) as usize;
    let mut rest = vec![0u8; len + 8];
    s.read_exact(&mut rest).await?;
    let id = u64::from_le_bytes(rest[len..].try_into().unwrap());
    head.extend_from_slice(&rest);
    Ok((id, head))
}

/// Copies one direction of a connection between `from` and `to` (raft
/// ids), freezing the whole connection for good when bytes meet a
/// dropping cut.
async fn forward(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    net: Arc<Net>,
    (from, to): (u64, u64),
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = wr.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if net.cut_between(from, to) == Some(Cut::Drop) {
            frozen.store(true, Ordering::SeqCst);
        }
        if frozen.load(Ordering::SeqCst) {
            let _held = (rd, wr);
            return std::future::pending().await;
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Listens at `listen` and forwards to `target` (node `to`'s real port).
pub async fn proxy(net: Arc<Net>, listen: String, target: String, to: u64) {
    let l = TcpListener::bind(&listen).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            let net = net.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok((from, head)) = sender_id(&mut inbound).await else {
                    return;
                };
                match net.cut_between(from, to) {
                    Some(Cut::Reset) => return,
                    // The dial hangs, as one whose packets are dropped.
                    Some(Cut::Drop) => {
                        let _held = inbound;
                        return std::future::pending().await;
                    }
                    None => {}
                }
                let Ok(mut out) = TcpStream::connect(&target).await else {
                    return;
                };
                let task = tokio::spawn({
                    let net = net.clone();
                    async move {
                        if out.write_all(&head).await.is_err() {
                            return;
                        }
                        let frozen = Arc::new(AtomicBool::new(false));
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = out.into_split();
                        tokio::join!(
                            forward(ri, wo, net.clone(), (from, to), frozen.clone()),
                            forward(ro, wi, net, (to, from), frozen),
                        );
                    }
                });
                net.live.lock().push((from, to, task.abort_handle()));
            });
        }
    });
}
