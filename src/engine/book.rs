//! The book: every account of one shard and its balance in every currency.
//!
//! An account holds a balance in every currency, but most accounts use one.
//! The first currency an account touches lives inline in its map entry (one
//! probe finds the account and its main balance); further currencies go to a
//! second map keyed by (account, currency). The book never decides anything:
//! it stores and checks; the transfer rules live in `engine`.

use crate::hash::{IdBuildHasher, IdMap};
use crate::money::CurrencyIndex;

/// System account 1: the bank's FX position.
pub const FX_POSITION: u64 = 1;
/// System account 2: where loan principal comes from.
pub const LOAN_FUNDING: u64 = 2;
/// System account 3: payments leaving the bank.
pub const REMITTANCE_OUT: u64 = 3;
/// System account 4: money entering the switch.
pub const SETTLEMENT_IN: u64 = 4;
/// System account 5: interest earned.
pub const INTEREST_INCOME: u64 = 5;
/// The system accounts created at first start, in id order.
pub const SYSTEM_ACCOUNTS: [u64; 5] = [FX_POSITION, LOAN_FUNDING, REMITTANCE_OUT, SETTLEMENT_IN, INTEREST_INCOME];
/// Customer account ids start here; 1..=1023 are reserved for the system.
pub const CUSTOMER_ID_MIN: u64 = 1024;

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
    /// The channel's reference for the customer.
    pub customer_ref: u64,
    /// ISO 3166-1 numeric.
    pub home_country: u16,
    pub kind: AccountKind,
    /// The currency of `main`, or `NO_CURRENCY` before the first movement.
    main_currency: u8,
    main: Balance,
}

/// Per-balance storage overhead, for the memory bench.
pub const ACCOUNT_ENTRY_SIZE: usize = size_of::<(u64, AccountEntry)>();
const _: () = assert!(size_of::<AccountEntry>() <= 40);
const _: () = assert!(size_of::<Balance>() == 24);

/// All accounts and balances of one shard.
#[derive(Clone, Debug, Default)]
pub struct Book {
    accounts: IdMap<u64, AccountEntry>,
    /// Balances beyond each account's main currency, keyed by
    /// `account_id << 8 | currency index`.
    other: IdMap<u128, Balance>,
}

#[inline]
fn other_key(account_id: u64, currency: CurrencyIndex) -> u128 {
    (u128::from(account_id) << 8) | u128::from(currency.raw())
}

impl Book {
    /// An empty book with room for `accounts` accounts.
    #[must_use]
    pub fn with_capacity(accounts: usize) -> Self {
        Self {
            accounts: IdMap::with_capacity_and_hasher(accounts, IdBuildHasher),
            other: IdMap::with_hasher(IdBuildHasher),
        }
    }

    /// Adds an account. Panics if it exists: callers check first.
    pub fn insert_account(&mut self, id: u64, kind: AccountKind, home_country: u16, customer_ref: u64) {
        let entry =
            AccountEntry { customer_ref, home_country, kind, main_currency: NO_CURRENCY, main: Balance::default() };
        let previous = self.accounts.insert(id, entry);
        assert!(previous.is_none(), "account {id} inserted twice");
    }

    /// The account, if it exists.
    #[inline]
    #[must_use]
    pub fn account(&self, id: u64) -> Option<&AccountEntry> {
        self.accounts.get(&id)
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
        let entry = self.accounts.get(&id).expect("balance of an existing account");
        if entry.main_currency == currency.raw() {
            entry.main
        } else {
            self.other.get(&other_key(id, currency)).copied().unwrap_or_default()
        }
    }

    /// A mutable balance of an existing account, created at zero.
    #[inline]
    pub fn balance_mut(&mut self, id: u64, currency: CurrencyIndex) -> &mut Balance {
        let Self { accounts, other } = self;
        let entry = accounts.get_mut(&id).expect("balance of an existing account");
        if entry.main_currency == NO_CURRENCY {
            entry.main_currency = currency.raw();
        }
        if entry.main_currency == currency.raw() {
            return &mut entry.main;
        }
        other.entry(other_key(id, currency)).or_default()
    }

    /// Every account id, sorted (for snapshots, audits and hashes).
    #[must_use]
    pub fn account_ids_sorted(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.accounts.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Every non-zero balance as `(account, currency, balance)`, sorted by
    /// account then currency. Deterministic whatever the map's order.
    #[must_use]
    pub fn balances_sorted(&self) -> Vec<(u64, CurrencyIndex, Balance)> {
        let mut out = Vec::with_capacity(self.accounts.len() + self.other.len());
        for (&id, entry) in &self.accounts {
            if let Some(cur) = CurrencyIndex::from_raw(entry.main_currency) {
                out.push((id, cur, entry.main));
            }
        }
        for (&key, balance) in &self.other {
            let cur = CurrencyIndex::from_raw((key & 0xFF) as u8).expect("valid currency key");
            out.push(((key >> 8) as u64, cur, *balance));
        }
        out.retain(|(_, _, b)| *b != Balance::default());
        out.sort_unstable_by_key(|(id, cur, _)| (*id, *cur));
        out
    }

    /// Restores a balance read from a snapshot.
    pub fn restore_balance(&mut self, id: u64, currency: CurrencyIndex, balance: Balance) {
        *self.balance_mut(id, currency) = balance;
    }
}
