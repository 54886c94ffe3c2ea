//! The shard thread's loop: groups from the queues, link messages to the
//! other shards once durable, answers released by acknowledgements, and the
//! drain on stop.

use super::*;

impl Shard {
    /// The shard thread: takes a group from its queues (other shards' link
    /// messages first, then requests), applies and commits it, answers what
    /// needs no other shard, releases answers whose acknowledgements came,
    /// and sends other shards what is now durable. On stop it takes no more
    /// requests but goes on exchanging link messages until every shard has
    /// nothing in flight (at most `DRAIN_MAX`).
    pub(super) fn run(
        mut self,
        rx: &Receiver<Message>,
        link_rx: &Receiver<LinkMessage>,
        peers: &Peers,
        group_max: usize,
        now_ms: &AtomicU64,
        queued_bytes: &Admission,
    ) {
        let n = peers.senders.len();
        let me = peers.me;
        let mut sent = vec![0u64; n];
        let mut ack_sent = vec![0u64; n];
        let mut deferred: VecDeque<Deferred> = VecDeque::new();
        let mut batch: Vec<Request> = Vec::with_capacity(group_max);
        let mut inbound: Vec<LinkMessage> = Vec::new();
        let mut stopping: Option<std::time::Instant> = None;
        // When every shard had taken its stop: the drain's limit runs from
        // there.
        let mut drain_since: Option<std::time::Instant> = None;
        // After a restart every unacknowledged entry goes again.
        let mut backlog = self.send_links(peers, &mut sent, &mut ack_sent);
        loop {
            // Published after the step's sends: see `handoff::Settled`.
            let settled = deferred.is_empty() && self.engine.links().unacked() == 0 && !backlog;
            // Only a stopping shard may say it is settled: one still taking
            // requests may yet send something.
            peers.settled.publish(usize::from(me), stopping.is_some() && settled);
            if let Some(stopped) = stopping {
                if drain_since.is_none() && peers.settled.all_stopping() {
                    drain_since = Some(std::time::Instant::now());
                }
                // The limit runs once every shard took its stop; a shard
                // that never does (its thread died) is waited for at most
                // a few limits.
                let overdue =
                    drain_since.is_some_and(|since| since.elapsed() > DRAIN_MAX) || stopped.elapsed() > 4 * DRAIN_MAX;
                if (settled && peers.settled.all()) || overdue || peers.settled.abandoned() {
                    break;
                }
            }
            let mut wait = self.wake_in();
            if backlog || stopping.is_some() {
                wait = Some(wait.map_or(LINK_RETRY, |w| w.min(LINK_RETRY)));
            }
            if Self::receive((rx, stopping.is_none()), link_rx, wait, group_max, &mut batch, &mut inbound) {
                stopping = Some(std::time::Instant::now());
                peers.settled.stopping(usize::from(me));
            }
            for m in &inbound {
                peers.windows.give_back(usize::from(m.from), usize::from(me));
            }
            let links: Vec<&[u8]> = inbound.iter().map(|m| m.body.as_slice()).collect();
            let group: Vec<(u16, &[u8])> = batch.iter().map(|r| (r.kind, r.body.as_slice())).collect();
            let (replies, result) = self.commit_group(&links, &group);
            // After the last group of requests (applied at the clock's
            // time), no timers while draining: they could put new transfers
            // in flight (they fire after a restart).
            self.draining = stopping.is_some();
            drop(links);
            inbound.clear();
            now_ms.fetch_max(self.engine.now_ms(), Ordering::Relaxed);
            let applied: u64 = batch.iter().map(|r| r.body.len() as u64).sum();
            queued_bytes.release(applied);
            if !self.answer(&mut batch, replies, &result, &mut deferred) {
                continue;
            }
            self.release(&mut deferred);
            backlog = self.send_links(peers, &mut sent, &mut ack_sent);
            // Answers first: a segment roll or a snapshot must not delay
            // what is durable.
            let upkeep = std::time::Instant::now();
            self.wal.poll_roll();
            self.snapshot_if_due();
            METRICS.stage(Stage::Upkeep, upkeep.elapsed());
        }
    }

    /// Waits up to `wait` (forever if `None`) for a request or a link
    /// message, then takes what else is queued: link messages into
    /// `inbound`, requests into `batch` up to `group_max` (none unless
    /// `taking`). True once the stop was taken.
    pub(super) fn receive(
        (rx, taking): (&Receiver<Message>, bool),
        link_rx: &Receiver<LinkMessage>,
        wait: Option<Duration>,
        group_max: usize,
        batch: &mut Vec<Request>,
        inbound: &mut Vec<LinkMessage>,
    ) -> bool {
        let mut select = crossbeam_channel::Select::new();
        let external = taking.then(|| select.recv(rx));
        let internal = select.recv(link_rx);
        let ready = match wait {
            Some(w) => select.select_timeout(w).ok(),
            None => Some(select.select()),
        };
        let mut next = None;
        if let Some(op) = ready {
            if Some(op.index()) == external {
                next = Some(op.recv(rx).unwrap_or(Message::Stop));
            } else {
                debug_assert_eq!(op.index(), internal);
                if let Ok(m) = op.recv(link_rx) {
                    inbound.push(m);
                }
            }
        }
        while let Ok(m) = link_rx.try_recv() {
            inbound.push(m);
        }
        let mut bytes: usize = batch.iter().map(|r| r.body.len()).sum();
        let room = |batch: &Vec<Request>, bytes: usize| batch.len() < group_max && bytes < GROUP_BYTES_MAX;
        if taking && next.is_none() && room(batch, bytes) {
            next = rx.try_recv().ok();
        }
        while let Some(message) = next.take() {
            match message {
                Message::Request(mut r) => {
                    r.taken = std::time::Instant::now();
                    METRICS.stage(Stage::QueueWait, r.taken - r.enqueued);
                    METRICS.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    bytes += r.body.len();
                    batch.push(r);
                }
                Message::Stop => return true,
            }
            if room(batch, bytes) {
                next = rx.try_recv().ok();
            }
        }
        false
    }

    /// Answers a committed group: at once, or (an answer showing what
    /// another shard has yet to apply) once acknowledged. False if the log
    /// failed: then every waiting answer is failed too.
    fn answer(
        &mut self,
        batch: &mut Vec<Request>,
        replies: Vec<Reply>,
        result: &Result<(), WalError>,
        deferred: &mut VecDeque<Deferred>,
    ) -> bool {
        let waits = self.take_waits(batch.len());
        let group = batch.len();
        for (i, ((request, reply), wait)) in batch.drain(..).zip(replies).zip(waits).enumerate() {
            self.timeline(&request, i, group);
            match (wait, reply) {
                (Some(need), Ok(answer)) if result.is_ok() => {
                    let refunds = self.engine.refunds();
                    deferred.push_back(Deferred {
                        need,
                        kind: submission(request.kind, &request.body).0,
                        answer,
                        reply: request.reply,
                        refunds,
                        synced: self.group_times.fsync_end,
                    });
                }
                // A requester that gave up is not an error.
                (_, reply) => {
                    METRICS.stage(Stage::FsyncToAnswer, self.group_times.fsync_end.elapsed());
                    (request.reply)(reply);
                }
            }
        }
        if let Err(e) = &result {
            // Nothing more is durable: what waited can't be confirmed.
            let failed = Arc::new(e.clone_summary());
            for d in deferred.drain(..) {
                (d.reply)(Err(SwitchError::LogFailed(Arc::clone(&failed))));
            }
            return false;
        }
        true
    }

    /// Answers the waiting requests whose acknowledgements have all come
    /// (in order: later ones never need less), their transfers shown as
    /// they are now.
    pub(super) fn release(&self, deferred: &mut VecDeque<Deferred>) {
        let links = &self.engine.links().links;
        while let Some(d) = deferred.front() {
            if !d.need.iter().zip(links).all(|(&seq, link)| link.acked() >= seq) {
                break;
            }
            let mut d = deferred.pop_front().expect("front exists");
            self.engine.settle_answers(d.kind, &mut d.answer, Some(d.refunds));
            self.count(d.kind, &d.answer);
            METRICS.stage(Stage::FsyncToAnswer, d.synced.elapsed());
            (d.reply)(Ok(d.answer));
        }
    }

    /// Records the stages of the last group's `i`th request (of `group`)
    /// up to its sync, and marks its trace.
    fn timeline(&self, request: &Request, i: usize, group: usize) {
        let g = self.group_times;
        let (apply_start, apply_end) = self.applied.get(i).copied().unwrap_or((g.start, g.start));
        METRICS.stage(Stage::QueueToGroup, g.start.saturating_duration_since(request.taken));
        METRICS.stage(Stage::GroupToApply, apply_start.saturating_duration_since(g.start));
        METRICS.stage(Stage::ApplyToFsync, g.fsync_start.saturating_duration_since(apply_end));
        if let Some(trace) = &request.trace {
            trace.group(group);
            for (mark, at) in [
                (Mark::Queued, request.enqueued),
                (Mark::Taken, request.taken),
                (Mark::GroupStart, g.start),
                (Mark::ApplyStart, apply_start),
                (Mark::ApplyEnd, apply_end),
                (Mark::FsyncStart, g.fsync_start),
                (Mark::FsyncEnd, g.fsync_end),
            ] {
                trace.mark(mark, at);
            }
        }
    }

    /// Sends each other shard what it has not been sent (durable entries,
    /// and the acknowledgement of what it sent), within the window.
    /// Returns whether something is left for later (a window was full).
    pub(super) fn send_links(&self, peers: &Peers, sent: &mut [u64], ack_sent: &mut [u64]) -> bool {
        let me = peers.me;
        let mut backlog = false;
        for peer in (0..peers.senders.len() as u16).filter(|&p| p != me) {
            let p = usize::from(peer);
            loop {
                let (ack, entries) = self.engine.links().message(peer, sent[p]);
                if entries.is_empty() && ack == ack_sent[p] {
                    break;
                }
                if !peers.windows.try_take(usize::from(me), p) {
                    backlog = true;
                    break;
                }
                let mut body = Vec::new();
                crate::engine::links::encode_link_in(me, ack, &entries, &mut body);
                if peers.senders[p].try_send(LinkMessage { from: me, body }).is_err() {
                    // Only a stopped shard's queue refuses (the window
                    // guarantees room): recovery resends.
                    peers.windows.give_back(usize::from(me), p);
                    break;
                }
                METRICS.link_messages.fetch_add(1, Ordering::Relaxed);
                if let Some(last) = entries.last() {
                    sent[p] = last.seq;
                }
                ack_sent[p] = ack;
                if entries.len() < crate::engine::links::LINK_ENTRIES_MAX {
                    break;
                }
            }
        }
        backlog
    }
}
