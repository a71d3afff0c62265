//! etcd's v3 gRPC API as Rust types: the messages, a tonic client and a
//! tonic server trait for each service in `proto/`.
//!
//! The `.proto` files are Nacre's own, written from etcd's published API
//! (names and field numbers are etcd's, since they are the wire format) and
//! covering the whole API a server has to answer as of etcd 3.4: KV, Watch,
//! Lease, Cluster, Maintenance and Auth, plus the Lock and Election services
//! behind `etcdctl lock` and `etcdctl elect`. With them Nacre can serve
//! etcd's own clients (etcdctl, Go's clientv3, Python's etcd3), and
//! `nacre-etcd-bench` drives etcd through the clients.
//!
//! The code is generated at build time with a protoc that comes from the
//! `protoc-bin-vendored` crate (see build.rs), so no protoc has to be
//! installed.

// The one exception to the function-length limit (see .ci/run): tonic
// generates each server's request dispatch as one function with an arm per
// method, which is not ours to split. It goes on each module that has a
// service.

/// `mvccpb`: the stored pair ([`mvccpb::KeyValue`]) and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `authpb`: users, roles and key permissions, as the `Auth` service of
/// [`etcdserverpb`] carries them.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// `etcdserverpb`: requests, responses, and a client and server module per
/// service: `kv_*`, `watch_*`, `lease_*`, `cluster_*`, `maintenance_*` and
/// `auth_*`.
#[allow(clippy::too_many_lines)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `v3lockpb`: the `Lock` service (`lock_client`, `lock_server`), a mutex
/// held through a key and a lease.
#[allow(clippy::too_many_lines)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// `v3electionpb`: the `Election` service (`election_client`,
/// `election_server`), leader election over a key prefix.
#[allow(clippy::too_many_lines)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
