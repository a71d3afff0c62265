//! An in-process TCP proxy in front of each node's peer port, so a test
//! can cut any pair of real `nacre serve` processes apart (and heal them)
//! without network namespaces or root.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Pairs (from, to) of raft ids whose traffic is dropped, and the live
/// proxied connections so a new cut also breaks them.
#[derive(Default)]
pub struct Net {
    blocked: Mutex<HashSet<(u64, u64)>>,
    live: Mutex<Vec<(u64, u64, tokio::task::AbortHandle)>>,
}

impl Net {
    pub fn cut(&self, a: u64, b: u64) {
        self.blocked.lock().extend([(a, b), (b, a)]);
        for (f, t, h) in self.live.lock().iter() {
            if (*f == a && *t == b) || (*f == b && *t == a) {
                h.abort();
            }
        }
    }

    pub fn heal(&self) {
        self.blocked.lock().clear();
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
                if net.blocked.lock().contains(&(from, to)) {
                    return;
                }
                let Ok(mut out) = TcpStream::connect(&target).await else {
                    return;
                };
                let task = tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    if out.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                });
                net.live.lock().push((from, to, task.abort_handle()));
            });
        }
    });
}
