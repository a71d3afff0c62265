//! Lua scripts (docs/scripts.md): calling a function, and installing,
//! listing, showing, rolling back and deleting scripts.

use nacre_proto::{Bytes, Request, Response, ScriptSource, ScriptSummary, ScriptVersionInfo};

use crate::{unexpected, Client, ClientError};

impl Client {
    /// Calls `function` of the live version of `script` (or of `version`)
    /// with `args`, at the client's consistency (it matters for functions
    /// that only read). Not re-sent after a lost connection: a function
    /// may write.
    pub async fn call(
        &self,
        script: &str,
        function: &str,
        args: Vec<Bytes>,
        version: Option<u64>,
    ) -> Result<Called, ClientError> {
        let req = Request::Call {
            script: script.to_string(),
            function: function.to_string(),
            args,
            version,
            consistency: self.consistency,
        };
        match self.execute(req).await? {
            Response::Called {
                version,
                index,
                value,
            } => Ok(Called {
                version,
                index,
                value,
            }),
            r => Err(unexpected("call", r)),
        }
    }

    /// Installs `source` as the next version of `name` and makes it live;
    /// returns the version. A syntax error is refused and the live version
    /// stays.
    pub async fn script_put(
        &self,
        name: &str,
        source: impl Into<Bytes>,
    ) -> Result<u64, ClientError> {
        let req = Request::ScriptPut {
            name: name.to_string(),
            source: source.into(),
        };
        Ok(self.write(req).await?.count)
    }

    pub async fn script_list(&self) -> Result<Vec<ScriptSummary>, ClientError> {
        match self.execute(Request::ScriptList).await? {
            Response::Scripts(s) => Ok(s),
            r => Err(unexpected("script_list", r)),
        }
    }

    /// A version's source (default: the live one).
    pub async fn script_show(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<ScriptSource, ClientError> {
        let req = Request::ScriptShow {
            name: name.to_string(),
            version,
        };
        match self.execute(req).await? {
            Response::Script(s) => Ok(s),
            r => Err(unexpected("script_show", r)),
        }
    }

    pub async fn script_history(&self, name: &str) -> Result<Vec<ScriptVersionInfo>, ClientError> {
        let req = Request::ScriptHistory {
            name: name.to_string(),
        };
        match self.execute(req).await? {
            Response::ScriptVersions(v) => Ok(v),
            r => Err(unexpected("script_history", r)),
        }
    }

    /// Makes `version` the live one again; returns it.
    pub async fn script_rollback(&self, name: &str, version: u64) -> Result<u64, ClientError> {
        let req = Request::ScriptRollback {
            name: name.to_string(),
            version,
        };
        Ok(self.write(req).await?.count)
    }

    /// Makes the script uncallable (its history stays); returns the
    /// version that was live.
    pub async fn script_delete(&self, name: &str) -> Result<u64, ClientError> {
        let req = Request::ScriptDelete {
            name: name.to_string(),
        };
        Ok(self.write(req).await?.count)
    }
}

/// A script call's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called {
    /// The version that ran.
    pub version: u64,
    /// The log index its effects applied at; for a function that only
    /// read, the index it read at.
    pub index: u64,
    pub value: Option<Bytes>,
}
