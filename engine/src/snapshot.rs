//! The engine's state as bytes: the body of a snapshot file and the input of
//! the state hash.
//!
//! The encoding is canonical: accounts and balances sorted by id and
//! currency, transfers in the order they were stored, pending transfers by
//! id. Two engines with the same state encode to the same bytes whatever
//! their hash maps' history, so `state_hash` compares whole states and
//! replay determinism is a byte comparison. Checksums belong to the file
//! around it (`wal::snapshot`).

use sha2::{Digest, Sha256};

use super::book::INTERSHARD;
use super::book::{AccountKind, Balance};
use super::holds::NEVER;
use super::holds::{Holds, PendingEntry};
use super::links::{ENTRY_SIZE, Entry, EntryKind, Link};
use super::loans::Repayment;
use super::quotes::Quote;
use super::transfers::{StoredTransfer, TransferIndex};
use super::{Engine, EngineConfig};
use crate::aml::mule::Inbound;
use crate::aml::{Case, Outcome, Profile, Reasons};
use crate::credit::{CreditLine, LOAN_ACTIVE, LOAN_REPAID, Loan};
use crate::fx::{Rate, Side};
use crate::money::CurrencyIndex;
use crate::protocol::records::{self, Transfer};

const STATE_MAGIC: &[u8; 4] = b"HKST";
const STATE_VERSION: u32 = 10;

/// A snapshot body that does not decode: the file is corrupt or from
/// another version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes end before the state does (at byte `at`).
    Truncated { at: usize },
    /// Not a snapshot.
    BadMagic,
    /// A snapshot of another state version.
    Version { found: u32, expected: u32 },
    /// A count larger than the bytes left could hold.
    Count { what: &'static str, count: u64 },
    /// A value the state cannot hold: what it is, and the value or id.
    Invalid { what: &'static str, value: u128 },
    /// A rule the state keeps is broken (order, placement, a missing part).
    Inconsistent(&'static str),
    /// A snapshot of shard `shard` of `shards`, opened as another.
    OtherShard { shard: u16, shards: u16 },
    /// Bytes after the state.
    Trailing { bytes: usize },
    /// The state decodes but breaks an invariant.
    Audit(crate::AuditError),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot does not decode: ")?;
        match self {
            Self::Truncated { at } => write!(f, "truncated at byte {at}"),
            Self::BadMagic => write!(f, "bad magic"),
            Self::Version { found, expected } => write!(f, "version {found}, expected {expected}"),
            Self::Count { what, count } => write!(f, "{what} count {count} exceeds the bytes left"),
            Self::Invalid { what, value } => write!(f, "{what} {value}"),
            Self::Inconsistent(what) => write!(f, "{what}"),
            Self::OtherShard { shard, shards } => write!(f, "snapshot of shard {shard} of {shards}, opened as another"),
            Self::Trailing { bytes } => write!(f, "{bytes} trailing bytes"),
            Self::Audit(e) => write!(f, "restored state fails the audit: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(SnapshotError::Truncated { at: self.at })?;
        let out = self.bytes[self.at..end].try_into().expect("N bytes");
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    fn count(&mut self, what: &'static str, item_size: usize) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(item_size as u64) > left {
            return Err(SnapshotError::Count { what, count: n });
        }
        Ok(n as usize)
    }
    fn currency(&mut self) -> Result<CurrencyIndex, SnapshotError> {
        let raw = self.u8()?;
        CurrencyIndex::from_raw(raw)
            .ok_or_else(|| SnapshotError::Invalid { what: "currency index", value: u128::from(raw) })
    }
}

fn bad(what: &'static str) -> SnapshotError {
    SnapshotError::Inconsistent(what)
}

impl Engine {
    /// Appends the canonical encoding of the whole state to `out`. In
    /// debug builds the encoding is decoded again and must encode to the
    /// same bytes, so a field the decoder forgets fails the tests, not a
    /// recovery.
    pub fn encode_state(&self, out: &mut Vec<u8>) {
        #[cfg(debug_assertions)]
        let start = out.len();
        self.encode_state_once(out);
        #[cfg(debug_assertions)]
        {
            let back = Engine::decode_state(self.config, &out[start..]).expect("a snapshot decodes");
            let mut again = Vec::with_capacity(out.len() - start);
            back.encode_state_once(&mut again);
            assert!(again == out[start..], "a snapshot decodes to the state it encodes");
        }
    }

    fn encode_state_once(&self, out: &mut Vec<u8>) {
        assert!(self.verdicts.is_empty(), "AML verdicts are consumed in the record after theirs");
        assert!(self.caller.is_none(), "a SCOPED record's caller lasts only while it is applied");
        let mut w = Writer(out);
        w.0.extend_from_slice(STATE_MAGIC);
        w.u32(STATE_VERSION);
        w.u64(self.now_ms);
        self.encode_book(&mut w);
        self.encode_transfers(&mut w);
        self.encode_fx(&mut w);
        self.encode_aml(&mut w);
        self.encode_credit(&mut w);
        self.encode_links(&mut w);
        self.encode_multi(&mut w);
    }

    /// Accounts, then every balance of every account, in id order.
    fn encode_book(&self, w: &mut Writer<'_>) {
        let ids = self.book.account_ids_sorted();
        w.u64(ids.len() as u64);
        for id in ids {
            let a = self.book.account(id).expect("listed account");
            w.u64(id);
            w.u8(a.kind as u8);
            w.u16(a.home_country);
            w.u64(a.customer_ref);
            w.u32(a.opened_by);
        }
        let balances = self.book.balances_sorted();
        w.u64(balances.len() as u64);
        for (id, cur, b) in balances {
            w.u64(id);
            w.u8(cur.raw());
            w.u64(b.posted as u64);
            w.u64(b.held);
            w.u64(b.incoming);
        }
    }

    /// Transfers in the order they were stored, then the pending ones by id.
    fn encode_transfers(&self, w: &mut Writer<'_>) {
        w.u64(self.transfers.len() as u64);
        for s in self.transfers.iter() {
            w.u128(s.id());
            w.u64(s.debit_account);
            w.u64(s.credit_account);
            w.u64(s.debit_amount);
            w.u64(s.credit_amount);
            w.u64(s.rate_e9);
            w.u64(s.fx_quote_id);
            w.u64(s.user_data);
            w.u16(s.destination_country);
            w.u16(s.flags);
            w.u8(s.debit_currency.raw());
            w.u8(s.credit_currency.raw());
            w.u8(s.state);
            w.u8(s.holds);
        }
        let pending = self.pending.sorted();
        w.u64(pending.len() as u64);
        for (id, e) in pending {
            w.u128(id);
            w.u32(index_raw(e.at));
            w.u64(e.submitted_ms);
            w.u64(e.cooling_until_ms);
            w.u64(e.due_ms);
            w.u128(e.counted);
            w.u32(e.case);
        }
    }

    /// Rates, then the quotes held, by id.
    fn encode_fx(&self, w: &mut Writer<'_>) {
        let rates = self.rates.entries();
        w.u64(rates.len() as u64);
        for (from, to, rate_e9) in rates {
            w.u8(from.raw());
            w.u8(to.raw());
            w.u64(rate_e9);
        }
        w.u64(self.quotes.next_id());
        w.u64(self.quotes.len() as u64);
        for (id, q) in self.quotes.iter() {
            let (product, legs) = q.rate.parts();
            w.u64(id);
            w.u8(q.from.raw());
            w.u8(q.to.raw());
            w.u8(u8::from(q.side == Side::Credit));
            w.u64(q.amount);
            w.u64(q.debit_amount);
            w.u64(q.credit_amount);
            w.u128(product);
            w.u8(legs as u8);
            w.u64(q.expires_at_ms);
        }
    }

    /// AML: profiles that are not blank, by account id; then cases.
    fn encode_aml(&self, w: &mut Writer<'_>) {
        // AML: profiles that are not blank, by account id; the mule rule's
        // inbound states that are not blank (version 9); model 3's payee
        // memories that are not blank (version 10); then cases.
        let ids = self.book.account_ids_sorted();
        self.encode_account_words(w, &ids, |s| (s.profile != Profile::default()).then(|| s.profile.to_words()));
        self.encode_account_words(w, &ids, |s| (!s.inbound.is_blank()).then(|| s.inbound.to_words()));
        self.encode_account_words(w, &ids, |s| (!s.payees.is_blank()).then(|| s.payees.to_words()));
        w.u64(self.cases.len() as u64);
        for c in self.cases.iter() {
            w.u128(c.transfer_id);
            w.u64(c.submitted_ms);
            w.u64(c.closed_ms);
            w.u128(c.hkd_value);
            w.u128(c.day_total);
            w.u16(c.reasons.0);
            w.u8(c.holds);
            w.u8(c.outcome as u8);
            let m = &c.mule;
            w.u16(m.senders);
            w.u32(m.passed_on_permille);
            w.u64(m.inbound_hkd_minor);
            w.u64(m.first_in_ms);
            w.u64(m.last_in_ms);
        }
    }

    /// A count, then per account of `ids` (sorted) that `words` gives eight
    /// words for, its id and those words: what `account_words` reads.
    fn encode_account_words(
        &self,
        w: &mut Writer<'_>,
        ids: &[u64],
        words: impl Fn(&crate::aml::AmlState) -> Option<[u64; 8]>,
    ) {
        let rows: Vec<(u64, [u64; 8])> = ids
            .iter()
            .map(|&id| (id, self.book.find(id).expect("listed account")))
            .filter_map(|(id, at)| words(self.aml.get(at.index())).map(|x| (id, x)))
            .collect();
        w.u64(rows.len() as u64);
        for (id, row) in rows {
            w.u64(id);
            for word in row {
                w.u64(word);
            }
        }
    }

    /// Credit: lines, loans, repayment ids.
    fn encode_credit(&self, w: &mut Writer<'_>) {
        // Credit: lines by (account, currency); loans in the order they
        // were made; repayment ids sorted. A line's principal and active
        // loans are derived from the loans.
        let lines = self.credit.lines_sorted();
        w.u64(lines.len() as u64);
        for entry in &lines {
            let l = &entry.line;
            w.u64(entry.account);
            w.u8(entry.currency.raw());
            w.u16(l.flags);
            w.u32(l.apr_bps);
            w.u32(l.ear_bps);
            w.u64(l.limit);
            w.u64(l.micro_credit_max);
        }
        w.u64(self.credit.len() as u64);
        for l in self.credit.loans() {
            w.u128(l.id);
            w.u64(l.account);
            w.u8(l.currency.raw());
            w.u8(u8::from(l.micro));
            w.u8(l.state);
            w.u32(l.apr_bps);
            w.u32(l.ear_bps);
            w.u32(l.term_days);
            for v in [l.principal, l.principal_outstanding, l.interest_accrued, l.interest_paid, l.periods_accrued] {
                w.u64(v);
            }
            w.u64(l.disbursed_at_ms);
        }
        let mut repayments: Vec<_> = self.credit.repayments.iter().map(|(id, r)| (*id, *r)).collect();
        repayments.sort_unstable_by_key(|(id, _)| *id);
        w.u64(repayments.len() as u64);
        for (id, r) in repayments {
            w.u128(id);
            w.u128(r.loan_id);
            w.u64(r.amount);
        }
    }

    /// Links to the other shards, and the quotes spent early.
    fn encode_links(&self, w: &mut Writer<'_>) {
        // Links: this shard's place, then per shard the outbox and what was
        // applied from it; the accounts other shards own, sorted.
        w.u16(self.links.me);
        w.u16(self.links.shards());
        for link in &self.links.links {
            w.u64(link.last_seq);
            w.u64(link.applied);
            w.u64(link.outbox.len() as u64);
            for (e, flight) in link.outbox.iter().zip(&link.flights) {
                e.encode(w.0);
                // A credit's transfer in flight: where it is, and the AML
                // timing a void would need.
                if let Some(f) = flight {
                    w.u32(index_raw(f.at));
                    w.u64(f.submitted_ms);
                    w.u128(f.counted);
                    w.u32(f.case);
                }
            }
        }
        let mut remote: Vec<u64> = self.links.remote.iter().copied().collect();
        remote.sort_unstable();
        w.u64(remote.len() as u64);
        for id in remote {
            w.u64(id);
        }
        let spent_early: Vec<u64> = self.quotes.spent_early().collect();
        w.u64(spent_early.len() as u64);
        for id in spent_early {
            w.u64(id);
        }
    }

    /// Requests spanning shards.
    fn encode_multi(&self, w: &mut Writer<'_>) {
        // Requests spanning shards: the last round applied, the complete
        // mark, the rounds above it applied and continued, what is kept.
        let m = &self.multi;
        w.u64(m.applied);
        w.u64(m.complete);
        for set in [&m.recent, &m.continued] {
            w.u64(set.len() as u64);
            for &seq in set {
                w.u64(seq);
            }
        }
        w.u64(m.retained.len() as u64);
        for r in &m.retained {
            w.u64(r.seq);
            w.u16(r.kind);
            w.u64(r.raw.len() as u64);
            w.0.extend_from_slice(&r.raw);
            w.u64(r.rest.len() as u64);
            w.0.extend_from_slice(&r.rest);
        }
    }

    /// SHA-256 of the canonical state: equal hashes mean equal states.
    #[must_use]
    pub fn state_hash(&self) -> [u8; 32] {
        let mut bytes = Vec::new();
        self.encode_state(&mut bytes);
        Sha256::digest(&bytes).into()
    }

    /// Rebuilds an engine from [`Engine::encode_state`]'s bytes, checking
    /// every value it can and finally every invariant (`audit`).
    pub fn decode_state(config: EngineConfig, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let mut r = Reader { bytes, at: 0 };
        if &r.take::<4>()? != STATE_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u32()?;
        // Version 2 (before AML) has no AML fields: it decodes with blank
        // profiles and no cases; version 3 (before credit) has no lines
        // or loans.
        if !(2..=STATE_VERSION).contains(&version) {
            return Err(SnapshotError::Version { found: version, expected: STATE_VERSION });
        }
        let aml = version >= 3;
        let now_ms = r.u64()?;
        let mut engine = Engine::empty(config, now_ms);
        engine.decode_book(&mut r, version)?;
        engine.decode_transfers(&mut r, aml)?;
        engine.decode_fx(&mut r)?;
        if !aml {
            return engine.finish_decode(&r);
        }
        engine.decode_aml(&mut r, version)?;
        if version >= 4 {
            engine.decode_credit(&mut r)?;
        }
        if version >= 5 {
            engine.decode_links(&mut r)?;
        }
        if version >= 6 {
            engine.decode_multi(&mut r)?;
        }
        engine.check_pending_cases()?;
        engine.finish_decode(&r)
    }

    /// Accounts (system ones first, in place) and their balances.
    fn decode_book(&mut self, r: &mut Reader, version: u32) -> Result<(), SnapshotError> {
        let accounts = r.count("account", 19)?;
        for _ in 0..accounts {
            let id = r.u64()?;
            let kind = match r.u8()? {
                0 => AccountKind::System,
                1 => AccountKind::Customer,
                k => return Err(SnapshotError::Invalid { what: "account kind", value: u128::from(k) }),
            };
            let home_country = r.u16()?;
            let customer_ref = r.u64()?;
            // Version 7 records who opened each account (account scopes).
            let opened_by = if version >= 7 { r.u32()? } else { 0 };
            if self.book.account(id).is_some() {
                return Err(SnapshotError::Invalid { what: "account stored twice:", value: u128::from(id) });
            }
            if version < 5 && id > INTERSHARD && self.book.account(INTERSHARD).is_none() {
                // Before version 5 there was no INTERSHARD: it takes its
                // place after the other system accounts.
                self.insert_account(INTERSHARD, AccountKind::System, crate::money::HONG_KONG, 0, 0);
            }
            // System accounts are exactly 1..=5 (they sit first in every
            // book; `Book::system` relies on it).
            if id == 0 || (kind == AccountKind::System) != super::book::SYSTEM_ACCOUNTS.contains(&id) {
                return Err(SnapshotError::Invalid { what: "account of the wrong kind:", value: u128::from(id) });
            }
            self.insert_account(id, kind, home_country, customer_ref, opened_by);
        }
        if version < 5 && self.book.account(INTERSHARD).is_none() {
            self.insert_account(INTERSHARD, AccountKind::System, crate::money::HONG_KONG, 0, 0);
        }
        // All system accounts, at the first positions (restored in
        // id order, they are; `Book::system` relies on it).
        let in_place = |id: &u64| self.book.find(*id).is_some_and(|at| u64::from(at.index()) == *id - 1);
        if !super::book::SYSTEM_ACCOUNTS.iter().all(in_place) {
            return Err(bad("a system account is missing or out of place"));
        }
        let balances = r.count("balance", 33)?;
        for _ in 0..balances {
            let id = r.u64()?;
            let cur = r.currency()?;
            let balance = Balance { posted: r.u64()? as i64, held: r.u64()?, incoming: r.u64()? };
            if self.book.account(id).is_none() {
                return Err(SnapshotError::Invalid { what: "balance of unknown account", value: u128::from(id) });
            }
            self.book.restore_balance(id, cur, balance);
        }
        Ok(())
    }

    /// Transfers, then the pending ones (with their AML timing from
    /// version 3).
    fn decode_transfers(&mut self, r: &mut Reader, aml: bool) -> Result<(), SnapshotError> {
        let transfers = r.count("transfer", 80)?;
        for _ in 0..transfers {
            let transfer_id = r.u128()?;
            let debit_account = r.u64()?;
            let credit_account = r.u64()?;
            let debit_amount = r.u64()?;
            let credit_amount = r.u64()?;
            let rate_e9 = r.u64()?;
            let fx_quote_id = r.u64()?;
            let user_data = r.u64()?;
            let destination_country = r.u16()?;
            let flags = r.u16()?;
            let amount =
                if flags & records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY != 0 { credit_amount } else { debit_amount };
            let request = Transfer {
                transfer_id,
                debit_account,
                credit_account,
                amount,
                fx_quote_id,
                user_data,
                destination_country,
                flags,
                ..Transfer::default()
            };
            let debit_currency = r.currency()?;
            let credit_currency = r.currency()?;
            let mut stored =
                StoredTransfer::new(&request, debit_currency, credit_currency, debit_amount, credit_amount, rate_e9);
            stored.state = r.u8()?;
            stored.holds = r.u8()?;
            if !(records::STATE_POSTED..=records::STATE_VOIDED).contains(&stored.state)
                || Holds::from_bits(stored.holds).is_none()
            {
                return Err(SnapshotError::Invalid { what: "state or holds of transfer", value: request.transfer_id });
            }
            if request.transfer_id == 0 || self.transfers.find(request.transfer_id).is_some() {
                return Err(SnapshotError::Invalid {
                    what: "transfer id invalid or stored twice:",
                    value: request.transfer_id,
                });
            }
            self.transfers.insert(stored);
        }
        let pending = r.count("pending transfer", if aml { 64 } else { 44 })?;
        for _ in 0..pending {
            let id = r.u128()?;
            let at = r.u32()?;
            let entry = PendingEntry {
                at: index_from_raw(at),
                submitted_ms: r.u64()?,
                cooling_until_ms: r.u64()?,
                due_ms: r.u64()?,
                counted: if aml { r.u128()? } else { 0 },
                case: if aml { r.u32()? } else { super::holds::NO_CASE },
            };
            let found = self.transfers.find(id).ok_or_else(|| bad("pending transfer not stored"))?;
            if found != entry.at || self.pending.get(id).is_some() {
                return Err(SnapshotError::Invalid { what: "pending transfer misplaced:", value: id });
            }
            self.pending.insert(id, entry);
        }
        Ok(())
    }

    /// Rates and the quotes held.
    fn decode_fx(&mut self, r: &mut Reader) -> Result<(), SnapshotError> {
        let rates = r.count("rate", 10)?;
        for _ in 0..rates {
            let from = r.currency()?;
            let to = r.currency()?;
            let rate_e9 = r.u64()?;
            if from == to || rate_e9 == 0 {
                return Err(bad("rate of a currency to itself, or zero"));
            }
            self.rates.set(from, to, rate_e9);
        }
        let next_quote = r.u64()?;
        let quotes = r.count("quote", 60)?;
        let mut restored = Vec::with_capacity(quotes);
        for _ in 0..quotes {
            let id = r.u64()?;
            let from = r.currency()?;
            let to = r.currency()?;
            let side = match r.u8()? {
                0 => Side::Debit,
                1 => Side::Credit,
                s => return Err(SnapshotError::Invalid { what: "quote side", value: u128::from(s) }),
            };
            let amount = r.u64()?;
            let debit_amount = r.u64()?;
            let credit_amount = r.u64()?;
            let product = r.u128()?;
            let legs = u32::from(r.u8()?);
            let rate = Rate::from_parts(product, legs).ok_or_else(|| bad("quote rate"))?;
            let expires_at_ms = r.u64()?;
            // Encoded in ascending id order: each id above the last.
            let previous = restored.last().map_or(0, |(i, _)| *i);
            if id <= previous || id >= next_quote {
                return Err(SnapshotError::Invalid { what: "quote id", value: u128::from(id) });
            }
            restored.push((id, Quote { from, to, side, amount, debit_amount, credit_amount, rate, expires_at_ms }));
        }
        self.quotes.restore(next_quote, restored);
        Ok(())
    }

    /// A count, then per account (by id, ascending) its id and eight words:
    /// the AML profiles' and the inbound states' encoding.
    fn account_words(
        &mut self,
        r: &mut Reader,
        (unknown, unordered): (&'static str, &'static str),
        mut each: impl FnMut(&mut Self, crate::book::AccountPos, [u64; 8]) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let n = r.count("account's words", 72)?;
        let mut previous = None;
        for _ in 0..n {
            let id = r.u64()?;
            let mut words = [0u64; 8];
            for w in &mut words {
                *w = r.u64()?;
            }
            let at = self.book.find(id).ok_or_else(|| bad(unknown))?;
            if previous.is_some_and(|p| p >= id) {
                return Err(bad(unordered));
            }
            previous = Some(id);
            each(self, at, words)?;
        }
        Ok(())
    }

    /// AML profiles and cases.
    fn decode_aml(&mut self, r: &mut Reader, version: u32) -> Result<(), SnapshotError> {
        let errors = ("profile of an unknown account", "profiles out of order");
        self.account_words(r, errors, |e, at, mut words| {
            if version < 8 {
                // The count and the day were two 32-bit halves of word 6.
                let (count, day) = (words[6] as u32, words[6] >> 32);
                words[6] = u64::from(count.min(u32::from(u16::MAX))) | (day << 32);
            }
            let state = e.aml.get_mut(at.index());
            state.profile = Profile::from_words(words);
            state.inbound.paid = state.profile.payees;
            Ok(())
        })?;
        if version >= 9 {
            let errors = ("inbound state of an unknown account", "inbound states out of order");
            self.account_words(r, errors, |e, at, words| {
                // Word 3 is the payee filter's copy: rebuilt, written as 0.
                if words[3] != 0 {
                    return Err(bad("inbound state with a payee filter"));
                }
                let state = e.aml.get_mut(at.index());
                state.inbound = Inbound::from_words(words, state.profile.payees);
                Ok(())
            })?;
        }
        if version >= 10 {
            let errors = ("payee memory of an unknown account", "payee memories out of order");
            self.account_words(r, errors, |e, at, words| {
                e.aml.get_mut(at.index()).payees =
                    crate::aml::payees::Payees::from_words(words).ok_or_else(|| bad("payee memory's first day"))?;
                Ok(())
            })?;
        }
        let cases = r.count("case", 68)?;
        for _ in 0..cases {
            let mut case = Case {
                transfer_id: r.u128()?,
                submitted_ms: r.u64()?,
                closed_ms: r.u64()?,
                hkd_value: r.u128()?,
                day_total: r.u128()?,
                reasons: Reasons(r.u16()?),
                holds: r.u8()?,
                outcome: Outcome::from_u8(r.u8()?).ok_or_else(|| bad("case outcome"))?,
                mule: Default::default(),
            };
            if version >= 9 {
                case.mule = crate::aml::mule::Evidence {
                    senders: r.u16()?,
                    passed_on_permille: r.u32()?,
                    inbound_hkd_minor: r.u64()?,
                    first_in_ms: r.u64()?,
                    last_in_ms: r.u64()?,
                };
            }
            let n = self.cases.len() as u32;
            let ordered = n == 0 || self.cases.get(n - 1).submitted_ms <= case.submitted_ms;
            if self.transfers.find(case.transfer_id).is_none() || !ordered {
                return Err(SnapshotError::Invalid { what: "case misplaced, of transfer", value: case.transfer_id });
            }
            self.cases.push(case);
        }
        Ok(())
    }

    /// Every pending transfer names no case, or its own open one.
    fn check_pending_cases(&self) -> Result<(), SnapshotError> {
        for (id, entry) in self.pending.sorted() {
            let open = entry.case == super::holds::NO_CASE
                || (entry.case < self.cases.len() as u32 && {
                    let c = self.cases.get(entry.case);
                    c.transfer_id == id && c.outcome == Outcome::Pending
                });
            if !open {
                return Err(SnapshotError::Invalid { what: "pending transfer names a case not its own:", value: id });
            }
        }
        Ok(())
    }

    fn decode_multi(&mut self, r: &mut Reader) -> Result<(), SnapshotError> {
        let m = &mut self.multi;
        m.applied = r.u64()?;
        m.complete = r.u64()?;
        for set in [&mut m.recent, &mut m.continued] {
            let n = r.count("round", 8)?;
            for _ in 0..n {
                let seq = r.u64()?;
                if seq <= m.complete || seq > m.applied || !set.insert(seq) {
                    return Err(SnapshotError::Invalid { what: "round misplaced:", value: u128::from(seq) });
                }
            }
        }
        let n = r.count("retained round", 26)?;
        for _ in 0..n {
            let seq = r.u64()?;
            let kind = r.u16()?;
            let mut bytes = || -> Result<Vec<u8>, SnapshotError> {
                let len = r.count("retained bytes", 1)?;
                let out = r.bytes[r.at..r.at + len].to_vec();
                r.at += len;
                Ok(out)
            };
            let (raw, rest) = (bytes()?, bytes()?);
            let ordered = m.retained.back().is_none_or(|last| last.seq < seq) && m.recent.contains(&seq);
            if !ordered || super::multi::parts(&raw).is_none() {
                return Err(SnapshotError::Invalid {
                    what: "retained round out of order or malformed:",
                    value: u128::from(seq),
                });
            }
            m.retained.push_back(super::multi::Retained { seq, kind, raw, rest });
        }
        Ok(())
    }

    fn decode_links(&mut self, r: &mut Reader) -> Result<(), SnapshotError> {
        let (me, shards) = (r.u16()?, r.u16()?);
        if (me, shards) != (self.links.me, self.links.shards()) {
            return Err(SnapshotError::OtherShard { shard: me, shards });
        }
        for peer in 0..usize::from(shards) {
            let last_seq = r.u64()?;
            let applied = r.u64()?;
            let n = r.count("link entry", ENTRY_SIZE)?;
            let mut outbox = std::collections::VecDeque::with_capacity(n);
            let mut flights = std::collections::VecDeque::with_capacity(n);
            for _ in 0..n {
                let e = Entry::decode(&r.take::<ENTRY_SIZE>()?).ok_or_else(|| bad("link entry"))?;
                let flight = if e.kind == EntryKind::Credit {
                    let at = index_from_raw(r.u32()?);
                    let (submitted_ms, counted, case) = (r.u64()?, r.u128()?, r.u32()?);
                    let names = (at.0 as usize) < self.transfers.len() && self.transfers.get(at).id() == e.id;
                    let open = case == super::holds::NO_CASE
                        || (case < self.cases.len() as u32 && {
                            let c = self.cases.get(case);
                            c.transfer_id == e.id && c.outcome == crate::aml::Outcome::Pending
                        });
                    if !names || !open {
                        return Err(SnapshotError::Invalid { what: "credit misplaced, of transfer", value: e.id });
                    }
                    Some(PendingEntry { at, submitted_ms, cooling_until_ms: 0, due_ms: NEVER, counted, case })
                } else {
                    None
                };
                outbox.push_back(e);
                flights.push_back(flight);
            }
            let contiguous = outbox.iter().zip(outbox.iter().skip(1)).all(|(a, b)| b.seq == a.seq + 1);
            let ends = outbox.back().is_none_or(|e| e.seq == last_seq) && outbox.front().is_none_or(|e| e.seq >= 1);
            let own_empty = peer != usize::from(me) || (last_seq == 0 && applied == 0);
            if !contiguous || !ends || !own_empty {
                return Err(SnapshotError::Invalid { what: "link to shard out of sequence:", value: peer as u128 });
            }
            self.links.links[peer] = Link { last_seq, outbox, flights, applied };
        }
        let remote = r.count("remote account", 8)?;
        for _ in 0..remote {
            let id = r.u64()?;
            if id < super::book::CUSTOMER_ID_MIN || self.book.account(id).is_some() || !self.links.remote.insert(id) {
                return Err(SnapshotError::Invalid {
                    what: "remote account invalid, local or twice:",
                    value: u128::from(id),
                });
            }
        }
        let n = r.count("quote spent early", 8)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u64()?;
            if id < self.quotes.next_id() || ids.last().is_some_and(|&last| last >= id) {
                return Err(SnapshotError::Invalid { what: "quote spent early, out of order:", value: u128::from(id) });
            }
            ids.push(id);
        }
        self.quotes.restore_spent_early(ids);
        Ok(())
    }

    fn decode_credit(&mut self, r: &mut Reader) -> Result<(), SnapshotError> {
        let lines = r.count("credit line", 35)?;
        for _ in 0..lines {
            let account = r.u64()?;
            let currency = r.currency()?;
            let line = CreditLine {
                flags: r.u16()?,
                apr_bps: r.u32()?,
                ear_bps: r.u32()?,
                limit: r.u64()?,
                micro_credit_max: r.u64()?,
                principal: 0,
            };
            let customer = self.book.account(account).is_some_and(|a| a.kind == AccountKind::Customer);
            if !customer
                || line.apr_bps > crate::credit::APR_BPS_MAX
                || line.ear_bps != crate::credit::ear_bps(line.apr_bps)
            {
                return Err(SnapshotError::Invalid { what: "credit line of invalid:", value: u128::from(account) });
            }
            if self.credit.line(account, currency).is_some() {
                return Err(SnapshotError::Invalid { what: "credit line of twice:", value: u128::from(account) });
            }
            self.credit.set_line(account, currency, line);
        }
        let loans = r.count("loan", 87)?;
        // EARs are checked against their APR, computed once per APR.
        let mut ears = std::collections::BTreeMap::new();
        for _ in 0..loans {
            // Fields in the order they were written.
            let loan = Loan {
                id: r.u128()?,
                account: r.u64()?,
                currency: r.currency()?,
                micro: match r.u8()? {
                    0 => false,
                    1 => true,
                    m => return Err(SnapshotError::Invalid { what: "loan micro flag:", value: u128::from(m) }),
                },
                state: r.u8()?,
                apr_bps: r.u32()?,
                ear_bps: r.u32()?,
                term_days: r.u32()?,
                principal: r.u64()?,
                principal_outstanding: r.u64()?,
                interest_accrued: r.u64()?,
                interest_paid: r.u64()?,
                periods_accrued: r.u64()?,
                disbursed_at_ms: r.u64()?,
                next: crate::credit::NO_LOAN,
            };
            // Its line's principal is the sum of its active loans' and
            // must fit a u64 (`insert` asserts it does).
            let line = self.credit.line(loan.account, loan.currency);
            let valid = loan.id != 0
                && self.credit.find(loan.id).is_none()
                && line.is_some_and(|l| l.line.principal.checked_add(loan.principal_outstanding).is_some())
                && matches!(loan.state, LOAN_ACTIVE | LOAN_REPAID)
                && (loan.state == LOAN_ACTIVE) == (loan.principal_outstanding > 0)
                && loan.principal_outstanding <= loan.principal
                && loan.apr_bps <= crate::credit::APR_BPS_MAX
                && loan.ear_bps == *ears.entry(loan.apr_bps).or_insert_with(|| crate::credit::ear_bps(loan.apr_bps));
            if !valid {
                return Err(SnapshotError::Invalid { what: "loan invalid:", value: loan.id });
            }
            self.credit.insert(loan);
        }
        let repayments = r.count("repayment", 40)?;
        for _ in 0..repayments {
            let id = r.u128()?;
            let repayment = Repayment { loan_id: r.u128()?, amount: r.u64()? };
            if id == 0 || self.credit.repayments.insert(id, repayment).is_some() {
                return Err(SnapshotError::Invalid { what: "repayment invalid or twice:", value: id });
            }
        }
        Ok(())
    }

    /// The last checks of a decode: every byte used, every invariant held.
    fn finish_decode(self, r: &Reader) -> Result<Engine, SnapshotError> {
        if r.at != r.bytes.len() {
            return Err(SnapshotError::Trailing { bytes: r.bytes.len() - r.at });
        }
        self.audit().map_err(SnapshotError::Audit)?;
        Ok(self)
    }
}

fn index_raw(at: TransferIndex) -> u32 {
    // TransferIndex is a u32 position; its Ord and Hash follow it.
    let TransferIndex(raw) = at;
    raw
}

fn index_from_raw(raw: u32) -> TransferIndex {
    TransferIndex(raw)
}
