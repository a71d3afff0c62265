//! Nacre's errors as etcd's gRPC statuses: the code and, where etcd
//! clients match on it, etcd's exact message (clientv3's `rpctypes`
//! turns those strings back into typed errors).

use nacre_proto::{ErrorCode, ErrorReply};
use tonic::{Code, Status};

use crate::state::{COMPACTED, FUTURE_REV, LEASE_NOT_FOUND};

/// etcd's message when no leader is known (clients try another member).
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
pub(crate) const TIMED_OUT: &str = "etcdserver: request timed out";
pub(crate) const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
pub(crate) const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
pub(crate) const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";

pub(crate) fn status(e: ErrorReply) -> Status {
    let message = e.message;
    if message.starts_with("etcdserver: ") {
        // Already etcd's words (from the state machine): its code follows.
        let code = match message.as_str() {
            COMPACTED | FUTURE_REV => Code::OutOfRange,
            LEASE_NOT_FOUND => Code::NotFound,
            _ => match e.code {
                ErrorCode::LeaseNotFound => Code::NotFound,
                _ => Code::InvalidArgument,
            },
        };
        return Status::new(code, message);
    }
    match e.code {
        ErrorCode::NotMaster | ErrorCode::InconsistentRead => Status::unavailable(NO_LEADER),
        ErrorCode::Unavailable => Status::unavailable(format!("{NO_LEADER} ({message})")),
        ErrorCode::Timeout => Status::unavailable(TIMED_OUT),
        ErrorCode::GoingDown => Status::unavailable("etcdserver: server stopped"),
        ErrorCode::LeaseNotFound => Status::not_found(LEASE_NOT_FOUND),
        ErrorCode::Compacted => Status::out_of_range(COMPACTED),
        ErrorCode::TooLarge => Status::invalid_argument(format!("{REQUEST_TOO_LARGE} ({message})")),
        ErrorCode::Busy => {
            Status::resource_exhausted(format!("etcdserver: too many requests ({message})"))
        }
        ErrorCode::BadInput => Status::invalid_argument(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::Corruption => Status::data_loss(message),
        ErrorCode::Cancelled => Status::cancelled(message),
        _ => Status::internal(message),
    }
}

/// Whether a status means "ask the leader" (so a follower forwards).
pub(crate) fn is_not_leader(e: &ErrorReply) -> bool {
    e.code == ErrorCode::NotMaster
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_keep_the_codes_clients_match() {
        let s = status(ErrorReply::new(ErrorCode::BadInput, COMPACTED));
        assert_eq!((s.code(), s.message()), (Code::OutOfRange, COMPACTED));
        let s = status(ErrorReply::new(
            ErrorCode::LeaseNotFound,
            "lease 7 does not exist",
        ));
        assert_eq!((s.code(), s.message()), (Code::NotFound, LEASE_NOT_FOUND));
        let s = status(ErrorReply::new(ErrorCode::NotMaster, "not the leader"));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, NO_LEADER));
        let s = status(ErrorReply::new(
            ErrorCode::BadInput,
            "etcdserver: key not found",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}
