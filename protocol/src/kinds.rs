//! The one table of message kinds: for each, its records and their sizes,
//! who may send it, whether it is logged, how it goes over shards, where
//! its answers carry their result code, and whether an answer may wait for
//! other shards. The server, the engine, the shards and the router read
//! this table; none lists kinds of its own.

use crate::frame::role;
use crate::kind;
use crate::records::{
    Account, BalanceKey, ClusterChange, CreditLine, Disburse, Finalize, FxRate, Id, QuoteRequest, Record, Repay,
    SetTime, StepUp, StrPageHeader, StrPageRequest, StrRequest, Transfer,
};

/// How many records a kind's request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountRule {
    /// 0..=max_batch.
    Batch,
    /// Exactly 0 (PING).
    Zero,
    /// Exactly 1 (HELLO, EXPORT_STR, EXPORT_STR_PAGE).
    One,
}

/// Who sends a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A channel, over the wire (contract §3).
    Channel,
    /// The switch, to a channel (CHALLENGE).
    Switch,
    /// The switch's router, to a shard (never on the wire).
    Router,
    /// A shard, to its own log (never on the wire, never routed).
    Shard,
}

/// How a request of a kind goes over the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered by the connection itself (PING, HELLO, CHALLENGE).
    Session,
    /// Each record to the shard of its account.
    ByAccount,
    /// Each record to the shard that decides it (a transfer's debit side,
    /// or the holder of its id), after the switch-wide claims.
    ByClaim,
    /// Each record to the shard holding the id it names.
    ById,
    /// The whole request to every shard (rates, time, quotes, balances,
    /// the STR's rows); the answers are merged.
    Broadcast,
    /// Internal: a shard's own record, or the router's part of a request.
    Internal,
}

/// What the contract (§3) and the switch say of a kind.
#[derive(Clone, Copy, Debug)]
pub struct KindSpec {
    pub kind: u16,
    pub name: &'static str,
    /// Request record size (0 for PING; 1 for internal records of any
    /// length, which check their own shape).
    pub request_size: usize,
    /// Response record size (EXPORT_STR, EXPORT_STR_PAGE: their header's).
    pub response_size: usize,
    /// Roles any one of which may send it; 0 = any channel.
    pub roles: u16,
    pub count: CountRule,
    /// Whether every record's reserved bytes, flags and enums are valid.
    pub well_formed: fn(&[u8]) -> bool,
    pub origin: Origin,
    /// Whether it changes state, and so is logged before it is answered.
    pub logged: bool,
    pub route: Route,
    /// Offset of the u16 result code in each answer record; `None` for
    /// kinds without per-record codes, and for internal kinds (their
    /// answers are counted under the kind they stand for).
    pub result_code_at: Option<usize>,
    /// Whether an answer may show something another shard has yet to
    /// apply (a transfer in flight, a new account), and so waits for its
    /// acknowledgement.
    pub waits_on_links: bool,
}

fn each<R: Record>(body: &[u8]) -> bool {
    body.chunks_exact(R::SIZE).all(R::well_formed)
}

fn hello_well_formed(body: &[u8]) -> bool {
    body.len() == 56 && body[4..8] == [0; 4]
}

fn nothing(_: &[u8]) -> bool {
    true
}

/// A kind a channel sends.
#[allow(clippy::too_many_arguments)] // one row of the table, read as one
const fn wire(
    kind: u16,
    name: &'static str,
    sizes: (usize, usize),
    roles: u16,
    count: CountRule,
    well_formed: fn(&[u8]) -> bool,
    logged: bool,
    route: Route,
    result_code_at: Option<usize>,
    waits_on_links: bool,
) -> KindSpec {
    let (request_size, response_size) = sizes;
    KindSpec {
        kind,
        name,
        request_size,
        response_size,
        roles,
        count,
        well_formed,
        origin: Origin::Channel,
        logged,
        route,
        result_code_at,
        waits_on_links,
    }
}

/// A kind the switch makes for itself.
const fn internal(kind: u16, name: &'static str, request_size: usize, origin: Origin, logged: bool) -> KindSpec {
    KindSpec {
        kind,
        name,
        request_size,
        response_size: 0,
        roles: 0,
        count: CountRule::Batch,
        well_formed: nothing,
        origin,
        logged,
        route: Route::Internal,
        result_code_at: None,
        waits_on_links: false,
    }
}

use CountRule::{Batch, One, Zero};
use Route::{Broadcast, ByAccount, ByClaim, ById, Session};

/// Bytes of a QUOTE_AT record ([`crate::internal::QuoteAt`]).
pub const QUOTE_AT_SIZE: usize = crate::internal::QuoteAt::SIZE;

/// Every kind, in kind order within each origin. Columns of `wire`: kind,
/// name, (request, response) record sizes, roles, count, well-formedness,
/// logged, route, result code offset, waits on links.
pub static KINDS: [KindSpec; 32] = [
    wire(kind::PING, "PING", (0, 0), 0, Zero, nothing, false, Session, None, false),
    KindSpec {
        origin: Origin::Switch,
        ..wire(kind::CHALLENGE, "CHALLENGE", (32, 32), 0, One, nothing, false, Session, None, false)
    },
    wire(kind::HELLO, "HELLO", (56, 24), 0, One, hello_well_formed, false, Session, None, false),
    wire(
        kind::CREATE_ACCOUNTS,
        "CREATE_ACCOUNTS",
        (32, 32),
        role::ACCOUNTS,
        Batch,
        each::<Account>,
        true,
        ByAccount,
        Some(8),
        true,
    ),
    wire(
        kind::SUBMIT_TRANSFERS,
        "SUBMIT_TRANSFERS",
        (64, 64),
        role::PAYMENTS,
        Batch,
        each::<Transfer>,
        true,
        ByClaim,
        Some(16),
        true,
    ),
    wire(
        kind::CONFIRM_STEP_UP,
        "CONFIRM_STEP_UP",
        (24, 64),
        role::PAYMENTS,
        Batch,
        each::<StepUp>,
        true,
        ById,
        Some(16),
        true,
    ),
    wire(
        kind::CANCEL_TRANSFERS,
        "CANCEL_TRANSFERS",
        (16, 64),
        role::PAYMENTS,
        Batch,
        each::<Id>,
        true,
        ById,
        Some(16),
        false,
    ),
    wire(
        kind::FINALIZE_PENDING,
        "FINALIZE_PENDING",
        (32, 64),
        role::PAYMENTS,
        Batch,
        each::<Finalize>,
        true,
        ById,
        Some(16),
        true,
    ),
    wire(kind::LOOKUP_TRANSFERS, "LOOKUP_TRANSFERS", (16, 64), 0, Batch, each::<Id>, false, ById, Some(16), false),
    wire(
        kind::LOOKUP_BALANCES,
        "LOOKUP_BALANCES",
        (16, 48),
        0,
        Batch,
        each::<BalanceKey>,
        false,
        Broadcast,
        Some(10),
        false,
    ),
    wire(
        kind::SET_FX_RATES,
        "SET_FX_RATES",
        (16, 32),
        role::TREASURY,
        Batch,
        each::<FxRate>,
        true,
        Broadcast,
        Some(8),
        false,
    ),
    wire(
        kind::FX_QUOTE,
        "FX_QUOTE",
        (16, 48),
        role::PAYMENTS,
        Batch,
        each::<QuoteRequest>,
        true,
        Broadcast,
        Some(8),
        false,
    ),
    wire(
        kind::SET_CREDIT_LINES,
        "SET_CREDIT_LINES",
        (32, 32),
        role::LENDING,
        Batch,
        each::<CreditLine>,
        true,
        ByAccount,
        Some(8),
        false,
    ),
    wire(
        kind::DISBURSE_LOANS,
        "DISBURSE_LOANS",
        (48, 64),
        role::LENDING,
        Batch,
        each::<Disburse>,
        true,
        ByClaim,
        Some(16),
        false,
    ),
    wire(
        kind::REPAY_LOANS,
        "REPAY_LOANS",
        (48, 64),
        role::PAYMENTS | role::LENDING,
        Batch,
        each::<Repay>,
        true,
        ByClaim,
        Some(16),
        false,
    ),
    wire(kind::LOOKUP_LOANS, "LOOKUP_LOANS", (16, 64), 0, Batch, each::<Id>, false, ById, Some(16), false),
    wire(
        kind::RESOLVE_REVIEW,
        "RESOLVE_REVIEW",
        (24, 64),
        role::OPERATOR,
        Batch,
        each::<StepUp>,
        true,
        ById,
        Some(16),
        true,
    ),
    wire(kind::SET_TIME, "SET_TIME", (16, 32), role::OPERATOR, Batch, each::<SetTime>, true, Broadcast, Some(8), false),
    wire(
        kind::EXPORT_STR,
        "EXPORT_STR",
        (16, 8),
        role::REPORTING,
        One,
        each::<StrRequest>,
        false,
        Broadcast,
        None,
        false,
    ),
    wire(
        kind::EXPORT_STR_PAGE,
        "EXPORT_STR_PAGE",
        (StrPageRequest::SIZE, StrPageHeader::SIZE),
        role::REPORTING,
        One,
        each::<StrPageRequest>,
        false,
        Broadcast,
        None,
        false,
    ),
    // Clusters' operators (docs/cluster.md): answered by the node itself,
    // each with one JSON (or, for BACKUP, snapshot) body.
    wire(kind::CLUSTER_STATUS, "CLUSTER_STATUS", (0, 1), role::OPERATOR, Zero, nothing, false, Session, None, false),
    wire(
        kind::CLUSTER_CHANGE,
        "CLUSTER_CHANGE",
        (ClusterChange::SIZE, 1),
        role::OPERATOR,
        One,
        each::<ClusterChange>,
        false,
        Session,
        None,
        false,
    ),
    wire(kind::BACKUP, "BACKUP", (0, 1), role::OPERATOR, Zero, nothing, false, Session, None, false),
    // The channels read again from the configuration file (docs/security.md).
    wire(kind::RELOAD_CHANNELS, "RELOAD_CHANNELS", (0, 1), role::OPERATOR, Zero, nothing, false, Session, None, false),
    internal(kind::TICK, "TICK", 1, Origin::Shard, true),
    KindSpec { waits_on_links: true, ..internal(kind::SUBMIT_JUDGED, "SUBMIT_JUDGED", 1, Origin::Shard, true) },
    KindSpec {
        count: One,
        route: Broadcast,
        ..internal(kind::STR_ROWS, "STR_ROWS", StrRequest::SIZE, Origin::Router, false)
    },
    KindSpec {
        count: One,
        route: Broadcast,
        ..internal(kind::STR_PAGE, "STR_PAGE", StrPageRequest::SIZE, Origin::Router, false)
    },
    internal(kind::LINK_IN, "LINK_IN", 1, Origin::Shard, true),
    KindSpec { route: Broadcast, ..internal(kind::QUOTE_AT, "QUOTE_AT", QUOTE_AT_SIZE, Origin::Router, true) },
    internal(kind::MULTI, "MULTI", 1, Origin::Router, true),
    // Logged whenever what it carries is (a lookup's is not logged).
    internal(kind::SCOPED, "SCOPED", 1, Origin::Router, true),
];

/// The row of `kind`, if it is one.
#[must_use]
#[inline]
pub fn spec(kind: u16) -> Option<&'static KindSpec> {
    KINDS.iter().find(|s| s.kind == kind)
}

/// The row of a kind a channel may send (not CHALLENGE, which only the
/// switch sends, nor the switch's internal kinds).
#[must_use]
#[inline]
pub fn from_channel(kind: u16) -> Option<&'static KindSpec> {
    spec(kind).filter(|s| s.origin == Origin::Channel)
}

/// Whether a kind changes state and therefore goes to the log.
#[must_use]
#[inline]
pub fn is_logged(kind: u16) -> bool {
    spec(kind).is_some_and(|s| s.logged)
}

/// Where each answer record of `kind` carries its u16 result code: the
/// record size and the code's offset; `None` for kinds without per-record
/// codes.
#[must_use]
#[inline]
pub fn result_code_layout(kind: u16) -> Option<(usize, usize)> {
    spec(kind).and_then(|s| s.result_code_at.map(|at| (s.response_size, at)))
}

/// The per-record result codes of an answer body of `kind`, in order;
/// `None` for kinds without them.
#[must_use]
#[inline]
pub fn result_codes(kind: u16, answers: &[u8]) -> Option<impl Iterator<Item = u16> + '_> {
    let (size, at) = result_code_layout(kind)?;
    Some(answers.chunks_exact(size).map(move |r| u16::from_le_bytes([r[at], r[at + 1]])))
}

/// The request record size of a kind the engine applies (every kind but
/// the session's).
#[must_use]
#[inline]
pub fn applied_record_size(kind: u16) -> Option<usize> {
    spec(kind).filter(|s| s.route != Route::Session).map(|s| s.request_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LoanResult, Quote, RecordResult, TransferResult};

    #[test]
    fn the_table_answers_for_every_kind_once() {
        for (i, s) in KINDS.iter().enumerate() {
            assert!(KINDS[i + 1..].iter().all(|t| t.kind != s.kind), "{} twice", s.name);
            assert_eq!(spec(s.kind).map(|t| t.name), Some(s.name));
            // Internal kinds live in 0xF0xx and never come from a channel.
            assert_eq!(s.kind >= 0xF000, matches!(s.origin, Origin::Router | Origin::Shard), "{}", s.name);
            assert_eq!(s.route == Route::Internal, s.kind >= 0xF000 && s.route != Route::Broadcast, "{}", s.name);
        }
        assert!(from_channel(kind::CHALLENGE).is_none(), "only the switch sends CHALLENGE");
        assert!(from_channel(kind::MULTI).is_none() && from_channel(kind::TICK).is_none());
        assert!(from_channel(0x7777).is_none());
        assert_eq!(from_channel(kind::REPAY_LOANS).map(|s| s.roles), Some(role::PAYMENTS | role::LENDING));
        assert!(is_logged(kind::MULTI) && !is_logged(kind::LOOKUP_BALANCES) && !is_logged(0x7777));
        assert_eq!(applied_record_size(kind::PING), None);
        assert_eq!(applied_record_size(kind::QUOTE_AT), Some(32));
    }

    #[test]
    fn result_codes_sit_where_the_answer_records_put_them() {
        // Each answer record type encodes its code at the offset the table
        // gives: a record with code 0xBEEF has those bytes there.
        fn at<R: Record + Default>(code: impl Fn(&mut R)) -> usize {
            let mut r = R::default();
            code(&mut r);
            let mut bytes = vec![0; R::SIZE];
            r.encode(&mut bytes);
            bytes.windows(2).position(|w| w == 0xBEEFu16.to_le_bytes()).expect("the code is encoded")
        }
        let transfer = (TransferResult::SIZE, at::<TransferResult>(|r| r.code = 0xBEEF));
        let loan = (LoanResult::SIZE, at::<LoanResult>(|r| r.code = 0xBEEF));
        let record = (RecordResult::SIZE, at::<RecordResult>(|r| r.code = 0xBEEF));
        let quote = (Quote::SIZE, at::<Quote>(|r| r.code = 0xBEEF));
        let balance = (crate::records::Balance::SIZE, at::<crate::records::Balance>(|r| r.code = 0xBEEF));
        for s in KINDS.iter().filter(|s| s.result_code_at.is_some()) {
            let layout = result_code_layout(s.kind);
            let expected = match s.kind {
                kind::DISBURSE_LOANS | kind::REPAY_LOANS | kind::LOOKUP_LOANS => loan,
                kind::CREATE_ACCOUNTS | kind::SET_FX_RATES | kind::SET_CREDIT_LINES | kind::SET_TIME => record,
                kind::FX_QUOTE => quote,
                kind::LOOKUP_BALANCES => balance,
                _ => transfer,
            };
            assert_eq!(layout, Some(expected), "{}", s.name);
        }
    }
}
