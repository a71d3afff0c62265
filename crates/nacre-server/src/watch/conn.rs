//! A connection's side of a watch: a task forwards the watch's frames to
//! the connection's writer under the watch request's id, and asks for a
//! progress frame whenever the watch has been idle for
//! `watch_progress_ms`.

use std::sync::Arc;
use std::time::Duration;

use nacre_proto::{encode_response, CoordResponse, Response};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Registration, WatchHub};

/// A watch a connection started: its id in the hub and its task.
pub(crate) struct WatchTask {
    pub(crate) hub_id: u64,
    pub(crate) task: JoinHandle<()>,
}

/// Forwards watch `reg`'s frames to `tx` under request id `id` until its
/// end frame (or the writer is gone).
pub(crate) async fn serve_watch(
    hub: Arc<WatchHub>,
    mut reg: Registration,
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    progress: Duration,
) {
    loop {
        let frame = match tokio::time::timeout(progress, reg.rx.recv()).await {
            Ok(Some(frame)) => frame,
            // The hub let go without an end frame: it is gone itself.
            Ok(None) => return,
            Err(_) => {
                hub.progress(reg.id);
                continue;
            }
        };
        let last = matches!(frame, CoordResponse::WatchEnd { .. });
        let mut out = Vec::new();
        encode_response(id, &Response::Coord(frame), &mut out);
        if tx.send(out).await.is_err() || last {
            // Nobody reads any more: the hub drops the watch at its next
            // publish (its channel is closed once `reg` is dropped).
            return;
        }
    }
}
