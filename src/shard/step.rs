//! One shard's step: recovery from its storage, a group applied, logged
//! and synced, its answers, and snapshots.

use super::*;

impl Shard {
    /// Recovers a shard from its storage: newest snapshot, then the log.
    pub fn open(storage: Arc<dyn Storage>, config: &SwitchConfig) -> Result<(Shard, RecoveryReport), WalError> {
        let engine_config = EngineConfig { manual_clock: config.clock.is_manual(), ..config.engine };
        let start_ms = if config.clock.is_manual() { MANUAL_CLOCK_START_MS } else { 0 };
        let engine = std::cell::RefCell::new(Engine::new(engine_config, start_ms));
        let mut scratch = Vec::new();
        let dir = storage.describe(".");
        let (wal, report) = Wal::open(
            storage,
            config.wal,
            |_, state| {
                *engine.borrow_mut() = Engine::decode_state(engine_config, state).map_err(|e| e.to_string())?;
                Ok(())
            },
            |record| {
                scratch.clear();
                let mut engine = engine.borrow_mut();
                engine.apply(record.kind, record.body, record.time_ms, &mut scratch).map_err(|e| e.to_string())
            },
        )?;
        let engine = engine.into_inner();
        // A state that does not add up is never served: double entry per
        // currency, holds, the pending table and the links are checked
        // whole after every recovery.
        engine.audit().map_err(|e| WalError::Corrupt {
            file: dir,
            offset: 0,
            reason: format!("the recovered state fails its audit: {e}"),
        })?;
        let shard = Shard {
            engine,
            wal,
            clock: config.clock,
            snapshot_log_bytes: config.snapshot_log_bytes.max(1),
            bytes_at_snapshot: 0,
            snapshot_in_background: config.snapshot_in_background,
            snapshotting: None,
            spare: None,
            gate: None,
            log_bytes_seen: 0,
            waits: Vec::new(),
            draining: false,
            gate_reported: GateStats::default(),
            applied: Vec::new(),
            group_times: GroupTimes::at(std::time::Instant::now()),
        };
        Ok((shard, report))
    }

    /// Puts a remote AML scorer in front of the engine: from now on every
    /// group's outgoing transfers wait for its verdicts, at most the gate's
    /// budget.
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = Some(gate);
    }

    /// The scorer gate's counters, if there is a gate.
    #[must_use]
    pub fn gate_stats(&self) -> Option<GateStats> {
        self.gate.as_ref().map(Gate::stats)
    }

    /// The engine (read-only), for audits and hashes.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The log's counters.
    #[must_use]
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    /// Applies a group of requests, makes them durable with one sync, and
    /// returns one answer per request, then takes a snapshot if one is due.
    /// On a log error every answer is `LogFailed` and the error is returned
    /// too. (The shard thread answers before it snapshots; see `run`.)
    pub fn process(&mut self, group: &[(u16, &[u8])]) -> (Vec<Reply>, Result<(), WalError>) {
        let answered = self.commit_group(&[], group);
        if answered.1.is_ok() {
            self.snapshot_if_due();
        }
        answered
    }

    /// One step of the shard thread, for a caller that moves link messages
    /// itself (a deterministic simulation): applies other shards' link
    /// messages (`links`, LINK_IN bodies) and a group, commits, then
    /// snapshots if due. Returns the answers, per request whether it waits
    /// for acknowledgements (the sequence each shard must reach, see
    /// [`Engine::take_link_wait`]) and the commit's outcome.
    #[allow(clippy::type_complexity)]
    pub fn step(
        &mut self,
        links: &[&[u8]],
        group: &[(u16, &[u8])],
    ) -> (Vec<Reply>, Vec<Option<Vec<u64>>>, Result<(), WalError>) {
        let (replies, result) = self.commit_group(links, group);
        let waits = self.take_waits(group.len());
        if result.is_ok() {
            self.snapshot_if_due();
        }
        (replies, waits, result)
    }

    pub(super) fn commit_group(
        &mut self,
        links: &[&[u8]],
        group: &[(u16, &[u8])],
    ) -> (Vec<Reply>, Result<(), WalError>) {
        let mut replies = Vec::with_capacity(group.len());
        self.group_times = GroupTimes::at(std::time::Instant::now());
        let result = self.apply_group(links, group, &mut replies).and_then(|()| {
            let syncing = std::time::Instant::now();
            let syncs = self.wal.stats().syncs;
            let committed = self.wal.commit();
            self.group_times.fsync_start = syncing;
            self.group_times.fsync_end = std::time::Instant::now();
            // Only a group that synced is an fsync sample (a lookup-only
            // group or an idle wake-up writes nothing).
            if self.wal.stats().syncs > syncs {
                METRICS.stage(Stage::Fsync, syncing.elapsed());
            }
            let bytes = self.wal.stats().bytes;
            METRICS.log_bytes.fetch_add(bytes.saturating_sub(self.log_bytes_seen), Ordering::Relaxed);
            self.log_bytes_seen = bytes;
            committed
        });
        if let Err(e) = &result {
            // Whether the group reached the disk is unknown (a failed fsync
            // may still have written some of it): it is not answered as
            // applied, and the log refuses everything after.
            let failed = Arc::new(e.clone_summary());
            replies.clear();
            replies.resize(group.len(), Err(SwitchError::LogFailed(failed)));
        }
        (replies, result)
    }

    /// Takes a snapshot once enough log was written since the last one. A
    /// failure is reported and retried after the next interval; the log
    /// goes on.
    pub(super) fn snapshot_if_due(&mut self) {
        self.finish_snapshot(false);
        let bytes = self.wal.stats().bytes;
        if self.snapshotting.is_some() || bytes - self.bytes_at_snapshot < self.snapshot_log_bytes {
            return;
        }
        self.bytes_at_snapshot = bytes;
        let writer = match self.wal.snapshot_writer() {
            Ok(w) => w,
            Err(e) => return tracing::warn!(error = %e, "snapshot not taken"),
        };
        if self.snapshot_in_background {
            // The shard stops only to copy its state; encoding and writing
            // happen beside it while the log goes on.
            let copy = match self.spare.take() {
                Some(mut spare) => {
                    spare.clone_from(&self.engine);
                    spare
                }
                None => self.engine.clone(),
            };
            let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
                let mut state = Vec::new();
                copy.encode_state(&mut state);
                (writer.write(&state), copy)
            });
            match spawned {
                Ok(handle) => self.snapshotting = Some(handle),
                Err(e) => tracing::warn!(error = %e, "snapshot not taken"),
            }
            return;
        }
        let mut state = Vec::new();
        self.engine.encode_state(&mut state);
        let written = writer.write(&state).and_then(|()| self.wal.snapshot_written());
        if written.is_ok() {
            snapshot_taken();
        }
        if let Err(e) = written {
            tracing::warn!(error = %e, "snapshot failed (the log is unaffected; retrying later)");
        }
    }

    /// Completes a background snapshot that has finished (or, with `wait`,
    /// waits for it): old snapshots and segments are removed only now.
    pub(super) fn finish_snapshot(&mut self, wait: bool) {
        if !self.snapshotting.as_ref().is_some_and(|h| wait || h.is_finished()) {
            return;
        }
        let handle = self.snapshotting.take().expect("a snapshot in progress");
        let written = match handle.join() {
            Ok((result, copy)) => {
                self.spare = Some(copy);
                result.and_then(|()| self.wal.snapshot_written()).inspect(|()| snapshot_taken())
            }
            Err(_) => Err(WalError::Failed),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "snapshot failed (the log is unaffected; retrying later)");
        }
    }

    /// Whether a request of `kind` with `body` is one the engine takes from
    /// outside (internal log kinds are the shard's own).
    pub(super) fn acceptable(kind: u16, body: &[u8]) -> Result<(), SwitchError> {
        if kinds::spec(kind).is_none_or(|s| s.origin == kinds::Origin::Shard) {
            return Err(SwitchError::Engine(EngineError::UnknownKind(kind)));
        }
        Engine::check_length(kind, body).map_err(SwitchError::Engine)?;
        // A submission may be logged with a verdict per transfer ahead of
        // it (SUBMIT_JUDGED): that record must fit too.
        let (inner, submitted) = submission(kind, body);
        let logged = if inner == kind::SUBMIT_TRANSFERS {
            body.len() - submitted.len() + judged_len(submitted.len() / Transfer::SIZE, submitted.len())
        } else {
            body.len()
        };
        if logged > crate::wal::RECORD_BODY_MAX {
            return Err(SwitchError::Engine(EngineError::BadLength { kind, len: body.len() }));
        }
        Ok(())
    }

    pub(super) fn apply_group(
        &mut self,
        links: &[&[u8]],
        group: &[(u16, &[u8])],
        replies: &mut Vec<Reply>,
    ) -> Result<(), WalError> {
        self.waits.clear();
        self.applied.clear();
        let now = if self.draining { self.engine.now_ms() } else { self.clock.now_ms(self.engine.now_ms()) };
        if self.engine.advance(now) > 0 {
            // Timers fired: record the time so a replay fires them too.
            self.wal.append(kind::TICK, now, &[])?;
        }
        // Other shards' entries and acknowledgements first: acknowledged
        // transfers post, and the answers waiting on them go out with this
        // group's.
        let mut scratch = Vec::new();
        for body in links {
            self.wal.append(kind::LINK_IN, now, body)?;
            self.engine.apply(kind::LINK_IN, body, now, &mut scratch).expect("link messages are the shards' own");
        }
        // What timers and links sent is no request's to wait for.
        let _ = self.engine.take_link_wait();
        // The remote scorer, if there is one, sees the whole group's
        // transfers at once and is waited for once, at most the budget.
        let mut verdicts = match &mut self.gate {
            Some(gate) => {
                let submits: Vec<&[u8]> = group
                    .iter()
                    .filter(|(k, b)| Self::acceptable(*k, b).is_ok())
                    .map(|&(k, b)| submission(k, b))
                    .filter(|&(k, _)| k == kind::SUBMIT_TRANSFERS)
                    .map(|(_, b)| b)
                    .collect();
                if submits.is_empty() {
                    Vec::new()
                } else {
                    let judging = std::time::Instant::now();
                    let v = gate.judge(&submits);
                    METRICS.stage(Stage::Aml, judging.elapsed());
                    v
                }
            }
            None => Vec::new(),
        }
        .into_iter();
        let mut appending = std::time::Duration::ZERO;
        for &(kind, body) in group {
            if let Err(e) = Self::acceptable(kind, body) {
                replies.push(Err(e));
                self.waits.push(None);
                let now = std::time::Instant::now();
                self.applied.push((now, now));
                continue;
            }
            let (inner, submitted) = submission(kind, body);
            let mut out = Vec::with_capacity(submitted.len() / 16 * 64);
            let judged = (inner == kind::SUBMIT_TRANSFERS)
                .then(|| verdicts.next())
                .flatten()
                .filter(|v| !v.is_empty())
                .map(|v| with_verdicts(kind, body, &v));
            let (kind_logged, logged) = match &judged {
                Some((k, b)) => (*k, b.as_slice()),
                None => (kind, body),
            };
            // An empty batch changes nothing and needs no log record, nor
            // does a plain resend of stored transfers (answered
            // ALREADY_EXISTS from what is already durable: the group's
            // sync covers any of them stored earlier in it). A resend
            // storm then costs no log.
            let resend = kind_logged == kind::SUBMIT_TRANSFERS && self.engine.all_exact_resends(logged);
            if resend {
                METRICS.resends_unlogged_total.fetch_add(1, Ordering::Relaxed);
            }
            // A lookup is not logged, SCOPED or not.
            if kinds::is_logged(inner) && !submitted.is_empty() && !resend {
                let t = std::time::Instant::now();
                self.wal.append(kind_logged, now, logged)?;
                appending += t.elapsed();
            }
            let t = std::time::Instant::now();
            self.engine.apply(kind_logged, logged, now, &mut out).expect("kind and length checked before logging");
            let done = std::time::Instant::now();
            METRICS.stage(Stage::Apply, done - t);
            self.applied.push((t, done));
            self.answered(inner, out, replies);
        }
        if !appending.is_zero() {
            METRICS.stage(Stage::LogAppend, appending);
        }
        if let Some(gate) = &self.gate {
            // The shard's counts since its last report: shards' gates add.
            let now = gate.stats();
            crate::metrics::METRICS.record_gate(now, self.gate_reported);
            self.gate_reported = now;
        }
        Ok(())
    }

    /// What each of the last group's `n` requests waits for (none if the
    /// group failed before reaching it).
    pub(super) fn take_waits(&mut self, n: usize) -> Vec<Option<Vec<u64>>> {
        let mut waits = std::mem::take(&mut self.waits);
        waits.resize(n, None);
        waits
    }

    /// Files a request's answer, and whether it waits for other shards; an
    /// answer that waits is counted when it is released (settled).
    pub(super) fn answered(&mut self, kind: u16, out: Vec<u8>, replies: &mut Vec<Reply>) {
        let wait = self.engine.take_link_wait();
        if wait.is_none() {
            self.count(kind, &out);
        }
        replies.push(Ok(out));
        self.waits.push(wait);
    }

    /// Counts an answer's result codes, unless the request went to every
    /// shard (then its merged answer is counted, once).
    pub(super) fn count(&self, kind: u16, answers: &[u8]) {
        let broadcast = kinds::spec(kind).is_some_and(|s| s.route == kinds::Route::Broadcast);
        if !broadcast || self.engine.links().shards() == 1 {
            count_results(if kind == kind::SUBMIT_JUDGED { kind::SUBMIT_TRANSFERS } else { kind }, answers);
        }
    }

    /// When the shard must wake without traffic (a hold timer), if ever.
    pub(super) fn wake_in(&self) -> Option<Duration> {
        // A segment that could not be made is tried again while idle.
        let roll = self.wal.roll_pending().then_some(ROLL_POLL);
        if self.clock.is_manual() {
            return roll;
        }
        let Some(due) = self.engine.next_timer_ms() else { return roll };
        let now = self.clock.now_ms(self.engine.now_ms());
        let timer = Duration::from_millis(due.saturating_sub(now)).min(IDLE_WAKE_MAX);
        Some(roll.map_or(timer, |r| r.min(timer)))
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // A snapshot still being written is finished before the shard goes.
        self.finish_snapshot(true);
        // A clean stop marks everything logged as durable, so a later
        // start that finds less refuses instead of losing it.
        if !self.wal.has_uncommitted()
            && let Err(e) = self.wal.write_mark()
        {
            tracing::warn!(error = %e, "the durable mark was not written at stop");
        }
    }
}

/// The request kind and body a shard applies for a queued request: a
/// MULTI record's own part, else the request itself, and in either the
/// request a SCOPED record carries.
pub(crate) fn submission(kind: u16, body: &[u8]) -> (u16, &[u8]) {
    let (_, kind, body) = scoped_submission(kind, body);
    (kind, body)
}

/// [`submission`], with the caller a SCOPED record carries.
pub(crate) fn scoped_submission(kind: u16, body: &[u8]) -> (Option<internal::Caller>, u16, &[u8]) {
    let (kind, body) = match multi::decode(body) {
        Some(m) if kind == kind::MULTI => (m.mine_kind, m.mine),
        _ => (kind, body),
    };
    match internal::decode_scoped(body) {
        Some((caller, inner, request)) if kind == kind::SCOPED => (Some(caller), inner, request),
        _ => (None, kind, body),
    }
}

/// A submission (bare, or a MULTI round's part) logged with the remote
/// scorer's verdicts for its transfers, as one record, so a replay (or
/// every node of a cluster) applies the same verdicts to the same
/// transfers: SUBMIT_JUDGED, or the MULTI record with SUBMIT_JUDGED as its
/// part and everything else it carries unchanged.
pub(super) fn with_verdicts(kind: u16, body: &[u8], verdicts: &[crate::protocol::internal::Verdict]) -> (u16, Vec<u8>) {
    let (caller, _, submitted) = scoped_submission(kind, body);
    let judged = encode_judged(verdicts, submitted);
    // A SCOPED submission stays SCOPED, around the judged one.
    let (judged_kind, judged) = match caller {
        Some(caller) => (kind::SCOPED, internal::encode_scoped(&caller, kind::SUBMIT_JUDGED, &judged)),
        None => (kind::SUBMIT_JUDGED, judged),
    };
    let Some(m) = multi::decode(body).filter(|_| kind == kind::MULTI) else { return (judged_kind, judged) };
    let others = multi::parts(m.parts_raw).expect("acceptable");
    let mut wrapped = Vec::with_capacity(body.len() + judged.len());
    let header = multi::Header { seq: m.seq, complete: m.complete, continues: m.continues };
    multi::encode(header, judged_kind, &judged, m.parts_kind, &others, m.rest, &mut wrapped);
    (kind::MULTI, wrapped)
}

/// Tells the operators' metrics a snapshot was written now.
pub(super) fn snapshot_taken() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    METRICS.last_snapshot_unix_ms.store(now, Ordering::Relaxed);
}

/// Counts the per-record result codes of an answer, and the new AML holds
/// of SUBMIT_TRANSFERS answers (code OK and pending), for the operators.
pub(super) fn count_results(kind: u16, answers: &[u8]) {
    use crate::engine::holds::Holds;
    let Some(codes) = kinds::result_codes(kind, answers) else { return };
    // Codes come in runs (a batch is mostly OK): one atomic add per run,
    // not per record.
    let mut run = (0u16, 0u64);
    for code in codes {
        if code != run.0 && run.1 > 0 {
            METRICS.results(run.0, run.1);
            run.1 = 0;
        }
        run = (code, run.1 + 1);
    }
    if run.1 > 0 {
        METRICS.results(run.0, run.1);
    }
    if kind == kind::SUBMIT_TRANSFERS {
        for r in answers.chunks_exact(records::TransferResult::SIZE) {
            let r = records::TransferResult::decode(r);
            if r.code == 0 && r.state == records::STATE_PENDING {
                METRICS.aml_holds(Holds::from_bits(r.holds).unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::internal::{Caller, Scope, Verdict, decode_judged, decode_scoped, encode_scoped};

    /// A scoped submission judged by the remote scorer stays SCOPED around
    /// the judged record, bare and as a MULTI round's part, so the scope is
    /// checked wherever it is applied.
    #[test]
    fn verdicts_keep_a_submission_scoped() {
        let caller = Caller { channel: 4, scope: Scope { own: true, range: None } };
        let transfers = vec![0u8; 2 * Transfer::SIZE];
        let verdicts = [Verdict { index: 1, reason: crate::aml::Reasons::REMOTE_SCORER }];
        let scoped = encode_scoped(&caller, kind::SUBMIT_TRANSFERS, &transfers);
        let check = |kind: u16, body: &[u8]| {
            let (inner, carried) = submission(kind, body);
            assert_eq!((inner, carried.len()), (kind::SUBMIT_TRANSFERS, transfers.len()));
        };
        check(kind::SCOPED, &scoped);
        let (k, judged) = with_verdicts(kind::SCOPED, &scoped, &verdicts);
        assert_eq!(k, kind::SCOPED);
        let (c, inner, body) = decode_scoped(&judged).expect("SCOPED");
        assert_eq!((c, inner), (caller, kind::SUBMIT_JUDGED));
        assert_eq!(
            decode_judged(body, |_| true).map(|(v, t)| (v, t.len())),
            Some((verdicts.to_vec(), transfers.len()))
        );

        let mut round = Vec::new();
        let header = multi::Header { seq: 1, complete: 0, continues: 0 };
        multi::encode(header, kind::SCOPED, &scoped, kind::SCOPED, &[(1, &scoped)], &[], &mut round);
        check(kind::MULTI, &round);
        let (k, judged) = with_verdicts(kind::MULTI, &round, &verdicts);
        let m = multi::decode(&judged).expect("MULTI");
        assert_eq!((k, m.mine_kind, m.parts_kind), (kind::MULTI, kind::SCOPED, kind::SCOPED));
        assert_eq!(decode_scoped(m.mine).map(|(c, k, _)| (c, k)), Some((caller, kind::SUBMIT_JUDGED)));
        assert!(Engine::check_length(kind::MULTI, &judged).is_ok());
    }
}
