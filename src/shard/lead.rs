//! A cluster node of several shards taking the lead (`docs/cluster.md`,
//! "Several shards"). The router's claims and rounds are a leader's memory,
//! not the books': each time this node becomes leader they are rebuilt from
//! the books, once every entry committed before is applied, as a restart
//! rebuilds them, and the rounds an earlier leader left half done are
//! finished. Only then does it route requests. A request routed by one
//! router (an epoch: one per attempt to take the lead) is never proposed
//! under another: the claims that routed it are gone.

use super::*;
use crate::cluster::Proposal;
use crate::cluster::node::Member;

pub(super) struct Leading {
    pub(super) member: Member,
    /// Which router requests are routed by. Proposers hold it for reading
    /// while they check their requests' epochs and hand the entry to raft;
    /// each attempt to take the lead takes it for writing before it reads
    /// the books.
    pub(super) routing: parking_lot::RwLock<Routing>,
}

/// The router's epoch: one per attempt to take the lead (two attempts in
/// one term are told apart), the term it was made in, whether it is ready
/// for new requests, and since when this node has been trying.
#[derive(Clone, Copy, Debug)]
pub(super) struct Routing {
    pub(super) epoch: u64,
    pub(super) term: u64,
    pub(super) ready: bool,
    pub(super) since: Option<std::time::Instant>,
}

impl Leading {
    pub(super) fn new(member: Member) -> Leading {
        let routing = Routing { epoch: 0, term: 0, ready: false, since: None };
        Leading { member, routing: parking_lot::RwLock::new(routing) }
    }

    /// In which epoch a request may be routed now: `None` while this
    /// leader's router is being rebuilt (the request waits and tries
    /// again), NOT_LEADER naming no one if that has failed for longer than
    /// a commit may take. A rest continuing a round routed in epoch
    /// `continues_in` goes only in that same epoch: in another, the round's
    /// claims are gone.
    pub(super) fn may_route(&self, continues_in: Option<u64>) -> Result<Option<u64>, SwitchError> {
        let routing = *self.routing.read();
        if let Some(then) = continues_in {
            return if then == routing.epoch { Ok(Some(then)) } else { Err(SwitchError::LeadershipLost) };
        }
        self.member.leader().map_err(SwitchError::NotLeader)?;
        if routing.ready && self.member.term() == routing.term {
            return Ok(Some(routing.epoch));
        }
        if routing.since.is_some_and(|since| since.elapsed() > self.member.commit_wait_max) {
            return Err(SwitchError::NotLeader(String::new()));
        }
        Ok(None)
    }

    /// Watches this node's raft: each time it leads in a new term, rebuilds
    /// the router for it. Runs until the switch stops.
    pub(super) fn run(&self, core: &Arc<Core>, config: &SwitchConfig) {
        use openraft::rt::WatchReceiver;
        let member = &self.member;
        let mut metrics = member.raft.metrics();
        // How long to wait before the next attempt after a failed one.
        let mut backoff = LEAD_RETRY;
        while !core.stopped.load(Ordering::Relaxed) {
            let (leads, term) = {
                let now = metrics.borrow_watched();
                (now.state.is_leader(), now.current_term)
            };
            let routing = *self.routing.read();
            if leads && !(routing.ready && routing.term == term) {
                let started = std::time::Instant::now();
                match self.prepare(core, config, term) {
                    Ok(ids) => {
                        backoff = LEAD_RETRY;
                        tracing::info!(
                            term,
                            ids,
                            ms = started.elapsed().as_millis() as u64,
                            "leading: claims rebuilt from the books, rounds finished"
                        );
                    }
                    Err(e) => {
                        // Right after an election raft may refuse a write
                        // for a moment: a warning only if it lasts.
                        let since = self.routing.read().since.unwrap_or(started);
                        if since.elapsed() > LEAD_WARN_AFTER {
                            tracing::warn!(term, error = %e, "could not take the lead yet; trying again");
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(LEAD_RETRY_MAX);
                        continue;
                    }
                }
            }
            if !leads && routing.since.is_some() {
                self.routing.write().since = None;
            }
            let changed = metrics.changed();
            let _ = member.runtime.block_on(async { tokio::time::timeout(LEAD_POLL, changed).await });
        }
    }

    /// Rebuilds the router for `term` in a new epoch and finishes the
    /// rounds left half done; returns how many stored ids it claimed.
    fn prepare(&self, core: &Arc<Core>, config: &SwitchConfig, term: u64) -> Result<usize, String> {
        // From here no request routed in an earlier epoch is proposed.
        let epoch = {
            let mut routing = self.routing.write();
            let since = if routing.term == term { routing.since } else { None };
            *routing = Routing {
                epoch: routing.epoch + 1,
                term,
                ready: false,
                since: Some(since.unwrap_or_else(std::time::Instant::now)),
            };
            routing.epoch
        };
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
        finish_rounds(core, &multis, epoch).map_err(|e| e.to_string())?;
        let mut routing = self.routing.write();
        if routing.epoch != epoch || member.term() != term || member.leader().is_err() {
            return Err("leadership moved while taking it".into());
        }
        routing.ready = true;
        routing.since = None;
        Ok(ids)
    }
}

/// How often the lead watcher looks at raft when nothing changes.
const LEAD_POLL: Duration = Duration::from_millis(100);
/// How soon it first tries again to take the lead after a failure; it
/// doubles up to `LEAD_RETRY_MAX`.
const LEAD_RETRY: Duration = Duration::from_millis(10);
const LEAD_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long taking the lead may fail before operators hear of it.
const LEAD_WARN_AFTER: Duration = Duration::from_secs(2);

/// After a restart, or when a cluster node takes the lead, before any
/// traffic: a request spanning shards that one shard applied is applied
/// on the others too, and a request split in rounds whose next round nobody
/// began is routed on, as it would have been. `epoch`: the cluster
/// router's epoch the parts are routed in (0 outside a cluster).
pub(super) fn finish_rounds(core: &Arc<Core>, multis: &[multi::Multi], epoch: u64) -> Result<(), OpenError> {
    let multis: Vec<&multi::Multi> = multis.iter().collect();
    let mut answers = Vec::new();
    for (shard, records) in multi::reconcile(&multis).into_iter().enumerate() {
        for body in records {
            let sent = core.send(shard, kind::MULTI, body.clone(), (true, None, epoch), None);
            answers.push((shard, body, sent.map_err(|error| OpenError::Round { shard, error })?));
        }
    }
    for (shard, body, rx) in answers {
        let answer = rx.blocking_recv().unwrap_or(Err(SwitchError::ShardFailed));
        let answer = answer.map_err(|error| OpenError::Round { shard, error })?;
        // The ids it stored were not there when the claims were rebuilt.
        core.router.lock().adopt(shard, kind::MULTI, &body, &answer);
    }
    let continuations = multi::continuations(&multis);
    core.router.lock().restore_rests(continuations.iter().map(|&(round, _, _)| round));
    for (round, kind, rest) in continuations {
        let stage = core.route_and_send(kind, &rest, true, Some((round, epoch)), None);
        stage
            .and_then(|stage| {
                let shown = crate::router::answer_kind(kind, &rest);
                PendingReply { core: Arc::clone(core), kind, shown, wait: true, stage }.wait_blocking()
            })
            .map_err(|error| OpenError::Round { shard: 0, error })?;
    }
    Ok(())
}
