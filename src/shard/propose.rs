//! A cluster node's shard thread: the proposer (`docs/cluster.md`, "Who
//! executes"). On the leader it takes a group of requests as a single
//! node's shard does, settles what is not deterministic (the time, the
//! remote scorer's verdicts, the refusals that change nothing), proposes
//! the group as one raft entry and goes on to the next group without
//! waiting. Every node applies committed entries to its books; the leader
//! answers each request from its own apply. On a node that is not the
//! leader every request is answered NOT_LEADER, nothing applied.

use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;

use super::*;
use crate::cluster::node::Member;
use crate::cluster::{Proposal, Raft, TypeConfig};

/// A record's kind and length ahead of its body in a proposal.
const RECORD_HEADER: usize = 6;
/// Most record bytes one proposal carries: its entry (these bytes, the log
/// id and the shard and time) must fit one record of the raft log.
const PROPOSAL_BYTES_MAX: usize = crate::cluster::log::ENTRY_BYTES_MAX - 4096;

/// Longest an idle proposer sleeps: how soon it notices that it leads
/// and a hold timer is due.
const PROPOSER_WAKE_MAX: Duration = Duration::from_millis(100);

pub(super) struct Proposer {
    pub(super) shard: u16,
    pub(super) member: Member,
    /// With several shards: the term the router serves (`lead`).
    pub(super) leading: Option<Arc<super::lead::Leading>>,
    pub(super) clock: Clock,
    pub(super) gate: Option<Gate>,
    pub(super) gate_reported: GateStats,
}

/// A request in a proposal: its kind (for the metrics) and where its
/// answer goes.
type Waiting = Vec<(u16, ReplyFn)>;

impl Proposer {
    pub(super) fn run(mut self, rx: &Receiver<Message>, group_max: usize, now_ms: &AtomicU64, queued: &Admission) {
        let links = crossbeam_channel::never();
        let (mut batch, mut inbound) = (Vec::with_capacity(group_max), Vec::new());
        loop {
            let wait = self.wake_in();
            if Shard::receive((rx, true), &links, Some(wait), group_max, &mut batch, &mut inbound) {
                break;
            }
            queued.release(batch.iter().map(|r| r.body.len() as u64).sum());
            self.propose(&mut batch, now_ms);
        }
        // Requests queued behind the stop are dropped unanswered, never
        // applied, as on a single node.
    }

    /// How long to wait for requests: until the books' next hold timer is
    /// due, at most `PROPOSER_WAKE_MAX`.
    fn wake_in(&self) -> Duration {
        let due = self.member.books.read_blocking(usize::from(self.shard), Engine::next_timer_ms).flatten();
        let Some(due) = due.filter(|_| self.member.raft.is_leader() && !self.clock.is_manual()) else {
            return PROPOSER_WAKE_MAX;
        };
        let now = self.clock.now_ms(self.logged_ms());
        Duration::from_millis(due.saturating_sub(now)).min(PROPOSER_WAKE_MAX)
    }

    /// The latest time logged or applied on this node.
    fn logged_ms(&self) -> u64 {
        self.member.log.last_time_ms().max(self.member.books.now_ms().load(Ordering::Relaxed))
    }

    fn propose(&mut self, batch: &mut Vec<Request>, now_ms: &AtomicU64) {
        if let Err(leader) = self.member.leader() {
            for r in batch.drain(..) {
                (r.reply)(Err(SwitchError::NotLeader(leader.clone())));
            }
            return;
        }
        // Never earlier than anything logged: time does not go back along
        // the log, whichever node leads.
        let time_ms = self.clock.now_ms(self.logged_ms());
        let mut proposal = Proposal { shard: self.shard, time_ms, records: Vec::new() };
        if batch.is_empty() {
            // Idle: a hold timer that is due fires through the log.
            let due = self.member.books.read_blocking(usize::from(self.shard), Engine::next_timer_ms).flatten();
            if self.clock.is_manual() || due.is_none_or(|due| due > time_ms) {
                return;
            }
            proposal.push(kind::TICK, &[]);
        }
        let mut verdicts = self.judge(batch).into_iter();
        // A request routed by another router than the one in use now is not
        // proposed: the claims that routed it are gone (`lead`). Held until
        // the entries are handed to raft, so taking the lead anew waits for
        // them, and its barrier entry comes after them.
        let leading = self.leading.clone();
        let routing_guard = leading.as_ref().map(|l| l.routing.read());
        let routing = routing_guard.as_deref().copied();
        let term = routing.map(|_| self.member.term());
        let mut waiting: Waiting = Vec::with_capacity(batch.len());
        let mut record;
        for r in batch.drain(..) {
            if let Err(e) = Shard::acceptable(r.kind, &r.body) {
                (r.reply)(Err(e));
                continue;
            }
            let (inner, _) = submission(r.kind, &r.body);
            let verdict = (inner == kind::SUBMIT_TRANSFERS).then(|| verdicts.next()).flatten();
            if let Some(routing) = routing
                && (r.epoch != routing.epoch || Some(routing.term) != term)
            {
                (r.reply)(Err(SwitchError::LeadershipLost));
                continue;
            }
            let (kind, body) = match verdict {
                // Logged with the transfers they judge, as one record, so
                // every node applies the same verdicts.
                Some(v) if !v.is_empty() => {
                    let (kind, logged) = super::step::with_verdicts(r.kind, &r.body, &v);
                    record = logged;
                    (kind, record.as_slice())
                }
                _ => (r.kind, r.body.as_slice()),
            };
            // An entry is at most one log record: a group that would not
            // fit goes as several entries, in order.
            if proposal.records.len() + RECORD_HEADER + body.len() > PROPOSAL_BYTES_MAX && !waiting.is_empty() {
                let full =
                    std::mem::replace(&mut proposal, Proposal { shard: self.shard, time_ms, records: Vec::new() });
                self.submit(full, std::mem::take(&mut waiting), now_ms);
            }
            if RECORD_HEADER + body.len() > PROPOSAL_BYTES_MAX {
                (r.reply)(Err(SwitchError::Engine(EngineError::BadLength { kind: r.kind, len: r.body.len() })));
                continue;
            }
            proposal.push(kind, body);
            waiting.push((inner, r.reply));
        }
        if !proposal.records.is_empty() {
            self.submit(proposal, waiting, now_ms);
        }
        drop(routing_guard);
    }

    /// Hands one entry to raft and, on a task, answers its requests once
    /// it is committed and applied here (or calls them unknown).
    fn submit(&self, proposal: Proposal, waiting: Waiting, now_ms: &AtomicU64) {
        let time_ms = proposal.time_ms;
        let (responder, answer) = ProgressResponder::<TypeConfig, _>::complete_only();
        let raft = self.member.raft.clone();
        let submitted = self.member.runtime.block_on(raft.client_write_ff(proposal, Some(responder)));
        if submitted.is_err() {
            // Raft stopped: whether it took the entry is unknown.
            for (_, reply) in waiting {
                reply(Err(SwitchError::LeadershipLost));
            }
            return;
        }
        now_ms.fetch_max(time_ms, Ordering::Relaxed);
        let term = {
            use openraft::rt::WatchReceiver;
            raft.metrics().borrow_watched().current_term
        };
        let (wait_max, quorum_wait) = (self.member.commit_wait_max, self.member.quorum_wait);
        self.member.runtime.spawn(async move {
            let outcome = tokio::select! {
                // An answer that came is given, whatever else happened.
                biased;
                a = answer => a.ok(),
                () = leadership_lost(&raft, term, quorum_wait) => None,
                () = tokio::time::sleep(wait_max) => None,
            };
            answer_proposal(outcome, waiting);
        });
    }

    /// The remote scorer's verdicts for the group's submissions, at most
    /// its budget (none without a scorer).
    fn judge(&mut self, batch: &[Request]) -> Vec<Vec<crate::protocol::internal::Verdict>> {
        let Some(gate) = &mut self.gate else { return Vec::new() };
        let submits: Vec<&[u8]> = batch
            .iter()
            .filter(|r| Shard::acceptable(r.kind, &r.body).is_ok())
            .map(|r| submission(r.kind, &r.body))
            .filter(|&(k, _)| k == kind::SUBMIT_TRANSFERS)
            .map(|(_, b)| b)
            .collect();
        if submits.is_empty() {
            return Vec::new();
        }
        let judging = std::time::Instant::now();
        let verdicts = gate.judge(&submits);
        METRICS.stage(Stage::Aml, judging.elapsed());
        let now = gate.stats();
        METRICS.record_gate(now, self.gate_reported);
        self.gate_reported = now;
        verdicts
    }
}

/// Answers a proposal's requests: from the books' answers once applied;
/// NOT_LEADER if raft refused it at once (nothing applied); otherwise its
/// outcome is unknown.
fn answer_proposal(
    outcome: Option<Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<TypeConfig>>>,
    waiting: Waiting,
) {
    match outcome {
        Some(Ok(applied)) => {
            for ((kind, reply), answer) in waiting.into_iter().zip(applied.data.answers) {
                count_results(kind, &answer);
                reply(Ok(answer));
            }
        }
        Some(Err(ClientWriteError::ForwardToLeader(f))) => {
            let leader = f.leader_node.map(|n| n.channel).unwrap_or_default();
            for (_, reply) in waiting {
                reply(Err(SwitchError::NotLeader(leader.clone())));
            }
        }
        _ => {
            for (_, reply) in waiting {
                reply(Err(SwitchError::LeadershipLost));
            }
        }
    }
}

/// Returns once this node no longer leads in `term`, or has heard from no
/// majority for `quorum_wait` (contract §7: a leader cut off from the
/// majority closes what it began; a new leader may be answering already).
async fn leadership_lost(raft: &Raft, term: u64, quorum_wait: Duration) {
    use openraft::Instant as _;
    use openraft::rt::WatchReceiver;
    let mut metrics = raft.metrics();
    loop {
        {
            let now = metrics.borrow_watched();
            if !now.state.is_leader() || now.current_term != term {
                return;
            }
            let acked = now.last_quorum_acked.map(|at| at.into_inner().elapsed());
            if acked.is_some_and(|since| since > quorum_wait) {
                return;
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(quorum_wait / 4) => {}
        }
    }
}
