//! The engine: one shard's books, transfers and holds, as a pure,
//! deterministic state machine.
//!
//! The engine owns its state outright and is driven by commands (a wire kind
//! and a body of fixed-size records) and a logical clock (`now_ms`, carried
//! in with every command and recorded in the log). It never does I/O, never
//! reads the system clock, never allocates per record except where a
//! transfer is stored, and never lets hash-map order decide an outcome, so
//! replaying the log reproduces every decision and every byte of state.
//!
//! A channel's mistake is a result code, checked in the contract's order of
//! precedence; a broken internal invariant is a panic. Under backpressure the
//! engine is not involved: its caller (the shard loop) decides what to feed
//! it. It has no shutdown of its own: it is dropped.
//!
//! This crate is the engine with the domain it applies: money and
//! currencies (`money`), conversions (`fx`), the AML rules and the STR
//! (`aml`), credit terms (`credit`). It depends on the protocol crate and
//! on no runtime: no tokio, no sockets, no files, no threads, so it cannot
//! do I/O by construction. The switch (`harbour`) drives it.

/// The protocol crate, under the path the engine's modules use.
pub use harbour_protocol as protocol;

pub mod aml;
pub mod credit;
pub mod fx;
pub mod hash;
pub mod money;

pub mod audit;
pub mod book;
pub mod holds;
pub mod index;
pub mod lending;
pub mod links;
pub mod loans;
pub mod multi;
pub mod quotes;
pub mod snapshot;
pub mod transfers;

use crate::aml::report::{self, CaseRow, ReportError};
use crate::aml::{AmlConfig, Case, Judgement, Outcome, Outgoing, Profile};
use crate::fx::{FxError, RateTable, Side};
use crate::money::CurrencyIndex;
use crate::protocol::ResultCode;
use crate::protocol::internal::{self, QuoteAt, Verdict};
use crate::protocol::records::{
    self, Account, Balance as BalanceRecord, BalanceKey, CreditLine as CreditLineRecord, Finalize, FxRate, Id,
    Quote as QuoteRecord, QuoteRequest, Record, RecordResult, Repay, SetTime, StepUp, StrHeader, StrRequest, Transfer,
    TransferResult,
};
use crate::protocol::{kind, kinds};
use book::{AccountKind, AccountPos, Balance, Book};
use holds::{HoldWindows, Holds, NEVER, NO_CASE, PendingEntry, PendingTable};
use index::Arena;
use links::{EntryKind, Links};
use quotes::{Quote, Quotes};
use transfers::{StoredTransfer, TransferIndex, TransferStore};

pub use audit::AuditError;
pub use snapshot::SnapshotError;

/// 2026-01-01T00:00:00Z: where a manual clock starts on a new data directory.
pub const MANUAL_CLOCK_START_MS: u64 = 1_767_225_600_000;

/// How many records ahead of the one being applied `submit_batch` starts
/// loading memory for.
const PREFETCH_AHEAD: usize = 16;

/// The shard that owns a customer account: a fixed hash of its id, so the
/// assignment never changes for a given shard count.
#[must_use]
pub fn shard_of(account_id: u64, shards: usize) -> usize {
    if shards == 1 { 0 } else { (crate::hash::mix64(account_id) % shards as u64) as usize }
}

/// Whether a TransferResult shows a transfer whose credit another shard
/// has yet to apply.
fn in_flight(r: &[u8]) -> bool {
    let r = TransferResult::decode(r);
    r.state == records::STATE_PENDING && r.holds & Holds::IN_FLIGHT.bits() != 0
}

/// What a shard stores, by id: see [`Engine::stored_ids`].
#[derive(Clone, Debug, Default)]
pub struct StoredIds {
    /// Transfer and loan ids (one space).
    pub ids: Vec<u128>,
    pub repayments: Vec<u128>,
    /// Quotes the shard holds (given, not spent, not expired).
    pub quotes: Vec<u64>,
}

/// Rate of a same-currency transfer: 1 × 10^9.
pub const RATE_ONE_E9: u64 = 1_000_000_000;

/// Settings that shape the engine's decisions. Part of the switch's
/// configuration; a replay must use the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Accounts to size the book for (no rehash below this).
    pub accounts_capacity: usize,
    /// Transfers to size the store's index for (no rehash below this).
    pub transfers_capacity: usize,
    /// Verification windows of held transfers.
    pub hold_windows: HoldWindows,
    /// Whether the clock is manual (SET_TIME accepted) rather than the
    /// system's.
    pub manual_clock: bool,
    /// How long a quote is good (contract default 30 s).
    pub quote_ttl_ms: u64,
    /// Loans (and credit lines) to size the credit store for.
    pub loans_capacity: usize,
    /// Pending transfers to size the pending table for (no rehash below
    /// this: under mass AML holds a rehash of millions stalls the shard).
    pub pending_capacity: usize,
    /// The AML rules' settings.
    pub aml: AmlConfig,
    /// This shard's number and the number of shards: which customer
    /// accounts are this shard's (`shard_of`) and which links it has.
    pub shard: u16,
    pub shards: u16,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            accounts_capacity: 1024,
            transfers_capacity: 1024,
            hold_windows: HoldWindows::default(),
            manual_clock: false,
            quote_ttl_ms: 30_000,
            loans_capacity: 1024,
            pending_capacity: 1024,
            aml: AmlConfig::default(),
            shard: 0,
            shards: 1,
        }
    }
}

/// A command the engine can't apply at all: the caller broke the framing
/// contract (the server checks both before the engine sees a body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The kind is not one the engine applies.
    UnknownKind(u16),
    /// The body is not a whole number of the kind's records.
    BadLength { kind: u16, len: usize },
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKind(k) => write!(f, "kind {k:#06x} is not applied by the engine"),
            Self::BadLength { kind, len } => write!(f, "body of {len} bytes is not whole records of kind {kind:#06x}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// How a pending transfer ended without posting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoidReason {
    /// A verification or review failed.
    Failed,
    /// The client voided its own hold (FINALIZE_PENDING VOID).
    ClientVoided,
    /// A window closed with its hold still open.
    Expired,
    /// The customer cancelled it.
    Cancelled,
    /// Its credit could not be applied on the credit account's shard.
    Refused,
}

/// One shard's state machine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    /// The logical clock: the latest time any command carried. Never moves
    /// backwards.
    now_ms: u64,
    book: Book,
    transfers: TransferStore,
    pending: PendingTable,
    /// Customer rates set by TREASURY.
    rates: RateTable,
    /// Live quotes.
    quotes: Quotes,
    /// AML state per account, at the account's book position.
    profiles: Arena<Profile>,
    /// Every transfer AML held, in submission order.
    cases: Arena<Case>,
    /// Verdicts of the SUBMIT_JUDGED record being applied (empty between
    /// records).
    verdicts: Vec<Verdict>,
    /// Credit lines, loans and repayments.
    credit: loans::Credit,
    /// What this shard owes other shards and has taken from them.
    links: Links,
    /// Whether the command being applied put entries in an outbox or
    /// answered with something another shard has yet to apply (its answer
    /// then waits for the acknowledgement: `take_link_wait`).
    link_wait: bool,
    /// Refunds applied since start (not state).
    refunds: u64,
    /// Requests spanning shards: the last applied, the other shards' parts
    /// kept until complete.
    multi: multi::Multi,
}

impl Clone for Engine {
    fn clone(&self) -> Self {
        Self {
            config: self.config,
            now_ms: self.now_ms,
            book: self.book.clone(),
            transfers: self.transfers.clone(),
            pending: self.pending.clone(),
            rates: self.rates.clone(),
            quotes: self.quotes.clone(),
            profiles: self.profiles.clone(),
            cases: self.cases.clone(),
            verdicts: self.verdicts.clone(),
            credit: self.credit.clone(),
            links: self.links.clone(),
            link_wait: self.link_wait,
            refunds: self.refunds,
            multi: self.multi.clone(),
        }
    }
    /// Copies `source` into this engine's existing memory: the snapshot
    /// copy reuses the previous one's, so it is a memory copy, not a round
    /// of page faults.
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self {
            config,
            now_ms,
            book,
            transfers,
            pending,
            rates,
            quotes,
            profiles,
            cases,
            verdicts,
            credit,
            links,
            link_wait,
            refunds,
            multi,
        } = source;
        self.config = *config;
        self.now_ms = *now_ms;
        self.book.clone_from(book);
        self.transfers.clone_from(transfers);
        self.pending.clone_from(pending);
        self.rates.clone_from(rates);
        self.quotes.clone_from(quotes);
        self.profiles.clone_from(profiles);
        self.cases.clone_from(cases);
        self.verdicts.clone_from(verdicts);
        self.credit.clone_from(credit);
        self.links.clone_from(links);
        self.link_wait = *link_wait;
        self.refunds = *refunds;
        self.multi.clone_from_state(multi);
    }
}

impl Engine {
    /// A new shard with its system accounts, at time `now_ms`.
    #[must_use]
    pub fn new(config: EngineConfig, now_ms: u64) -> Self {
        let mut engine = Self::empty(config, now_ms);
        for id in book::SYSTEM_ACCOUNTS {
            engine.insert_account(id, AccountKind::System, money::HONG_KONG, 0);
        }
        engine
    }

    /// Adds an account to the book, with its AML profile beside it.
    fn insert_account(&mut self, id: u64, kind: AccountKind, home_country: u16, customer_ref: u64) {
        self.book.insert_account(id, kind, home_country, customer_ref);
        self.profiles.push(Profile::default());
        assert_eq!(self.profiles.len(), self.book.account_count(), "one profile per account");
    }

    fn empty(config: EngineConfig, now_ms: u64) -> Self {
        Self {
            config,
            now_ms,
            book: Book::with_capacity(config.accounts_capacity),
            transfers: TransferStore::with_capacity(config.transfers_capacity),
            pending: PendingTable::with_capacity(config.pending_capacity),
            rates: RateTable::default(),
            quotes: Quotes::default(),
            profiles: Arena::with_capacity(config.accounts_capacity, Profile::default()),
            cases: Arena::default(),
            verdicts: Vec::new(),
            credit: loans::Credit::with_capacity(config.loans_capacity),
            links: Links::new(config.shard, config.shards),
            link_wait: false,
            refunds: 0,
            multi: multi::Multi::default(),
        }
    }

    /// The logical clock.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The book (read-only).
    #[must_use]
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The transfer store (read-only).
    #[must_use]
    pub fn transfers(&self) -> &TransferStore {
        &self.transfers
    }

    /// Number of pending transfers.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// When the next hold timer is due, so the shard loop can wake for it.
    #[must_use]
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.pending.earliest_due()
    }

    /// Moves the clock to `now_ms` (if later) and fires every hold timer due
    /// by then, in `(due, id)` order. Returns how many fired.
    pub fn advance(&mut self, now_ms: u64) -> usize {
        self.now_ms = self.now_ms.max(now_ms);
        self.quotes.expire(self.now_ms);
        let mut fired = 0;
        while let Some(id) = self.pending.next_due(self.now_ms) {
            fired += 1;
            self.fire_timer(id);
        }
        fired
    }

    /// Applies one command at time `now_ms`, appending one response record
    /// per request record to `out`. Lookups change nothing but the clock.
    pub fn apply(&mut self, kind: u16, body: &[u8], now_ms: u64, out: &mut Vec<u8>) -> Result<(), EngineError> {
        // A LINK_IN body is checked by decoding it, once.
        let link_in = if kind == kind::LINK_IN {
            let from_a_peer = |m: &links::LinkIn| m.from < self.links.shards() && m.from != self.links.me;
            let m = links::decode_link_in(body).filter(from_a_peer);
            Some(m.ok_or(EngineError::BadLength { kind, len: body.len() })?)
        } else {
            Self::check_length(kind, body)?;
            None
        };
        self.advance(now_ms);
        let answered = out.len();
        match kind {
            kind::CREATE_ACCOUNTS => self.each(body, out, |e, a: Account, _| e.create_account(&a)),
            kind::SUBMIT_TRANSFERS => self.submit_batch(body, out),
            kind::CONFIRM_STEP_UP => self.each(body, out, |e, s: StepUp, _| e.confirm_step_up(&s)),
            kind::RESOLVE_REVIEW => self.each(body, out, |e, s: StepUp, _| e.resolve_review(&s)),
            kind::CANCEL_TRANSFERS => self.each(body, out, |e, i: Id, _| e.cancel_transfer(i.id)),
            kind::FINALIZE_PENDING => self.each(body, out, |e, f: Finalize, _| e.finalize_pending(&f)),
            kind::LOOKUP_TRANSFERS => self.each(body, out, |e, i: Id, _| e.lookup_transfer(i.id)),
            kind::LOOKUP_BALANCES => self.each(body, out, |e, k: BalanceKey, _| e.lookup_balance(&k)),
            kind::SET_TIME => self.each(body, out, |e, s: SetTime, i| e.set_time(&s, i)),
            kind::SET_FX_RATES => self.each(body, out, |e, r: FxRate, i| e.set_fx_rate(&r, i)),
            kind::FX_QUOTE => self.each(body, out, |e, q: QuoteRequest, _| e.fx_quote(&q)),
            kind::SET_CREDIT_LINES => self.each(body, out, |e, c: CreditLineRecord, _| e.set_credit_line(&c)),
            kind::DISBURSE_LOANS => self.disburse_batch(body, out),
            kind::REPAY_LOANS => self.each(body, out, |e, r: Repay, _| e.repay(&r)),
            kind::LOOKUP_LOANS => self.each(body, out, |e, i: Id, _| e.lookup_loan(i.id)),
            kind::EXPORT_STR => self.export_str(&StrRequest::decode(body), out),
            kind::STR_ROWS => {
                let request = StrRequest::decode(body);
                for row in self.str_rows(u32::from(request.year), u32::from(request.month)) {
                    row.encode(out);
                }
            }
            kind::SUBMIT_JUDGED => {
                let (verdicts, transfers) = internal::decode_judged(body, crate::aml::Reasons::is_logged_verdict)
                    .expect("checked by check_length");
                assert!(self.verdicts.is_empty(), "verdicts are consumed by the record that carries them");
                self.verdicts = verdicts;
                self.submit_batch(transfers, out);
            }
            kind::LINK_IN => self.link_in(&link_in.expect("decoded above")),
            kind::QUOTE_AT => {
                for chunk in body.chunks_exact(QuoteAt::SIZE) {
                    let q = QuoteAt::decode(chunk);
                    let answer = self.fx_quote_as(&q.request, Some((q.quote_id, q.expires_at_ms)));
                    records::push(out, &answer);
                }
            }
            kind::MULTI => {
                let m = multi::decode(body).expect("checked by check_length");
                self.apply(m.mine_kind, m.mine, now_ms, out)?;
                self.multi.applied(&m);
            }
            kind::TICK => {}
            other => return Err(EngineError::UnknownKind(other)),
        }
        if let Some(spec) = kinds::spec(kind).filter(|s| s.result_code_at.is_some()) {
            let records = body.len() / spec.request_size;
            assert_eq!(out.len() - answered, records * spec.response_size, "one answer per record of {}", spec.name);
        }
        if self.links.shards() > 1 {
            self.note_link_wait(kind, &out[answered..]);
        }
        Ok(())
    }

    /// Whether an answer shows something another shard has yet to apply:
    /// a transfer in flight, or an account whose notices may be on their
    /// way. Such an answer waits for the acknowledgement.
    fn note_link_wait(&mut self, kind: u16, answers: &[u8]) {
        if !kinds::spec(kind).is_some_and(|s| s.waits_on_links) {
            return;
        }
        // A new account is announced to every other shard; a transfer may
        // be in flight.
        let waits = if kind == kind::CREATE_ACCOUNTS {
            answers.chunks_exact(RecordResult::SIZE).any(|r| {
                let code = RecordResult::decode(r).code;
                code == ResultCode::Ok.as_u16() || code == ResultCode::AlreadyExists.as_u16()
            })
        } else {
            answers.chunks_exact(TransferResult::SIZE).any(in_flight)
        };
        self.link_wait |= waits;
    }

    /// If the last commands' answers must wait for other shards: the
    /// sequence, per shard, each must have acknowledged first. Clears the
    /// mark.
    pub fn take_link_wait(&mut self) -> Option<Vec<u64>> {
        if !std::mem::take(&mut self.link_wait) {
            return None;
        }
        Some(self.links.links.iter().map(|l| l.last_seq).collect())
    }

    /// Brings an answer that waited for other shards up to date: each
    /// transfer it showed in flight is shown as it is now (posted, or
    /// voided because its credit could not be applied: OVERFLOW). Called
    /// once every credit the answer waited for is acknowledged; if no
    /// refund came since `refunds_then` (an earlier [`Engine::refunds`]),
    /// they all posted and no lookup is needed.
    pub fn settle_answers(&self, kind: u16, answers: &mut [u8], refunds_then: Option<u64>) {
        if !matches!(
            kind,
            kind::SUBMIT_TRANSFERS | kind::CONFIRM_STEP_UP | kind::RESOLVE_REVIEW | kind::FINALIZE_PENDING
        ) {
            return;
        }
        let none_refunded = refunds_then == Some(self.refunds);
        for r in answers.chunks_exact_mut(TransferResult::SIZE) {
            if !in_flight(r) {
                continue;
            }
            let then = TransferResult::decode(r);
            if none_refunded {
                let posted = TransferResult { state: records::STATE_POSTED, holds: 0, hold_until_ms: 0, ..then };
                posted.encode(r);
                continue;
            }
            let mut now = self.lookup_transfer(then.transfer_id);
            now.code = if now.state == records::STATE_VOIDED && then.code == ResultCode::Ok.as_u16() {
                ResultCode::Overflow.as_u16()
            } else {
                then.code
            };
            now.encode(r);
        }
    }

    /// How many credits this engine has seen refused since it started (not
    /// state: for [`Engine::settle_answers`]).
    #[must_use]
    pub fn refunds(&self) -> u64 {
        self.refunds
    }

    /// The id the next FX quote would get.
    #[must_use]
    pub fn next_quote_id(&self) -> u64 {
        self.quotes.next_id()
    }

    /// Every id this shard stores, for the router's claims after a
    /// restart (`router`): transfer and loan ids, repayment ids, and the
    /// quotes it still holds.
    #[must_use]
    pub fn stored_ids(&self) -> StoredIds {
        StoredIds {
            ids: self.transfers.iter().map(StoredTransfer::id).chain(self.credit.loans().map(|l| l.id)).collect(),
            repayments: self.credit.repayments.keys().copied().collect(),
            quotes: self.quotes.iter().map(|(id, _)| id).collect(),
        }
    }

    /// The links to other shards (read-only).
    #[must_use]
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Applies a LINK_IN record: the peer's entries in sequence (each
    /// once), then its acknowledgement, which posts the transfers it
    /// covers. Refunds come before the acknowledgement of the credits they
    /// answer (`Links::message`), so a refused credit is voided, never
    /// posted.
    fn link_in(&mut self, m: &links::LinkIn) {
        let peer = m.from;
        for (i, e) in m.entries.iter().enumerate() {
            // As in `submit_batch`: the credited accounts' slots, then their
            // entries, ahead of use, so the misses overlap.
            if let Some(ahead) = m.entries.get(i + PREFETCH_AHEAD) {
                self.book.prefetch_slot(ahead.account);
            }
            if let Some(ahead) = m.entries.get(i + PREFETCH_AHEAD / 2) {
                self.book.prefetch_entry(ahead.account);
            }
            let link = &mut self.links.links[usize::from(peer)];
            if e.seq <= link.applied {
                continue;
            }
            assert_eq!(e.seq, link.applied + 1, "entries from shard {peer} skip a sequence");
            link.applied = e.seq;
            match e.kind {
                EntryKind::Credit => self.apply_credit(peer, e),
                EntryKind::Refund => {
                    let (credit, flight) =
                        self.links.flight(peer, e.amount).expect("a refund answers a credit in flight");
                    assert_eq!(credit.id, e.id, "a refund names its credit's transfer");
                    assert_eq!(self.transfers.get(flight.at).holds, Holds::IN_FLIGHT.bits(), "refunded once");
                    self.void_entry(flight.at, &flight, VoidReason::Refused);
                    self.refunds += 1;
                }
                EntryKind::Account => {
                    self.links.remote.insert(e.account);
                }
                EntryKind::QuoteSpent => self.quotes.spend_remote(e.id as u64),
            }
        }
        // The acknowledged transfers post in outbox order; their records,
        // then their debit accounts' slots and entries, are loaded ahead.
        let p = usize::from(peer);
        let ack = m.ack;
        let ahead = |links: &Links, k: usize| {
            let link = &links.links[p];
            link.outbox.get(k).filter(|e| e.seq <= ack)?;
            link.flights.get(k).copied().flatten()
        };
        loop {
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD) {
                self.transfers.prefetch_at(f.at);
            }
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD / 2) {
                self.book.prefetch_slot(self.transfers.get(f.at).debit_account);
            }
            if let Some(f) = ahead(&self.links, PREFETCH_AHEAD / 4) {
                self.book.prefetch_entry(self.transfers.get(f.at).debit_account);
            }
            let Some(flight) = self.links.pop_acknowledged(peer, m.ack) else { break };
            if let Some(flight) = flight {
                self.finish_flight(&flight);
            }
        }
    }

    /// A CREDIT from another shard: from this shard's part of INTERSHARD to
    /// the account, or, if the account can't take it (its balance would
    /// overflow), a REFUND back.
    fn apply_credit(&mut self, peer: u16, e: &links::Entry) {
        let inter = self.book.system(book::INTERSHARD);
        let currency = CurrencyIndex::of(e.currency).expect("a credit's currency was checked at submission");
        let fits =
            self.book.find(e.account).filter(|&c| self.book.entry(c).kind == AccountKind::Customer).filter(|&c| {
                i64::try_from(e.amount).is_ok()
                    && check_credit(&self.book.balance_at(c, currency), e.amount).is_ok()
                    && check_system_debit(&self.book.balance_at(inter, currency), e.amount).is_ok()
            });
        match fits {
            Some(credit) => {
                let amount = i64::try_from(e.amount).expect("checked");
                self.add(inter, currency, -amount);
                self.add(credit, currency, amount);
            }
            None => {
                self.links.push(peer, EntryKind::Refund, e.id, 0, 0, e.seq);
                self.link_wait = true;
            }
        }
    }

    /// The request record size of a kind the engine applies (the table
    /// of kinds).
    #[must_use]
    pub fn request_size(kind: u16) -> Option<usize> {
        kinds::applied_record_size(kind)
    }

    /// Whether `body` is a whole, well-shaped body of `kind` for `apply`.
    pub fn check_length(kind: u16, body: &[u8]) -> Result<(), EngineError> {
        let spec = kinds::spec(kind).filter(|s| s.route != kinds::Route::Session);
        let spec = spec.ok_or(EngineError::UnknownKind(kind))?;
        let (size, one) = (spec.request_size, spec.count == kinds::CountRule::One);
        if !body.len().is_multiple_of(size)
            || (kind == kind::TICK && !body.is_empty())
            || (one && body.len() != size)
            || (kind == kind::SUBMIT_JUDGED
                && internal::decode_judged(body, crate::aml::Reasons::is_logged_verdict).is_none())
            || (kind == kind::LINK_IN && links::decode_link_in(body).is_none())
            || (kind == kind::MULTI && !Self::multi_well_formed(body))
        {
            return Err(EngineError::BadLength { kind, len: body.len() });
        }
        Ok(())
    }

    /// Whether a MULTI body decodes and its parts are bodies of logged
    /// kinds the engine applies (never another MULTI).
    fn multi_well_formed(body: &[u8]) -> bool {
        let Some(m) = multi::decode(body) else { return false };
        let part_ok = |kind: u16, body: &[u8]| {
            kinds::is_logged(kind)
                && !matches!(kind, kind::MULTI | kind::TICK | kind::LINK_IN)
                && Self::check_length(kind, body).is_ok()
        };
        part_ok(m.mine_kind, m.mine)
            && multi::parts(m.parts_raw).is_some_and(|parts| parts.iter().all(|(_, b)| part_ok(m.parts_kind, b)))
            && (m.rest.is_empty() || part_ok(m.parts_kind, m.rest))
    }

    /// What this shard knows of requests spanning shards (read-only).
    #[must_use]
    pub fn multi(&self) -> &multi::Multi {
        &self.multi
    }

    /// SUBMIT_TRANSFERS for a whole body, in order. While it applies record
    /// `i` it prefetches the index slots of record `i + PREFETCH_AHEAD` and
    /// the account entries of record `i + PREFETCH_AHEAD / 2` (whose slots
    /// are in cache by then), so the cache misses of many records overlap
    /// instead of being waited for one by one. Prefetching changes no state.
    fn submit_batch(&mut self, body: &[u8], out: &mut Vec<u8>) {
        let n = body.len() / Transfer::SIZE;
        let record = |i: usize| Transfer::decode(&body[i * Transfer::SIZE..(i + 1) * Transfer::SIZE]);
        out.reserve(n * TransferResult::SIZE);
        for i in 0..n {
            if i + PREFETCH_AHEAD < n {
                let t = record(i + PREFETCH_AHEAD);
                self.transfers.prefetch(t.transfer_id);
                // Transfer and loan ids share one space.
                self.credit.prefetch_loan(t.transfer_id);
                if t.flags & records::TRANSFER_AUTO_CREDIT != 0
                    && let Some(dc) = CurrencyIndex::of(t.debit_currency)
                {
                    self.credit.prefetch_line(t.debit_account, dc, false);
                }
                self.book.prefetch_slot(t.debit_account);
                self.book.prefetch_slot(t.credit_account);
                if let Some((dc, cc)) = conversion(&t) {
                    // A conversion usually touches a currency that is not
                    // the account's main one.
                    self.book.prefetch_other_slot(t.debit_account, dc);
                    self.book.prefetch_other_slot(t.credit_account, cc);
                }
            }
            if i + PREFETCH_AHEAD / 2 < n {
                let t = record(i + PREFETCH_AHEAD / 2);
                self.book.prefetch_entry(t.debit_account);
                if self.config.aml.enabled
                    && let Some(at) = self.book.candidate(t.debit_account)
                {
                    index::prefetch(self.profiles.get(at));
                }
                if t.flags & records::TRANSFER_AUTO_CREDIT != 0
                    && let Some(dc) = CurrencyIndex::of(t.debit_currency)
                {
                    self.credit.prefetch_line(t.debit_account, dc, true);
                }
                self.book.prefetch_entry(t.credit_account);
                if let Some((dc, cc)) = conversion(&t) {
                    self.book.prefetch_other_entry(t.debit_account, dc);
                    self.book.prefetch_other_entry(t.credit_account, cc);
                }
            }
            let external = self.external_verdict(i as u32);
            let answer = self.submit_judged(&record(i), Holds::NONE, 0, external);
            records::push(out, &answer);
        }
        // Verdicts for records that were rejected (or not outgoing) lapse.
        self.verdicts.clear();
    }

    /// The logged verdict for record `index` of the SUBMIT_TRANSFERS being
    /// applied, as reason bits (0 for none).
    fn external_verdict(&self, index: u32) -> u16 {
        if self.verdicts.is_empty() {
            return 0;
        }
        self.verdicts.binary_search_by_key(&index, |v| v.index).map_or(0, |at| self.verdicts[at].reason)
    }

    fn each<R: Record, A: Record>(
        &mut self,
        body: &[u8],
        out: &mut Vec<u8>,
        mut f: impl FnMut(&mut Self, R, u64) -> A,
    ) {
        out.reserve(body.len() / R::SIZE * A::SIZE);
        for (i, chunk) in body.chunks_exact(R::SIZE).enumerate() {
            let answer = f(self, R::decode(chunk), i as u64);
            records::push(out, &answer);
        }
    }

    // ---- accounts -------------------------------------------------------

    /// CREATE_ACCOUNTS, one record. Precedence: INVALID_ID, ALREADY_EXISTS or
    /// ACCOUNT_EXISTS, INVALID_FIELD (kind, flags), UNKNOWN_COUNTRY.
    pub fn create_account(&mut self, a: &Account) -> RecordResult {
        let code = self.check_account(a);
        if code == ResultCode::Ok {
            self.insert_account(a.account_id, AccountKind::Customer, a.home_country, a.customer_ref);
            // Every other shard learns it exists, so its customers may pay it.
            self.links.push_to_others(EntryKind::Account, 0, a.account_id);
        }
        RecordResult { key: a.account_id, code: code.as_u16() }
    }

    fn check_account(&self, a: &Account) -> ResultCode {
        if a.account_id < book::CUSTOMER_ID_MIN {
            return ResultCode::InvalidId;
        }
        if let Some(existing) = self.book.account(a.account_id) {
            let same = existing.kind == AccountKind::Customer
                && a.kind == records::ACCOUNT_KIND_CUSTOMER
                && a.flags == 0
                && existing.home_country == a.home_country
                && existing.customer_ref == a.customer_ref;
            return if same { ResultCode::AlreadyExists } else { ResultCode::AccountExists };
        }
        if a.kind != records::ACCOUNT_KIND_CUSTOMER || a.flags != 0 {
            return ResultCode::InvalidField;
        }
        if !money::is_country(a.home_country) {
            return ResultCode::UnknownCountry;
        }
        ResultCode::Ok
    }

    // ---- transfers ------------------------------------------------------

    /// SUBMIT_TRANSFERS, one record, with the holds the transfer's own flags
    /// ask for.
    pub fn submit_transfer(&mut self, t: &Transfer) -> TransferResult {
        self.submit_with_holds(t, Holds::NONE, 0)
    }

    /// Submits a transfer with extra holds decided by the caller, and the
    /// end of a cooling-off period if `extra` has COOLING_OFF (tests of the
    /// hold machinery use this; AML still judges on top).
    pub fn submit_with_holds(&mut self, t: &Transfer, extra: Holds, cooling_until_ms: u64) -> TransferResult {
        self.submit_judged(t, extra, cooling_until_ms, 0)
    }

    /// Submits a transfer: the checks in the contract's precedence (§5),
    /// then AML for an outgoing one (with `external`, a logged verdict's
    /// reason bits), then posting or holding.
    fn submit_judged(&mut self, t: &Transfer, extra: Holds, cooling_until_ms: u64, external: u16) -> TransferResult {
        let accepted = match self.check_transfer(t) {
            Err(code) => return self.reject(t.transfer_id, code),
            Ok(accepted) => accepted,
        };
        let mut holds = extra;
        if t.flags & records::TRANSFER_PENDING != 0 {
            holds = holds.with(Holds::CLIENT);
        }
        let mut judged = None;
        let outgoing =
            self.book.entry(accepted.debit).kind == AccountKind::Customer && accepted.debit != accepted.credit;
        if self.config.aml.enabled && outgoing {
            let mut j = self.judge(t, &accepted);
            if external != 0 {
                j.holds = j.holds.with(Holds::MANUAL_REVIEW);
                j.reasons.0 |= external;
            }
            holds = holds.with(j.holds);
            judged = Some(j);
        }
        let cooling = judged.map_or(cooling_until_ms, |j| cooling_until_ms.max(j.cooling_until_ms));
        self.accept(t, &accepted, holds, cooling, judged)
    }

    /// AML's judgement of an outgoing transfer that will be accepted (its
    /// profile records it).
    fn judge(&mut self, t: &Transfer, a: &Accepted) -> Judgement {
        let o = Outgoing {
            now_ms: self.now_ms,
            debit_currency: a.debit_currency,
            debit_amount: a.debit_amount,
            credit_account: t.credit_account,
            credit_currency: a.credit_currency,
            destination_country: t.destination_country,
        };
        let profile = self.profiles.get_mut(a.debit.index());
        profile.judge(&self.config.aml, &self.rates, &o)
    }

    /// The answer for a rejected or unknown id: its stored state if the id
    /// names a stored transfer, else zeros.
    fn reject(&self, id: u128, code: ResultCode) -> TransferResult {
        match self.transfers.find(id) {
            Some(at) if id != 0 => self.result_of(at, code),
            _ => TransferResult { transfer_id: id, code: code.as_u16(), ..TransferResult::default() },
        }
    }

    fn check_transfer(&self, t: &Transfer) -> Result<Accepted, ResultCode> {
        if t.transfer_id == 0 {
            return Err(ResultCode::InvalidId);
        }
        if let Some(at) = self.transfers.find(t.transfer_id) {
            return Err(if self.transfers.get(at).same_request(t) {
                ResultCode::AlreadyExists
            } else {
                ResultCode::IdConflict
            });
        }
        if self.names_a_loan(t.transfer_id) {
            // Loan and transfer ids share one space.
            return Err(ResultCode::IdConflict);
        }
        let debit = self.book.find(t.debit_account).ok_or(ResultCode::DebitAccountNotFound)?;
        let credit = match self.book.find(t.credit_account) {
            Some(credit) => credit,
            // Another shard's customer: the money goes through this shard's
            // part of INTERSHARD (`links`).
            None if self.links.remote.contains(&t.credit_account) => self.book.system(book::INTERSHARD),
            None => return Err(ResultCode::CreditAccountNotFound),
        };
        if t.debit_account == t.credit_account && t.debit_currency == t.credit_currency {
            return Err(ResultCode::SameAccount);
        }
        if !may_debit(t.debit_account) || !may_credit(t.credit_account) {
            return Err(ResultCode::Forbidden);
        }
        if t.flags & !records::TRANSFER_FLAGS_DEFINED != 0 {
            // The wire refuses this frame whole (MALFORMED) before it gets
            // here; a library caller gets a per-record code.
            return Err(ResultCode::InvalidField);
        }
        if t.amount == 0 {
            return Err(ResultCode::InvalidAmount);
        }
        let debit_currency = CurrencyIndex::of(t.debit_currency).ok_or(ResultCode::UnknownCurrency)?;
        let credit_currency = CurrencyIndex::of(t.credit_currency).ok_or(ResultCode::UnknownCurrency)?;
        if !money::is_destination(t.destination_country) {
            return Err(ResultCode::UnknownCountry);
        }
        let side = if t.flags & records::TRANSFER_AMOUNT_IN_CREDIT_CURRENCY != 0 { Side::Credit } else { Side::Debit };
        let (debit_amount, credit_amount, rate_e9, quote) = if t.fx_quote_id != 0 {
            let q = self
                .quotes
                .usable(t.fx_quote_id, debit_currency, credit_currency, t.amount, side)
                .ok_or(ResultCode::QuoteInvalid)?;
            (q.debit_amount, q.credit_amount, q.rate.rate_e9().expect("a quote's rate fits"), Some(t.fx_quote_id))
        } else if debit_currency == credit_currency {
            (t.amount, t.amount, RATE_ONE_E9, None)
        } else {
            let rate = self.rates.rate(debit_currency, credit_currency).ok_or(ResultCode::NoFxRate)?;
            let (d, c) = fx::convert(t.amount, side, debit_currency, credit_currency, rate).map_err(fx_code)?;
            (d, c, rate.rate_e9().expect("convert checked the rate fits"), None)
        };
        if i64::try_from(debit_amount).is_err() || i64::try_from(credit_amount).is_err() {
            // A leg no balance can hold (a same-currency amount over i64).
            return Err(ResultCode::Overflow);
        }
        // Every leg must fit: the credit, the debit, and through FX_POSITION
        // for a conversion (it takes the debit currency in and pays the credit
        // currency out).
        let fx = if debit_currency == credit_currency { None } else { Some(self.book.system(book::FX_POSITION)) };
        check_credit(&self.book.balance_at(credit, credit_currency), credit_amount)?;
        if let Some(fx) = fx {
            check_credit(&self.book.balance_at(fx, debit_currency), debit_amount)?;
            check_system_debit(&self.book.balance_at(fx, credit_currency), credit_amount)?;
        }
        let debit_balance = self.book.balance_at(debit, debit_currency);
        let (mut auto_credit, mut auto_credit_line) = (0, 0);
        match self.book.entry(debit).kind {
            AccountKind::System => check_system_debit(&debit_balance, debit_amount)?,
            AccountKind::Customer => {
                let available = debit_balance.available();
                if available < i128::from(debit_amount) {
                    if t.flags & records::TRANSFER_AUTO_CREDIT == 0 {
                        return Err(ResultCode::InsufficientFunds);
                    }
                    // A micro-loan for exactly the shortfall, if the line allows.
                    let shortfall = u64::try_from(i128::from(debit_amount) - available).expect("at most the amount");
                    auto_credit_line = self.check_micro_credit(debit, debit_currency, shortfall)?;
                    auto_credit = shortfall;
                }
            }
        }
        Ok(Accepted {
            debit,
            credit,
            debit_currency,
            credit_currency,
            debit_amount,
            credit_amount,
            rate_e9,
            quote,
            auto_credit,
            auto_credit_line,
        })
    }

    /// SET_FX_RATES, one record. Precedence: UNKNOWN_CURRENCY, INVALID_FIELD
    /// (a currency to itself, or a zero rate).
    pub fn set_fx_rate(&mut self, r: &FxRate, index: u64) -> RecordResult {
        let code = match (CurrencyIndex::of(r.from), CurrencyIndex::of(r.to)) {
            (Some(from), Some(to)) if from != to && r.rate_e9 != 0 => {
                self.rates.set(from, to, r.rate_e9);
                ResultCode::Ok
            }
            (Some(_), Some(_)) => ResultCode::InvalidField,
            _ => ResultCode::UnknownCurrency,
        };
        RecordResult { key: index, code: code.as_u16() }
    }

    /// FX_QUOTE, one record: locks the current rate for one transfer of this
    /// pair, amount and side until `now + quote_ttl_ms`. Precedence:
    /// UNKNOWN_CURRENCY, INVALID_FIELD (a currency to itself),
    /// INVALID_AMOUNT (zero), NO_FX_RATE, INVALID_AMOUNT (rounds to zero),
    /// OVERFLOW.
    pub fn fx_quote(&mut self, q: &QuoteRequest) -> QuoteRecord {
        self.fx_quote_as(q, None)
    }

    /// FX_QUOTE with, for QUOTE_AT, the id and expiry the switch chose (so
    /// every shard holds the same quote); else the shard numbers it and it
    /// expires `quote_ttl_ms` from now.
    fn fx_quote_as(&mut self, q: &QuoteRequest, given: Option<(u64, u64)>) -> QuoteRecord {
        let refused = |code: ResultCode| QuoteRecord { code: code.as_u16(), ..QuoteRecord::default() };
        // The same order as a transfer's: amount, currencies, then the rest.
        if q.amount == 0 {
            return refused(ResultCode::InvalidAmount);
        }
        let (Some(from), Some(to)) = (CurrencyIndex::of(q.from), CurrencyIndex::of(q.to)) else {
            return refused(ResultCode::UnknownCurrency);
        };
        if from == to || q.flags & !records::QUOTE_AMOUNT_IN_CREDIT_CURRENCY != 0 {
            return refused(ResultCode::InvalidField);
        }
        if self.quotes.is_full() {
            // Every live quote stays good until it expires: refuse a new one.
            return refused(ResultCode::QuotesFull);
        }
        let Some(rate) = self.rates.rate(from, to) else { return refused(ResultCode::NoFxRate) };
        let side = if q.flags & records::QUOTE_AMOUNT_IN_CREDIT_CURRENCY != 0 { Side::Credit } else { Side::Debit };
        let (debit_amount, credit_amount) = match fx::convert(q.amount, side, from, to, rate) {
            Ok(amounts) => amounts,
            Err(e) => return refused(fx_code(e)),
        };
        let expires_at_ms = given.map_or(self.now_ms.saturating_add(self.config.quote_ttl_ms), |(_, e)| e);
        let quote = Quote { from, to, side, amount: q.amount, debit_amount, credit_amount, rate, expires_at_ms };
        let quote_id = match given {
            // The switch gives fresh ids; anything else is refused, not
            // trusted.
            Some((id, _)) if id < self.quotes.next_id() || id == u64::MAX => {
                return refused(ResultCode::InvalidId);
            }
            Some((id, _)) => self.quotes.insert_as(id, quote),
            None => self.quotes.insert(quote),
        };
        let rate_e9 = rate.rate_e9().expect("convert checked the rate fits");
        QuoteRecord { quote_id, code: 0, rate_e9, debit_amount, credit_amount, expires_at_ms }
    }

    /// The rate table (read-only), e.g. for AML's HKD valuation.
    #[must_use]
    pub fn rates(&self) -> &RateTable {
        &self.rates
    }

    fn accept(
        &mut self,
        t: &Transfer,
        a: &Accepted,
        holds: Holds,
        cooling_until_ms: u64,
        judged: Option<Judgement>,
    ) -> TransferResult {
        let mut stored =
            StoredTransfer::new(t, a.debit_currency, a.credit_currency, a.debit_amount, a.credit_amount, a.rate_e9);
        if let Some(id) = a.quote {
            // Spent by the transfer it locked the rate for, posted or held;
            // the other shards' copies go too.
            self.quotes.remove(id);
            self.links.push_to_others(EntryKind::QuoteSpent, u128::from(id), 0);
            self.link_wait |= self.links.shards() > 1;
        }
        if a.auto_credit > 0 {
            // The shortfall is lent first, in the same step.
            self.draw_micro_loan(t, a);
        }
        let remote = a.credit == self.book.system(book::INTERSHARD);
        if holds.is_empty() && !remote {
            self.move_funds(a.debit, a.credit, &stored);
            let at = self.transfers.insert(stored);
            return self.result_of(at, ResultCode::Ok);
        }
        if holds.is_empty() {
            // To another shard's customer: reserved like a pending transfer,
            // in flight at once, posted when that shard has applied its
            // credit.
            stored.state = records::STATE_PENDING;
            stored.holds = Holds::IN_FLIGHT.bits();
            self.reserve(a.debit, a.credit, &stored, true);
            let at = self.transfers.insert(stored);
            let counted = judged.map_or(0, |j| j.counted);
            let flight = PendingEntry {
                at,
                submitted_ms: self.now_ms,
                cooling_until_ms: 0,
                due_ms: NEVER,
                counted,
                case: NO_CASE,
            };
            self.send_credit(at, flight);
            return self.result_of(at, ResultCode::Ok);
        }
        stored.state = records::STATE_PENDING;
        stored.holds = holds.bits();
        self.reserve(a.debit, a.credit, &stored, true);
        let at = self.transfers.insert(stored);
        let mut case = NO_CASE;
        let aml_holds = Holds::FACE_REVIEW.with(Holds::SMS_OTP).with(Holds::COOLING_OFF).with(Holds::MANUAL_REVIEW);
        if let Some(j) = judged.filter(|j| !j.holds.is_empty()) {
            case = self.cases.len() as u32;
            // An arena of chunks: growth never copies what is there (a Vec
            // of millions of cases stalled the shard when it doubled).
            self.cases.push(Case {
                transfer_id: t.transfer_id,
                submitted_ms: self.now_ms,
                closed_ms: 0,
                hkd_value: j.hkd_value,
                day_total: j.day_total,
                reasons: j.reasons,
                holds: (holds.bits() & aml_holds.bits()),
                outcome: Outcome::Pending,
            });
        }
        let counted = judged.map_or(0, |j| j.counted);
        let mut entry = PendingEntry { at, submitted_ms: self.now_ms, cooling_until_ms, due_ms: 0, counted, case };
        entry.due_ms = entry.soonest_end(holds, &self.config.hold_windows);
        self.pending.insert(t.transfer_id, entry);
        // A window already closed (a zero-length window, or a cooling-off
        // period in the past) fires now, in the same step.
        self.advance(self.now_ms);
        self.result_of(at, ResultCode::Ok)
    }

    /// Posts a transfer's movement: debit leg and credit leg, through
    /// FX_POSITION when the currencies differ. Checks were done at
    /// submission; a failure here is a broken invariant.
    fn move_funds(&mut self, debit: AccountPos, credit: AccountPos, s: &StoredTransfer) {
        let debit_amount = i64::try_from(s.debit_amount).expect("amount checked at submission");
        let credit_amount = i64::try_from(s.credit_amount).expect("amount checked at submission");
        if s.debit_currency == s.credit_currency {
            assert_eq!(debit_amount, credit_amount, "same-currency legs are equal");
        } else {
            let fx = self.book.system(book::FX_POSITION);
            self.add(fx, s.debit_currency, debit_amount);
            self.add(fx, s.credit_currency, -credit_amount);
        }
        self.add(debit, s.debit_currency, -debit_amount);
        self.add(credit, s.credit_currency, credit_amount);
    }

    fn add(&mut self, at: AccountPos, currency: CurrencyIndex, delta: i64) {
        let customer = self.book.entry(at).kind == AccountKind::Customer;
        let balance = self.book.balance_at_mut(at, currency);
        balance.posted = balance.posted.checked_add(delta).expect("balance overflow checked at submission");
        if customer {
            assert!(balance.posted >= 0, "customer balance negative");
            assert!(balance.held <= balance.posted as u64, "customer held above posted");
        }
    }

    /// The wire result for a stored transfer.
    fn result_of(&self, at: TransferIndex, code: ResultCode) -> TransferResult {
        let stored = self.transfers.get(at);
        let mut result = stored.result(code.as_u16());
        if stored.flags & records::TRANSFER_AUTO_CREDIT != 0 {
            result.auto_credit_amount = self.micro_loan_of(stored.id());
        }
        if stored.state == records::STATE_PENDING && stored.holds != Holds::IN_FLIGHT.bits() {
            result.hold_until_ms = self.pending.get(stored.id()).expect("pending entry").due_ms;
        }
        result
    }

    /// Finds a transfer a hold operation names, in precedence order:
    /// INVALID_ID, TRANSFER_NOT_FOUND.
    fn find_for_hold(&self, id: u128) -> Result<TransferIndex, ResultCode> {
        if id == 0 {
            return Err(ResultCode::InvalidId);
        }
        self.transfers.find(id).ok_or(ResultCode::TransferNotFound)
    }

    /// Checks a transfer is pending and waiting for `hold`: NOT_PENDING,
    /// WRONG_METHOD.
    fn check_waiting(&self, at: TransferIndex, hold: Holds) -> Result<(), ResultCode> {
        let stored = self.transfers.get(at);
        if stored.state != records::STATE_PENDING {
            return Err(ResultCode::NotPending);
        }
        if stored.holds == Holds::IN_FLIGHT.bits() {
            return Err(ResultCode::InFlight);
        }
        if !Holds::from_bits(stored.holds).expect("valid holds").contains(hold) {
            return Err(ResultCode::WrongMethod);
        }
        Ok(())
    }

    /// CONFIRM_STEP_UP, one record: FACE or SMS_OTP outcome from the
    /// channel. Precedence: INVALID_ID, TRANSFER_NOT_FOUND, FORBIDDEN (method
    /// 3 is an operator's), NOT_PENDING, WRONG_METHOD.
    pub fn confirm_step_up(&mut self, s: &StepUp) -> TransferResult {
        let hold = match s.method {
            records::METHOD_FACE => Holds::FACE_REVIEW,
            records::METHOD_SMS_OTP => Holds::SMS_OTP,
            _ => Holds::MANUAL_REVIEW,
        };
        let outcome = self.find_for_hold(s.transfer_id).and_then(|at| {
            if hold == Holds::MANUAL_REVIEW {
                return Err(ResultCode::Forbidden);
            }
            check_outcome(s.outcome)?;
            self.check_waiting(at, hold).map(|()| at)
        });
        self.step_up_outcome(s, hold, outcome)
    }

    /// RESOLVE_REVIEW, one record: an operator's verdict on a MANUAL_REVIEW
    /// hold. Precedence: INVALID_ID, TRANSFER_NOT_FOUND, INVALID_FIELD
    /// (method other than 3), NOT_PENDING, WRONG_METHOD.
    pub fn resolve_review(&mut self, s: &StepUp) -> TransferResult {
        let outcome = self.find_for_hold(s.transfer_id).and_then(|at| {
            if s.method != records::METHOD_MANUAL_REVIEW {
                return Err(ResultCode::InvalidField);
            }
            check_outcome(s.outcome)?;
            self.check_waiting(at, Holds::MANUAL_REVIEW).map(|()| at)
        });
        self.step_up_outcome(s, Holds::MANUAL_REVIEW, outcome)
    }

    fn step_up_outcome(&mut self, s: &StepUp, hold: Holds, found: Result<TransferIndex, ResultCode>) -> TransferResult {
        let at = match found {
            Ok(at) => at,
            Err(code) => return self.reject(s.transfer_id, code),
        };
        if s.outcome == records::OUTCOME_PASS {
            self.release(at, hold);
        } else {
            self.void(at, VoidReason::Failed);
        }
        self.result_of(at, ResultCode::Ok)
    }

    /// CANCEL_TRANSFERS, one record: the customer voids a pending transfer
    /// whatever holds it. Precedence: INVALID_ID, TRANSFER_NOT_FOUND,
    /// NOT_PENDING.
    pub fn cancel_transfer(&mut self, id: u128) -> TransferResult {
        let at = match self.find_for_hold(id) {
            Ok(at) => at,
            Err(code) => return self.reject(id, code),
        };
        if self.transfers.get(at).state != records::STATE_PENDING {
            return self.reject(id, ResultCode::NotPending);
        }
        if self.transfers.get(at).holds == Holds::IN_FLIGHT.bits() {
            return self.reject(id, ResultCode::InFlight);
        }
        self.void(at, VoidReason::Cancelled);
        self.result_of(at, ResultCode::Ok)
    }

    /// FINALIZE_PENDING, one record: the CLIENT hold only. Precedence:
    /// INVALID_ID, TRANSFER_NOT_FOUND, INVALID_FIELD (action), NOT_PENDING,
    /// WRONG_METHOD.
    pub fn finalize_pending(&mut self, f: &Finalize) -> TransferResult {
        let found = self.find_for_hold(f.transfer_id).and_then(|at| {
            if !matches!(f.action, records::FINALIZE_POST | records::FINALIZE_VOID) {
                return Err(ResultCode::InvalidField);
            }
            self.check_waiting(at, Holds::CLIENT).map(|()| at)
        });
        let at = match found {
            Ok(at) => at,
            Err(code) => return self.reject(f.transfer_id, code),
        };
        if f.action == records::FINALIZE_POST {
            self.release(at, Holds::CLIENT);
        } else {
            self.void(at, VoidReason::ClientVoided);
        }
        self.result_of(at, ResultCode::Ok)
    }

    /// Releases one hold; posts the transfer if none remains.
    fn release(&mut self, at: TransferIndex, hold: Holds) {
        let stored = self.transfers.get_mut(at);
        let id = stored.id();
        let remaining = Holds::from_bits(stored.holds).expect("valid holds").without(hold);
        stored.holds = remaining.bits();
        if remaining.is_empty() {
            self.post_pending(at);
        } else {
            let entry = *self.pending.get(id).expect("pending entry");
            self.pending.reschedule(id, entry.soonest_end(remaining, &self.config.hold_windows));
        }
    }

    /// Posts a pending transfer whose holds are all released. One to
    /// another shard's customer goes in flight first (its credit is sent)
    /// and posts when that shard acknowledges it.
    fn post_pending(&mut self, at: TransferIndex) {
        let stored = *self.transfers.get(at);
        let entry = self.pending.remove(stored.id());
        let credit = self.credit_leg(stored.credit_account);
        if credit == self.book.system(book::INTERSHARD) {
            self.transfers.get_mut(at).holds = Holds::IN_FLIGHT.bits();
            self.send_credit(at, PendingEntry { due_ms: NEVER, cooling_until_ms: 0, ..entry });
            return;
        }
        self.post(at, &entry, credit);
    }

    /// Moves a reserved transfer's money and marks it posted.
    fn post(&mut self, at: TransferIndex, entry: &PendingEntry, credit: AccountPos) {
        let stored = *self.transfers.get(at);
        self.close_case(entry, Outcome::Passed);
        let debit = self.book.find(stored.debit_account).expect("debit account exists");
        self.reserve(debit, credit, &stored, false);
        self.move_funds(debit, credit, &stored);
        let s = self.transfers.get_mut(at);
        s.state = records::STATE_POSTED;
        s.holds = 0;
    }

    /// The credit of a transfer in flight was applied: it posts (unless a
    /// refund voided it first).
    fn finish_flight(&mut self, flight: &PendingEntry) {
        if self.transfers.get(flight.at).holds == Holds::IN_FLIGHT.bits() {
            let inter = self.book.system(book::INTERSHARD);
            self.post(flight.at, flight, inter);
        }
    }

    /// Where a stored transfer's credit leg lands on this shard: its credit
    /// account, or INTERSHARD for another shard's customer.
    fn credit_leg(&self, account: u64) -> AccountPos {
        self.book.find(account).unwrap_or_else(|| {
            assert!(self.links.remote.contains(&account), "credit account {account} is known");
            self.book.system(book::INTERSHARD)
        })
    }

    /// Puts the credit of an in-flight transfer in the outbox to its credit
    /// account's shard, with its timing beside it.
    fn send_credit(&mut self, at: TransferIndex, flight: PendingEntry) {
        let s = *self.transfers.get(at);
        let peer = shard_of(s.credit_account, usize::from(self.links.shards())) as u16;
        let entry = links::Entry {
            seq: 0,
            kind: EntryKind::Credit,
            id: s.id(),
            account: s.credit_account,
            currency: s.credit_currency.code(),
            amount: s.credit_amount,
        };
        self.links.push_flight(peer, entry, Some(flight));
        self.link_wait = true;
    }

    fn void(&mut self, at: TransferIndex, reason: VoidReason) {
        let entry = self.pending.remove(self.transfers.get(at).id());
        self.void_entry(at, &entry, reason);
    }

    /// Voids a pending transfer (or one in flight) whose timing is `entry`.
    fn void_entry(&mut self, at: TransferIndex, entry: &PendingEntry, reason: VoidReason) {
        let stored = *self.transfers.get(at);
        assert_eq!(stored.state, records::STATE_PENDING, "only a pending transfer is voided");
        self.unreserve(&stored);
        let s = self.transfers.get_mut(at);
        s.state = records::STATE_VOIDED;
        s.holds = 0;
        if stored.flags & records::TRANSFER_AUTO_CREDIT != 0 {
            // Its micro-loan is repaid at once, with no interest.
            self.repay_micro_loan(stored.id());
        }
        // A voided transfer no longer counts toward its day's total.
        let debit = self.book.find(stored.debit_account).expect("debit account exists");
        self.profiles.get_mut(debit.index()).uncount(entry.submitted_ms, entry.counted);
        let outcome = match reason {
            VoidReason::Failed | VoidReason::Refused => Outcome::Failed,
            VoidReason::Expired => Outcome::Expired,
            VoidReason::Cancelled | VoidReason::ClientVoided => Outcome::Cancelled,
        };
        self.close_case(entry, outcome);
    }

    /// Records how an AML case ended, if the transfer was one: when its
    /// window closed for an expiry (the clock may pass it later), else now.
    fn close_case(&mut self, entry: &PendingEntry, outcome: Outcome) {
        if entry.case != NO_CASE {
            let at = if outcome == Outcome::Expired { entry.due_ms } else { self.now_ms };
            let case = self.cases.get_mut(entry.case);
            assert_eq!(case.outcome, Outcome::Pending, "a case closes once");
            case.outcome = outcome;
            case.closed_ms = at;
        }
    }

    fn unreserve(&mut self, s: &StoredTransfer) {
        let debit = self.book.find(s.debit_account).expect("debit account exists");
        let credit = self.credit_leg(s.credit_account);
        self.reserve(debit, credit, s, false);
    }

    /// Reserves (or releases) what a pending transfer will move: its debit
    /// is held and its credit promised, and for a conversion FX_POSITION's
    /// two legs likewise, so posting later can neither overdraw nor
    /// overflow.
    fn reserve(&mut self, debit: AccountPos, credit: AccountPos, s: &StoredTransfer, add: bool) {
        let change = |v: &mut u64, by: u64| {
            *v = if add { v.checked_add(by) } else { v.checked_sub(by) }.expect("reservation within bounds");
        };
        change(&mut self.book.balance_at_mut(debit, s.debit_currency).held, s.debit_amount);
        change(&mut self.book.balance_at_mut(credit, s.credit_currency).incoming, s.credit_amount);
        if s.debit_currency != s.credit_currency {
            let fx = self.book.system(book::FX_POSITION);
            change(&mut self.book.balance_at_mut(fx, s.debit_currency).incoming, s.debit_amount);
            change(&mut self.book.balance_at_mut(fx, s.credit_currency).held, s.credit_amount);
        }
    }

    /// A due timer: a closed verification window voids the transfer; the
    /// end of cooling-off releases that hold (and posts if nothing else
    /// holds it).
    fn fire_timer(&mut self, id: u128) {
        let entry = *self.pending.get(id).expect("timer of a pending transfer");
        let holds = Holds::from_bits(self.transfers.get(entry.at).holds).expect("valid holds");
        let windows = self.config.hold_windows;
        let window_closed = Holds::ALL
            .iter()
            .filter(|h| **h != Holds::COOLING_OFF && holds.contains(**h))
            .any(|h| entry.end_of(*h, &windows) <= self.now_ms);
        if window_closed {
            self.void(entry.at, VoidReason::Expired);
        } else {
            assert!(holds.contains(Holds::COOLING_OFF), "a timer fired for an open window");
            assert!(entry.cooling_until_ms <= self.now_ms, "cooling-off fired early");
            self.release(entry.at, Holds::COOLING_OFF);
        }
    }

    // ---- lookups and time -------------------------------------------------

    /// LOOKUP_TRANSFERS, one record.
    #[must_use]
    pub fn lookup_transfer(&self, id: u128) -> TransferResult {
        match self.find_for_hold(id) {
            Ok(at) => self.result_of(at, ResultCode::Ok),
            Err(code) => self.reject(id, code),
        }
    }

    /// LOOKUP_BALANCES, one record. Precedence: ACCOUNT_NOT_FOUND,
    /// UNKNOWN_CURRENCY.
    #[must_use]
    pub fn lookup_balance(&self, k: &BalanceKey) -> BalanceRecord {
        let mut answer = BalanceRecord { account_id: k.account_id, currency: k.currency, ..BalanceRecord::default() };
        if self.book.account(k.account_id).is_none() {
            answer.code = ResultCode::AccountNotFound.as_u16();
        } else if let Some(currency) = CurrencyIndex::of(k.currency) {
            let b: Balance = self.book.balance(k.account_id, currency);
            answer.balance = b.posted;
            answer.held = b.held;
            (answer.loans_outstanding, answer.credit_available) = self.credit_position(k.account_id, currency);
        } else {
            answer.code = ResultCode::UnknownCurrency.as_u16();
        }
        answer
    }

    // ---- AML cases and the STR ---------------------------------------------

    /// Every AML case, in submission order (a copy).
    #[must_use]
    pub fn cases(&self) -> Vec<Case> {
        self.cases.iter().copied().collect()
    }

    /// The first case submitted at or after `ms` (cases are in submission
    /// order).
    fn first_case_from(&self, ms: u64) -> u32 {
        let (mut lo, mut hi) = (0u32, self.cases.len() as u32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.cases.get(mid).submitted_ms < ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Every loan ever made (repaid ones too), in the order they were made.
    pub fn loans(&self) -> impl Iterator<Item = &crate::credit::Loan> {
        self.credit.loans()
    }

    /// Bytes the AML profiles take (one per account, beside the book).
    #[must_use]
    pub fn profiles_allocated_bytes(&self) -> usize {
        self.profiles.allocated_bytes()
    }

    /// An account's AML profile.
    #[must_use]
    pub fn profile(&self, account_id: u64) -> Option<&Profile> {
        self.book.find(account_id).map(|at| self.profiles.get(at.index()))
    }

    /// The case rows of a HK calendar month, in report order (submission
    /// time, then transfer id: cases are stored in submission order).
    #[must_use]
    pub fn str_rows(&self, year: u32, month: u32) -> Vec<CaseRow> {
        if !(1..=12).contains(&month) {
            return Vec::new();
        }
        let start = aml::hk_month_start_ms(year, month);
        let end =
            if month == 12 { aml::hk_month_start_ms(year + 1, 1) } else { aml::hk_month_start_ms(year, month + 1) };
        let (first, last) = (self.first_case_from(start), self.first_case_from(end));
        let mut rows: Vec<CaseRow> = (first..last)
            .map(|at| self.cases.get(at))
            .map(|case| {
                let s = self.transfers.get(self.transfers.find(case.transfer_id).expect("a case's transfer is stored"));
                let account = self.book.account(s.debit_account).expect("a case's account exists");
                CaseRow {
                    case: *case,
                    debit_account: s.debit_account,
                    customer_ref: account.customer_ref,
                    credit_account: s.credit_account,
                    debit_amount: s.debit_amount,
                    credit_amount: s.credit_amount,
                    debit_currency: s.debit_currency,
                    credit_currency: s.credit_currency,
                    destination_country: s.destination_country,
                    state: s.state,
                }
            })
            .collect();
        sort_rows(&mut rows);
        rows
    }

    /// EXPORT_STR: StrHeader, then the report. Precedence: INVALID_FIELD
    /// (month outside 1..12, or an unknown format), NOTHING_TO_REPORT.
    fn export_str(&self, r: &StrRequest, out: &mut Vec<u8>) {
        let rows = if str_request_valid(r) { self.str_rows(u32::from(r.year), u32::from(r.month)) } else { Vec::new() };
        str_answer(&rows, r, self.now_ms, out);
    }

    /// SET_TIME, one record: CLOCK_NOT_MANUAL, TIME_BACKWARDS, else the clock
    /// moves and due timers fire.
    pub fn set_time(&mut self, s: &SetTime, index: u64) -> RecordResult {
        let code = if !self.config.manual_clock {
            ResultCode::ClockNotManual
        } else if s.unix_ms < self.now_ms {
            ResultCode::TimeBackwards
        } else {
            self.advance(s.unix_ms);
            ResultCode::Ok
        };
        RecordResult { key: index, code: code.as_u16() }
    }
}

/// Puts case rows in report order: submission time, then transfer id.
pub fn sort_rows(rows: &mut [CaseRow]) {
    rows.sort_unstable_by_key(|r| (r.case.submitted_ms, r.case.transfer_id));
}

/// Whether the rules take an STR request: a month in 1..=12 and a known
/// format (else INVALID_FIELD).
#[must_use]
pub fn str_request_valid(r: &StrRequest) -> bool {
    (1..=12).contains(&r.month) && matches!(r.format, report::FORMAT_XML | report::FORMAT_CSV)
}

/// EXPORT_STR's answer for `rows` (the month's, in report order): a
/// StrHeader and the report, or INVALID_FIELD for a request the rules
/// refuse.
pub fn str_answer(rows: &[CaseRow], r: &StrRequest, now_ms: u64, out: &mut Vec<u8>) {
    let mut header = StrHeader { code: 0, format: r.format, report_len: 0 };
    let body = if str_request_valid(r) {
        report::format(rows, u32::from(r.year), u32::from(r.month), r.format, now_ms)
    } else {
        header.code = ResultCode::InvalidField.as_u16();
        Ok(Vec::new())
    };
    match body {
        Ok(bytes) => {
            header.report_len = u32::try_from(bytes.len()).expect("a report is at most REPORT_MAX");
            records::push(out, &header);
            out.extend_from_slice(&bytes);
        }
        Err(e) => {
            header.code = match e {
                ReportError::Empty => ResultCode::NothingToReport,
                ReportError::TooLarge => ResultCode::Overflow,
            }
            .as_u16();
            records::push(out, &header);
        }
    }
}

/// What the checks of an accepted transfer decided.
struct Accepted {
    debit: AccountPos,
    credit: AccountPos,
    /// The quote it spends, if any.
    quote: Option<u64>,
    debit_currency: CurrencyIndex,
    credit_currency: CurrencyIndex,
    debit_amount: u64,
    credit_amount: u64,
    rate_e9: u64,
    /// The micro-loan an AUTO_CREDIT transfer draws (0 if none), and the
    /// position of the line it draws on.
    auto_credit: u64,
    auto_credit_line: u32,
}

/// The two currencies of a transfer that converts, both known.
#[inline]
fn conversion(t: &Transfer) -> Option<(CurrencyIndex, CurrencyIndex)> {
    if t.debit_currency == t.credit_currency {
        return None;
    }
    Some((CurrencyIndex::of(t.debit_currency)?, CurrencyIndex::of(t.credit_currency)?))
}

/// The result code of a failed conversion.
fn fx_code(e: FxError) -> ResultCode {
    match e {
        FxError::NoRate => ResultCode::NoFxRate,
        FxError::RoundsToZero => ResultCode::InvalidAmount,
        FxError::Overflow => ResultCode::Overflow,
    }
}

/// Whether a balance can take a credit (posted plus promised credits stay
/// within i64).
fn check_credit(b: &Balance, amount: u64) -> Result<(), ResultCode> {
    if i128::from(b.posted) + i128::from(b.incoming) + i128::from(amount) > i128::from(i64::MAX) {
        return Err(ResultCode::Overflow);
    }
    Ok(())
}

/// Whether a system account's balance can pay `amount` (it may go negative,
/// but not past i64).
fn check_system_debit(b: &Balance, amount: u64) -> Result<(), ResultCode> {
    if b.available() - i128::from(amount) < i128::from(i64::MIN) || b.held.checked_add(amount).is_none() {
        return Err(ResultCode::Overflow);
    }
    Ok(())
}

/// A step-up outcome is PASS or FAIL (values come before state).
fn check_outcome(outcome: u8) -> Result<(), ResultCode> {
    if matches!(outcome, records::OUTCOME_PASS | records::OUTCOME_FAIL) {
        Ok(())
    } else {
        Err(ResultCode::InvalidField)
    }
}

/// Whether SUBMIT_TRANSFERS may debit an account: not FX_POSITION,
/// LOAN_FUNDING, REMITTANCE_OUT, INTEREST_INCOME or INTERSHARD.
fn may_debit(account: u64) -> bool {
    !matches!(
        account,
        book::FX_POSITION | book::LOAN_FUNDING | book::REMITTANCE_OUT | book::INTEREST_INCOME | book::INTERSHARD
    )
}

/// Whether SUBMIT_TRANSFERS may credit an account: not FX_POSITION,
/// LOAN_FUNDING, INTEREST_INCOME or INTERSHARD.
fn may_credit(account: u64) -> bool {
    !matches!(account, book::FX_POSITION | book::LOAN_FUNDING | book::INTEREST_INCOME | book::INTERSHARD)
}

#[cfg(test)]
mod tests;
