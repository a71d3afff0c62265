//! etcd's Auth service, answered `Unimplemented` with a reason: Nacre has
//! no users or roles yet (they come with TLS and permissions). An empty
//! "unknown service" from tonic would leave an operator guessing, and any
//! other answer would be a lie: `auth enable` must not seem to work.

use nacre_etcd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

pub(crate) struct AuthService;

pub(super) fn service() -> pb::auth_server::AuthServer<AuthService> {
    pb::auth_server::AuthServer::new(AuthService)
}

const WHY: &str = "etcdserver: authentication is not implemented by Nacre yet \
                   (no users or roles; every client has full access)";

/// The service, every method answered `Unimplemented`.
macro_rules! unimplemented_auth {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl pb::auth_server::Auth for AuthService {
            $(
                async fn $method(
                    &self,
                    _: Request<pb::$req>,
                ) -> Result<Response<pb::$resp>, Status> {
                    Err(Status::unimplemented(WHY))
                }
            )*
        }
    };
}

unimplemented_auth! {
        auth_enable(AuthEnableRequest) -> AuthEnableResponse;
        auth_disable(AuthDisableRequest) -> AuthDisableResponse;
        authenticate(AuthenticateRequest) -> AuthenticateResponse;
        user_add(AuthUserAddRequest) -> AuthUserAddResponse;
        user_get(AuthUserGetRequest) -> AuthUserGetResponse;
        user_list(AuthUserListRequest) -> AuthUserListResponse;
        user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
        user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
        user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
        user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
        role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
        role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
        role_list(AuthRoleListRequest) -> AuthRoleListResponse;
        role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
        role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
        role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
}
