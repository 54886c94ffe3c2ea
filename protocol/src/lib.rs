//! Harbour's channel protocol (`docs/protocol.md`, wire v1): records,
//! result codes, message kinds, frames, the CHALLENGE/HELLO handshake, and
//! [`client::Client`], an async client for channels.
//!
//! Owns every byte offset of the wire format; nothing outside this crate
//! reads or writes one. Apart from `client`, it never does I/O and never
//! allocates per record. `frame` holds the header codec, `kinds` the one table
//! of message kinds; `session` the handshake. A channel depends on this crate alone:
//! not on the engine, the log or the server.

pub mod accounts;
#[cfg(feature = "client")]
pub mod client;
pub mod codes;
pub mod frame;
pub mod internal;
pub mod kinds;
pub mod records;
pub mod session;

pub use codes::ResultCode;

/// Message kinds of contract §3 that the engine applies, plus internal log
/// kinds (never on the wire) in the `0xF0xx` range.
pub mod kind {
    /// PING.
    pub const PING: u16 = 0x0001;
    /// CREATE_ACCOUNTS.
    pub const CREATE_ACCOUNTS: u16 = 0x0010;
    /// SUBMIT_TRANSFERS.
    pub const SUBMIT_TRANSFERS: u16 = 0x0011;
    /// CONFIRM_STEP_UP.
    pub const CONFIRM_STEP_UP: u16 = 0x0012;
    /// CANCEL_TRANSFERS.
    pub const CANCEL_TRANSFERS: u16 = 0x0013;
    /// FINALIZE_PENDING.
    pub const FINALIZE_PENDING: u16 = 0x0014;
    /// LOOKUP_TRANSFERS.
    pub const LOOKUP_TRANSFERS: u16 = 0x0015;
    /// LOOKUP_BALANCES.
    pub const LOOKUP_BALANCES: u16 = 0x0016;
    /// SET_FX_RATES.
    pub const SET_FX_RATES: u16 = 0x0020;
    /// FX_QUOTE.
    pub const FX_QUOTE: u16 = 0x0021;
    /// SET_CREDIT_LINES.
    pub const SET_CREDIT_LINES: u16 = 0x0030;
    /// DISBURSE_LOANS.
    pub const DISBURSE_LOANS: u16 = 0x0031;
    /// REPAY_LOANS.
    pub const REPAY_LOANS: u16 = 0x0032;
    /// LOOKUP_LOANS.
    pub const LOOKUP_LOANS: u16 = 0x0033;
    /// EXPORT_STR.
    pub const EXPORT_STR: u16 = 0x0042;
    /// One page of a month's STR (a Harbour addition): a report of any
    /// size, a bounded page at a time.
    pub const EXPORT_STR_PAGE: u16 = 0x0043;
    /// A cluster node's view of its cluster, as JSON (OPERATOR; any node).
    pub const CLUSTER_STATUS: u16 = 0x0050;
    /// Adds or removes a node of a cluster (OPERATOR; the leader).
    pub const CLUSTER_CHANGE: u16 = 0x0051;
    /// A consistent copy of a cluster node's books (OPERATOR; any node).
    pub const BACKUP: u16 = 0x0052;
    /// Reads the switch's configuration file again and replaces its
    /// channels (OPERATOR; `docs/security.md`).
    pub const RELOAD_CHANNELS: u16 = 0x0053;
    /// CHALLENGE (switch to channel, on connect).
    pub const CHALLENGE: u16 = 0x0100;
    /// HELLO.
    pub const HELLO: u16 = 0x0101;
    /// RESOLVE_REVIEW.
    pub const RESOLVE_REVIEW: u16 = 0x0040;
    /// SET_TIME.
    pub const SET_TIME: u16 = 0x0041;
    /// Internal log record: the clock moved and timers fired. Empty body.
    pub const TICK: u16 = 0xF001;
    /// Internal log record: a SUBMIT_TRANSFERS body with the AML verdicts
    /// that depended on timing (the remote scorer, the budget fallback)
    /// ahead of it, applied as one (`aml::scorer`).
    pub const SUBMIT_JUDGED: u16 = 0xF002;
    /// Internal query (never logged, never on the wire): one shard's STR
    /// case rows for a month, for the switch to merge (`aml::report`).
    pub const STR_ROWS: u16 = 0xF003;
    /// Internal query (never logged, never on the wire): one shard's next
    /// STR case rows after a cursor, for a page (`aml::report`).
    pub const STR_PAGE: u16 = 0xF008;
    /// Internal log record: entries from another shard and its
    /// acknowledgement of this shard's (`engine::links`).
    pub const LINK_IN: u16 = 0xF004;
    /// Internal log record: FX_QUOTE with the quote id and expiry the
    /// switch chose, so every shard holds the same quote (32-byte records:
    /// u64 id, u64 expires_at_ms, QuoteRequest).
    pub const QUOTE_AT: u16 = 0xF005;
    /// Internal log record: a shard's part of a request that spans shards,
    /// with the other shards' parts, which it keeps until the request is
    /// durable everywhere (`engine::multi`).
    pub const MULTI: u16 = 0xF006;
    /// Internal log record: a request applied on behalf of a channel, with
    /// the accounts that channel may act on (`internal::Caller`): account
    /// scopes, `docs/security.md`.
    pub const SCOPED: u16 = 0xF007;
}
