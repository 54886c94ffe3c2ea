//! SUBMIT_TRANSFERS: the checks in the contract's order, AML's judgement,
//! and the accepted transfer's movement of money (posted, held or sent
//! across shards).

use super::*;

impl Engine {
    /// SUBMIT_TRANSFERS for a whole body, in order. While it applies record
    /// `i` it prefetches the index slots of record `i + PREFETCH_AHEAD` and
    /// the account entries of record `i + PREFETCH_AHEAD / 2` (whose slots
    /// are in cache by then), so the cache misses of many records overlap
    /// instead of being waited for one by one. Prefetching changes no state.
    pub(crate) fn submit_batch(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let n = body.len() / Transfer::SIZE;
        let record = |i: usize| Transfer::decode(&body[i * Transfer::SIZE..(i + 1) * Transfer::SIZE]);
        out.reserve(n * TransferResult::SIZE);
        for i in 0..n {
            if i + PREFETCH_AHEAD < n {
                let t = record(i + PREFETCH_AHEAD);
                self.transfers.prefetch(t.transfer_id);
                // Transfer and loan ids share one space.
                self.credit.prefetch_loan(t.transfer_id);
                if t.flags & records::TRANSFER_AUTO_CREDIT != 0
                    && let Some(dc) = CurrencyIndex::of(t.debit_currency)
                {
                    self.credit.prefetch_line(t.debit_account, dc, false);
                }
                self.book.prefetch_slot(t.debit_account);
                self.book.prefetch_slot(t.credit_account);
                if let Some((dc, cc)) = conversion(&t) {
                    // A conversion usually touches a currency that is not
                    // the account's main one.
                    self.book.prefetch_other_slot(t.debit_account, dc);
                    self.book.prefetch_other_slot(t.credit_account, cc);
                }
            }
            if i + PREFETCH_AHEAD / 2 < n {
                let t = record(i + PREFETCH_AHEAD / 2);
                self.book.prefetch_entry(t.debit_account);
                if self.config.aml.enabled
                    && let Some(at) = self.book.candidate(t.debit_account)
                {
                    let state = self.aml.get(at);
                    index::prefetch(&state.profile);
                    if self.config.aml.behaviour && self.config.aml.model == crate::aml::BehaviourModel::V3 {
                        // Model 3's payee memory (one line more).
                        index::prefetch(&state.payees);
                    }
                    if self.config.aml.mule_runs() {
                        index::prefetch(&state.inbound);
                    }
                }
                if self.config.aml.mule_runs()
                    && let Some(at) = self.book.candidate(t.credit_account)
                {
                    // The payee's side of the mule rule (one line).
                    index::prefetch(&self.aml.get(at).inbound);
                }
                if t.flags & records::TRANSFER_AUTO_CREDIT != 0
                    && let Some(dc) = CurrencyIndex::of(t.debit_currency)
                {
                    self.credit.prefetch_line(t.debit_account, dc, true);
                }
                self.book.prefetch_entry(t.credit_account);
                if let Some((dc, cc)) = conversion(&t) {
                    self.book.prefetch_other_entry(t.debit_account, dc);
                    self.book.prefetch_other_entry(t.credit_account, cc);
                }
            }
            let external = self.external_verdict(i as u32);
            let answer = self.submit_judged(&record(i), Holds::NONE, 0, external);
            records::push(out, &answer);
        }
        // Verdicts for records that were rejected (or not outgoing) lapse.
        self.verdicts.clear();
    }

    /// Whether every record of a SUBMIT_TRANSFERS body is an exact resend
    /// of a stored transfer (each would be answered ALREADY_EXISTS and
    /// change nothing), so the request need not be logged.
    #[must_use]
    pub fn all_exact_resends(&self, body: &[u8]) -> bool {
        !body.is_empty()
            && body.len().is_multiple_of(Transfer::SIZE)
            && body.chunks_exact(Transfer::SIZE).all(|r| {
                let t = Transfer::decode(r);
                t.transfer_id != 0
                    && self.transfers.find(t.transfer_id).is_some_and(|at| self.transfers.get(at).same_request(&t))
            })
    }

    /// The logged verdict for record `index` of the SUBMIT_TRANSFERS being
    /// applied, as reason bits (0 for none).
    pub(crate) fn external_verdict(&self, index: u32) -> u16 {
        if self.verdicts.is_empty() {
            return 0;
        }
        self.verdicts.binary_search_by_key(&index, |v| v.index).map_or(0, |at| self.verdicts[at].reason)
    }

    /// SUBMIT_TRANSFERS, one record, with the holds the transfer's own flags
    /// ask for.
    pub fn submit_transfer(&mut self, t: &Transfer) -> TransferResult {
        self.submit_with_holds(t, Holds::NONE, 0)
    }

    /// Submits a transfer with extra holds decided by the caller, and the
    /// end of a cooling-off period if `extra` has COOLING_OFF (tests of the
    /// hold machinery use this; AML still judges on top).
    pub fn submit_with_holds(&mut self, t: &Transfer, extra: Holds, cooling_until_ms: u64) -> TransferResult {
        self.submit_judged(t, extra, cooling_until_ms, 0)
    }

    /// Submits a transfer: the checks in the contract's precedence (§5),
    /// then AML for an outgoing one (with `external`, a logged verdict's
    /// reason bits), then posting or holding.
    pub(crate) fn submit_judged(
        &mut self,
        t: &Transfer,
        extra: Holds,
        cooling_until_ms: u64,
        external: u16,
    ) -> TransferResult {
        let accepted = match self.check_transfer(t) {
            Err(code) => return self.reject(t.transfer_id, code),
            Ok(accepted) => accepted,
        };
        let mut holds = extra;
        if t.flags & records::TRANSFER_PENDING != 0 {
            holds = holds.with(Holds::CLIENT);
        }
        let mut judged = None;
        let outgoing =
            self.book.entry(accepted.debit).kind == AccountKind::Customer && accepted.debit != accepted.credit;
        if self.config.aml.enabled && outgoing {
            let mut j = self.judge(t, &accepted);
            if external != 0 {
                j.holds = j.holds.with(Holds::MANUAL_REVIEW);
                j.reasons.0 |= external;
            }
            holds = holds.with(j.holds);
            judged = Some(j);
        }
        let cooling = judged.map_or(cooling_until_ms, |j| cooling_until_ms.max(j.cooling_until_ms));
        self.accept(t, &accepted, holds, cooling, judged)
    }

    /// AML's judgement of an outgoing transfer that will be accepted (its
    /// profile records it).
    pub(crate) fn judge(&mut self, t: &Transfer, a: &Accepted) -> Judgement {
        let o = Outgoing {
            now_ms: self.now_ms,
            debit_currency: a.debit_currency,
            debit_amount: a.debit_amount,
            credit_account: t.credit_account,
            credit_currency: a.credit_currency,
            destination_country: t.destination_country,
        };
        if !self.config.aml.mule_runs() {
            return self.aml.get_mut(a.debit.index()).judge(&self.config.aml, &self.rates, &o);
        }
        // The mule rule first: a transfer it holds is not learned by level 3
        // (its payee stays new) unless an operator passes it.
        let value = crate::aml::hkd_value(a.debit_amount, a.debit_currency, &self.rates);
        let state = self.aml.get(a.debit.index());
        // What the account has left after it (an AUTO_CREDIT short of money
        // has nothing), in HKD, if strangers paid it anything.
        let balance_after = if state.inbound.recent_in == 0 {
            0
        } else {
            let left = self.book.balance_at(a.debit, a.debit_currency).available() - i128::from(a.debit_amount);
            let left = u64::try_from(left).unwrap_or(0);
            crate::aml::hkd_value(left, a.debit_currency, &self.rates).map_or(u64::MAX, mule::cents)
        };
        let leaving = mule::Leaving {
            now_ms: self.now_ms,
            value: value.map_or(0, mule::cents),
            new_payee: state.profile.is_new_payee(&o),
            history: state.profile.count,
            balance_after,
        };
        let floor = self.config.aml.mule_min_inbound_hkd_minor;
        let state = self.aml.get_mut(a.debit.index());
        let (reasons, evidence) = state.inbound.judge(floor, &leaving);
        let mut j = state.judge_learning(&self.config.aml, value, &o, reasons == 0);
        // The inbound state's copy of whom the account has paid (stored
        // only when it changed: a clean line is not written back).
        if state.inbound.paid != state.profile.payees {
            state.inbound.paid = state.profile.payees;
        }
        if reasons != 0 {
            j.holds = j.holds.with(Holds::MULE_REVIEW);
            j.reasons.0 |= reasons;
            j.mule = evidence;
        }
        j
    }

    /// The mule rule learns of money credited to a customer `credit` from
    /// the customer whose `mule::sender_key` is `sender`: a stranger's
    /// (someone the account never paid) feeds its inbound state.
    pub(crate) fn feed_inbound(&mut self, credit: AccountPos, sender: u64, currency: CurrencyIndex, amount: u64) {
        // Only the inbound state's cache line: it holds the payee filter's copy.
        if !self.aml.get(credit.index()).inbound.knows(sender)
            && let Some(value) = crate::aml::hkd_value(amount, currency, &self.rates)
        {
            self.aml.get_mut(credit.index()).inbound.credit(self.now_ms, sender, mule::cents(value));
        }
    }

    /// The answer for a rejected or unknown id: its stored state if the id
    /// names a stored transfer, else zeros.
    /// Whether the request being applied may see a stored transfer: its
    /// scope covers one of the transfer's accounts.
    pub(crate) fn may_see(&self, at: TransferIndex) -> bool {
        let t = self.transfers.get(at);
        self.in_scope(t.debit_account) || self.in_scope(t.credit_account)
    }

    pub(crate) fn reject(&self, id: u128, code: ResultCode) -> TransferResult {
        match self.transfers.find(id) {
            // A transfer out of the channel's scope is not shown to it.
            Some(at) if id != 0 && self.may_see(at) => self.result_of(at, code),
            _ => TransferResult { transfer_id: id, code: code.as_u16(), ..TransferResult::default() },
        }
    }

    pub(crate) fn check_transfer(&self, t: &Transfer) -> Result<Accepted, ResultCode> {
        if t.transfer_id == 0 {
            return Err(ResultCode::InvalidId);
        }
        if let Some(at) = self.transfers.find(t.transfer_id) {
            return Err(if self.transfers.get(at).same_request(t) {
                ResultCode::AlreadyExists
            } else {
                ResultCode::IdConflict
            });
        }
        if self.names_a_loan(t.transfer_id) {
            // Loan and transfer ids share one space.
            return Err(ResultCode::IdConflict);
        }
        let debit = self.book.find(t.debit_account).ok_or(ResultCode::DebitAccountNotFound)?;
        let credit = match self.book.find(t.credit_account) {
            Some(credit) => credit,
            // Another shard's customer: the money goes through this shard's
            // part of INTERSHARD (`links`).
            None if self.links.remote.contains(&t.credit_account) => self.book.system(book::INTERSHARD),
            None => return Err(ResultCode::CreditAccountNotFound),
        };
        if t.debit_account == t.credit_account && t.debit_currency == t.credit_currency {
            return Err(ResultCode::SameAccount);
        }
        if !may_debit(t.debit_account) || !may_credit(t.credit_account) || !self.in_scope(t.debit_account) {
            return Err(ResultCode::Forbidden);
        }
        if t.flags & !records::TRANSFER_FLAGS_DEFINED != 0 {
            // The wire refuses this frame whole (MALFORMED) before it gets
            // here; a library caller gets a per-record code.
            return Err(ResultCode::InvalidField);
        }
        if t.amount == 0 {
            return Err(ResultCode::InvalidAmount);
        }
        let debit_currency = CurrencyIndex::of(t.debit_currency).ok_or(ResultCode::UnknownCurrency)?;
        let credit_currency = CurrencyIndex::of(t.credit_currency).ok_or(ResultCode::UnknownCurrency)?;
        if !money::is_destination(t.destination_country) {
            return Err(ResultCode::UnknownCountry);
        }
        let side = if t.flags & records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY != 0 { Side::Credit } else { Side::Debit };
        let (debit_amount, credit_amount, rate_e9, quote) = if t.fx_quote_id != 0 {
            let q = self
                .quotes
                .usable(t.fx_quote_id, debit_currency, credit_currency, t.amount, side)
                .ok_or(ResultCode::QuoteInvalid)?;
            (q.debit_amount, q.credit_amount, q.rate.rate_e9().expect("a quote's rate fits"), Some(t.fx_quote_id))
        } else if debit_currency == credit_currency {
            (t.amount, t.amount, RATE_ONE_E9, None)
        } else {
            let rate = self.rates.rate(debit_currency, credit_currency).ok_or(ResultCode::NoFxRate)?;
            let (d, c) = fx::convert(t.amount, side, debit_currency, credit_currency, rate).map_err(fx_code)?;
            (d, c, rate.rate_e9().expect("convert checked the rate fits"), None)
        };
        if i64::try_from(debit_amount).is_err() || i64::try_from(credit_amount).is_err() {
            // A leg no balance can hold (a same-currency amount over i64).
            return Err(ResultCode::Overflow);
        }
        // Every leg must fit: the credit, the debit, and through FX_POSITION
        // for a conversion (it takes the debit currency in and pays the credit
        // currency out).
        let fx = if debit_currency == credit_currency { None } else { Some(self.book.system(book::FX_POSITION)) };
        check_credit(&self.book.balance_at(credit, credit_currency), credit_amount)?;
        if let Some(fx) = fx {
            check_credit(&self.book.balance_at(fx, debit_currency), debit_amount)?;
            check_system_debit(&self.book.balance_at(fx, credit_currency), credit_amount)?;
        }
        let debit_balance = self.book.balance_at(debit, debit_currency);
        let (mut auto_credit, mut auto_credit_line) = (0, 0);
        match self.book.entry(debit).kind {
            AccountKind::System => check_system_debit(&debit_balance, debit_amount)?,
            AccountKind::Customer => {
                let available = debit_balance.available();
                if available < i128::from(debit_amount) {
                    if t.flags & records::TRANSFER_AUTO_CREDIT == 0 {
                        return Err(ResultCode::InsufficientFunds);
                    }
                    // A micro-loan for exactly the shortfall, if the line allows.
                    let shortfall = u64::try_from(i128::from(debit_amount) - available).expect("at most the amount");
                    auto_credit_line = self.check_micro_credit(debit, debit_currency, shortfall)?;
                    auto_credit = shortfall;
                }
            }
        }
        Ok(Accepted {
            debit,
            credit,
            debit_currency,
            credit_currency,
            debit_amount,
            credit_amount,
            rate_e9,
            quote,
            auto_credit,
            auto_credit_line,
        })
    }

    pub(crate) fn accept(
        &mut self,
        t: &Transfer,
        a: &Accepted,
        holds: Holds,
        cooling_until_ms: u64,
        judged: Option<Judgement>,
    ) -> TransferResult {
        let mut stored =
            StoredTransfer::new(t, a.debit_currency, a.credit_currency, a.debit_amount, a.credit_amount, a.rate_e9);
        if let Some(id) = a.quote {
            // Spent by the transfer it locked the rate for, posted or held;
            // the other shards' copies go too.
            self.quotes.remove(id);
            self.links.push_to_others(EntryKind::QuoteSpent, u128::from(id), 0);
            self.link_wait |= self.links.shards() > 1;
        }
        if a.auto_credit > 0 {
            // The shortfall is lent first, in the same step.
            self.draw_micro_loan(t, a);
        }
        let remote = a.credit == self.book.system(book::INTERSHARD);
        if holds.is_empty() && !remote {
            self.move_funds(a.debit, a.credit, &stored);
            let at = self.transfers.insert(stored);
            return self.result_of(at, ResultCode::Ok);
        }
        if holds.is_empty() {
            // To another shard's customer: reserved like a pending transfer,
            // in flight at once, posted when that shard has applied its
            // credit.
            stored.state = records::STATE_PENDING;
            stored.holds = Holds::IN_FLIGHT.bits();
            self.reserve(a.debit, a.credit, &stored, true);
            let at = self.transfers.insert(stored);
            let counted = judged.map_or(0, |j| j.counted);
            let flight = PendingEntry {
                at,
                submitted_ms: self.now_ms,
                cooling_until_ms: 0,
                due_ms: NEVER,
                counted,
                case: NO_CASE,
            };
            self.send_credit(at, flight);
            return self.result_of(at, ResultCode::Ok);
        }
        stored.state = records::STATE_PENDING;
        stored.holds = holds.bits();
        self.reserve(a.debit, a.credit, &stored, true);
        let at = self.transfers.insert(stored);
        let mut case = NO_CASE;
        let aml_holds = Holds::FACE_REVIEW
            .with(Holds::SMS_OTP)
            .with(Holds::COOLING_OFF)
            .with(Holds::MANUAL_REVIEW)
            .with(Holds::MULE_REVIEW);
        if let Some(j) = judged.filter(|j| !j.holds.is_empty()) {
            case = self.cases.len() as u32;
            // An arena of chunks: growth never copies what is there (a Vec
            // of millions of cases stalled the shard when it doubled).
            self.cases.push(Case {
                transfer_id: t.transfer_id,
                submitted_ms: self.now_ms,
                closed_ms: 0,
                hkd_value: j.hkd_value,
                day_total: j.day_total,
                reasons: j.reasons,
                holds: (holds.bits() & aml_holds.bits()),
                outcome: Outcome::Pending,
                mule: j.mule,
            });
        }
        let counted = judged.map_or(0, |j| j.counted);
        let mut entry = PendingEntry { at, submitted_ms: self.now_ms, cooling_until_ms, due_ms: 0, counted, case };
        entry.due_ms = entry.soonest_end(holds, &self.config.hold_windows);
        self.pending.insert(t.transfer_id, entry);
        // A window already closed (a zero-length window, or a cooling-off
        // period in the past) fires now, in the same step.
        self.advance(self.now_ms);
        self.result_of(at, ResultCode::Ok)
    }

    /// Posts a transfer's movement: debit leg and credit leg, through
    /// FX_POSITION when the currencies differ. Checks were done at
    /// submission; a failure here is a broken invariant.
    pub(crate) fn move_funds(&mut self, debit: AccountPos, credit: AccountPos, s: &StoredTransfer) {
        let debit_amount = i64::try_from(s.debit_amount).expect("amount checked at submission");
        let credit_amount = i64::try_from(s.credit_amount).expect("amount checked at submission");
        if s.debit_currency == s.credit_currency {
            assert_eq!(debit_amount, credit_amount, "same-currency legs are equal");
        } else {
            let fx = self.book.system(book::FX_POSITION);
            self.add(fx, s.debit_currency, debit_amount);
            self.add(fx, s.credit_currency, -credit_amount);
        }
        self.add(debit, s.debit_currency, -debit_amount);
        self.add(credit, s.credit_currency, credit_amount);
        if self.config.aml.mule_runs()
            && debit != credit
            && self.book.entry(credit).kind == AccountKind::Customer
            && self.book.entry(debit).kind == AccountKind::Customer
        {
            self.feed_inbound(credit, mule::sender_key(s.debit_account), s.credit_currency, s.credit_amount);
        }
    }

    pub(crate) fn add(&mut self, at: AccountPos, currency: CurrencyIndex, delta: i64) {
        let customer = self.book.entry(at).kind == AccountKind::Customer;
        let balance = self.book.balance_at_mut(at, currency);
        balance.posted = balance.posted.checked_add(delta).expect("balance overflow checked at submission");
        if customer {
            assert!(balance.posted >= 0, "customer balance negative");
            assert!(balance.held <= balance.posted as u64, "customer held above posted");
        }
    }
}

/// What the checks of an accepted transfer decided.
pub(crate) struct Accepted {
    pub(crate) debit: AccountPos,
    pub(crate) credit: AccountPos,
    /// The quote it spends, if any.
    pub(crate) quote: Option<u64>,
    pub(crate) debit_currency: CurrencyIndex,
    pub(crate) credit_currency: CurrencyIndex,
    pub(crate) debit_amount: u64,
    pub(crate) credit_amount: u64,
    rate_e9: u64,
    /// The micro-loan an AUTO_CREDIT transfer draws (0 if none), and the
    /// position of the line it draws on.
    pub(crate) auto_credit: u64,
    pub(crate) auto_credit_line: u32,
}

/// The two currencies of a transfer that converts, both known.
#[inline]
pub(crate) fn conversion(t: &Transfer) -> Option<(CurrencyIndex, CurrencyIndex)> {
    if t.debit_currency == t.credit_currency {
        return None;
    }
    Some((CurrencyIndex::of(t.debit_currency)?, CurrencyIndex::of(t.credit_currency)?))
}

/// The result code of a failed conversion.
pub(crate) fn fx_code(e: FxError) -> ResultCode {
    match e {
        FxError::NoRate => ResultCode::NoFxRate,
        FxError::RoundsToZero => ResultCode::InvalidAmount,
        FxError::Overflow => ResultCode::Overflow,
    }
}

/// Whether a balance can take a credit (posted plus promised credits stay
/// within i64).
pub(crate) fn check_credit(b: &Balance, amount: u64) -> Result<(), ResultCode> {
    if i128::from(b.posted) + i128::from(b.incoming) + i128::from(amount) > i128::from(i64::MAX) {
        return Err(ResultCode::Overflow);
    }
    Ok(())
}

/// Whether a system account's balance can pay `amount` (it may go negative,
/// but not past i64).
pub(crate) fn check_system_debit(b: &Balance, amount: u64) -> Result<(), ResultCode> {
    if b.available() - i128::from(amount) < i128::from(i64::MIN) || b.held.checked_add(amount).is_none() {
        return Err(ResultCode::Overflow);
    }
    Ok(())
}

/// Whether SUBMIT_TRANSFERS may debit an account: not FX_POSITION,
/// LOAN_FUNDING, REMITTANCE_OUT, INTEREST_INCOME or INTERSHARD.
pub(crate) fn may_debit(account: u64) -> bool {
    !matches!(
        account,
        book::FX_POSITION | book::LOAN_FUNDING | book::REMITTANCE_OUT | book::INTEREST_INCOME | book::INTERSHARD
    )
}

/// Whether SUBMIT_TRANSFERS may credit an account: not FX_POSITION,
/// LOAN_FUNDING, INTEREST_INCOME or INTERSHARD.
pub(crate) fn may_credit(account: u64) -> bool {
    !matches!(account, book::FX_POSITION | book::LOAN_FUNDING | book::INTEREST_INCOME | book::INTERSHARD)
}
