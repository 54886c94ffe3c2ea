//! What operators ask of a cluster node (`harbour cluster`, `harbour
//! backup`): its view of the cluster, membership changes, and a backup of
//! its books.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use openraft::rt::WatchReceiver;
use serde_json::json;

use super::PeerNode;
use super::node::Member;
use crate::protocol::records::{CLUSTER_ADD, ClusterChange};

/// How long an added node may take to catch up before it votes.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// This node's view: its role, term, leader, log, commit and apply
/// indexes, the members, and on the leader each follower's matched index
/// and lag.
#[must_use]
pub fn status(member: &Member) -> String {
    let metrics = member.raft.metrics();
    let m = metrics.borrow_watched();
    let index = |id: Option<&super::LogId>| id.map_or(0, |l| l.index());
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members: Vec<_> = membership
        .nodes()
        .map(|(id, n)| json!({"id": id, "channel": n.channel, "peer": n.peer, "voter": voters.contains(id)}))
        .collect();
    let replication: Vec<_> = m
        .replication
        .iter()
        .flatten()
        .map(|(id, matched)| {
            let matched = index(matched.as_ref());
            json!({"node": id, "matched": matched, "lag": last.saturating_sub(matched)})
        })
        .collect();
    json!({
        "node": member.id,
        "role": format!("{:?}", m.state),
        "term": m.current_term,
        "leader": m.current_leader,
        "last_log_index": last,
        "committed": index(m.local_committed.as_ref()),
        "applied": index(m.last_applied.as_ref()),
        "purged": index(m.purged.as_ref()),
        "snapshot": index(m.snapshot.as_ref()),
        "members": members,
        "replication": replication,
    })
    .to_string()
}

/// Why a membership change was not made.
pub enum ChangeError {
    /// Not the leader: its channel address, or empty.
    NotLeader(String),
    /// Raft refused or failed it.
    Failed(String),
}

/// Adds a node (as a learner, which catches up first, then as a voter:
/// joint consensus, payments go on) or removes a voter. Answers the new
/// view.
pub async fn change(member: &Member, c: &ClusterChange) -> Result<String, ChangeError> {
    if let Err(leader) = member.leader() {
        return Err(ChangeError::NotLeader(leader));
    }
    let failed = |e: &dyn std::fmt::Display| ChangeError::Failed(e.to_string());
    if c.op == CLUSTER_ADD {
        let node = PeerNode { channel: c.channel_addr().into(), peer: c.peer_addr().into() };
        // It catches up as a learner first; one that does not within the
        // wait stays a learner (add it again once it runs, or remove it).
        let caught_up = tokio::time::timeout(CATCH_UP_WAIT, member.raft.add_learner(c.node_id, node, true)).await;
        let added = caught_up.map_err(|_| {
            ChangeError::Failed(format!(
                "node {} did not catch up within {} s: it stays a learner; check that it runs, then add it again",
                c.node_id,
                CATCH_UP_WAIT.as_secs()
            ))
        })?;
        added.map_err(|e| failed(&e))?;
        member
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([c.node_id])), false)
            .await
            .map_err(|e| failed(&e))?;
    } else {
        member
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([c.node_id])), false)
            .await
            .map_err(|e| failed(&e))?;
    }
    Ok(status(member))
}
