//! An in-memory network between cluster nodes in one process, for tests
//! and the cluster simulation: messages go straight to the target node's
//! `Raft` handle, unless the target is down, cut off from the sender, or
//! the seeded dice drop the message. A message the dice keep may wait
//! first (up to `delay_max`), so messages between nodes arrive out of
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{OptionalSend, RaftNetworkV2};

use super::{PeerNode, TypeConfig};

pub use super::Raft;
type Vote = openraft::alias::VoteOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

#[derive(Default)]
struct Net {
    nodes: BTreeMap<u64, Raft>,
    /// Pairs (from, to) that cannot reach each other.
    cut: BTreeSet<(u64, u64)>,
    dice: crate::sim::Rng,
    /// One message in this many is lost (0: none).
    drop_one_in: u64,
    delay_max: Duration,
    delivered: u64,
    dropped: u64,
}

/// The network: shared by every node's client factory.
#[derive(Clone, Default)]
pub struct MemNet {
    net: Arc<parking_lot::Mutex<Net>>,
}

fn unreachable(what: &str) -> Unreachable<TypeConfig> {
    Unreachable::new(&std::io::Error::other(what.to_string()))
}

impl MemNet {
    /// A network whose dice start from `seed`, losing one message in
    /// `drop_one_in` (0: none) and holding each kept one up to `delay_max`.
    #[must_use]
    pub fn new(seed: u64, drop_one_in: u64, delay_max: Duration) -> MemNet {
        let net = Net { dice: crate::sim::Rng(seed), drop_one_in, delay_max, ..Net::default() };
        MemNet { net: Arc::new(parking_lot::Mutex::new(net)) }
    }

    /// Puts a node on the network (again, after a restart).
    pub fn join(&self, id: u64, raft: Raft) {
        self.net.lock().nodes.insert(id, raft);
    }

    /// Takes a node off: messages to it are lost.
    pub fn leave(&self, id: u64) -> Option<Raft> {
        self.net.lock().nodes.remove(&id)
    }

    /// Cuts (or mends) both directions between `a` and every node in `others`.
    pub fn cut(&self, a: u64, others: &[u64], cut: bool) {
        let mut net = self.net.lock();
        for &b in others {
            for pair in [(a, b), (b, a)] {
                if cut {
                    net.cut.insert(pair);
                } else {
                    net.cut.remove(&pair);
                }
            }
        }
    }

    /// Messages delivered and lost so far.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let net = self.net.lock();
        (net.delivered, net.dropped)
    }

    /// The client side for node `from`.
    #[must_use]
    pub fn factory(&self, from: u64) -> Links {
        Links { from, net: self.clone() }
    }

    /// Decides a message's fate: the target's handle and how long it waits
    /// first, or unreachable.
    fn route(&self, from: u64, to: u64) -> Result<(Raft, Duration), Unreachable<TypeConfig>> {
        let mut net = self.net.lock();
        if net.cut.contains(&(from, to)) {
            net.dropped += 1;
            return Err(unreachable("cut off"));
        }
        let Some(raft) = net.nodes.get(&to).cloned() else {
            net.dropped += 1;
            return Err(unreachable("down"));
        };
        let drop_one_in = net.drop_one_in;
        if drop_one_in > 0 && net.dice.one_in(drop_one_in) {
            net.dropped += 1;
            return Err(unreachable("lost"));
        }
        let max = net.delay_max.as_micros() as u64;
        let delay = if max == 0 { Duration::ZERO } else { Duration::from_micros(net.dice.below(max)) };
        net.delivered += 1;
        Ok((raft, delay))
    }
}

/// Node `from`'s way to every other node.
pub struct Links {
    from: u64,
    net: MemNet,
}

/// Node `from`'s link to node `to`.
pub struct Link {
    from: u64,
    to: u64,
    net: MemNet,
}

impl RaftNetworkFactory<TypeConfig> for Links {
    type Network = Link;

    async fn new_client(&mut self, target: u64, _node: &PeerNode) -> Link {
        Link { from: self.from, to: target, net: self.net.clone() }
    }
}

impl Link {
    async fn reach(&self) -> Result<Raft, Unreachable<TypeConfig>> {
        let (raft, delay) = self.net.route(self.from, self.to)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(raft)
    }
}

impl RaftNetworkV2<TypeConfig> for Link {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.reach().await?;
        raft.append_entries(rpc).await.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.reach().await?;
        raft.vote(rpc).await.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.reach().await?;
        raft.install_full_snapshot(vote, snapshot).await.map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
