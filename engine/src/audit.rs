//! The audit: every invariant of one shard's books, checked from scratch.
//!
//! Used by tests after every step, by recovery after a snapshot loads, and
//! by operators (issue 7 exposes it). It recomputes what every balance's
//! `held` and `incoming` must be from the pending transfers, so a
//! reservation that leaked or vanished is caught.

use std::collections::BTreeMap;

use super::Engine;
use super::book::AccountKind;
use super::holds::Holds;
use crate::money::{CURRENCY_COUNT, CurrencyIndex};
use crate::protocol::records;

/// A broken invariant, with what broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// A currency's balances do not sum to zero.
    NonZeroSum { currency: u16, sum: i128 },
    /// A customer's posted balance is negative.
    NegativeCustomer { account: u64, currency: u16, posted: i64 },
    /// A customer has more held than posted.
    HeldAbovePosted { account: u64, currency: u16, held: u64, posted: i64 },
    /// `held` or `incoming` disagrees with the pending transfers.
    ReservationMismatch { account: u64, currency: u16, field: &'static str, actual: u64, expected: u64 },
    /// Posting every pending credit could overflow.
    IncomingOverflow { account: u64, currency: u16 },
    /// The pending table and the stored transfers disagree.
    PendingMismatch { transfer_id: u128, what: &'static str },
    /// Credit lines, loans and the LOAN_FUNDING / INTEREST_INCOME balances
    /// disagree (`id` is a loan id, or 0 for a currency-wide sum).
    CreditMismatch { id: u128, what: &'static str },
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NonZeroSum { currency, sum } => write!(f, "currency {currency} sums to {sum}, not 0"),
            Self::NegativeCustomer { account, currency, posted } => {
                write!(f, "customer {account} has {posted} in currency {currency}")
            }
            Self::HeldAbovePosted { account, currency, held, posted } => {
                write!(f, "customer {account} holds {held} of {posted} in currency {currency}")
            }
            Self::ReservationMismatch { account, currency, field, actual, expected } => {
                write!(
                    f,
                    "account {account} currency {currency}: {field} is {actual}, pending transfers say {expected}"
                )
            }
            Self::IncomingOverflow { account, currency } => {
                write!(f, "account {account} currency {currency}: posted + incoming overflows")
            }
            Self::PendingMismatch { transfer_id, what } => write!(f, "pending transfer {transfer_id}: {what}"),
            Self::CreditMismatch { id, what } => write!(f, "credit (loan {id}): {what}"),
        }
    }
}

impl std::error::Error for AuditError {}

impl Engine {
    /// Every transfer in flight has exactly one unacknowledged CREDIT, to
    /// its credit account's shard, for its credit amount; and every CREDIT
    /// is of a transfer in flight.
    fn audit_links(&self) -> Result<(), AuditError> {
        let mut credits = 0usize;
        let mut seen = std::collections::BTreeSet::new();
        for (peer, link) in self.links.links.iter().enumerate() {
            if link.flights.len() != link.outbox.len() {
                return Err(AuditError::PendingMismatch { transfer_id: 0, what: "flights beside the outbox" });
            }
            for (e, flight) in link.outbox.iter().zip(&link.flights) {
                if (e.kind == super::links::EntryKind::Credit) != flight.is_some() {
                    return Err(AuditError::PendingMismatch { transfer_id: e.id, what: "a flight beside each credit" });
                }
                let Some(flight) = flight else { continue };
                credits += 1;
                let found = self.transfers.find(e.id);
                if !seen.insert(e.id) {
                    return Err(AuditError::PendingMismatch {
                        transfer_id: e.id,
                        what: "two credits for one transfer",
                    });
                }
                if found != Some(flight.at) {
                    return Err(AuditError::PendingMismatch { transfer_id: e.id, what: "a flight points elsewhere" });
                }
                let fits = found.map(|at| self.transfers.get(at)).is_some_and(|s| {
                    s.state == records::STATE_PENDING
                        && s.holds == Holds::IN_FLIGHT.bits()
                        && s.credit_account == e.account
                        && s.credit_amount == e.amount
                        && s.credit_currency.code() == e.currency
                        && super::shard_of(e.account, self.links.links.len()) == peer
                });
                if !fits {
                    return Err(AuditError::PendingMismatch {
                        transfer_id: e.id,
                        what: "a credit sent for no transfer in flight",
                    });
                }
            }
        }
        let in_flight = self
            .transfers
            .iter()
            .filter(|s| s.state == records::STATE_PENDING && s.holds == Holds::IN_FLIGHT.bits())
            .count();
        if in_flight != credits {
            return Err(AuditError::PendingMismatch {
                transfer_id: 0,
                what: "a transfer in flight without its credit",
            });
        }
        Ok(())
    }

    /// Checks every invariant of the shard; the first broken one is the
    /// error.
    pub fn audit(&self) -> Result<(), AuditError> {
        let mut expected: BTreeMap<(u64, CurrencyIndex), (u64, u64)> = BTreeMap::new();
        let mut pending_seen = 0usize;
        for s in self.transfers.iter() {
            let id = s.id();
            if s.state != records::STATE_PENDING {
                if s.holds != 0 {
                    return Err(AuditError::PendingMismatch { transfer_id: id, what: "holds on a settled transfer" });
                }
                continue;
            }
            let holds = Holds::from_bits(s.holds).unwrap_or(Holds::NONE);
            if holds.is_empty() {
                return Err(AuditError::PendingMismatch { transfer_id: id, what: "pending without a hold" });
            }
            // In flight: no pending entry, its credit in an outbox
            // (`audit_links`); its reservation counts below all the same.
            if holds.contains(Holds::IN_FLIGHT) && holds != Holds::IN_FLIGHT {
                return Err(AuditError::PendingMismatch { transfer_id: id, what: "in flight and held" });
            }
            if holds != Holds::IN_FLIGHT {
                pending_seen += 1;
                let Some(entry) = self.pending.get(id) else {
                    return Err(AuditError::PendingMismatch { transfer_id: id, what: "no pending entry" });
                };
                if self.transfers.get(entry.at).id() != id {
                    return Err(AuditError::PendingMismatch { transfer_id: id, what: "entry points elsewhere" });
                }
                if entry.due_ms != entry.soonest_end(holds, &self.config.hold_windows) {
                    return Err(AuditError::PendingMismatch { transfer_id: id, what: "timer not at the soonest end" });
                }
            }
            let debit = expected.entry((s.debit_account, s.debit_currency)).or_default();
            debit.0 += s.debit_amount;
            // Another shard's customer is reserved on INTERSHARD here.
            let holder =
                if self.book.account(s.credit_account).is_some() { s.credit_account } else { super::book::INTERSHARD };
            let credit = expected.entry((holder, s.credit_currency)).or_default();
            credit.1 += s.credit_amount;
            if s.debit_currency != s.credit_currency {
                // FX_POSITION takes the debit currency in, pays the credit out.
                let fx_in = expected.entry((super::book::FX_POSITION, s.debit_currency)).or_default();
                fx_in.1 += s.debit_amount;
                let fx_out = expected.entry((super::book::FX_POSITION, s.credit_currency)).or_default();
                fx_out.0 += s.credit_amount;
            }
        }
        if pending_seen != self.pending.len() || !self.pending.timers_consistent() {
            return Err(AuditError::PendingMismatch { transfer_id: 0, what: "pending table size or timers" });
        }
        self.audit_links()?;

        let mut sums = [0i128; CURRENCY_COUNT];
        for (account, cur, b) in self.book.balances_sorted() {
            let currency = cur.code();
            sums[cur.raw() as usize] += i128::from(b.posted);
            let kind = self.book.account(account).map(|a| a.kind);
            if kind == Some(AccountKind::Customer) {
                if b.posted < 0 {
                    return Err(AuditError::NegativeCustomer { account, currency, posted: b.posted });
                }
                if b.held > b.posted as u64 {
                    return Err(AuditError::HeldAbovePosted { account, currency, held: b.held, posted: b.posted });
                }
            }
            if i128::from(b.posted) + i128::from(b.incoming) > i128::from(i64::MAX) {
                return Err(AuditError::IncomingOverflow { account, currency });
            }
            let (held, incoming) = expected.remove(&(account, cur)).unwrap_or_default();
            if b.held != held {
                return Err(AuditError::ReservationMismatch {
                    account,
                    currency,
                    field: "held",
                    actual: b.held,
                    expected: held,
                });
            }
            if b.incoming != incoming {
                let field = "incoming";
                return Err(AuditError::ReservationMismatch {
                    account,
                    currency,
                    field,
                    actual: b.incoming,
                    expected: incoming,
                });
            }
        }
        if let Some((&(account, cur), &(held, incoming))) = expected.iter().next() {
            let (field, expected) = if held != 0 { ("held", held) } else { ("incoming", incoming) };
            return Err(AuditError::ReservationMismatch { account, currency: cur.code(), field, actual: 0, expected });
        }
        for (i, sum) in sums.iter().enumerate() {
            if *sum != 0 {
                let currency = CurrencyIndex::from_raw(i as u8).expect("index in range").code();
                return Err(AuditError::NonZeroSum { currency, sum: *sum });
            }
        }
        self.audit_credit()
    }

    /// Every line's principal is the sum of its active loans' and its
    /// count their number; a loan is on its line's list exactly while it is
    /// active, and active exactly while principal is outstanding; a
    /// micro-loan belongs to a stored AUTO_CREDIT transfer and is repaid if
    /// that transfer was voided; LOAN_FUNDING has lent exactly the
    /// principal outstanding and INTEREST_INCOME holds exactly the interest
    /// paid, per currency. One pass over lines and loans.
    fn audit_credit(&self) -> Result<(), AuditError> {
        use crate::credit::{ACTIVE_LOANS_PER_LINE_MAX, LOAN_ACTIVE, NO_LOAN};
        let bad = |id, what| Err(AuditError::CreditMismatch { id, what });
        let n = self.credit.len();
        let mut on_list = vec![false; n];
        for entry in self.credit.lines_sorted() {
            let (mut sum, mut count) = (0u128, 0u32);
            let mut cursor = entry.head;
            while cursor != NO_LOAN {
                if cursor as usize >= n || on_list[cursor as usize] || count >= ACTIVE_LOANS_PER_LINE_MAX {
                    return bad(0, "a line's list loops, leaves the loans, or is too long");
                }
                on_list[cursor as usize] = true;
                let loan = self.credit.loan_at(cursor);
                if (loan.account, loan.currency) != (entry.account, entry.currency) {
                    return bad(loan.id, "on another line's list");
                }
                sum += u128::from(loan.principal_outstanding);
                count += 1;
                cursor = loan.next;
            }
            if sum != u128::from(entry.line.principal) || count != entry.active_count {
                return bad(0, "a line's principal or count is not its loans'");
            }
        }
        let mut lent = [0i128; CURRENCY_COUNT];
        let mut interest = [0i128; CURRENCY_COUNT];
        for (at, loan) in self.credit.loans().enumerate() {
            lent[loan.currency.raw() as usize] += i128::from(loan.principal_outstanding);
            interest[loan.currency.raw() as usize] += i128::from(loan.interest_paid);
            if self.credit.line(loan.account, loan.currency).is_none() {
                return bad(loan.id, "no line");
            }
            let active = loan.state == LOAN_ACTIVE;
            if active != (loan.principal_outstanding > 0) || active != on_list[at] {
                return bad(loan.id, "state, principal and the line's list disagree");
            }
            if loan.principal_outstanding > loan.principal || (!active && loan.interest_accrued != 0) {
                return bad(loan.id, "more outstanding than lent, or interest on a repaid loan");
            }
            if loan.micro {
                let Some(t) = self.transfers.find(loan.id).map(|at| self.transfers.get(at)) else {
                    return bad(loan.id, "a micro-loan without its transfer");
                };
                if t.flags & records::TRANSFER_AUTO_CREDIT == 0 || (t.state == records::STATE_VOIDED && active) {
                    return bad(loan.id, "a micro-loan of a voided or non-AUTO_CREDIT transfer");
                }
            }
        }
        let (Some(funding), Some(income)) =
            (self.book.find(super::book::LOAN_FUNDING), self.book.find(super::book::INTEREST_INCOME))
        else {
            return bad(0, "a system account is missing");
        };
        for cur in 0..CURRENCY_COUNT {
            let currency = CurrencyIndex::from_raw(cur as u8).expect("index in range");
            if i128::from(self.book.balance_at(funding, currency).posted) != -lent[cur] {
                return bad(0, "LOAN_FUNDING is not minus the principal outstanding");
            }
            if i128::from(self.book.balance_at(income, currency).posted) != interest[cur] {
                return bad(0, "INTEREST_INCOME is not the interest paid");
            }
        }
        Ok(())
    }
}
