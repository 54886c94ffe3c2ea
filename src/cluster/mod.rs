//! Clusters (issue 14, `docs/cluster.md`): every shard's command log
//! replicated through openraft, one group for the whole node.
//!
//! An entry of the raft log is one group commit of one shard (a
//! [`Proposal`]): the records its write-ahead log holds today, the shard
//! they belong to and the logged time. Every node applies committed entries
//! in log order through the engines (`machine`); the raft log itself lives
//! in the node's storage (`log`).
//!
//! Status: the log store and the state machine, tested with openraft's
//! storage suite; not yet served (`harbour serve` is one node).

pub mod log;
pub mod machine;
pub mod memnet;
pub mod node;
pub mod ops;
pub mod peer;

use serde::{Deserialize, Serialize};

/// What a node is called by: its channel address (the NOT_LEADER detail)
/// and its peer address (raft's messages).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub channel: String,
    pub peer: String,
}

/// One shard's group commit, proposed by the leader and applied by every
/// node: `records` are `(kind u16 LE, body length u32 LE, body)` one after
/// another, exactly the records the shard's log would hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub shard: u16,
    /// The leader's time for the group: never earlier than any time
    /// logged before it (`docs/cluster.md`, "Time").
    pub time_ms: u64,
    pub records: Vec<u8>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} at {} ms, {} bytes of records", self.shard, self.time_ms, self.records.len())
    }
}

impl Proposal {
    /// Appends one record.
    pub fn push(&mut self, kind: u16, body: &[u8]) {
        self.records.extend_from_slice(&kind.to_le_bytes());
        self.records.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.records.extend_from_slice(body);
    }

    /// The records, in order; None if the bytes do not split into whole
    /// records.
    #[must_use]
    pub fn records(&self) -> Option<Vec<(u16, &[u8])>> {
        let mut out = Vec::new();
        let mut at = 0;
        let bytes = &self.records;
        while at < bytes.len() {
            let kind = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
            let len = u32::from_le_bytes(bytes.get(at + 2..at + 6)?.try_into().ok()?) as usize;
            let body = bytes.get(at + 6..at + 6 + len)?;
            out.push((kind, body));
            at += 6 + len;
        }
        Some(out)
    }
}

/// The answers of one applied entry: per record of its proposal, the
/// engine's answer bytes (empty for blank and membership entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub answers: Vec<Vec<u8>>,
}

openraft::declare_raft_types!(
    /// The cluster's raft types.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        Node = PeerNode,
);

/// An entry of the cluster's raft log.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A raft log id (term, leader, index).
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A node's raft handle.
pub type Raft = openraft::Raft<TypeConfig, machine::Books>;
