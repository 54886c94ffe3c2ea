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

mod apply;
mod crossing;
mod pending;
mod submit;
mod suspicious;

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

use crate::aml::mule::{self, Inbound};
use crate::aml::report::{self, CaseRow, ReportError};
use crate::aml::{AmlConfig, AmlState, Case, Judgement, Outcome, Outgoing, Profile};
use crate::fx::{FxError, RateTable, Side};
use crate::money::CurrencyIndex;
use crate::protocol::ResultCode;
use crate::protocol::internal::{self, Caller, QuoteAt, Verdict};
use crate::protocol::records::{
    self, Account, Balance as BalanceRecord, BalanceKey, CreditLine as CreditLineRecord, Finalize, FxRate, Id,
    Quote as QuoteRecord, QuoteRequest, Record, RecordResult, Repay, SetTime, StepUp, StrHeader, StrPageHeader,
    StrPageRequest, StrRequest, Transfer, TransferResult,
};
use crate::protocol::{kind, kinds};
use book::{AccountKind, AccountPos, Balance, Book};
use holds::{HoldWindows, Holds, NEVER, NO_CASE, PendingEntry, PendingTable};
use index::Arena;
use links::{EntryKind, Links};
use quotes::{Quote, Quotes};
use transfers::{StoredTransfer, TransferIndex, TransferStore};

pub use audit::AuditError;
use pending::VoidReason;
pub use snapshot::SnapshotError;
use submit::{Accepted, check_credit, check_system_debit, fx_code};
use suspicious::check_outcome;
pub use suspicious::{
    PagePart, sort_rows, str_answer, str_page_answer, str_page_as_of, str_page_valid, str_request_valid,
};

/// 2026-01-01T00:00:00Z: where a manual clock starts on a new data directory.
pub const MANUAL_CLOCK_START_MS: u64 = 1_767_225_600_000;

/// How many records ahead of the one being applied `submit_batch` starts
/// loading memory for.
const PREFETCH_AHEAD: usize = 16;

/// The shard that owns a customer account: a fixed hash of its id, so the
/// assignment never changes for a given shard count.
#[must_use]
#[inline]
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
    /// AML state per account (level 3's profile, the mule rule's inbound
    /// state and model 3's payee memory, 192 bytes), at the account's book
    /// position.
    aml: Arena<AmlState>,
    /// Every transfer AML held, in submission order.
    cases: Arena<Case>,
    /// Verdicts of the SUBMIT_JUDGED record being applied (empty between
    /// records).
    verdicts: Vec<Verdict>,
    /// The channel the SCOPED record being applied acts for, and its
    /// scope (none between records, and for requests not scoped).
    caller: Option<Caller>,
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
            aml: self.aml.clone(),
            cases: self.cases.clone(),
            verdicts: self.verdicts.clone(),
            caller: self.caller,
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
            aml,
            cases,
            verdicts,
            caller,
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
        self.aml.clone_from(aml);
        self.cases.clone_from(cases);
        self.verdicts.clone_from(verdicts);
        self.caller = *caller;
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
            engine.insert_account(id, AccountKind::System, money::HONG_KONG, 0, 0);
        }
        engine
    }

    /// Adds an account to the book, with its AML profile beside it.
    fn insert_account(&mut self, id: u64, kind: AccountKind, home_country: u16, customer_ref: u64, opened_by: u32) {
        self.book.insert_account(id, kind, home_country, customer_ref, opened_by);
        self.aml.push(AmlState::default());
        assert_eq!(self.aml.len(), self.book.account_count(), "one AML state per account");
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
            aml: Arena::with_capacity(config.accounts_capacity, AmlState::default()),
            cases: Arena::default(),
            verdicts: Vec::new(),
            caller: None,
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

    /// What this shard knows of requests spanning shards (read-only).
    #[must_use]
    pub fn multi(&self) -> &multi::Multi {
        &self.multi
    }

    /// CREATE_ACCOUNTS, one record. Precedence: INVALID_ID, ALREADY_EXISTS or
    /// ACCOUNT_EXISTS, INVALID_FIELD (kind, flags), UNKNOWN_COUNTRY.
    pub fn create_account(&mut self, a: &Account) -> RecordResult {
        let code = self.check_account(a);
        if code == ResultCode::Ok {
            let opened_by = self.caller.map_or(0, |c| c.channel);
            self.insert_account(a.account_id, AccountKind::Customer, a.home_country, a.customer_ref, opened_by);
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

    /// LOOKUP_TRANSFERS, one record. Precedence: INVALID_ID,
    /// TRANSFER_NOT_FOUND, FORBIDDEN (a scope that leaves out both its
    /// accounts).
    #[must_use]
    pub fn lookup_transfer(&self, id: u128) -> TransferResult {
        match self.find_for_hold(id) {
            Ok(at) if !self.may_see(at) => self.reject(id, ResultCode::Forbidden),
            Ok(at) => self.result_of(at, ResultCode::Ok),
            Err(code) => self.reject(id, code),
        }
    }

    /// LOOKUP_BALANCES, one record. Precedence: ACCOUNT_NOT_FOUND,
    /// FORBIDDEN (out of the channel's scope), UNKNOWN_CURRENCY.
    #[must_use]
    pub fn lookup_balance(&self, k: &BalanceKey) -> BalanceRecord {
        let mut answer = BalanceRecord { account_id: k.account_id, currency: k.currency, ..BalanceRecord::default() };
        if self.book.account(k.account_id).is_none() {
            answer.code = ResultCode::AccountNotFound.as_u16();
        } else if !self.in_scope(k.account_id) {
            answer.code = ResultCode::Forbidden.as_u16();
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

    /// Every loan ever made (repaid ones too), in the order they were made.
    pub fn loans(&self) -> impl Iterator<Item = &crate::credit::Loan> {
        self.credit.loans()
    }

    /// Bytes the AML profiles and the mule rule's inbound state take (one
    /// each per account, beside the book).
    #[must_use]
    pub fn profiles_allocated_bytes(&self) -> usize {
        self.aml.allocated_bytes()
    }

    /// An account's inbound state (the mule rule's).
    #[must_use]
    pub fn inbound(&self, account_id: u64) -> Option<&Inbound> {
        self.book.find(account_id).map(|at| &self.aml.get(at.index()).inbound)
    }

    /// An account's AML profile.
    #[must_use]
    pub fn profile(&self, account_id: u64) -> Option<&Profile> {
        self.book.find(account_id).map(|at| &self.aml.get(at.index()).profile)
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

#[cfg(test)]
mod tests;
