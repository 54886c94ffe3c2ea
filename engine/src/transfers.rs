//! The transfer store: every accepted transfer of one shard, for idempotency,
//! holds and lookups.
//!
//! Transfers are appended to an [`Arena`] and found through an [`IdIndex`]
//! (see `index`): 80 bytes of record plus 8 to 16 bytes of index slot per
//! transfer. Inserting a new id touches one index cache line and the
//! arena's tail, which stays in cache; the engine prefetches the index line
//! for transfers further down the batch.
//!
//! Never removes a transfer: a resent id must always be recognised
//! (ARCHITECTURE.md, "Memory and retention").

use super::index::{Arena, IdIndex};
use crate::hash::hash_u128;
use crate::money::CurrencyIndex;
use crate::protocol::records::{self, Transfer, TransferResult};

/// One stored transfer: its request fields, the amounts it moved and its
/// state. Everything `LOOKUP_TRANSFERS` shows and everything an identical
/// resend is compared on. The request's `amount` is not stored: it is
/// `credit_amount` with `TRANSFER_AMOUNT_IN_CREDIT_CURRENCY`, else
/// `debit_amount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTransfer {
    /// The id as two words, so the struct is 8-byte aligned (a `u128` would
    /// round it up to 16-byte alignment and 96 bytes).
    id_lo: u64,
    id_hi: u64,
    pub debit_account: u64,
    pub credit_account: u64,
    /// Minor units of the debit currency actually moved (or reserved).
    pub debit_amount: u64,
    /// Minor units of the credit currency.
    pub credit_amount: u64,
    /// Credit units per debit unit × 10^9 (10^9 for one currency).
    pub rate_e9: u64,
    pub fx_quote_id: u64,
    pub user_data: u64,
    pub destination_country: u16,
    pub flags: u16,
    pub debit_currency: CurrencyIndex,
    pub credit_currency: CurrencyIndex,
    /// `records::STATE_*` (never `STATE_NONE`: rejected transfers are not
    /// stored).
    pub state: u8,
    /// `Holds` bits while pending; 0 otherwise.
    pub holds: u8,
}

/// Bytes per stored transfer in the arena (the index adds 8 to 16).
pub const STORED_TRANSFER_SIZE: usize = size_of::<StoredTransfer>();
const _: () = assert!(STORED_TRANSFER_SIZE == 80);

impl StoredTransfer {
    /// A new stored transfer for an accepted request.
    #[must_use]
    pub fn new(
        t: &Transfer,
        debit_currency: CurrencyIndex,
        credit_currency: CurrencyIndex,
        debit_amount: u64,
        credit_amount: u64,
        rate_e9: u64,
    ) -> Self {
        let stored = Self {
            id_lo: t.transfer_id as u64,
            id_hi: (t.transfer_id >> 64) as u64,
            debit_account: t.debit_account,
            credit_account: t.credit_account,
            debit_amount,
            credit_amount,
            rate_e9,
            fx_quote_id: t.fx_quote_id,
            user_data: t.user_data,
            destination_country: t.destination_country,
            flags: t.flags,
            debit_currency,
            credit_currency,
            state: records::STATE_POSTED,
            holds: 0,
        };
        assert_eq!(stored.amount(), t.amount, "the request's amount is one of the legs");
        stored
    }

    /// The transfer id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> u128 {
        u128::from(self.id_lo) | (u128::from(self.id_hi) << 64)
    }

    /// The request's `amount`.
    #[inline]
    #[must_use]
    pub fn amount(&self) -> u64 {
        if self.flags & records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY != 0 {
            self.credit_amount
        } else {
            self.debit_amount
        }
    }

    /// Whether `t` is an identical resend of this transfer.
    #[must_use]
    pub fn same_request(&self, t: &Transfer) -> bool {
        *t == self.request()
    }

    /// The request this transfer was stored from.
    #[must_use]
    pub fn request(&self) -> Transfer {
        Transfer {
            transfer_id: self.id(),
            debit_account: self.debit_account,
            credit_account: self.credit_account,
            amount: self.amount(),
            debit_currency: self.debit_currency.code(),
            credit_currency: self.credit_currency.code(),
            destination_country: self.destination_country,
            flags: self.flags,
            fx_quote_id: self.fx_quote_id,
            user_data: self.user_data,
        }
    }

    /// The wire result for this transfer (without `hold_until_ms`, which the
    /// engine's pending table knows).
    #[must_use]
    pub fn result(&self, code: u16) -> TransferResult {
        TransferResult {
            transfer_id: self.id(),
            code,
            state: self.state,
            holds: self.holds,
            debit_amount: self.debit_amount,
            credit_amount: self.credit_amount,
            rate_e9: self.rate_e9,
            auto_credit_amount: 0,
            hold_until_ms: 0,
        }
    }
}

/// Position of a transfer in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferIndex(pub(crate) u32);

/// Every transfer one shard has accepted.
#[derive(Debug, Default)]
pub struct TransferStore {
    arena: Arena<StoredTransfer>,
    index: IdIndex,
}

impl Clone for TransferStore {
    fn clone(&self) -> Self {
        Self { arena: self.arena.clone(), index: self.index.clone() }
    }
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { arena, index } = source;
        self.arena.clone_from(arena);
        self.index.clone_from(index);
    }
}

impl TransferStore {
    /// An empty store whose index has room for `capacity` transfers before
    /// it grows.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        let filler = StoredTransfer::new(&Transfer::default(), CurrencyIndex::HKD, CurrencyIndex::HKD, 0, 0, 0);
        Self { arena: Arena::with_capacity(capacity, filler), index: IdIndex::with_capacity(capacity) }
    }

    /// Number of stored transfers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }

    /// Starts loading the index slot of an id.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        self.index.prefetch(hash_u128(id));
    }

    /// Starts loading the record at a position.
    #[inline]
    pub fn prefetch_at(&self, at: TransferIndex) {
        super::index::prefetch(self.arena.get(at.0));
    }

    /// Finds a transfer by id.
    #[inline]
    #[must_use]
    pub fn find(&self, id: u128) -> Option<TransferIndex> {
        let arena = &self.arena;
        self.index.find(hash_u128(id), |at| arena.get(at).id() == id).map(TransferIndex)
    }

    /// The transfer at an index.
    #[inline]
    #[must_use]
    pub fn get(&self, at: TransferIndex) -> &StoredTransfer {
        self.arena.get(at.0)
    }

    /// The transfer at an index, to change its state.
    #[inline]
    pub fn get_mut(&mut self, at: TransferIndex) -> &mut StoredTransfer {
        self.arena.get_mut(at.0)
    }

    /// Stores a new transfer. Panics if the shard is full; callers check the
    /// id is new first.
    pub fn insert(&mut self, transfer: StoredTransfer) -> TransferIndex {
        let at = self.arena.len() as u32;
        let arena = &self.arena;
        self.index.insert(hash_u128(transfer.id()), at, || arena.iter().map(|t| hash_u128(t.id())));
        let pushed = self.arena.push(transfer);
        debug_assert_eq!(pushed, at);
        TransferIndex(at)
    }

    /// Every transfer in the order it was stored.
    pub fn iter(&self) -> impl Iterator<Item = &StoredTransfer> {
        self.arena.iter()
    }

    /// Slots in the id index (its load is `len / index_slots`).
    #[must_use]
    pub fn index_slots(&self) -> usize {
        self.index.slots()
    }

    /// Bytes allocated by the store (arena and index), for the memory bench.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.arena.allocated_bytes() + self.index.allocated_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u128) -> StoredTransfer {
        let t = Transfer { transfer_id: id, debit_account: 4, credit_account: 1024, amount: 5, ..Transfer::default() };
        let hkd = CurrencyIndex::of(344).expect("HKD");
        StoredTransfer::new(&t, hkd, hkd, 5, 5, 1_000_000_000)
    }

    #[test]
    fn finds_what_it_stored_across_chunks() {
        let mut store = TransferStore::with_capacity(0);
        let n = (1u128 << 16) + 10;
        for id in 1..=n {
            store.insert(transfer(id * 0x1_0000_0001));
        }
        assert_eq!(store.len(), n as usize);
        for id in [1, 2, 1 << 16, n] {
            let at = store.find(id * 0x1_0000_0001).expect("stored");
            assert_eq!(store.get(at).id(), id * 0x1_0000_0001);
        }
        assert_eq!(store.find(7), None);
        assert_eq!(store.iter().count(), n as usize);
    }

    #[test]
    fn the_request_round_trips_through_the_stored_form() {
        let hkd = CurrencyIndex::of(344).expect("HKD");
        let usd = CurrencyIndex::of(840).expect("USD");
        let t = Transfer {
            transfer_id: 9,
            debit_account: 1024,
            credit_account: 1025,
            amount: 700,
            debit_currency: 344,
            credit_currency: 840,
            destination_country: 840,
            flags: records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY,
            fx_quote_id: 4,
            user_data: 5,
        };
        let stored = StoredTransfer::new(&t, hkd, usd, 5_460, 700, 128_000_000);
        assert!(stored.same_request(&t));
        assert_eq!(stored.request(), t);
        assert!(!stored.same_request(&Transfer { amount: 5_460, ..t }));
    }
}
