//! `nacre cluster status`: every member's role, applied index, match index
//! and lag, asked of the leader whichever endpoint the command was given.
//!
//! Only the leader knows how far each member's log matches its own (a
//! follower reports 0 for everyone), so the member list is asked of
//! whichever node answers first, and then again of the leader it names.
//! Each member is also asked for its own view (role, term, applied index,
//! leader); one that does not answer in time is shown as unreachable
//! rather than failing the command.

use std::time::Duration;

use nacre_client::{Client, ClientOptions};
use nacre_proto::Member;
use serde_json::{json, Value};

use crate::output::{Failure, Output};

/// How long one member may take to answer before it is shown unreachable.
const MEMBER_TIMEOUT_MS: u64 = 2_000;
/// How many times the leader is asked again when leadership moved while
/// the command asked it: after that the last view is shown as it is.
const LEADER_TRIES: usize = 3;

/// A member's own answer to `statistics`.
type Stats = Vec<(String, String)>;

/// One member as the command shows it; `None` is unknown (shown `-`, or
/// `null` in JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub id: u64,
    pub voter: bool,
    pub client: String,
    pub peer: String,
    pub reachable: bool,
    /// The member's own role: leader, follower, learner, candidate.
    pub role: Option<String>,
    pub term: Option<u64>,
    pub applied: Option<u64>,
    /// How far the leader knows this member's log matches its own.
    pub match_index: Option<u64>,
    /// Entries the leader committed that this member has not applied.
    pub lag: Option<u64>,
    /// The leader as this member sees it.
    pub leader: Option<String>,
}

fn stat<'a>(stats: &'a Stats, name: &str) -> Option<&'a str> {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn stat_u64(stats: &Stats, name: &str) -> Option<u64> {
    stat(stats, name)?.parse().ok()
}

/// The command's client options for talking to one member: no retries,
/// a short timeout.
fn member_options(cli: &crate::cli::Cli) -> ClientOptions {
    let mut opts = crate::cli::client_options(cli);
    opts.request_timeout_ms = opts.request_timeout_ms.min(MEMBER_TIMEOUT_MS);
    opts.connect_timeout_ms = opts.connect_timeout_ms.min(MEMBER_TIMEOUT_MS);
    opts.retries_max = 0;
    opts
}

/// A client bound to `addr` alone.
async fn one_node(opts: &ClientOptions, addr: &str) -> Option<Client> {
    let mut opts = opts.clone();
    opts.endpoints = vec![addr.to_string()];
    Client::connect(opts).await.ok()
}

/// A member's statistics, if it answers in time.
async fn stats_of(opts: ClientOptions, addr: String) -> Option<Stats> {
    let deadline = Duration::from_millis(MEMBER_TIMEOUT_MS * 2);
    tokio::time::timeout(deadline, async {
        one_node(&opts, &addr).await?.statistics().await.ok()
    })
    .await
    .ok()
    .flatten()
}

/// The member list as the leader sees it, with the leader's statistics;
/// `None` for the statistics when no leader could be asked (then the
/// list is the first answer, without match indexes).
async fn ask_leader(
    opts: &ClientOptions,
    mut members: Vec<Member>,
) -> (Vec<Member>, Option<Stats>) {
    for _ in 0..LEADER_TRIES {
        let Some(leader) = members.iter().find(|m| m.leader).cloned() else {
            break;
        };
        let Some(c) = one_node(opts, &leader.client).await else {
            break;
        };
        let (Ok(view), Ok(stats)) = (c.cluster_status().await, c.statistics().await) else {
            break;
        };
        if stat(&stats, "role") == Some("leader") {
            return (view, Some(stats));
        }
        // Leadership moved meanwhile: ask the one this node now names.
        members = view;
    }
    (members, None)
}

/// Asks the cluster and every member; the rows by name.
pub async fn rows(cli: &crate::cli::Cli, client: &Client) -> Result<Vec<Row>, Failure> {
    let first = client
        .cluster_status()
        .await
        .map_err(|e| Failure::from_client(&e))?;
    let opts = member_options(cli);
    let (members, leader_stats) = ask_leader(&opts, first).await;
    let commit = leader_stats
        .as_ref()
        .and_then(|s| stat_u64(s, "commit_index"));
    let mut asks = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let (opts, addr) = (opts.clone(), m.client.clone());
        asks.spawn(async move { (i, stats_of(opts, addr).await) });
    }
    let mut own: Vec<Option<Stats>> = vec![None; members.len()];
    while let Some(done) = asks.join_next().await {
        if let Ok((i, stats)) = done {
            own[i] = stats;
        }
    }
    let mut rows: Vec<Row> = members
        .into_iter()
        .zip(own)
        .map(|(m, stats)| {
            let applied = stats.as_ref().and_then(|s| stat_u64(s, "applied_index"));
            Row {
                reachable: stats.is_some(),
                role: stats
                    .as_ref()
                    .and_then(|s| stat(s, "role"))
                    .map(str::to_string),
                term: stats.as_ref().and_then(|s| stat_u64(s, "term")),
                leader: stats
                    .as_ref()
                    .and_then(|s| stat(s, "leader"))
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
                match_index: leader_stats.as_ref().map(|_| m.match_index),
                lag: commit.zip(applied).map(|(c, a)| c.saturating_sub(a)),
                applied,
                name: m.name,
                id: m.id,
                voter: m.voter,
                client: m.client,
                peer: m.peer,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// `nacre cluster status`'s output: a table, or one JSON object per
/// member with numbers as numbers.
pub fn render(rows: &[Row]) -> Output {
    let dash = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut table = vec![[
        "NAME",
        "ROLE",
        "APPLIED",
        "MATCH",
        "LAG",
        "REACHABLE",
        "LEADER",
    ]
    .map(str::to_string)];
    for r in rows {
        table.push([
            r.name.clone(),
            r.role.clone().unwrap_or_else(|| "-".into()),
            dash(r.applied),
            dash(r.match_index),
            dash(r.lag),
            if r.reachable { "yes" } else { "no" }.to_string(),
            r.leader.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let text = table
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let json = rows.iter().map(row_json).collect();
    Output::Rendered { text, json }
}

fn row_json(r: &Row) -> Value {
    json!({
        "name": r.name,
        "id": r.id,
        "role": r.role,
        "voter": r.voter,
        "applied": r.applied,
        "match": r.match_index,
        "lag": r.lag,
        "reachable": r.reachable,
        "leader": r.leader,
        "term": r.term,
        "client": r.client,
        "peer": r.peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, role: Option<&str>, applied: Option<u64>) -> Row {
        Row {
            name: name.into(),
            id: 7,
            voter: role != Some("learner"),
            client: "127.0.0.1:1".into(),
            peer: "127.0.0.1:2".into(),
            reachable: role.is_some(),
            role: role.map(str::to_string),
            term: role.map(|_| 3),
            applied,
            match_index: Some(applied.unwrap_or(5)),
            lag: applied.map(|a| 78 - a),
            leader: role.map(|_| "n2".into()),
        }
    }

    #[test]
    fn a_table_and_json_with_numbers() {
        let rows = vec![
            row("n1", Some("learner"), Some(1)),
            row("n2", Some("leader"), Some(78)),
            row("n3", None, None),
        ];
        let Output::Rendered { text, json } = render(&rows) else {
            panic!()
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME  ROLE     APPLIED  MATCH  LAG  REACHABLE  LEADER",
                "n1    learner  1        1      77   yes        n2",
                "n2    leader   78       78     0    yes        n2",
                "n3    -        -        5      -    no         -",
            ]
        );
        assert_eq!(json[0]["applied"], 1);
        assert_eq!(json[0]["lag"], 77);
        assert_eq!(json[0]["match"], 1);
        assert_eq!(json[0]["role"], "learner");
        assert_eq!(json[0]["voter"], false);
        assert_eq!(json[2]["applied"], Value::Null);
        assert_eq!(json[2]["reachable"], false);
    }
}
