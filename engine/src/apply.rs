//! Commands in: `Engine::apply` checks a command's shape against the table
//! of kinds, applies each record and answers it, and marks answers that
//! must wait for other shards.

use super::*;

impl Engine {
    /// Applies one command at time `now_ms`, appending one response record
    /// per request record to `out`. Lookups change nothing but the clock.
    pub fn apply(&mut self, kind: u16, body: &[u8], now_ms: u64, out: &mut Vec<u8>) -> Result<(), EngineError> {
        // A LINK_IN body is checked by decoding it, once.
        let link_in = if kind == kind::LINK_IN {
            let from_a_peer = |m: &links::LinkIn| m.from < self.links.shards() && m.from != self.links.me;
            let m = links::decode_link_in(body).filter(from_a_peer);
            Some(m.ok_or(EngineError::BadLength { kind, len: body.len() })?)
        } else {
            Self::check_length(kind, body)?;
            None
        };
        self.advance(now_ms);
        let answered = out.len();
        match kind {
            kind::CREATE_ACCOUNTS => self.each(body, out, |e, a: Account, _| e.create_account(&a)),
            kind::SUBMIT_TRANSFERS => self.submit_batch(body, out),
            kind::CONFIRM_STEP_UP => self.each(body, out, |e, s: StepUp, _| e.confirm_step_up(&s)),
            kind::RESOLVE_REVIEW => self.each(body, out, |e, s: StepUp, _| e.resolve_review(&s)),
            kind::CANCEL_TRANSFERS => self.each(body, out, |e, i: Id, _| e.cancel_transfer(i.id)),
            kind::FINALIZE_PENDING => self.each(body, out, |e, f: Finalize, _| e.finalize_pending(&f)),
            kind::LOOKUP_TRANSFERS => self.each(body, out, |e, i: Id, _| e.lookup_transfer(i.id)),
            kind::LOOKUP_BALANCES => self.each(body, out, |e, k: BalanceKey, _| e.lookup_balance(&k)),
            kind::SET_TIME => self.each(body, out, |e, s: SetTime, i| e.set_time(&s, i)),
            kind::SET_FX_RATES => self.each(body, out, |e, r: FxRate, i| e.set_fx_rate(&r, i)),
            kind::FX_QUOTE => self.each(body, out, |e, q: QuoteRequest, _| e.fx_quote(&q)),
            kind::SET_CREDIT_LINES => self.each(body, out, |e, c: CreditLineRecord, _| e.set_credit_line(&c)),
            kind::DISBURSE_LOANS => self.disburse_batch(body, out),
            kind::REPAY_LOANS => self.each(body, out, |e, r: Repay, _| e.repay(&r)),
            kind::LOOKUP_LOANS => self.each(body, out, |e, i: Id, _| e.lookup_loan(i.id)),
            kind::EXPORT_STR => self.export_str(&StrRequest::decode(body), out),
            kind::EXPORT_STR_PAGE => self.export_str_page(&StrPageRequest::decode(body), out),
            kind::STR_PAGE => self.str_page_part(&StrPageRequest::decode(body)).encode(out),
            kind::STR_ROWS => {
                let request = StrRequest::decode(body);
                for row in self.str_rows(u32::from(request.year), u32::from(request.month)) {
                    row.encode(out);
                }
            }
            kind::SUBMIT_JUDGED => {
                let (verdicts, transfers) = internal::decode_judged(body, crate::aml::Reasons::is_logged_verdict)
                    .expect("checked by check_length");
                assert!(self.verdicts.is_empty(), "verdicts are consumed by the record that carries them");
                self.verdicts = verdicts;
                self.submit_batch(transfers, out);
            }
            kind::LINK_IN => self.link_in(&link_in.expect("decoded above")),
            kind::QUOTE_AT => {
                for chunk in body.chunks_exact(QuoteAt::SIZE) {
                    let q = QuoteAt::decode(chunk);
                    let answer = self.fx_quote_as(&q.request, Some((q.quote_id, q.expires_at_ms)));
                    records::push(out, &answer);
                }
            }
            kind::MULTI => {
                let m = multi::decode(body).expect("checked by check_length");
                self.apply(m.mine_kind, m.mine, now_ms, out)?;
                self.multi.applied(&m);
            }
            kind::SCOPED => {
                let (caller, inner, request) = internal::decode_scoped(body).expect("checked by check_length");
                assert!(self.caller.is_none(), "a SCOPED record is never inside another");
                self.caller = Some(caller);
                let applied = self.apply(inner, request, now_ms, out);
                self.caller = None;
                applied?;
            }
            kind::TICK => {}
            other => return Err(EngineError::UnknownKind(other)),
        }
        if let Some(spec) = kinds::spec(kind).filter(|s| s.result_code_at.is_some()) {
            let records = body.len() / spec.request_size;
            assert_eq!(out.len() - answered, records * spec.response_size, "one answer per record of {}", spec.name);
        }
        if self.links.shards() > 1 {
            self.note_link_wait(kind, &out[answered..]);
        }
        Ok(())
    }

    /// Whether an answer shows something another shard has yet to apply:
    /// a transfer in flight, or an account whose notices may be on their
    /// way. Such an answer waits for the acknowledgement.
    pub(crate) fn note_link_wait(&mut self, kind: u16, answers: &[u8]) {
        if !kinds::spec(kind).is_some_and(|s| s.waits_on_links) {
            return;
        }
        // A new account is announced to every other shard; a transfer may
        // be in flight.
        let waits = if kind == kind::CREATE_ACCOUNTS {
            answers.chunks_exact(RecordResult::SIZE).any(|r| {
                let code = RecordResult::decode(r).code;
                code == ResultCode::Ok.as_u16() || code == ResultCode::AlreadyExists.as_u16()
            })
        } else {
            answers.chunks_exact(TransferResult::SIZE).any(in_flight)
        };
        self.link_wait |= waits;
    }

    /// If the last commands' answers must wait for other shards: the
    /// sequence, per shard, each must have acknowledged first. Clears the
    /// mark.
    pub fn take_link_wait(&mut self) -> Option<Vec<u64>> {
        if !std::mem::take(&mut self.link_wait) {
            return None;
        }
        Some(self.links.links.iter().map(|l| l.last_seq).collect())
    }

    /// Brings an answer that waited for other shards up to date: each
    /// transfer it showed in flight is shown as it is now (posted, or
    /// voided because its credit could not be applied: OVERFLOW). Called
    /// once every credit the answer waited for is acknowledged; if no
    /// refund came since `refunds_then` (an earlier [`Engine::refunds`]),
    /// they all posted and no lookup is needed.
    pub fn settle_answers(&self, kind: u16, answers: &mut [u8], refunds_then: Option<u64>) {
        if !matches!(
            kind,
            kind::SUBMIT_TRANSFERS | kind::CONFIRM_STEP_UP | kind::RESOLVE_REVIEW | kind::FINALIZE_PENDING
        ) {
            return;
        }
        let none_refunded = refunds_then == Some(self.refunds);
        for r in answers.chunks_exact_mut(TransferResult::SIZE) {
            if !in_flight(r) {
                continue;
            }
            let then = TransferResult::decode(r);
            if none_refunded {
                let posted = TransferResult { state: records::STATE_POSTED, holds: 0, hold_until_ms: 0, ..then };
                posted.encode(r);
                continue;
            }
            let mut now = self.lookup_transfer(then.transfer_id);
            now.code = if now.state == records::STATE_VOIDED && then.code == ResultCode::Ok.as_u16() {
                ResultCode::Overflow.as_u16()
            } else {
                then.code
            };
            now.encode(r);
        }
    }

    /// The request record size of a kind the engine applies (the table
    /// of kinds).
    #[must_use]
    pub fn request_size(kind: u16) -> Option<usize> {
        kinds::applied_record_size(kind)
    }

    /// Whether `body` is a whole, well-shaped body of `kind` for `apply`.
    pub fn check_length(kind: u16, body: &[u8]) -> Result<(), EngineError> {
        let spec = kinds::spec(kind).filter(|s| s.route != kinds::Route::Session);
        let spec = spec.ok_or(EngineError::UnknownKind(kind))?;
        let (size, one) = (spec.request_size, spec.count == kinds::CountRule::One);
        if !body.len().is_multiple_of(size)
            || (kind == kind::TICK && !body.is_empty())
            || (one && body.len() != size)
            || (kind == kind::SUBMIT_JUDGED
                && internal::decode_judged(body, crate::aml::Reasons::is_logged_verdict).is_none())
            || (kind == kind::LINK_IN && links::decode_link_in(body).is_none())
            || (kind == kind::MULTI && !Self::multi_well_formed(body))
            || (kind == kind::SCOPED && !Self::scoped_well_formed(body))
        {
            return Err(EngineError::BadLength { kind, len: body.len() });
        }
        Ok(())
    }

    /// Whether a SCOPED body decodes and carries a kind that names
    /// accounts, whole.
    pub(crate) fn scoped_well_formed(body: &[u8]) -> bool {
        internal::decode_scoped(body).is_some_and(|(_, inner, request)| {
            internal::is_scoped_kind(inner) && Self::check_length(inner, request).is_ok()
        })
    }

    /// Whether a MULTI body decodes and its parts are bodies of logged
    /// kinds the engine applies (never another MULTI).
    pub(crate) fn multi_well_formed(body: &[u8]) -> bool {
        let Some(m) = multi::decode(body) else { return false };
        let part_ok = |kind: u16, body: &[u8]| {
            kinds::is_logged(kind)
                && !matches!(kind, kind::MULTI | kind::TICK | kind::LINK_IN)
                && Self::check_length(kind, body).is_ok()
        };
        part_ok(m.mine_kind, m.mine)
            && multi::parts(m.parts_raw).is_some_and(|parts| parts.iter().all(|(_, b)| part_ok(m.parts_kind, b)))
            && (m.rest.is_empty() || part_ok(m.parts_kind, m.rest))
    }

    pub(crate) fn each<R: Record, A: Record>(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
        mut f: impl FnMut(&mut Self, R, u64) -> A,
    ) {
        out.reserve(body.len() / R::SIZE * A::SIZE);
        for (i, chunk) in body.chunks_exact(R::SIZE).enumerate() {
            let answer = f(self, R::decode(chunk), i as u64);
            records::push(out, &answer);
        }
    }

    /// Whether the request being applied may act on `account` (debit it,
    /// step up, cancel or finalize its transfers, draw or repay its loans,
    /// read it): always, unless it came SCOPED by a channel with a scope
    /// (`internal::Scope`) that leaves the account out.
    #[inline]
    pub(crate) fn in_scope(&self, account: u64) -> bool {
        let Some(caller) = self.caller.filter(|c| !c.scope.is_all()) else { return true };
        let in_range = caller.scope.range.is_some_and(|(first, last)| (first..=last).contains(&account));
        let opened =
            || caller.channel != 0 && self.book.account(account).is_some_and(|a| a.opened_by == caller.channel);
        in_range || (caller.scope.own && opened())
    }

    // ---- accounts -------------------------------------------------------
}
