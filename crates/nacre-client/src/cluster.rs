//! Cluster administration: membership and leadership.

use nacre_proto::{Member, Request, Response};

use crate::{unexpected, Client, ClientError};

impl Client {
    /// Members with their roles and (from the leader) replication progress.
    pub async fn cluster_status(&self) -> Result<Vec<Member>, ClientError> {
        match self.execute(Request::ClusterStatus).await? {
            Response::Members(m) => Ok(m),
            r => Err(unexpected("cluster_status", r)),
        }
    }

    /// Adds a learner (a non-voting member that receives the log). The node
    /// itself is started with `nacre serve --join`. Returns the log index.
    pub async fn add_learner(
        &self,
        name: impl Into<String>,
        client: impl Into<String>,
        peer: impl Into<String>,
    ) -> Result<u64, ClientError> {
        let req = Request::AddLearner {
            name: name.into(),
            client: client.into(),
            peer: peer.into(),
        };
        Ok(self.write(req).await?.index)
    }

    /// Makes a learner a voter. The leader refuses one that lags it by more
    /// than its bound (`ErrorCode::LearnerBehind`) unless `force`.
    pub async fn promote(&self, name: impl Into<String>, force: bool) -> Result<u64, ClientError> {
        let req = Request::Promote {
            name: name.into(),
            force,
        };
        Ok(self.write(req).await?.index)
    }

    /// Removes a member.
    pub async fn remove_node(&self, name: impl Into<String>) -> Result<u64, ClientError> {
        Ok(self
            .write(Request::RemoveNode { name: name.into() })
            .await?
            .index)
    }

    /// Asks the leader to hand leadership to `name`.
    pub async fn transfer_leader(&self, name: impl Into<String>) -> Result<(), ClientError> {
        self.write(Request::TransferLeader { name: name.into() })
            .await?;
        Ok(())
    }
}
