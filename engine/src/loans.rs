//! The credit store of one shard: credit lines by (account, currency),
//! loans by id, and repayment ids for idempotency.
//!
//! Lines and loans live in arenas found through `IdIndex`es, like accounts
//! and transfers (`index`): one cache line of index per lookup, nothing
//! rehashed or reallocated on the hot path below the configured capacity,
//! and prefetchable from a batch. Loans are never removed (a repaid loan
//! still answers LOOKUP_LOANS and keeps its id taken). Each line threads its
//! active loans through `Loan::next`, so a balance lookup sums an account's
//! loans without a scan. Repayments, rarer, sit in a hash map.
//!
//! Iteration order of the arenas is insertion order, the same on replay;
//! snapshots and the audit sort lines by key where order is observable.

use super::index::{Arena, IdIndex, prefetch};
use crate::credit::{CreditLine, LOAN_ACTIVE, Loan, NO_LOAN};
use crate::hash::{IdBuildHasher, IdMap, hash_u128, mix64};
use crate::money::CurrencyIndex;

/// A repayment as it was asked, for idempotency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repayment {
    pub loan_id: u128,
    pub amount: u64,
}

/// A credit line, its key, and the head of its active loans' list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineEntry {
    pub account: u64,
    pub currency: CurrencyIndex,
    pub line: CreditLine,
    /// Position of the first active loan, or `NO_LOAN`.
    pub head: u32,
    /// How many active loans the list holds (at most
    /// `ACTIVE_LOANS_PER_LINE_MAX`).
    pub active_count: u32,
}

fn line_hash(account: u64, currency: CurrencyIndex) -> u64 {
    mix64(account ^ (u64::from(currency.raw()) << 56) ^ 0x5bd1_e995)
}

/// Every credit line, loan and repayment id of a shard.
#[derive(Debug)]
pub struct Credit {
    lines: Arena<LineEntry>,
    line_index: IdIndex,
    loans: Arena<Loan>,
    loan_index: IdIndex,
    pub repayments: IdMap<u128, Repayment>,
}

impl Clone for Credit {
    fn clone(&self) -> Self {
        Self {
            lines: self.lines.clone(),
            line_index: self.line_index.clone(),
            loans: self.loans.clone(),
            loan_index: self.loan_index.clone(),
            repayments: self.repayments.clone(),
        }
    }
    /// Reuses this store's memory (the snapshot copy).
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { lines, line_index, loans, loan_index, repayments } = source;
        self.lines.clone_from(lines);
        self.line_index.clone_from(line_index);
        self.loans.clone_from(loans);
        self.loan_index.clone_from(loan_index);
        self.repayments.clone_from(repayments);
    }
}

impl Default for Credit {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Credit {
    /// A store with room for `loans` loans and as many lines, mapped up
    /// front.
    #[must_use]
    pub fn with_capacity(loans: usize) -> Self {
        let blank_line = LineEntry {
            account: 0,
            currency: CurrencyIndex::HKD,
            line: CreditLine { flags: 0, apr_bps: 0, ear_bps: 0, limit: 0, micro_credit_max: 0, principal: 0 },
            head: NO_LOAN,
            active_count: 0,
        };
        let blank_loan = Loan::blank();
        Self {
            lines: Arena::with_capacity(loans, blank_line),
            line_index: IdIndex::with_capacity(loans),
            loans: Arena::with_capacity(loans, blank_loan),
            loan_index: IdIndex::with_capacity(loans),
            repayments: IdMap::with_hasher(IdBuildHasher),
        }
    }

    /// Where an account's line in a currency is.
    #[inline]
    pub fn line_position(&self, account: u64, currency: CurrencyIndex) -> Option<u32> {
        if self.lines.is_empty() {
            return None;
        }
        let lines = &self.lines;
        self.line_index.find(line_hash(account, currency), |at| {
            let e = lines.get(at);
            e.account == account && e.currency == currency
        })
    }

    /// An account's line in a currency.
    #[inline]
    #[must_use]
    pub fn line(&self, account: u64, currency: CurrencyIndex) -> Option<&LineEntry> {
        self.line_position(account, currency).map(|at| self.lines.get(at))
    }

    /// Sets an account's line in a currency, keeping its principal and
    /// loans if it had one.
    pub fn set_line(&mut self, account: u64, currency: CurrencyIndex, line: CreditLine) {
        match self.line_position(account, currency) {
            Some(at) => {
                let entry = self.lines.get_mut(at);
                entry.line = CreditLine { principal: entry.line.principal, ..line };
            }
            None => {
                let at = self.lines.len() as u32;
                let lines = &self.lines;
                self.line_index.insert(line_hash(account, currency), at, || {
                    lines.iter().map(|e| line_hash(e.account, e.currency))
                });
                self.lines.push(LineEntry { account, currency, line, head: NO_LOAN, active_count: 0 });
            }
        }
    }

    /// Every line, sorted by (account, currency).
    #[must_use]
    pub fn lines_sorted(&self) -> Vec<LineEntry> {
        let mut all: Vec<LineEntry> = self.lines.iter().copied().collect();
        all.sort_unstable_by_key(|e| (e.account, e.currency));
        all
    }

    /// Where a loan is, if `id` names one.
    #[inline]
    #[must_use]
    pub fn find(&self, id: u128) -> Option<u32> {
        if self.loans.is_empty() {
            return None;
        }
        let loans = &self.loans;
        self.loan_index.find(hash_u128(id), |at| loans.get(at).id == id)
    }

    /// Starts loading the index slot a loan id would use.
    #[inline]
    pub fn prefetch_loan(&self, id: u128) {
        if !self.loans.is_empty() {
            self.loan_index.prefetch(hash_u128(id));
        }
    }

    /// Starts loading a line's index slot, then (second stage) its entry.
    #[inline]
    pub fn prefetch_line(&self, account: u64, currency: CurrencyIndex, entry: bool) {
        if self.lines.is_empty() {
            return;
        }
        let hash = line_hash(account, currency);
        if !entry {
            self.line_index.prefetch(hash);
        } else if let Some(at) = self.line_index.candidate(hash) {
            prefetch(self.lines.get(at));
        }
    }

    /// The loan `id` names.
    #[inline]
    #[must_use]
    pub fn loan(&self, id: u128) -> Option<&Loan> {
        self.find(id).map(|at| self.loans.get(at))
    }

    /// The loan at a position.
    #[must_use]
    pub fn loan_at(&self, at: u32) -> &Loan {
        self.loans.get(at)
    }

    /// The loan at a position, mutably (callers keep the line in step
    /// through `paid`).
    pub fn loan_at_mut(&mut self, at: u32) -> &mut Loan {
        self.loans.get_mut(at)
    }

    /// The line at a position.
    #[inline]
    #[must_use]
    pub fn line_at(&self, at: u32) -> &LineEntry {
        self.lines.get(at)
    }

    /// Adds a loan to its line (which must exist): principal and the
    /// active list follow.
    pub fn insert(&mut self, loan: Loan) -> u32 {
        let line_at = self.line_position(loan.account, loan.currency).expect("a loan draws on a line");
        self.insert_on(line_at, loan)
    }

    /// Adds a loan to the line at `line_at` (its own).
    pub fn insert_on(&mut self, line_at: u32, mut loan: Loan) -> u32 {
        assert!(self.find(loan.id).is_none(), "loan {} inserted twice", loan.id);
        let at = self.loans.len() as u32;
        let entry = self.lines.get_mut(line_at);
        assert!(entry.account == loan.account && entry.currency == loan.currency, "a loan draws on its own line");
        loan.next = NO_LOAN;
        if loan.state == LOAN_ACTIVE {
            entry.line.principal =
                entry.line.principal.checked_add(loan.principal_outstanding).expect("principal within u64");
            loan.next = entry.head;
            entry.head = at;
            entry.active_count += 1;
        }
        let loans = &self.loans;
        self.loan_index.insert(hash_u128(loan.id), at, || loans.iter().map(|l| hash_u128(l.id)));
        self.loans.push(loan);
        at
    }

    /// Takes `principal` off the line of the loan at `at` after a payment,
    /// and drops the loan from its line's active list once it is repaid.
    pub fn paid(&mut self, at: u32, principal: u64) {
        let loan = *self.loans.get(at);
        let line_at = self.line_position(loan.account, loan.currency).expect("a loan's line exists");
        let entry = self.lines.get_mut(line_at);
        entry.line.principal = entry.line.principal.checked_sub(principal).expect("paid principal was outstanding");
        if loan.state == LOAN_ACTIVE {
            return;
        }
        entry.active_count -= 1;
        // Unlink: walk the line's list (at most ACTIVE_LOANS_PER_LINE_MAX)
        // to the loan before it.
        if entry.head == at {
            entry.head = loan.next;
        } else {
            let mut cursor = entry.head;
            loop {
                assert_ne!(cursor, NO_LOAN, "a repaid loan was on its line's list");
                let next = self.loans.get(cursor).next;
                if next == at {
                    self.loans.get_mut(cursor).next = loan.next;
                    break;
                }
                cursor = next;
            }
        }
        self.loans.get_mut(at).next = NO_LOAN;
    }

    /// Positions of a line's active loans, newest first.
    #[must_use]
    pub fn active(&self, entry: &LineEntry) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cursor = entry.head;
        while cursor != NO_LOAN {
            out.push(cursor);
            cursor = self.loans.get(cursor).next;
        }
        out
    }

    /// Principal and interest outstanding on an account's loans in a
    /// currency at `now_ms`, and its unused credit.
    #[must_use]
    pub fn outstanding(&self, account: u64, currency: CurrencyIndex, now_ms: u64) -> (u64, u64) {
        let Some(entry) = self.line(account, currency) else { return (0, 0) };
        let mut owed = 0u128;
        let mut cursor = entry.head;
        while cursor != NO_LOAN {
            let loan = self.loans.get(cursor);
            owed += loan.owed_at(now_ms);
            cursor = loan.next;
        }
        (u64::try_from(owed).unwrap_or(u64::MAX), entry.line.available())
    }

    /// Every loan, in the order they were made.
    pub fn loans(&self) -> impl Iterator<Item = &Loan> {
        self.loans.iter()
    }

    /// Number of loans ever made.
    #[must_use]
    pub fn len(&self) -> usize {
        self.loans.len()
    }

    /// Whether no loan was ever made.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.loans.is_empty()
    }

    /// Number of lines.
    #[must_use]
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }
}

/// Bytes of a loan in the arena (its index slot adds 8 to 16).
pub const LOAN_SIZE: usize = size_of::<Loan>();
const _: () = assert!(LOAN_SIZE == 96);
/// Bytes of a credit line in the arena (its index slot adds 8 to 16).
pub const LINE_SIZE: usize = size_of::<LineEntry>();
const _: () = assert!(LINE_SIZE == 64);
