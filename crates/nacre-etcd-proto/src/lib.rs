//! etcd's v3 gRPC API as Rust types: the messages, a tonic client and a
//! tonic server trait for each service in `proto/`.
//!
//! The `.proto` files are Nacre's own, written from etcd's published API
//! (names and field numbers are etcd's, since they are the wire format) and
//! limited to what Nacre uses: KV, Watch, Lease and Maintenance.Status.
//! `nacre-etcd-bench` drives etcd through the clients; a server-side etcd
//! API for Nacre would implement the server traits.
//!
//! The code is generated at build time with a protoc that comes from the
//! `protoc-bin-vendored` crate (see build.rs), so no protoc has to be
//! installed.

/// `mvccpb`: the stored pair ([`mvccpb::KeyValue`]) and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `etcdserverpb`: requests, responses, and the `kv_client`/`kv_server`,
/// `watch_*`, `lease_*` and `maintenance_*` modules.
// The one exception to the function-length limit (see .ci/run): tonic
// generates each server's request dispatch as one function with an arm per
// method, which is not ours to split.
#[allow(clippy::too_many_lines)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
