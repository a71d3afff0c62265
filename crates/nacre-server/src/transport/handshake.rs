//! The peer handshake: magic, version, cluster id and node id from the
//! dialling side, a status from the accepting side.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::invalid_data;
use super::TransportConfig;

const MAGIC: &[u8; 4] = b"NACP";
const VERSION: u16 = 1;

pub(super) const STATUS_OK: u16 = 0;
pub(super) const STATUS_WRONG_CLUSTER: u16 = 1;
pub(super) const STATUS_BAD_VERSION: u16 = 2;
/// Answer to a snapshot end frame the receiver could not store or deliver.
pub(super) const STATUS_SNAPSHOT_FAILED: u16 = 3;

/// Connect plus handshake; a peer slower than this is treated as down.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials `addr` and presents ourselves; Ok once the receiver accepted.
pub(super) async fn connect(cfg: &TransportConfig, addr: &str) -> io::Result<TcpStream> {
    let dial = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let cluster = cfg.cluster_id.as_bytes();
        let mut hello = Vec::with_capacity(16 + cluster.len());
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&VERSION.to_le_bytes());
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
                "peer does not speak protocol version 1",
            )),
            other => Err(invalid_data(format!("unknown handshake status {other}"))),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, dial)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer handshake timed out"))?
}

/// Reads a peer's handshake and answers it; returns the peer's node id.
pub(super) async fn accept_handshake(
    stream: &mut TcpStream,
    cfg: &TransportConfig,
) -> io::Result<u64> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        // Not one of ours: no status, since it would not understand it.
        return Err(invalid_data("not a Nacre peer (bad magic)".into()));
    }
    let version = stream.read_u16_le().await?;
    if version != VERSION {
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
    Ok(from)
}
