//! Online backup: [`Client::backup`] asks the leader for a consistent
//! backup and returns the stream of its bytes ([`BackupStream`]), on a
//! connection of its own that the consumer paces: the client reads the
//! socket only as fast as the consumer takes chunks, so the node (whose
//! writer queue is bounded) encodes no further ahead either, and neither
//! side holds more than a few chunks of a store of any size.
//!
//! Starting the backup follows the retry rules of the crate docs
//! (`NotMaster` hints, pauses, the deadline); once the first chunk came,
//! a broken stream is the call's error: the bytes already handed out
//! cannot be taken back, so the caller starts a new backup.

use std::time::Duration;

use nacre_proto::{BackupFrame, BackupSummary, Bytes, ErrorCode, Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::{self, Conn};
use crate::{Client, ClientError, Disconnect};

/// Frames buffered between the connection and the consumer.
const BUFFER_FRAMES: usize = 16;

/// What a backup stream yields: the file's bytes, chunk by chunk, then
/// its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupPiece {
    Chunk(Bytes),
    /// The last piece: the node's figures for the whole file, whose size
    /// the stream has checked against the bytes it handed out.
    End(BackupSummary),
}

/// A backup in progress; dropping it abandons the backup (the node lets
/// its snapshot go).
pub struct BackupStream {
    conn: Conn,
    rx: mpsc::Receiver<Response>,
    first: Option<Bytes>,
    received_bytes: u64,
    ended: bool,
}

impl std::fmt::Debug for BackupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStream")
            .field("node", &self.conn.node)
            .field("received_bytes", &self.received_bytes)
            .finish()
    }
}

impl BackupStream {
    /// The endpoint and name of the node the backup comes from.
    pub fn source(&self) -> (&str, &str) {
        (&self.conn.endpoint, &self.conn.node)
    }

    /// The next piece; `None` after the end.
    pub async fn next(&mut self) -> Result<Option<BackupPiece>, ClientError> {
        if let Some(b) = self.first.take() {
            self.received_bytes += b.len() as u64;
            return Ok(Some(BackupPiece::Chunk(b)));
        }
        if self.ended {
            return Ok(None);
        }
        // Since now: the time the consumer took is not the node's silence.
        let reply = self.conn.next_stream(&mut self.rx, Instant::now()).await;
        match reply {
            Some(Response::Backup(BackupFrame::Chunk(b))) => {
                self.received_bytes += b.len() as u64;
                Ok(Some(BackupPiece::Chunk(b)))
            }
            Some(Response::Backup(BackupFrame::End(s))) => {
                self.ended = true;
                if s.size_bytes != self.received_bytes || s.sha256.len() != 32 {
                    return Err(ClientError::UnexpectedResponse {
                        request: "backup",
                        response: format!(
                            "an end of {} bytes (checksum of {} bytes) after {} bytes received",
                            s.size_bytes,
                            s.sha256.len(),
                            self.received_bytes
                        ),
                    });
                }
                Ok(Some(BackupPiece::End(s)))
            }
            Some(Response::Error(e)) => {
                self.ended = true;
                Err(ClientError::Server(e))
            }
            Some(other) => {
                self.ended = true;
                Err(ClientError::UnexpectedResponse {
                    request: "backup",
                    response: format!("{other:?}"),
                })
            }
            None => {
                self.ended = true;
                Err(ClientError::Disconnected {
                    endpoint: self.conn.endpoint.clone(),
                    reason: Disconnect::Closed,
                })
            }
        }
    }
}

/// What one attempt at starting a backup came to.
enum Start {
    Started(Box<BackupStream>),
    Retry { error: ClientError, pause: bool },
}

impl Client {
    /// Starts a backup on the leader: once it has applied every write
    /// acknowledged before the call (as a consistent read), it streams
    /// one snapshot of its store in the backup format
    /// (docs/backup-format.md). Gives up after `request_timeout_ms` if no
    /// leader starts one. Call within a tokio runtime.
    pub async fn backup(&self) -> Result<BackupStream, ClientError> {
        let timeout_ms = self.shared.opts.request_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut pauses = 0;
        loop {
            let (error, pause) = match self.start_backup(deadline).await {
                Ok(Start::Started(s)) => return Ok(*s),
                Ok(Start::Retry { error, pause }) => (error, pause),
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    after_ms: timeout_ms,
                    last: Some(Box::new(error)),
                });
            }
            tracing::debug!(%error, "backup: trying again");
            if pause {
                pauses += 1;
                let p = self.shared.backoff.pause(pauses);
                tokio::time::sleep_until((Instant::now() + p).min(deadline)).await;
            }
        }
    }

    /// One attempt: a connection of its own (the leader hint first), the
    /// request, and its first reply.
    async fn start_backup(&self, deadline: Instant) -> Result<Start, ClientError> {
        let s = &self.shared;
        let conn = match conn::race(&self.candidates(), &s.params, deadline, &s.suspects).await {
            Ok(c) => c,
            Err(e @ ClientError::Refused { .. }) => return Err(e),
            Err(error) => return Ok(Start::Retry { error, pause: true }),
        };
        s.suspects.reached(&conn.endpoint);
        let lost = |conn: &Conn, reason| ClientError::Disconnected {
            endpoint: conn.endpoint.clone(),
            reason,
        };
        let (_, mut rx) = match conn.open_paced(&Request::Backup, BUFFER_FRAMES) {
            Ok(x) => x,
            Err(reason) => {
                let error = lost(&conn, reason);
                return Ok(Start::Retry { error, pause: true });
            }
        };
        let first = tokio::time::timeout_at(deadline, conn.next_stream(&mut rx, Instant::now()));
        let reply = match first.await {
            Err(_) => {
                let error = ClientError::Timeout {
                    after_ms: s.opts.request_timeout_ms,
                    last: None,
                };
                return Ok(Start::Retry {
                    error,
                    pause: false,
                });
            }
            Ok(r) => r,
        };
        match reply {
            Some(Response::Backup(BackupFrame::Chunk(b))) => {
                Ok(Start::Started(Box::new(BackupStream {
                    conn,
                    rx,
                    first: Some(b),
                    received_bytes: 0,
                    ended: false,
                })))
            }
            Some(Response::Error(e)) => self.backup_refused(&conn, e),
            Some(other) => Err(ClientError::UnexpectedResponse {
                request: "backup",
                response: format!("{other:?}"),
            }),
            None => {
                s.suspects.failed(&conn.endpoint);
                let error = lost(&conn, Disconnect::Closed);
                Ok(Start::Retry { error, pause: true })
            }
        }
    }

    /// A node refused to start the backup: follow its leader hint, try
    /// again after a pause, or give up.
    fn backup_refused(
        &self,
        conn: &Conn,
        e: nacre_proto::ErrorReply,
    ) -> Result<Start, ClientError> {
        let s = &self.shared;
        Ok(match e.code {
            ErrorCode::NotMaster => {
                let hint = e
                    .leader
                    .clone()
                    .filter(|l| *l != conn.endpoint && !s.suspects.is_suspect(l));
                let pause = hint.is_none();
                if let Some(l) = hint {
                    *s.leader_hint.lock().expect("client lock") = Some(l);
                }
                Start::Retry {
                    error: ClientError::Server(e),
                    pause,
                }
            }
            ErrorCode::Busy
            | ErrorCode::Unavailable
            | ErrorCode::GoingDown
            | ErrorCode::Timeout => {
                if e.code != ErrorCode::Busy {
                    s.suspects.failed(&conn.endpoint);
                }
                Start::Retry {
                    error: ClientError::Server(e),
                    pause: true,
                }
            }
            _ => return Err(ClientError::Server(e)),
        })
    }
}
