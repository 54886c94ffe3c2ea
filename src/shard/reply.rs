//! Routing a request and sending its parts, and waiting for its answer
//! round by round.

use super::*;

impl Core {
    /// A request that would be logged is refused while a shard's disk is
    /// below its reserve (nothing is sent, so nothing is half applied).
    pub(super) fn check_room(&self, kind: u16, body: &[u8]) -> Result<(), SwitchError> {
        if kinds::is_logged(submission(kind, body).0) && !self.room.ok() {
            return Err(SwitchError::NoSpace);
        }
        Ok(())
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms(self.now_ms.load(Ordering::Relaxed))
    }

    /// Routes a request and sends its parts, or says it must wait for
    /// another request's claims (nothing sent). `continues`: the round a
    /// rest continues, and the router's epoch it was routed in (0 outside
    /// a cluster of several shards). Every part carries `trace`.
    pub(super) fn route_and_send(
        &self,
        kind: u16,
        body: &[u8],
        wait: bool,
        continues: Option<(u64, u64)>,
        trace: Option<&Arc<Trace>>,
    ) -> Result<Progress, SwitchError> {
        if self.txs.len() == 1 && !matches!(kind, kind::EXPORT_STR | kind::EXPORT_STR_PAGE) {
            // One shard: no claims, no merge.
            let mut router = Router::new(1, 1);
            let Routed::Plan { mut parts, .. } = router.route(kind, body, 0, 0, None).map_err(SwitchError::Engine)?
            else {
                unreachable!("one shard is never contended")
            };
            let part = parts.pop().expect("one part");
            let rx = self.send(part.shard, part.kind, part.body, (wait, None, 0), trace.cloned())?;
            return Ok(Progress::Sent { parts: vec![rx], merge: Merge::Single, rest: None, epoch: 0 });
        }
        let mut router = self.router.lock();
        // A cluster's router is a leader's, rebuilt each time it takes the
        // lead (`lead`, an epoch): claims answered in another epoch are not
        // its own.
        let epoch = match &self.leading {
            None => 0,
            Some(leading) => match leading.may_route(continues.map(|(_, epoch)| epoch))? {
                Some(epoch) => epoch,
                None => return Ok(Progress::Contended(body.to_vec(), continues)),
            },
        };
        for (_, settled) in self.answered.lock().drain(..).filter(|&(t, _)| t == epoch) {
            router.settle(settled);
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(SwitchError::Stopped);
        }
        let continues = continues.map(|(round, _)| round);
        let routed =
            router.route(kind, body, self.now_ms(), self.quote_ttl_ms, continues).map_err(SwitchError::Engine)?;
        let (parts, merge, rest, round) = match routed {
            Routed::Contended => {
                METRICS.claim_waits.fetch_add(1, Ordering::Relaxed);
                return Ok(Progress::Contended(body.to_vec(), continues.map(|round| (round, epoch))));
            }
            Routed::Plan { parts, merge, rest, round } => {
                if continues.is_some() {
                    METRICS.later_rounds.fetch_add(1, Ordering::Relaxed);
                }
                (parts, merge, rest, round)
            }
        };
        let bytes: u64 = parts.iter().map(|p| p.body.len() as u64).sum();
        if let Err(e) = self.reserve(parts.iter().map(|p| p.shard), bytes, wait) {
            router.undo(parts);
            return Err(e);
        }
        let mut rxs = Vec::with_capacity(parts.len());
        let mut parts = parts.into_iter();
        while let Some(part) = parts.next() {
            let claimed = (!part.claimed.is_empty()).then_some(part.claimed);
            match self.send(part.shard, part.kind, part.body, (wait, claimed, epoch), trace.cloned()) {
                Ok(rx) => rxs.push(rx),
                Err(e) => {
                    // Only a stopping switch refuses here (room was
                    // checked): what was not sent holds no claim.
                    router.undo(parts.collect());
                    return Err(e);
                }
            }
        }
        let rest = rest.map(|r| (r, round.expect("a round with a rest is numbered")));
        Ok(Progress::Sent { parts: rxs, merge, rest, epoch })
    }

    /// Checks every target queue has room before sending anything, so a
    /// `Busy` answer means nothing was applied anywhere.
    pub(super) fn reserve(
        &self,
        targets: impl Iterator<Item = usize>,
        bytes: u64,
        wait: bool,
    ) -> Result<(), SwitchError> {
        if wait {
            return Ok(());
        }
        if !self.queued_bytes.has_room(bytes) {
            return Err(SwitchError::Busy);
        }
        for s in targets {
            let tx = &self.txs[s];
            if tx.capacity().is_some_and(|cap| tx.len() >= cap) {
                return Err(SwitchError::Busy);
            }
        }
        Ok(())
    }

    /// Sends a part routed in `epoch` (0 outside a cluster of several
    /// shards); its answer settles its claims (on the shard thread, handed
    /// to the router through `answered`) before it is passed on.
    pub(super) fn send(
        &self,
        shard: usize,
        kind: u16,
        body: Vec<u8>,
        (wait, claimed, epoch): (bool, Option<crate::router::Claimed>, u64),
        trace: Option<Arc<Trace>>,
    ) -> Result<oneshot::Receiver<Reply>, SwitchError> {
        let (tx, rx) = oneshot::channel();
        let reply: ReplyFn = match claimed {
            None => Box::new(move |answer| drop(tx.send(answer))),
            Some(claimed) => {
                let answered = Arc::clone(&self.answered);
                Box::new(move |answer: Reply| {
                    let settled = claimed.outcomes(answer.as_ref().ok().map(Vec::as_slice));
                    answered.lock().push((epoch, settled));
                    // A requester that gave up is not an error.
                    drop(tx.send(answer));
                })
            }
        };
        self.enqueue(shard, Request { trace, ..Request::new(kind, body, reply, epoch) }, wait)?;
        Ok(rx)
    }

    pub(super) fn enqueue(&self, shard: usize, request: Request, wait: bool) -> Result<(), SwitchError> {
        let len = request.body.len() as u64;
        if !self.queued_bytes.admit(len, wait) {
            return Err(SwitchError::Busy);
        }
        let message = Message::Request(request);
        let tx = &self.txs[shard];
        // Counted before the send (the shard may take it at once).
        METRICS.queue_depth.fetch_add(1, Ordering::Relaxed);
        let sent = if wait {
            tx.send(message).map_err(|_| SwitchError::Stopped)
        } else {
            tx.try_send(message).map_err(|e| match e {
                TrySendError::Full(_) => SwitchError::Busy,
                TrySendError::Disconnected(_) => SwitchError::Stopped,
            })
        };
        if sent.is_err() {
            self.queued_bytes.release(len);
            METRICS.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }
}

/// Where a request is: sent (answers on their way, and maybe records to
/// route once they are in, continuing the round sent), or waiting for
/// another request's claims (the records, and the round they continue).
pub(super) enum Progress {
    Sent { parts: Vec<oneshot::Receiver<Reply>>, merge: Merge, rest: Option<(crate::router::Rest, u64)>, epoch: u64 },
    Contended(Vec<u8>, Option<(u64, u64)>),
}

/// A request handed to its shard(s), whose answer is on its way.
pub struct PendingReply {
    pub(super) core: Arc<Core>,
    /// The kind it is routed as (SCOPED for a scoped channel's request).
    pub(super) kind: u16,
    /// The kind its answer is (`router::answer_kind`).
    pub(super) shown: u16,
    pub(super) wait: bool,
    pub(super) stage: Progress,
}

impl PendingReply {
    /// Waits on this thread (not inside an async runtime).
    pub fn wait_blocking(self) -> Reply {
        let PendingReply { core, kind, shown, wait, mut stage } = self;
        let mut out = Gather::default();
        let mut first = true;
        loop {
            stage = match stage {
                Progress::Sent { parts, merge, rest, epoch } => {
                    let later = !std::mem::replace(&mut first, false);
                    let partial = parts.len() > 1 || later;
                    let mut answers = Vec::with_capacity(parts.len());
                    for rx in parts {
                        answers.push(
                            rx.blocking_recv()
                                .unwrap_or(Err(SwitchError::ShardFailed))
                                .map_err(|e| unknown(e, partial))?,
                        );
                    }
                    merged(shown, merge, answers, rest.as_ref().map(|(r, _)| r), &mut out);
                    match rest {
                        None => return Ok(out.finish()),
                        Some((rest, round)) => core.again(kind, rest.body, wait, Some((round, epoch)))?,
                    }
                }
                Progress::Contended(body, continues) => {
                    std::thread::sleep(CONTENDED_RETRY);
                    core.again(kind, body, wait, continues)?
                }
            };
        }
    }

    /// Waits asynchronously.
    pub async fn wait(self) -> Reply {
        let PendingReply { core, kind, shown, wait, mut stage } = self;
        let mut out = Gather::default();
        let mut first = true;
        loop {
            stage = match stage {
                Progress::Sent { parts, merge, rest, epoch } => {
                    let later = !std::mem::replace(&mut first, false);
                    let partial = parts.len() > 1 || later;
                    let mut answers = Vec::with_capacity(parts.len());
                    for rx in parts {
                        answers
                            .push(rx.await.unwrap_or(Err(SwitchError::ShardFailed)).map_err(|e| unknown(e, partial))?);
                    }
                    merged(shown, merge, answers, rest.as_ref().map(|(r, _)| r), &mut out);
                    match rest {
                        None => return Ok(out.finish()),
                        Some((rest, round)) => core.again(kind, rest.body, wait, Some((round, epoch)))?,
                    }
                }
                Progress::Contended(body, continues) => {
                    tokio::time::sleep(CONTENDED_RETRY).await;
                    core.again(kind, body, wait, continues)?
                }
            };
        }
    }
}

/// A NOT_LEADER for one part of a request of several parts or rounds:
/// the others may be applied (a new leader finishes the round), so the
/// request's outcome is unknown, not "nothing applied".
fn unknown(e: SwitchError, partial: bool) -> SwitchError {
    match e {
        SwitchError::NotLeader(_) if partial => SwitchError::LeadershipLost,
        e => e,
    }
}

impl Core {
    /// Routes (the rest of) an accepted request again: a full queue now
    /// only delays it (the request was accepted; part of it may be
    /// applied).
    pub(super) fn again(
        &self,
        kind: u16,
        body: Vec<u8>,
        wait: bool,
        continues: Option<(u64, u64)>,
    ) -> Result<Progress, SwitchError> {
        match self.route_and_send(kind, &body, wait, continues, None) {
            Err(SwitchError::Busy) => Ok(Progress::Contended(body, continues)),
            other => other,
        }
    }
}

/// Merges a round's answers into what came before, counting the result
/// codes of answers no single shard counted (those every shard gave).
pub(super) fn merged(
    kind: u16,
    how: Merge,
    answers: Vec<Vec<u8>>,
    rest: Option<&crate::router::Rest>,
    out: &mut Gather,
) {
    let counted_here = matches!(how, Merge::First | Merge::Balances(_));
    let answer = crate::router::merge(how, answers);
    if counted_here {
        count_results(kind, &answer);
    }
    out.add(kind, answer, rest);
}
