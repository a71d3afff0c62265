//! The peer handshake: magic, version, cluster id and node id from the
//! dialling side, a status from the accepting side.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::invalid_data;
use super::TransportConfig;

const MAGIC: &[u8; 4] = b"NACP";
/// Version 1: the receiver writes nothing after the handshake status
/// (except a snapshot's end status).
const VERSION_1: u16 = 1;
/// Version 2: as 1, and the receiver acknowledges every raft batch frame
/// with a u64 count of the raft batch frames it has read on the connection,
/// so the sender can tell a connection that delivers from one that stalled.
pub(super) const VERSION_ACKS: u16 = 2;

pub(super) const STATUS_OK: u16 = 0;
pub(super) const STATUS_WRONG_CLUSTER: u16 = 1;
pub(super) const STATUS_BAD_VERSION: u16 = 2;
/// Answer to a snapshot end frame the receiver could not store or deliver.
pub(super) const STATUS_SNAPSHOT_FAILED: u16 = 3;

/// How long the accepting side waits for a handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials `addr` and presents ourselves; returns the connection once the
/// receiver accepted, and the version it speaks. A peer that refuses
/// version 2 (a node from before acknowledgements, during a rolling
/// upgrade) is dialled again with version 1. Each dial must be answered
/// within `peer_timeout_ms`.
pub(super) async fn connect(cfg: &TransportConfig, addr: &str) -> io::Result<(TcpStream, u16)> {
    let timeout = Duration::from_millis(cfg.peer_timeout_ms);
    let attempt = |version| async move {
        tokio::time::timeout(timeout, dial(cfg, addr, version))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer handshake timed out"))?
    };
    match attempt(VERSION_ACKS).await {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            let stream = attempt(VERSION_1).await?;
            Ok((stream, VERSION_1))
        }
        other => other.map(|stream| (stream, VERSION_ACKS)),
    }
}

async fn dial(cfg: &TransportConfig, addr: &str, version: u16) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let cluster = cfg.cluster_id.as_bytes();
    let mut hello = Vec::with_capacity(16 + cluster.len());
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&version.to_le_bytes());
    hello.extend_from_slice(&(cluster.len() as u16).to_le_bytes());
    hello.extend_from_slice(cluster);
    hello.extend_from_slice(&cfg.node_id.to_le_bytes());
    stream.write_all(&hello).await?;
    match stream.read_u16_le().await? {
        STATUS_OK => Ok(stream),
        STATUS_WRONG_CLUSTER => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "peer belongs to another cluster",
        )),
        STATUS_BAD_VERSION => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("peer does not speak protocol version {version}"),
        )),
        other => Err(invalid_data(format!("unknown handshake status {other}"))),
    }
}

/// Reads a peer's handshake and answers it; returns the peer's node id
/// and the version it speaks.
pub(super) async fn accept_handshake(
    stream: &mut TcpStream,
    cfg: &TransportConfig,
) -> io::Result<(u64, u16)> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        // Not one of ours: no status, since it would not understand it.
        return Err(invalid_data("not a Nacre peer (bad magic)".into()));
    }
    let version = stream.read_u16_le().await?;
    if version != VERSION_1 && version != VERSION_ACKS {
        // The rest of the handshake may be laid out differently: refuse
        // before reading it.
        stream.write_u16_le(STATUS_BAD_VERSION).await?;
        return Err(invalid_data(format!("peer speaks version {version}")));
    }
    let cluster_len = stream.read_u16_le().await? as usize;
    let mut cluster = vec![0u8; cluster_len];
    stream.read_exact(&mut cluster).await?;
    let from = stream.read_u64_le().await?;
    if cluster != cfg.cluster_id.as_bytes() {
        stream.write_u16_le(STATUS_WRONG_CLUSTER).await?;
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "node {from} belongs to cluster {:?}",
                String::from_utf8_lossy(&cluster)
            ),
        ));
    }
    stream.write_u16_le(STATUS_OK).await?;
    Ok((from, version))
}
