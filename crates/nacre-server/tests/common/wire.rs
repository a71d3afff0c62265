//! A bare protocol connection for the tests that speak raw frames.

use std::time::Duration;

use bytes::BytesMut;
use nacre_proto::{
    decode_response, encode_request, split_frame, ClientHello, Request, Response, ServerHello,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bare connection: requests go out with increasing ids, frames come
/// back as (id, reply).
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Conn {
    pub async fn open(addr: std::net::SocketAddr) -> Conn {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        ClientHello {
            version: PROTOCOL_VERSION,
            cluster_id: String::new(),
        }
        .encode(&mut out);
        stream.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some((h, _)) = ServerHello::decode(&buf).unwrap() {
                assert_eq!(h.status, 0, "handshake refused");
                break;
            }
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        }
        Conn {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    pub async fn send(&mut self, req: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        encode_request(id, &req, &mut out);
        self.stream.write_all(&out).await.unwrap();
        id
    }

    /// The next frame, within 5 s.
    pub async fn recv(&mut self) -> (u64, Response) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some((id, body)) = split_frame(&mut self.buf, 64 << 20).unwrap() {
                    return (id, decode_response(body).unwrap());
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "server closed the connection");
            }
        })
        .await
        .expect("a frame within 5 s")
    }

    pub async fn call(&mut self, req: Request) -> Response {
        let id = self.send(req).await;
        let (got, resp) = self.recv().await;
        assert_eq!(got, id);
        resp
    }
}
