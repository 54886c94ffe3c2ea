//! Quotes: rates locked for one transfer of a given pair, amount and side,
//! until they expire on the logical clock.
//!
//! A quote is removed when a transfer accepts it (posted or held) and when
//! the clock passes its expiry, so a quote that exists is one a transfer may
//! still use. Ids are given in sequence; expiries are kept ordered by
//! `(expires_at_ms, id)` so pruning is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use crate::fx::{Rate, Side};
use crate::money::CurrencyIndex;

/// One locked rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub from: CurrencyIndex,
    pub to: CurrencyIndex,
    pub side: Side,
    /// The amount quoted, on `side`.
    pub amount: u64,
    pub debit_amount: u64,
    pub credit_amount: u64,
    pub rate: Rate,
    /// The switch's time from which the quote is no longer good.
    pub expires_at_ms: u64,
}

/// Every live quote of a shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotes {
    by_id: BTreeMap<u64, Quote>,
    expiries: BTreeSet<(u64, u64)>,
    /// The id the next quote gets (ids start at 1; 0 means "no quote").
    next_id: u64,
    /// With several shards: ids another shard spent before this one was
    /// given the quote (a client that guessed an id); the quote is never
    /// stored here.
    spent_early: BTreeSet<u64>,
}

/// Live quotes per shard at most; past it FX_QUOTE answers QUOTES_FULL
/// until some expire or are spent (a live quote is never dropped early).
pub const QUOTES_MAX: usize = 1 << 20;

impl Quotes {
    /// Whether no more quotes may be given until some expire or are spent.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.by_id.len() >= QUOTES_MAX
    }

    /// Gives a new quote an id. The caller checks [`Quotes::is_full`].
    pub fn insert(&mut self, quote: Quote) -> u64 {
        assert!(!self.is_full(), "quote table full");
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        self.by_id.insert(id, quote);
        self.expiries.insert((quote.expires_at_ms, id));
        id
    }

    /// Inserts a quote under an id the switch chose (QUOTE_AT); later ids
    /// continue after it. An id already live (a replayed QUOTE_AT is not
    /// possible: the log applies each record once) is a broken invariant.
    pub fn insert_as(&mut self, id: u64, quote: Quote) -> u64 {
        assert!(!self.is_full(), "quote table full");
        assert!(id != 0 && !self.by_id.contains_key(&id), "quote {id} given twice");
        self.next_id = self.next_id.max(id + 1);
        let spent = self.spent_early.remove(&id);
        self.spent_early = self.spent_early.split_off(&self.next_id);
        if spent {
            return id;
        }
        self.by_id.insert(id, quote);
        self.expiries.insert((quote.expires_at_ms, id));
        id
    }

    /// A quote a transfer may use now, if it matches.
    #[must_use]
    pub fn usable(&self, id: u64, from: CurrencyIndex, to: CurrencyIndex, amount: u64, side: Side) -> Option<&Quote> {
        self.by_id.get(&id).filter(|q| q.from == from && q.to == to && q.amount == amount && q.side == side)
    }

    /// Spends (or drops) a quote.
    pub fn remove(&mut self, id: u64) {
        if let Some(q) = self.by_id.remove(&id) {
            self.expiries.remove(&(q.expires_at_ms, id));
        }
    }

    /// Drops every quote whose expiry is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now_ms {
                break;
            }
            self.remove(id);
        }
    }

    /// Number of live quotes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Another shard spent quote `id`: it goes here too, now or, if this
    /// shard has not been given it yet, when it is.
    pub fn spend_remote(&mut self, id: u64) {
        if self.by_id.contains_key(&id) {
            self.remove(id);
        } else if id >= self.next_id() {
            self.spent_early.insert(id);
        }
    }

    /// Ids spent elsewhere before this shard was given them, sorted.
    pub fn spent_early(&self) -> impl Iterator<Item = u64> + '_ {
        self.spent_early.iter().copied()
    }

    /// Restores [`Quotes::spent_early`] from a snapshot.
    pub fn restore_spent_early(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.spent_early.extend(ids);
    }

    /// The next id to be given.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    /// Every live quote by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Quote)> {
        self.by_id.iter().map(|(id, q)| (*id, q))
    }

    /// Rebuilds from a snapshot.
    pub fn restore(&mut self, next_id: u64, quotes: Vec<(u64, Quote)>) {
        self.next_id = next_id;
        for (id, q) in quotes {
            self.by_id.insert(id, q);
            self.expiries.insert((q.expires_at_ms, id));
        }
    }
}
