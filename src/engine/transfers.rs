//! The transfer store: every accepted transfer of one shard, for idempotency,
//! holds and lookups.
//!
//! Transfers are appended to a chunked arena (fixed 64 Ki-entry chunks, so
//! growth never copies and never over-allocates by more than one chunk) and
//! indexed by a `hashbrown::HashTable<u32>` of arena positions. The index
//! costs about 5 bytes a slot (4-byte position plus hashbrown's control
//! byte), so a stored transfer costs 88 + ~8 bytes. Insertion touches one
//! index slot and the arena's tail, which stays in cache.
//!
//! Never removes a transfer: a resent id must always be recognised
//! (ARCHITECTURE.md, "Memory and retention").

use hashbrown::HashTable;

use crate::hash::hash_u128;
use crate::money::CurrencyIndex;
use crate::protocol::records::{self, Transfer, TransferResult};

/// Arena chunk size: 64 Ki transfers (5.5 MiB).
const CHUNK_LEN: usize = 1 << 16;
/// Most transfers one shard stores (arena positions are `u32`).
pub const TRANSFERS_PER_SHARD_MAX: usize = u32::MAX as usize;

/// One stored transfer: its request fields, the amounts it moved and its
/// state. Everything `LOOKUP_TRANSFERS` shows and everything an identical
/// resend is compared on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTransfer {
    /// The id as two words, so the struct is 8-byte aligned (a `u128` would
    /// round it up to 96 bytes).
    id_lo: u64,
    id_hi: u64,
    pub debit_account: u64,
    pub credit_account: u64,
    /// The request's `amount` (in the debit or credit currency per `flags`).
    pub amount: u64,
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

/// Bytes per stored transfer in the arena (the index adds 5 to 12).
pub const STORED_TRANSFER_SIZE: usize = size_of::<StoredTransfer>();
const _: () = assert!(STORED_TRANSFER_SIZE == 88);

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
        Self {
            id_lo: t.transfer_id as u64,
            id_hi: (t.transfer_id >> 64) as u64,
            debit_account: t.debit_account,
            credit_account: t.credit_account,
            amount: t.amount,
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
        }
    }

    /// The transfer id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> u128 {
        u128::from(self.id_lo) | (u128::from(self.id_hi) << 64)
    }

    /// Whether `t` is an identical resend of this transfer.
    #[must_use]
    pub fn same_request(&self, t: &Transfer) -> bool {
        self.id() == t.transfer_id
            && self.debit_account == t.debit_account
            && self.credit_account == t.credit_account
            && self.amount == t.amount
            && self.debit_currency.code() == t.debit_currency
            && self.credit_currency.code() == t.credit_currency
            && self.destination_country == t.destination_country
            && self.flags == t.flags
            && self.fx_quote_id == t.fx_quote_id
            && self.user_data == t.user_data
    }

    /// The request this transfer was stored from.
    #[must_use]
    pub fn request(&self) -> Transfer {
        Transfer {
            transfer_id: self.id(),
            debit_account: self.debit_account,
            credit_account: self.credit_account,
            amount: self.amount,
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
#[derive(Clone, Debug, Default)]
pub struct TransferStore {
    chunks: Vec<Vec<StoredTransfer>>,
    len: usize,
    index: HashTable<u32>,
}

impl TransferStore {
    /// An empty store whose index has room for `capacity` transfers without
    /// rehashing.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self { chunks: Vec::new(), len: 0, index: HashTable::with_capacity(capacity) }
    }

    /// Number of stored transfers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finds a transfer by id.
    #[inline]
    #[must_use]
    pub fn find(&self, id: u128) -> Option<TransferIndex> {
        let chunks = &self.chunks;
        self.index.find(hash_u128(id), |&pos| arena_get(chunks, pos).id() == id).map(|&pos| TransferIndex(pos))
    }

    /// The transfer at an index.
    #[inline]
    #[must_use]
    pub fn get(&self, at: TransferIndex) -> &StoredTransfer {
        arena_get(&self.chunks, at.0)
    }

    /// The transfer at an index, to change its state.
    #[inline]
    pub fn get_mut(&mut self, at: TransferIndex) -> &mut StoredTransfer {
        let pos = at.0 as usize;
        &mut self.chunks[pos / CHUNK_LEN][pos % CHUNK_LEN]
    }

    /// Stores a new transfer. Panics if its id is stored already (callers
    /// check first) or the shard is full.
    pub fn insert(&mut self, transfer: StoredTransfer) -> TransferIndex {
        assert!(self.len < TRANSFERS_PER_SHARD_MAX, "transfer store full");
        let pos = self.len as u32;
        if self.len.is_multiple_of(CHUNK_LEN) {
            self.chunks.push(Vec::with_capacity(CHUNK_LEN));
        }
        let id = transfer.id();
        self.chunks.last_mut().expect("a chunk").push(transfer);
        self.len += 1;
        let chunks = &self.chunks;
        self.index.insert_unique(hash_u128(id), pos, |&p| hash_u128(arena_get(chunks, p).id()));
        TransferIndex(pos)
    }

    /// Every transfer in the order it was stored.
    pub fn iter(&self) -> impl Iterator<Item = &StoredTransfer> {
        self.chunks.iter().flatten()
    }

    /// Bytes allocated by the store (arena and index), for the memory bench.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * STORED_TRANSFER_SIZE).sum::<usize>()
            + self.index.capacity() * size_of::<u32>()
            + self.index.capacity()
    }
}

#[inline]
fn arena_get(chunks: &[Vec<StoredTransfer>], pos: u32) -> &StoredTransfer {
    let pos = pos as usize;
    &chunks[pos / CHUNK_LEN][pos % CHUNK_LEN]
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
        let n = CHUNK_LEN as u128 + 10;
        for id in 1..=n {
            store.insert(transfer(id * 0x1_0000_0001));
        }
        assert_eq!(store.len(), n as usize);
        for id in [1, 2, CHUNK_LEN as u128, n] {
            let at = store.find(id * 0x1_0000_0001).expect("stored");
            assert_eq!(store.get(at).id(), id * 0x1_0000_0001);
        }
        assert_eq!(store.find(7), None);
        assert_eq!(store.iter().count(), n as usize);
    }

    #[test]
    fn stored_transfer_fits_its_budget() {
        assert_eq!(STORED_TRANSFER_SIZE, 88);
    }
}
