//! The engine's credit commands: SET_CREDIT_LINES, DISBURSE_LOANS,
//! REPAY_LOANS, LOOKUP_LOANS, and the micro-loans AUTO_CREDIT transfers
//! draw (and repay when voided). The arithmetic is `crate::credit`'s; the
//! store is `loans`.
//!
//! Money moves only between LOAN_FUNDING and the account (principal) and
//! from the account to INTEREST_INCOME (interest, when paid), so the
//! per-currency zero sum holds at every step; interest accrued but unpaid is
//! a receivable shown by lookups, not a balance.

use super::book::{self, AccountKind, AccountPos};
use super::loans::Repayment;
use super::{Accepted, Engine, PREFETCH_AHEAD, check_credit, check_system_debit};
use crate::credit::{self, ACTIVE_LOANS_PER_LINE_MAX, APR_BPS_MAX, CreditLine, LOAN_ACTIVE, LOAN_REPAID, Loan};
use crate::money::CurrencyIndex;
use crate::protocol::ResultCode;
use crate::protocol::records::{
    self, CREDIT_AUTO_MICRO_CREDIT, CreditLine as CreditLineRecord, Disburse, LoanResult, Record, RecordResult, Repay,
    Transfer,
};

impl Engine {
    /// SET_CREDIT_LINES, one record: sets (or replaces) an account's line in
    /// a currency; its loans keep their rates. Precedence:
    /// ACCOUNT_NOT_FOUND, FORBIDDEN (a system account, or out of the
    /// channel's scope), UNKNOWN_CURRENCY, INVALID_FIELD (APR above 4800
    /// bps, or an undefined flag).
    pub fn set_credit_line(&mut self, c: &CreditLineRecord) -> RecordResult {
        let code = match self.check_line(c) {
            Ok(currency) => {
                let line = CreditLine {
                    flags: c.flags,
                    apr_bps: c.apr_bps,
                    ear_bps: credit::ear_bps(c.apr_bps),
                    limit: c.limit,
                    micro_credit_max: c.micro_credit_max,
                    principal: 0,
                };
                self.credit.set_line(c.account_id, currency, line);
                ResultCode::Ok
            }
            Err(code) => code,
        };
        RecordResult { key: c.account_id, code: code.as_u16() }
    }

    fn check_line(&self, c: &CreditLineRecord) -> Result<CurrencyIndex, ResultCode> {
        let account = self.book.account(c.account_id).ok_or(ResultCode::AccountNotFound)?;
        if account.kind != AccountKind::Customer || !self.in_scope(c.account_id) {
            return Err(ResultCode::Forbidden);
        }
        let currency = CurrencyIndex::of(c.currency).ok_or(ResultCode::UnknownCurrency)?;
        if c.apr_bps > APR_BPS_MAX || c.flags & !CREDIT_AUTO_MICRO_CREDIT != 0 {
            return Err(ResultCode::InvalidField);
        }
        Ok(currency)
    }

    /// DISBURSE_LOANS, one record: the principal moves from LOAN_FUNDING to
    /// the account within its line. Precedence: INVALID_ID, ID_CONFLICT (the
    /// id names a transfer) or ALREADY_EXISTS / ID_CONFLICT (a loan),
    /// ACCOUNT_NOT_FOUND, FORBIDDEN (a system account, or out of the
    /// channel's scope), UNKNOWN_CURRENCY, INVALID_AMOUNT (zero principal), NO_CREDIT_LINE, OVERFLOW,
    /// CREDIT_LIMIT_EXCEEDED (past the limit, or the line already has
    /// `ACTIVE_LOANS_PER_LINE_MAX` active loans). A zero `term_days` means
    /// no due date.
    pub fn disburse(&mut self, d: &Disburse) -> LoanResult {
        let (account, currency) = match self.check_disburse(d) {
            Ok(found) => found,
            Err(code) => return self.loan_answer(d.loan_id, code),
        };
        let entry = *self.credit.line(d.account_id, currency).expect("checked: the line exists");
        let loan = Loan::new(d.loan_id, d.account_id, currency, &entry.line, d.term_days, d.principal, self.now_ms);
        self.lend(account, &loan);
        self.loan_answer(d.loan_id, ResultCode::Ok)
    }

    /// DISBURSE_LOANS for a whole body, prefetching ahead like
    /// `submit_batch`: the id's slots, the account, and its line.
    pub(super) fn disburse_batch(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let n = body.len() / Disburse::SIZE;
        let record = |i: usize| Disburse::decode(&body[i * Disburse::SIZE..(i + 1) * Disburse::SIZE]);
        out.reserve(n * LoanResult::SIZE);
        for i in 0..n {
            if i + PREFETCH_AHEAD < n {
                let d = record(i + PREFETCH_AHEAD);
                self.transfers.prefetch(d.loan_id);
                self.credit.prefetch_loan(d.loan_id);
                self.book.prefetch_slot(d.account_id);
                if let Some(c) = CurrencyIndex::of(d.currency) {
                    self.credit.prefetch_line(d.account_id, c, false);
                }
            }
            if i + PREFETCH_AHEAD / 2 < n {
                let d = record(i + PREFETCH_AHEAD / 2);
                self.book.prefetch_entry(d.account_id);
                if let Some(c) = CurrencyIndex::of(d.currency) {
                    self.credit.prefetch_line(d.account_id, c, true);
                }
            }
            let answer = self.disburse(&record(i));
            records::push(out, &answer);
        }
    }

    fn check_disburse(&self, d: &Disburse) -> Result<(AccountPos, CurrencyIndex), ResultCode> {
        if d.loan_id == 0 {
            return Err(ResultCode::InvalidId);
        }
        if self.transfers.find(d.loan_id).is_some() {
            // Loan and transfer ids share one space.
            return Err(ResultCode::IdConflict);
        }
        if let Some(loan) = self.credit.loan(d.loan_id) {
            let same = !loan.micro
                && loan.account == d.account_id
                && loan.currency.code() == d.currency
                && loan.term_days == d.term_days
                && loan.principal == d.principal;
            return Err(if same { ResultCode::AlreadyExists } else { ResultCode::IdConflict });
        }
        let account = self.book.find(d.account_id).ok_or(ResultCode::AccountNotFound)?;
        if self.book.entry(account).kind != AccountKind::Customer || !self.in_scope(d.account_id) {
            return Err(ResultCode::Forbidden);
        }
        let currency = CurrencyIndex::of(d.currency).ok_or(ResultCode::UnknownCurrency)?;
        if d.principal == 0 {
            return Err(ResultCode::InvalidAmount);
        }
        let entry = self.credit.line(d.account_id, currency).ok_or(ResultCode::NoCreditLine)?;
        // Values (OVERFLOW) before what the line allows.
        self.check_lending(account, currency, d.principal)?;
        if d.principal > entry.line.available() || entry.active_count >= ACTIVE_LOANS_PER_LINE_MAX {
            return Err(ResultCode::CreditLimitExceeded);
        }
        Ok((account, currency))
    }

    /// Whether LOAN_FUNDING can pay `principal` to the account (both
    /// balances stay within i64): OVERFLOW otherwise.
    fn check_lending(&self, account: AccountPos, currency: CurrencyIndex, principal: u64) -> Result<(), ResultCode> {
        if i64::try_from(principal).is_err() {
            return Err(ResultCode::Overflow);
        }
        let funding = self.book.system(book::LOAN_FUNDING);
        check_system_debit(&self.book.balance_at(funding, currency), principal)?;
        check_credit(&self.book.balance_at(account, currency), principal)
    }

    /// Books a new loan and moves its principal to the account.
    fn lend(&mut self, account: AccountPos, loan: &Loan) {
        let line_at = self.credit.line_position(loan.account, loan.currency).expect("checked: the line exists");
        self.lend_on(account, line_at, loan);
    }

    fn lend_on(&mut self, account: AccountPos, line_at: u32, loan: &Loan) {
        let funding = self.book.system(book::LOAN_FUNDING);
        let principal = i64::try_from(loan.principal).expect("checked before lending");
        self.add(funding, loan.currency, -principal);
        self.add(account, loan.currency, principal);
        self.credit.insert_on(line_at, *loan);
    }

    /// REPAY_LOANS, one record: paid from the loan's account in its
    /// currency, interest first, then principal. Precedence: INVALID_ID
    /// (repayment or loan id 0), ALREADY_EXISTS / ID_CONFLICT (the
    /// repayment id), LOAN_NOT_FOUND, FORBIDDEN (the loan's account out of
    /// the channel's scope), INVALID_AMOUNT (zero), OVERPAYMENT
    /// (more than is owed now), OVERFLOW, INSUFFICIENT_FUNDS.
    pub fn repay(&mut self, r: &Repay) -> LoanResult {
        let at = match self.check_repay(r) {
            Ok(at) => at,
            Err(code) => return self.loan_answer(r.loan_id, code),
        };
        let now = self.now_ms;
        let loan = self.credit.loan_at_mut(at);
        loan.accrue(now);
        let interest = r.amount.min(loan.interest_accrued);
        let principal = r.amount - interest;
        loan.interest_accrued -= interest;
        loan.interest_paid += interest;
        loan.principal_outstanding = loan.principal_outstanding.checked_sub(principal).expect("no overpayment");
        if loan.principal_outstanding == 0 {
            assert_eq!(loan.interest_accrued, 0, "interest is paid before principal");
            loan.state = LOAN_REPAID;
        }
        let (account, currency) = (loan.account, loan.currency);
        self.credit.paid(at, principal);
        self.credit.repayments.insert(r.repayment_id, Repayment { loan_id: r.loan_id, amount: r.amount });
        let payer = self.book.find(account).expect("a loan's account exists");
        let income = self.book.system(book::INTEREST_INCOME);
        let funding = self.book.system(book::LOAN_FUNDING);
        self.add(payer, currency, -i64::try_from(r.amount).expect("checked: at most the balance"));
        self.add(income, currency, i64::try_from(interest).expect("at most the amount"));
        self.add(funding, currency, i64::try_from(principal).expect("at most the amount"));
        self.loan_answer(r.loan_id, ResultCode::Ok)
    }

    fn check_repay(&self, r: &Repay) -> Result<u32, ResultCode> {
        if r.repayment_id == 0 || r.loan_id == 0 {
            return Err(ResultCode::InvalidId);
        }
        if let Some(done) = self.credit.repayments.get(&r.repayment_id) {
            let same = done.loan_id == r.loan_id && done.amount == r.amount;
            return Err(if same { ResultCode::AlreadyExists } else { ResultCode::IdConflict });
        }
        let at = self.credit.find(r.loan_id).ok_or(ResultCode::LoanNotFound)?;
        if !self.in_scope(self.credit.loan_at(at).account) {
            return Err(ResultCode::Forbidden);
        }
        if r.amount == 0 {
            return Err(ResultCode::InvalidAmount);
        }
        let loan = self.credit.loan_at(at);
        if u128::from(r.amount) > loan.owed_at(self.now_ms) {
            return Err(ResultCode::Overpayment);
        }
        // Values (OVERFLOW) before funds, as for transfers.
        let income = self.book.system(book::INTEREST_INCOME);
        let funding = self.book.system(book::LOAN_FUNDING);
        check_credit(&self.book.balance_at(income, loan.currency), r.amount)?;
        check_credit(&self.book.balance_at(funding, loan.currency), r.amount)?;
        let payer = self.book.find(loan.account).expect("a loan's account exists");
        if self.book.balance_at(payer, loan.currency).available() < i128::from(r.amount) {
            return Err(ResultCode::InsufficientFunds);
        }
        Ok(at)
    }

    /// LOOKUP_LOANS, one record. Precedence: INVALID_ID, LOAN_NOT_FOUND,
    /// FORBIDDEN (its account out of the channel's scope).
    #[must_use]
    pub fn lookup_loan(&self, id: u128) -> LoanResult {
        let code = match (id, self.credit.find(id)) {
            (0, _) => ResultCode::InvalidId,
            (_, None) => ResultCode::LoanNotFound,
            (_, Some(at)) if !self.in_scope(self.credit.loan_at(at).account) => ResultCode::Forbidden,
            (_, Some(_)) => ResultCode::Ok,
        };
        self.loan_answer(id, code)
    }

    /// The wire answer for a loan id: its current state (interest accrued
    /// to now) if it names a loan, else zeros with the code.
    fn loan_answer(&self, id: u128, code: ResultCode) -> LoanResult {
        // A loan out of the channel's scope is not shown to it.
        let Some(loan) = self.credit.loan(id).filter(|l| id != 0 && self.in_scope(l.account)) else {
            return LoanResult { loan_id: id, code: code.as_u16(), ..LoanResult::default() };
        };
        LoanResult {
            loan_id: id,
            code: code.as_u16(),
            state: loan.state,
            apr_bps: loan.apr_bps,
            account_id: loan.account,
            currency: loan.currency.code(),
            ear_bps: loan.ear_bps,
            principal_outstanding: loan.principal_outstanding,
            interest_accrued: loan.interest_at(self.now_ms),
            disbursed_at_ms: loan.disbursed_at_ms,
        }
    }

    // ---- micro-loans ------------------------------------------------------

    /// Whether an AUTO_CREDIT transfer short by `shortfall` may draw a
    /// micro-loan for it: the account's line in the debit currency has
    /// AUTO_MICRO_CREDIT, the draw is within `micro_credit_max` and the
    /// remaining limit (else INSUFFICIENT_FUNDS, nothing drawn), and the
    /// balances can take it (else OVERFLOW).
    pub(super) fn check_micro_credit(
        &self,
        account: AccountPos,
        currency: CurrencyIndex,
        shortfall: u64,
    ) -> Result<u32, ResultCode> {
        let id = self.book.entry(account).id;
        let line_at = self.credit.line_position(id, currency).ok_or(ResultCode::InsufficientFunds)?;
        let line = &self.credit.line_at(line_at).line;
        let full = self.credit.line_at(line_at).active_count >= ACTIVE_LOANS_PER_LINE_MAX;
        if line.flags & CREDIT_AUTO_MICRO_CREDIT == 0
            || shortfall > line.micro_credit_max
            || shortfall > line.available()
            || full
        {
            return Err(ResultCode::InsufficientFunds);
        }
        self.check_lending(account, currency, shortfall)?;
        Ok(line_at)
    }

    /// Draws the micro-loan an accepted AUTO_CREDIT transfer needs, before
    /// the transfer posts or is held: its id is the transfer's.
    pub(super) fn draw_micro_loan(&mut self, t: &Transfer, a: &Accepted) {
        let entry = *self.credit.line_at(a.auto_credit_line);
        let micro =
            Loan::new(t.transfer_id, t.debit_account, a.debit_currency, &entry.line, 0, a.auto_credit, self.now_ms);
        let loan = Loan { micro: true, ..micro };
        self.lend_on(a.debit, a.auto_credit_line, &loan);
    }

    /// The micro-loan an AUTO_CREDIT transfer drew, if any (for its
    /// `auto_credit_amount`).
    pub(super) fn micro_loan_of(&self, transfer_id: u128) -> u64 {
        self.credit.loan(transfer_id).filter(|l| l.micro).map_or(0, |l| l.principal)
    }

    /// A voided AUTO_CREDIT transfer repays its micro-loan at once, with no
    /// interest: what is outstanding goes back to LOAN_FUNDING from the
    /// funds the transfer had reserved.
    pub(super) fn repay_micro_loan(&mut self, transfer_id: u128) {
        let Some(at) = self.credit.find(transfer_id) else { return };
        let now = self.now_ms;
        let loan = self.credit.loan_at_mut(at);
        if !loan.micro || loan.state != LOAN_ACTIVE {
            return;
        }
        let principal = loan.principal_outstanding;
        loan.principal_outstanding = 0;
        loan.interest_accrued = 0;
        loan.periods_accrued = credit::periods(loan.disbursed_at_ms, now);
        loan.state = LOAN_REPAID;
        let (account, currency) = (loan.account, loan.currency);
        self.credit.paid(at, principal);
        let payer = self.book.find(account).expect("a loan's account exists");
        let funding = self.book.system(book::LOAN_FUNDING);
        let amount = i64::try_from(principal).expect("a micro-loan fits i64");
        assert!(
            self.book.balance_at(payer, currency).available() >= i128::from(amount),
            "the voided transfer's reservation covers its micro-loan"
        );
        self.add(payer, currency, -amount);
        self.add(funding, currency, amount);
    }

    /// Principal and interest outstanding and unused credit of an account
    /// in a currency, now (LOOKUP_BALANCES).
    pub(super) fn credit_position(&self, account: u64, currency: CurrencyIndex) -> (u64, u64) {
        self.credit.outstanding(account, currency, self.now_ms)
    }

    /// Whether `id` names a loan: a new transfer may not take it. (A
    /// micro-loan's id is its own transfer's, which the transfer store
    /// finds first.)
    #[inline]
    pub(super) fn names_a_loan(&self, id: u128) -> bool {
        self.credit.find(id).is_some()
    }
}
