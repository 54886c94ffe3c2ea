//! The credit store of one shard: credit lines by (account, currency),
//! loans by id, and repayment ids for idempotency.
//!
//! Lines are kept in a `BTreeMap` (ordered: snapshots and audits iterate
//! them); loans in a `Vec` found through an id map, never removed (a
//! repaid loan still answers LOOKUP_LOANS and keeps its id taken). Every
//! line keeps the positions of its active loans, so a balance lookup sums
//! an account's loans without a scan.

use std::collections::BTreeMap;

use crate::credit::{CreditLine, LOAN_ACTIVE, Loan};
use crate::hash::{IdBuildHasher, IdMap};
use crate::money::CurrencyIndex;

/// A repayment as it was asked, for idempotency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repayment {
    pub loan_id: u128,
    pub amount: u64,
}

/// A credit line and its active loans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEntry {
    pub line: CreditLine,
    /// Positions in `Credit::loans` of the line's active loans.
    pub active: Vec<u32>,
}

/// Every credit line, loan and repayment id of a shard.
#[derive(Clone, Debug)]
pub struct Credit {
    pub lines: BTreeMap<(u64, CurrencyIndex), LineEntry>,
    pub loans: Vec<Loan>,
    by_id: IdMap<u128, u32>,
    pub repayments: IdMap<u128, Repayment>,
}

impl Default for Credit {
    fn default() -> Self {
        Self {
            lines: BTreeMap::new(),
            loans: Vec::new(),
            by_id: IdMap::with_hasher(IdBuildHasher),
            repayments: IdMap::with_hasher(IdBuildHasher),
        }
    }
}

impl Credit {
    /// Where a loan is, if `id` names one.
    #[inline]
    #[must_use]
    pub fn find(&self, id: u128) -> Option<u32> {
        if self.by_id.is_empty() {
            return None;
        }
        self.by_id.get(&id).copied()
    }

    /// The loan `id` names.
    #[must_use]
    pub fn loan(&self, id: u128) -> Option<&Loan> {
        self.find(id).map(|at| &self.loans[at as usize])
    }

    /// Adds a loan to its line (which must exist): principal and the
    /// active list follow.
    pub fn insert(&mut self, loan: Loan) -> u32 {
        assert!(self.find(loan.id).is_none(), "loan {} inserted twice", loan.id);
        let at = u32::try_from(self.loans.len()).expect("fewer than 2^32 loans per shard");
        let entry = self.lines.get_mut(&(loan.account, loan.currency)).expect("a loan draws on a line");
        if loan.state == LOAN_ACTIVE {
            entry.line.principal =
                entry.line.principal.checked_add(loan.principal_outstanding).expect("principal within the limit");
            entry.active.push(at);
        }
        self.by_id.insert(loan.id, at);
        self.loans.push(loan);
        at
    }

    /// Takes `principal` off the line of the loan at `at` after a payment,
    /// and drops the loan from the active list once it is repaid.
    pub fn paid(&mut self, at: u32, principal: u64) {
        let loan = self.loans[at as usize];
        let entry = self.lines.get_mut(&(loan.account, loan.currency)).expect("a loan's line exists");
        entry.line.principal = entry.line.principal.checked_sub(principal).expect("paid principal was outstanding");
        if loan.state != LOAN_ACTIVE {
            entry.active.retain(|&a| a != at);
        }
    }

    /// Principal and interest outstanding on an account's loans in a
    /// currency at `now_ms`, and its unused credit.
    #[must_use]
    pub fn outstanding(&self, account: u64, currency: CurrencyIndex, now_ms: u64) -> (u64, u64) {
        let Some(entry) = self.lines.get(&(account, currency)) else { return (0, 0) };
        let owed: u128 = entry.active.iter().map(|&at| self.loans[at as usize].owed_at(now_ms)).sum();
        (u64::try_from(owed).unwrap_or(u64::MAX), entry.line.available())
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
}
