//! Pending transfers: step-ups, reviews, cancels and finalizes, holds
//! released or timed out, and a transfer posted or voided at the end of its
//! wait.

use super::*;

impl Engine {
    /// The wire result for a stored transfer.
    pub(crate) fn result_of(&self, at: TransferIndex, code: ResultCode) -> TransferResult {
        let stored = self.transfers.get(at);
        let mut result = stored.result(code.as_u16());
        if stored.flags & records::TRANSFER_AUTO_CREDIT != 0 {
            result.auto_credit_amount = self.micro_loan_of(stored.id());
        }
        if stored.state == records::STATE_PENDING && stored.holds != Holds::IN_FLIGHT.bits() {
            result.hold_until_ms = self.pending.get(stored.id()).expect("pending entry").due_ms;
        }
        result
    }

    /// Finds a transfer a hold operation names, in precedence order:
    /// INVALID_ID, TRANSFER_NOT_FOUND.
    pub(crate) fn find_for_hold(&self, id: u128) -> Result<TransferIndex, ResultCode> {
        if id == 0 {
            return Err(ResultCode::InvalidId);
        }
        self.transfers.find(id).ok_or(ResultCode::TransferNotFound)
    }

    /// [`Engine::find_for_hold`], then FORBIDDEN if the request's scope
    /// leaves out the account the transfer debits.
    pub(crate) fn find_in_scope(&self, id: u128) -> Result<TransferIndex, ResultCode> {
        let at = self.find_for_hold(id)?;
        if !self.in_scope(self.transfers.get(at).debit_account) {
            return Err(ResultCode::Forbidden);
        }
        Ok(at)
    }

    /// Checks a transfer is pending and waiting for `hold`: NOT_PENDING,
    /// WRONG_METHOD.
    pub(crate) fn check_waiting(&self, at: TransferIndex, hold: Holds) -> Result<(), ResultCode> {
        let stored = self.transfers.get(at);
        if stored.state != records::STATE_PENDING {
            return Err(ResultCode::NotPending);
        }
        if stored.holds == Holds::IN_FLIGHT.bits() {
            return Err(ResultCode::InFlight);
        }
        if !Holds::from_bits(stored.holds).expect("valid holds").contains(hold) {
            return Err(ResultCode::WrongMethod);
        }
        Ok(())
    }

    /// CONFIRM_STEP_UP, one record: FACE or SMS_OTP outcome from the
    /// channel. Precedence: INVALID_ID, TRANSFER_NOT_FOUND, FORBIDDEN (out
    /// of the channel's scope, or method 3, an operator's), NOT_PENDING,
    /// WRONG_METHOD.
    pub fn confirm_step_up(&mut self, s: &StepUp) -> TransferResult {
        let hold = match s.method {
            records::METHOD_FACE => Holds::FACE_REVIEW,
            records::METHOD_SMS_OTP => Holds::SMS_OTP,
            _ => Holds::MANUAL_REVIEW,
        };
        let outcome = self.find_in_scope(s.transfer_id).and_then(|at| {
            if hold == Holds::MANUAL_REVIEW {
                return Err(ResultCode::Forbidden);
            }
            check_outcome(s.outcome)?;
            self.check_waiting(at, hold).map(|()| at)
        });
        self.step_up_outcome(s, hold, outcome)
    }

    /// RESOLVE_REVIEW, one record: an operator's verdict on the operator's
    /// holds, MANUAL_REVIEW and MULE_REVIEW (a PASS releases whichever the
    /// transfer has, and a PASS of a MULE_REVIEW clears the account's mule
    /// flag). Precedence: INVALID_ID, TRANSFER_NOT_FOUND, FORBIDDEN (out of
    /// the channel's scope), INVALID_FIELD (method other than 3),
    /// NOT_PENDING, WRONG_METHOD.
    pub fn resolve_review(&mut self, s: &StepUp) -> TransferResult {
        let mut hold = Holds::MANUAL_REVIEW;
        let outcome = self.find_in_scope(s.transfer_id).and_then(|at| {
            if s.method != records::METHOD_MANUAL_REVIEW {
                return Err(ResultCode::InvalidField);
            }
            check_outcome(s.outcome)?;
            let held = Holds::from_bits(self.transfers.get(at).holds).expect("valid holds");
            if held.contains(Holds::MULE_REVIEW) {
                hold = held.intersect(Holds::OPERATOR_REVIEW);
            }
            self.check_waiting(at, hold).map(|()| at)
        });
        if let Ok(at) = outcome
            && hold.contains(Holds::MULE_REVIEW)
            && s.outcome == records::OUTCOME_PASS
        {
            let stored = self.transfers.get(at);
            let submitted_ms = self.pending.get(stored.id()).expect("pending entry").submitted_ms;
            let debit = self.book.find(stored.debit_account).expect("debit account exists");
            let now = self.now_ms;
            self.aml.get_mut(debit.index()).inbound.passed(submitted_ms, now);
        }
        self.step_up_outcome(s, hold, outcome)
    }

    pub(crate) fn step_up_outcome(
        &mut self,
        s: &StepUp,
        hold: Holds,
        found: Result<TransferIndex, ResultCode>,
    ) -> TransferResult {
        let at = match found {
            Ok(at) => at,
            Err(code) => return self.reject(s.transfer_id, code),
        };
        if s.outcome == records::OUTCOME_PASS {
            self.release(at, hold);
        } else {
            self.void(at, VoidReason::Failed);
        }
        self.result_of(at, ResultCode::Ok)
    }

    /// CANCEL_TRANSFERS, one record: the customer voids a pending transfer
    /// whatever holds it. Precedence: INVALID_ID, TRANSFER_NOT_FOUND,
    /// FORBIDDEN (out of the channel's scope), NOT_PENDING.
    pub fn cancel_transfer(&mut self, id: u128) -> TransferResult {
        let at = match self.find_in_scope(id) {
            Ok(at) => at,
            Err(code) => return self.reject(id, code),
        };
        if self.transfers.get(at).state != records::STATE_PENDING {
            return self.reject(id, ResultCode::NotPending);
        }
        if self.transfers.get(at).holds == Holds::IN_FLIGHT.bits() {
            return self.reject(id, ResultCode::InFlight);
        }
        self.void(at, VoidReason::Cancelled);
        self.result_of(at, ResultCode::Ok)
    }

    /// FINALIZE_PENDING, one record: the CLIENT hold only. Precedence:
    /// INVALID_ID, TRANSFER_NOT_FOUND, FORBIDDEN (out of the channel's
    /// scope), INVALID_FIELD (action), NOT_PENDING, WRONG_METHOD.
    pub fn finalize_pending(&mut self, f: &Finalize) -> TransferResult {
        let found = self.find_in_scope(f.transfer_id).and_then(|at| {
            if !matches!(f.action, records::FINALIZE_POST | records::FINALIZE_VOID) {
                return Err(ResultCode::InvalidField);
            }
            self.check_waiting(at, Holds::CLIENT).map(|()| at)
        });
        let at = match found {
            Ok(at) => at,
            Err(code) => return self.reject(f.transfer_id, code),
        };
        if f.action == records::FINALIZE_POST {
            self.release(at, Holds::CLIENT);
        } else {
            self.void(at, VoidReason::ClientVoided);
        }
        self.result_of(at, ResultCode::Ok)
    }

    /// Releases one hold; posts the transfer if none remains.
    pub(crate) fn release(&mut self, at: TransferIndex, hold: Holds) {
        let stored = self.transfers.get_mut(at);
        let id = stored.id();
        let remaining = Holds::from_bits(stored.holds).expect("valid holds").without(hold);
        stored.holds = remaining.bits();
        if remaining.is_empty() {
            self.post_pending(at);
        } else {
            let entry = *self.pending.get(id).expect("pending entry");
            self.pending.reschedule(id, entry.soonest_end(remaining, &self.config.hold_windows));
        }
    }

    /// Posts a pending transfer whose holds are all released. One to
    /// another shard's customer goes in flight first (its credit is sent)
    /// and posts when that shard acknowledges it.
    pub(crate) fn post_pending(&mut self, at: TransferIndex) {
        let stored = *self.transfers.get(at);
        let entry = self.pending.remove(stored.id());
        let credit = self.credit_leg(stored.credit_account);
        if credit == self.book.system(book::INTERSHARD) {
            self.transfers.get_mut(at).holds = Holds::IN_FLIGHT.bits();
            self.send_credit(at, PendingEntry { due_ms: NEVER, cooling_until_ms: 0, ..entry });
            return;
        }
        self.post(at, &entry, credit);
    }

    /// Moves a reserved transfer's money and marks it posted.
    pub(crate) fn post(&mut self, at: TransferIndex, entry: &PendingEntry, credit: AccountPos) {
        let stored = *self.transfers.get(at);
        self.confirm_behaviour(entry);
        self.close_case(entry, Outcome::Passed);
        let debit = self.book.find(stored.debit_account).expect("debit account exists");
        self.reserve(debit, credit, &stored, false);
        self.move_funds(debit, credit, &stored);
        let s = self.transfers.get_mut(at);
        s.state = records::STATE_POSTED;
        s.holds = 0;
    }

    pub(crate) fn void(&mut self, at: TransferIndex, reason: VoidReason) {
        let entry = self.pending.remove(self.transfers.get(at).id());
        self.void_entry(at, &entry, reason);
    }

    /// Voids a pending transfer (or one in flight) whose timing is `entry`.
    pub(crate) fn void_entry(&mut self, at: TransferIndex, entry: &PendingEntry, reason: VoidReason) {
        let stored = *self.transfers.get(at);
        assert_eq!(stored.state, records::STATE_PENDING, "only a pending transfer is voided");
        self.unreserve(&stored);
        let s = self.transfers.get_mut(at);
        s.state = records::STATE_VOIDED;
        s.holds = 0;
        if stored.flags & records::TRANSFER_AUTO_CREDIT != 0 {
            // Its micro-loan is repaid at once, with no interest.
            self.repay_micro_loan(stored.id());
        }
        // A voided transfer no longer counts toward its day's total.
        let debit = self.book.find(stored.debit_account).expect("debit account exists");
        let state = self.aml.get_mut(debit.index());
        state.profile.uncount(entry.submitted_ms, entry.counted);
        // Nor as money the account sent on (the mule rule).
        let now = self.now_ms;
        state.inbound.take_back(crate::aml::mule::cents(entry.counted), entry.submitted_ms, now);
        let outcome = match reason {
            VoidReason::Failed | VoidReason::Refused => Outcome::Failed,
            VoidReason::Expired => Outcome::Expired,
            VoidReason::Cancelled | VoidReason::ClientVoided => Outcome::Cancelled,
        };
        self.close_case(entry, outcome);
    }

    /// Records how an AML case ended, if the transfer was one: when its
    /// window closed for an expiry (the clock may pass it later), else now.
    pub(crate) fn close_case(&mut self, entry: &PendingEntry, outcome: Outcome) {
        if entry.case != NO_CASE {
            let at = if outcome == Outcome::Expired { entry.due_ms } else { self.now_ms };
            let case = self.cases.get_mut(entry.case);
            assert_eq!(case.outcome, Outcome::Pending, "a case closes once");
            case.outcome = outcome;
            case.closed_ms = at;
        }
    }

    pub(crate) fn unreserve(&mut self, s: &StoredTransfer) {
        let debit = self.book.find(s.debit_account).expect("debit account exists");
        let credit = self.credit_leg(s.credit_account);
        self.reserve(debit, credit, s, false);
    }

    /// Reserves (or releases) what a pending transfer will move: its debit
    /// is held and its credit promised, and for a conversion FX_POSITION's
    /// two legs likewise, so posting later can neither overdraw nor
    /// overflow.
    pub(crate) fn reserve(&mut self, debit: AccountPos, credit: AccountPos, s: &StoredTransfer, add: bool) {
        let change = |v: &mut u64, by: u64| {
            *v = if add { v.checked_add(by) } else { v.checked_sub(by) }.expect("reservation within bounds");
        };
        change(&mut self.book.balance_at_mut(debit, s.debit_currency).held, s.debit_amount);
        change(&mut self.book.balance_at_mut(credit, s.credit_currency).incoming, s.credit_amount);
        if s.debit_currency != s.credit_currency {
            let fx = self.book.system(book::FX_POSITION);
            change(&mut self.book.balance_at_mut(fx, s.debit_currency).incoming, s.debit_amount);
            change(&mut self.book.balance_at_mut(fx, s.credit_currency).held, s.credit_amount);
        }
    }

    /// A due timer: a closed verification window voids the transfer; the
    /// end of cooling-off releases that hold (and posts if nothing else
    /// holds it).
    pub(crate) fn fire_timer(&mut self, id: u128) {
        let entry = *self.pending.get(id).expect("timer of a pending transfer");
        let holds = Holds::from_bits(self.transfers.get(entry.at).holds).expect("valid holds");
        let windows = self.config.hold_windows;
        let window_closed = Holds::ALL
            .iter()
            .filter(|h| **h != Holds::COOLING_OFF && holds.contains(**h))
            .any(|h| entry.end_of(*h, &windows) <= self.now_ms);
        if window_closed {
            self.void(entry.at, VoidReason::Expired);
        } else {
            assert!(holds.contains(Holds::COOLING_OFF), "a timer fired for an open window");
            assert!(entry.cooling_until_ms <= self.now_ms, "cooling-off fired early");
            self.release(entry.at, Holds::COOLING_OFF);
        }
    }

    /// A transfer level 3 or the mule rule held (so did not learn) posts:
    /// its cooling-off ended, or an operator passed it, and nothing else
    /// held it back. The account's profile learns it (model 2;
    /// `Profile::confirm`).
    fn confirm_behaviour(&mut self, entry: &PendingEntry) {
        let unlearned = Holds::COOLING_OFF.with(Holds::MULE_REVIEW).bits();
        if entry.case == NO_CASE || self.cases.get(entry.case).holds & unlearned == 0 {
            return;
        }
        let s = *self.transfers.get(entry.at);
        let value = self.cases.get(entry.case).hkd_value;
        let o = crate::aml::Outgoing {
            now_ms: entry.submitted_ms,
            debit_currency: s.debit_currency,
            debit_amount: s.debit_amount,
            credit_account: s.credit_account,
            credit_currency: s.credit_currency,
            destination_country: s.destination_country,
        };
        let debit = self.book.find(s.debit_account).expect("debit account exists");
        let state = self.aml.get_mut(debit.index());
        state.confirm(&self.config.aml, &o, value);
        state.inbound.paid = state.profile.payees;
    }

    // ---- lookups and time -------------------------------------------------
}

/// How a pending transfer ended without posting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoidReason {
    /// A verification or review failed.
    Failed,
    /// The client voided its own hold (FINALIZE_PENDING VOID).
    ClientVoided,
    /// A window closed with its hold still open.
    Expired,
    /// The customer cancelled it.
    Cancelled,
    /// Its credit could not be applied on the credit account's shard.
    Refused,
}
