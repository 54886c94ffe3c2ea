//! A cluster node of several shards taking the lead (`docs/cluster.md`,
//! "Several shards"). The router's claims and rounds are a leader's memory,
//! not the books': each time this node becomes leader they are rebuilt from
//! the books, once every entry committed before is applied, as a restart
//! rebuilds them, and the rounds an earlier leader left half done are
//! finished. Only then does it route requests. A request routed in one term
//! is never proposed in another: the claims that routed it are gone.

use super::*;
use crate::cluster::Proposal;
use crate::cluster::node::Member;

pub(super) struct Leading {
    pub(super) member: Member,
    /// The term the router serves, and whether it is ready for new
    /// requests. Proposers hold it for reading while they check their
    /// requests' terms and hand the entry to raft; a new term takes it for
    /// writing before it reads the books.
    pub(super) routing: parking_lot::RwLock<(u64, bool)>,
}

impl Leading {
    pub(super) fn new(member: Member) -> Leading {
        Leading { member, routing: parking_lot::RwLock::new((0, false)) }
    }

    /// In which term a request may be routed now: `None` while this
    /// leader's router is being rebuilt (the request waits and tries again).
    /// A rest continuing a round routed in `continues_in` goes only in that
    /// same term: in another, the round's claims are gone.
    pub(super) fn may_route(&self, continues_in: Option<u64>) -> Result<Option<u64>, SwitchError> {
        let (term, ready) = *self.routing.read();
        if let Some(then) = continues_in {
            return if then == term { Ok(Some(term)) } else { Err(SwitchError::LeadershipLost) };
        }
        self.member.leader().map_err(SwitchError::NotLeader)?;
        Ok((ready && self.member.term() == term).then_some(term))
    }

    /// Watches this node's raft: each time it leads in a new term, rebuilds
    /// the router for it. Runs until the switch stops.
    pub(super) fn run(&self, core: &Arc<Core>, config: &SwitchConfig) {
        use openraft::rt::WatchReceiver;
        let member = &self.member;
        let mut metrics = member.raft.metrics();
        // Since when taking the lead fails.
        let mut failing: Option<std::time::Instant> = None;
        while !core.stopped.load(Ordering::Relaxed) {
            let (leads, term) = {
                let now = metrics.borrow_watched();
                (now.state.is_leader(), now.current_term)
            };
            if leads && *self.routing.read() != (term, true) {
                let started = std::time::Instant::now();
                match self.prepare(core, config, term) {
                    Ok(ids) => tracing::info!(
                        term,
                        ids,
                        ms = started.elapsed().as_millis() as u64,
                        "leading: claims rebuilt from the books, rounds finished"
                    ),
                    Err(e) => {
                        // Right after an election raft may refuse a write
                        // for a moment: a warning only if it lasts.
                        if started.duration_since(*failing.get_or_insert(started)) > LEAD_WARN_AFTER {
                            tracing::warn!(term, error = %e, "could not take the lead yet; trying again");
                        }
                        std::thread::sleep(LEAD_RETRY);
                        continue;
                    }
                }
            }
            failing = None;
            let changed = metrics.changed();
            let _ = member.runtime.block_on(async { tokio::time::timeout(LEAD_POLL, changed).await });
        }
    }

    /// Rebuilds the router for `term` and finishes the rounds left half
    /// done; returns how many stored ids it claimed.
    fn prepare(&self, core: &Arc<Core>, config: &SwitchConfig, term: u64) -> Result<usize, String> {
        // From here no request routed in another term is proposed.
        *self.routing.write() = (term, false);
        let member = &self.member;
        // Every entry before this empty one is applied once it is: the
        // books then hold everything committed, in any term.
        let barrier = Proposal { shard: 0, time_ms: 0, records: Vec::new() };
        let raft = member.raft.clone();
        let wrote = member
            .runtime
            .block_on(async { tokio::time::timeout(member.commit_wait_max, raft.client_write(barrier)).await });
        match wrote {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the barrier entry was not committed in time".into()),
        }
        let books =
            member.runtime.block_on(member.books.read_all(|e| (e.stored_ids(), e.multi().clone(), e.next_quote_id())));
        // As `Switch::open` rebuilds it after a restart.
        let n = books.len();
        let mut router = Router::new(n, 1);
        router.reserve(n * (config.engine.transfers_capacity + config.engine.loans_capacity));
        let (mut live_quotes, mut multis, mut ids) = (Vec::with_capacity(n), Vec::with_capacity(n), 0);
        for (i, (stored, multi, next_quote)) in books.into_iter().enumerate() {
            ids += stored.ids.len() + stored.repayments.len();
            router.note_quote_id(next_quote);
            router.restore_stored(i, stored.ids, stored.repayments);
            router.restore_requests(multi.applied);
            live_quotes.push(stored.quotes);
            multis.push(multi);
        }
        router.restore_quotes(&live_quotes);
        {
            let mut current = core.router.lock();
            *current = router;
            core.answered.lock().clear();
        }
        finish_rounds(core, &multis, term).map_err(|e| e.to_string())?;
        let mut routing = self.routing.write();
        if routing.0 != term || member.term() != term || member.leader().is_err() {
            return Err("leadership moved while taking it".into());
        }
        routing.1 = true;
        Ok(ids)
    }
}

/// How often the lead watcher looks at raft when nothing changes.
const LEAD_POLL: Duration = Duration::from_millis(100);
/// How soon it tries again to take the lead after a failure.
const LEAD_RETRY: Duration = Duration::from_millis(10);
/// How long taking the lead may fail before operators hear of it.
const LEAD_WARN_AFTER: Duration = Duration::from_secs(2);

/// After a restart, or when a cluster node takes the lead, before any
/// traffic: a request spanning shards that one shard applied is applied
/// on the others too, and a request split in rounds whose next round nobody
/// began is routed on, as it would have been. `term`: the leader's term the
/// parts are routed in (0 outside a cluster).
pub(super) fn finish_rounds(core: &Arc<Core>, multis: &[multi::Multi], term: u64) -> Result<(), OpenError> {
    let multis: Vec<&multi::Multi> = multis.iter().collect();
    let mut answers = Vec::new();
    for (shard, records) in multi::reconcile(&multis).into_iter().enumerate() {
        for body in records {
            let sent = core.send(shard, kind::MULTI, body.clone(), true, None, term);
            answers.push((shard, body, sent.map_err(|error| OpenError::Round { shard, error })?));
        }
    }
    for (shard, body, rx) in answers {
        let answer = rx.blocking_recv().unwrap_or(Err(SwitchError::ShardFailed));
        let answer = answer.map_err(|error| OpenError::Round { shard, error })?;
        // The ids it stored were not there when the claims were rebuilt.
        core.router.lock().adopt(shard, kind::MULTI, &body, &answer);
    }
    for (round, kind, rest) in multi::continuations(&multis) {
        let stage = core.route_and_send(kind, &rest, true, Some((round, term)));
        stage
            .and_then(|stage| PendingReply { core: Arc::clone(core), kind, wait: true, stage }.wait_blocking())
            .map_err(|error| OpenError::Round { shard: 0, error })?;
    }
    Ok(())
}
