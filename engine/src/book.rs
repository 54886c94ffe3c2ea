//! The book: every account of one shard and its balance in every currency.
//!
//! An account holds a balance in every currency, but most accounts use one.
//! Accounts live in an arena found through an [`IdIndex`]; the first
//! currency an account touches lives inline in its entry (one cache line
//! holds the account and its main balance), further currencies go to a
//! second map keyed by (account, currency). The book never decides anything:
//! it stores and checks; the transfer rules live in `engine`.

use super::index::{Arena, IdIndex, prefetch};
use crate::hash::mix64;
use crate::money::CurrencyIndex;

pub use crate::protocol::accounts::{
    CUSTOMER_ID_MIN, FX_POSITION, INTEREST_INCOME, INTERSHARD, LOAN_FUNDING, REMITTANCE_OUT, SETTLEMENT_IN,
    SYSTEM_ACCOUNTS,
};

/// Whether an account is the bank's own or a customer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AccountKind {
    /// May go negative; rules per id in `engine`.
    System = 0,
    /// Never negative: `posted - held >= 0` always.
    Customer = 1,
}

/// One account's position in one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Posted balance. Sums to zero per currency over the shard.
    pub posted: i64,
    /// Reserved by pending debits; for a customer `held <= posted`.
    pub held: u64,
    /// Promised by pending credits, so posting them can never overflow:
    /// `posted + incoming <= i64::MAX` always.
    pub incoming: u64,
}

impl Balance {
    /// What a customer may still spend: posted minus held (never negative).
    #[must_use]
    pub fn available(&self) -> i128 {
        i128::from(self.posted) - i128::from(self.held)
    }
}

/// Sentinel for "no main currency yet".
const NO_CURRENCY: u8 = u8::MAX;

/// An account and its main balance.
#[derive(Clone, Copy, Debug)]
pub struct AccountEntry {
    pub id: u64,
    /// The channel's reference for the customer.
    pub customer_ref: u64,
    /// ISO 3166-1 numeric.
    pub home_country: u16,
    pub kind: AccountKind,
    /// The channel that opened it (0: the switch, or opened before
    /// channels were recorded): account scopes (`internal::Scope::own`).
    pub opened_by: u32,
    /// The currency of `main`, or `NO_CURRENCY` before the first movement.
    main_currency: u8,
    main: Balance,
}

/// Where an account lives in its shard's book (valid for the book's life:
/// accounts are never removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountPos(u32);

impl AccountPos {
    /// The position as an index into per-account arrays kept beside the
    /// book (AML profiles): accounts are numbered in insertion order.
    #[inline]
    #[must_use]
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Bytes of one account entry (its index slot adds 8 to 16).
pub const ACCOUNT_ENTRY_SIZE: usize = size_of::<AccountEntry>();
const _: () = assert!(ACCOUNT_ENTRY_SIZE == 48);
const _: () = assert!(size_of::<Balance>() == 24);

/// All accounts and balances of one shard.
#[derive(Debug, Default)]
pub struct Book {
    accounts: Arena<AccountEntry>,
    index: IdIndex,
    /// Balances beyond each account's main currency, found through their
    /// own index (so they can be prefetched like accounts).
    other: Arena<OtherBalance>,
    other_index: IdIndex,
}

/// A balance in a currency other than its account's main one.
#[derive(Clone, Copy, Debug)]
struct OtherBalance {
    account_id: u64,
    currency: CurrencyIndex,
    balance: Balance,
}

impl Clone for Book {
    fn clone(&self) -> Self {
        Self {
            accounts: self.accounts.clone(),
            index: self.index.clone(),
            other: self.other.clone(),
            other_index: self.other_index.clone(),
        }
    }
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { accounts, index, other, other_index } = source;
        self.accounts.clone_from(accounts);
        self.index.clone_from(index);
        self.other.clone_from(other);
        self.other_index.clone_from(other_index);
    }
}

#[inline]
fn other_hash(account_id: u64, currency: CurrencyIndex) -> u64 {
    mix64(account_id ^ (u64::from(currency.raw()) << 56) ^ 0x5bd1_e995)
}

impl Book {
    /// An empty book with room for `accounts` accounts.
    #[must_use]
    pub fn with_capacity(accounts: usize) -> Self {
        let filler = AccountEntry {
            id: 0,
            customer_ref: 0,
            home_country: 0,
            kind: AccountKind::System,
            opened_by: 0,
            main_currency: NO_CURRENCY,
            main: Balance::default(),
        };
        Self {
            accounts: Arena::with_capacity(accounts, filler),
            index: IdIndex::with_capacity(accounts),
            other: Arena::default(),
            other_index: IdIndex::default(),
        }
    }

    /// Adds an account. Panics if it exists: callers check first.
    pub fn insert_account(&mut self, id: u64, kind: AccountKind, home_country: u16, customer_ref: u64, opened_by: u32) {
        assert!(self.position(id).is_none(), "account {id} inserted twice");
        let entry = AccountEntry {
            id,
            customer_ref,
            home_country,
            kind,
            opened_by,
            main_currency: NO_CURRENCY,
            main: Balance::default(),
        };
        let at = self.accounts.len() as u32;
        let accounts = &self.accounts;
        self.index.insert(mix64(id), at, || accounts.iter().map(|a| mix64(a.id)));
        self.accounts.push(entry);
    }

    #[inline]
    fn position(&self, id: u64) -> Option<u32> {
        let accounts = &self.accounts;
        self.index.find(mix64(id), |at| accounts.get(at).id == id)
    }

    /// Where an account lives, so one transfer looks it up once.
    #[inline]
    #[must_use]
    pub fn find(&self, id: u64) -> Option<AccountPos> {
        self.position(id).map(AccountPos)
    }

    /// Where a system account is: the five are the first accounts of every
    /// book (created first; a snapshot restores accounts in id order, and
    /// system ids sort first), so no lookup is needed.
    #[inline]
    #[must_use]
    pub fn system(&self, id: u64) -> AccountPos {
        let at = AccountPos((id - 1) as u32);
        assert_eq!(self.accounts.get(at.0).id, id, "system account {id} is at position {}", id - 1);
        at
    }

    /// The account at a position.
    #[inline]
    #[must_use]
    pub fn entry(&self, at: AccountPos) -> &AccountEntry {
        self.accounts.get(at.0)
    }

    /// The balance of the account at `at` in a currency (zero if never
    /// touched).
    #[inline]
    #[must_use]
    pub fn balance_at(&self, at: AccountPos, currency: CurrencyIndex) -> Balance {
        let entry = self.accounts.get(at.0);
        if entry.main_currency == currency.raw() {
            entry.main
        } else {
            self.other_position(entry.id, currency).map(|at| self.other.get(at).balance).unwrap_or_default()
        }
    }

    /// The balance of the account at `at`, mutably, created at zero.
    #[inline]
    pub fn balance_at_mut(&mut self, at: AccountPos, currency: CurrencyIndex) -> &mut Balance {
        let entry = self.accounts.get_mut(at.0);
        if entry.main_currency == NO_CURRENCY {
            entry.main_currency = currency.raw();
        }
        let (is_main, id) = (entry.main_currency == currency.raw(), entry.id);
        if is_main {
            return &mut self.accounts.get_mut(at.0).main;
        }
        let at = match self.other_position(id, currency) {
            Some(at) => at,
            None => {
                let at = self.other.len() as u32;
                let other = &self.other;
                let hashes = || other.iter().map(|o| other_hash(o.account_id, o.currency));
                self.other_index.insert(other_hash(id, currency), at, hashes);
                self.other.push(OtherBalance { account_id: id, currency, balance: Balance::default() })
            }
        };
        &mut self.other.get_mut(at).balance
    }

    #[inline]
    fn other_position(&self, id: u64, currency: CurrencyIndex) -> Option<u32> {
        let other = &self.other;
        self.other_index.find(other_hash(id, currency), |at| {
            let o = other.get(at);
            o.account_id == id && o.currency == currency
        })
    }

    /// Starts loading the index slot of an account's balance in a currency
    /// that may not be its main one (first stage of a prefetch).
    #[inline]
    pub fn prefetch_other_slot(&self, id: u64, currency: CurrencyIndex) {
        self.other_index.prefetch(other_hash(id, currency));
    }

    /// Second stage: the balance entry itself, if its slot shows one.
    #[inline]
    pub fn prefetch_other_entry(&self, id: u64, currency: CurrencyIndex) {
        if let Some(at) = self.other_index.candidate(other_hash(id, currency)) {
            prefetch(self.other.get(at));
        }
    }

    /// Starts loading an account's index slot (first stage of a prefetch).
    #[inline]
    pub fn prefetch_slot(&self, id: u64) {
        self.index.prefetch(mix64(id));
    }

    /// Starts loading an account's entry (second stage, once its slot is in
    /// cache).
    #[inline]
    pub fn prefetch_entry(&self, id: u64) {
        // Checking the key would read the entry and wait for it: take the
        // first tag match instead (right unless two ids share 32 hash bits).
        if let Some(at) = self.index.candidate(mix64(id)) {
            prefetch(self.accounts.get(at));
        }
    }

    /// The position an account's index slot points at first (for
    /// prefetching state kept beside the book), without reading the entry.
    #[inline]
    #[must_use]
    pub fn candidate(&self, id: u64) -> Option<u32> {
        self.index.candidate(mix64(id))
    }

    /// The account, if it exists.
    #[inline]
    #[must_use]
    pub fn account(&self, id: u64) -> Option<&AccountEntry> {
        self.find(id).map(|at| self.entry(at))
    }

    /// Number of accounts.
    #[must_use]
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// An existing account's balance in a currency (zero if never touched).
    #[inline]
    #[must_use]
    pub fn balance(&self, id: u64, currency: CurrencyIndex) -> Balance {
        self.balance_at(self.find(id).expect("balance of an existing account"), currency)
    }

    /// A mutable balance of an existing account, created at zero.
    #[inline]
    pub fn balance_mut(&mut self, id: u64, currency: CurrencyIndex) -> &mut Balance {
        let at = self.find(id).expect("balance of an existing account");
        self.balance_at_mut(at, currency)
    }

    /// Every account id, sorted (for snapshots, audits and hashes).
    #[must_use]
    pub fn account_ids_sorted(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.accounts.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Every non-zero balance as `(account, currency, balance)`, sorted by
    /// account then currency. Deterministic whatever the map's order.
    #[must_use]
    pub fn balances_sorted(&self) -> Vec<(u64, CurrencyIndex, Balance)> {
        let mut out = Vec::with_capacity(self.accounts.len() + self.other.len());
        for entry in self.accounts.iter() {
            if let Some(cur) = CurrencyIndex::from_raw(entry.main_currency) {
                out.push((entry.id, cur, entry.main));
            }
        }
        for o in self.other.iter() {
            out.push((o.account_id, o.currency, o.balance));
        }
        out.retain(|(_, _, b)| *b != Balance::default());
        out.sort_unstable_by_key(|(id, cur, _)| (*id, *cur));
        out
    }

    /// Restores a balance read from a snapshot.
    pub fn restore_balance(&mut self, id: u64, currency: CurrencyIndex, balance: Balance) {
        *self.balance_mut(id, currency) = balance;
    }

    /// Bytes the accounts and their balances hold, for the memory bench.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.accounts.allocated_bytes()
            + self.index.allocated_bytes()
            + self.other.allocated_bytes()
            + self.other_index.allocated_bytes()
    }
}
