//! The router: which shard applies each record of a request, and how the
//! shards' answers become one answer.
//!
//! Owns the switch-wide id claims (`docs/sharding.md`, "Ids and quotes"):
//! every transfer or loan id, repayment id and spent FX quote is *claimed*
//! by the one shard that stores it, and every request naming that id goes
//! to that shard. So a reused id meets its first use on one shard, whose
//! log orders them, and the engine there answers ALREADY_EXISTS or
//! ID_CONFLICT as it would with one shard. A claim is taken when a record
//! is routed (pending) and settled when its shard answers: kept if the
//! shard stored the id, dropped if it refused the record. A record that
//! would need an id or quote another shard holds pending (not yet decided)
//! makes its whole request wait ([`Routed::Contended`]): nothing of it is
//! sent until that answer is in, so the request stays one unit.
//!
//! Pure and single-threaded: no I/O, no clock, no locks. The threaded
//! switch keeps it under a mutex and feeds it the shards' answers; the
//! simulator drives it directly. Claims are not logged: after a restart
//! they are rebuilt from the shards' state ([`Router::restore`]).
//!
//! Memory: one entry per stored id (about 40 bytes with the map's slack),
//! bounded by the engines' capacities; pending claims are bounded by the
//! requests in flight.

use crate::aml::report::{CaseRow, ROW_SIZE};
use crate::engine::book::CUSTOMER_ID_MIN;
use crate::engine::{EngineError, PagePart};
use crate::hash::IdMap;
use crate::protocol::internal::{self, QuoteAt};
use crate::protocol::records::{
    self, Account, Balance, BalanceKey, CreditLine, Disburse, Finalize, Id, LoanResult, Record, Repay, StepUp,
    StrPageRequest, StrRequest, Transfer, TransferResult,
};
use crate::protocol::{ResultCode, kind, kinds};

/// Quote id a record is routed with when its quote was spent on another
/// shard: no shard holds it, so the engine answers QUOTE_INVALID in its
/// precedence (the switch never gives this id).
pub const QUOTE_SPENT_ELSEWHERE: u64 = u64::MAX;

/// The shard a customer account lives on.
pub use crate::engine::shard_of;

/// The shard a transfer is decided on: its debit account's if that is a
/// customer's, else its credit account's (system accounts have a part on
/// every shard, so a deposit or a payment out stays on one shard).
#[must_use]
pub fn route_transfer(t: &Transfer, shards: usize) -> usize {
    if t.debit_account >= CUSTOMER_ID_MIN {
        shard_of(t.debit_account, shards)
    } else if t.credit_account >= CUSTOMER_ID_MIN {
        shard_of(t.credit_account, shards)
    } else {
        0
    }
}

/// The shard that answers for an id nobody claimed (a lookup of an
/// unknown id, a repayment of an unknown loan): a fixed hash, so such
/// answers spread over the shards.
#[must_use]
pub fn shard_of_id(id: u128, shards: usize) -> usize {
    if shards == 1 { 0 } else { (crate::hash::hash_u128(id) % shards as u64) as usize }
}

/// The id spaces the contract names that the router keeps unique (account
/// ids need nothing: an account is routed by its id already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Transfer and loan ids: one space (a micro-loan's id is its
    /// transfer's).
    Id,
    /// Repayment ids.
    Repayment,
    /// FX quote ids, claimed when a transfer spends one.
    Quote,
}

/// Who holds an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claim {
    owner: u16,
    /// Records routed to `owner` with this id and not yet answered.
    pending: u32,
    /// Whether `owner` stores it (or, for a quote, spent it).
    stored: bool,
}

/// Every id claim, per space.
#[derive(Debug, Default)]
struct Claims {
    ids: IdMap<u128, Claim>,
    repayments: IdMap<u128, Claim>,
    quotes: IdMap<u128, Claim>,
}

impl Claims {
    fn space(&mut self, space: Space) -> &mut IdMap<u128, Claim> {
        match space {
            Space::Id => &mut self.ids,
            Space::Repayment => &mut self.repayments,
            Space::Quote => &mut self.quotes,
        }
    }

    fn get(&self, space: Space, key: u128) -> Option<Claim> {
        let map = match space {
            Space::Id => &self.ids,
            Space::Repayment => &self.repayments,
            Space::Quote => &self.quotes,
        };
        map.get(&key).copied()
    }

    /// One more record with `key` goes to `owner` (which must be the
    /// holder, if there is one).
    fn take(&mut self, space: Space, key: u128, owner: usize) {
        let claim = self.space(space).entry(key).or_insert(Claim { owner: owner as u16, pending: 0, stored: false });
        assert_eq!(usize::from(claim.owner), owner, "a claim is taken only by its holder");
        claim.pending += 1;
    }

    /// A record with `key` was answered (`stored`: the owner now stores
    /// it), or was never sent (`stored` false).
    fn settle(&mut self, space: Space, key: u128, stored: bool) {
        let map = self.space(space);
        let claim = map.get_mut(&key).expect("a settled claim was taken");
        assert!(claim.pending > 0, "a claim settles once per record");
        claim.pending -= 1;
        claim.stored |= stored;
        if claim.pending == 0 && !claim.stored {
            map.remove(&key);
        }
    }
}

/// One claim a record took: settled from the record's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Take {
    /// The record's place in its part.
    pub record: u32,
    pub space: Space,
    pub key: u128,
}

/// The claims one part took, and how to read its answer to settle them.
#[derive(Debug, Default)]
pub struct Claimed {
    takes: Vec<Take>,
    /// The request's number, if it spans shards (`engine::multi`).
    request: Option<u64>,
}

/// The claims of one answered part, with whether each id is now stored:
/// what [`Router::settle`] needs, small enough to hand between threads.
#[derive(Debug, Default)]
pub struct Settled {
    outcomes: Vec<(Space, u128, bool)>,
    request: Option<u64>,
}

impl Claimed {
    /// Whether the part took no claim (nothing to settle).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.takes.is_empty() && self.request.is_none()
    }

    /// Reads the part's answer: which claimed ids its shard stored. With no
    /// answer (the log failed, the shard stopped) every id counts as
    /// stored: whether it reached the disk is unknown, and a restart
    /// rebuilds the claims from what did.
    #[must_use]
    pub fn outcomes(self, answer: Option<&[u8]>) -> Settled {
        let outcomes = self
            .takes
            .into_iter()
            .map(|t| {
                let stored = answer.is_none_or(|a| {
                    let at = t.record as usize * TransferResult::SIZE;
                    stores(t.space, &a[at..at + TransferResult::SIZE])
                });
                (t.space, t.key, stored)
            })
            .collect();
        Settled { outcomes, request: self.request }
    }
}

/// Whether an answer record shows its claimed id stored by the shard that
/// answered. TransferResult and LoanResult are both 64 bytes with the id
/// first; their codes and states are read through their decoders.
fn stores(space: Space, answer: &[u8]) -> bool {
    const _: () = assert!(TransferResult::SIZE == LoanResult::SIZE);
    let (code, state) = match space {
        Space::Id | Space::Quote => {
            let r = TransferResult::decode(answer);
            (r.code, r.state)
        }
        Space::Repayment => (LoanResult::decode(answer).code, 0),
    };
    let known = [ResultCode::Ok, ResultCode::AlreadyExists, ResultCode::IdConflict].map(ResultCode::as_u16);
    match space {
        // A transfer or a loan: stored if accepted, already there, or there
        // under other fields; a LoanResult's state (ACTIVE, REPAID) and a
        // TransferResult's (POSTED, PENDING, VOIDED) are non-zero for a
        // stored object.
        Space::Id => known.contains(&code) || state != records::STATE_NONE,
        // The answer is the loan's: only the code tells of the repayment.
        Space::Repayment => known.contains(&code),
        // Spent by an accepted transfer (also one refunded later).
        Space::Quote => {
            code == ResultCode::Ok.as_u16() || (code == ResultCode::Overflow.as_u16() && state == records::STATE_VOIDED)
        }
    }
}

/// Whether a part goes to the log (a SCOPED part does if what it carries
/// does: a lookup does not).
fn logged(p: &Part) -> bool {
    kinds::is_logged(crate::shard::submission(p.kind, &p.body).0)
}

/// The kind of a request's answer: a SCOPED request's is its inner
/// kind's.
#[must_use]
pub fn answer_kind(kind: u16, body: &[u8]) -> u16 {
    // Not `shard::submission`: a MULTI from a caller stays a MULTI (and
    // is refused as no channel's kind).
    match internal::decode_scoped(body) {
        Some((_, inner, _)) if kind == kind::SCOPED => inner,
        _ => kind,
    }
}

/// A part of a request for one shard.
#[derive(Debug)]
pub struct Part {
    pub shard: usize,
    pub kind: u16,
    pub body: Vec<u8>,
    pub claimed: Claimed,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Routed {
    /// Send these parts; merge their answers with `merge`. If `rest` is
    /// set, its records are routed once these are answered, as a
    /// continuation of round `round`: records that must see the outcome
    /// of an earlier one decided on another shard (one whose id or quote
    /// an earlier record claimed there, whose debit account an earlier
    /// record credits across shards, or whose credit crosses shards to an
    /// account an earlier record debits), and, for transfers, the later
    /// records sharing an account, id or quote with those; for other
    /// kinds every record after the first. `round` is the number the
    /// parts carry in their MULTI records, if they do.
    Plan { parts: Vec<Part>, merge: Merge, rest: Option<Rest>, round: Option<u64> },
    /// A record names an id or quote another shard holds undecided: send
    /// nothing, route the whole request again once answers have come in.
    Contended,
}

/// The records of a request left for a later round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest {
    /// Their indices in the routed body, ascending: the merged answer
    /// has a zeroed slot for each, which [`Gather`] fills from the next
    /// round's answer.
    pub records: Vec<usize>,
    /// The records themselves, in order: the next round's body.
    pub body: Vec<u8>,
}

/// A request's answer put together round by round: the first round's
/// merged answer has a zeroed slot for each record it left for later,
/// and each later round's answer (one record per slot, in order) fills
/// them.
#[derive(Debug, Default)]
pub struct Gather {
    out: Vec<u8>,
    /// Where the records routed next go in `out`, in order.
    holes: Vec<usize>,
    started: bool,
}

impl Gather {
    /// Adds a round's merged answer; `rest` is what that round left for
    /// later (`Routed::Plan::rest`).
    pub fn add(&mut self, kind: u16, answer: Vec<u8>, rest: Option<&Rest>) {
        let next = rest.map_or(&[][..], |r| r.records.as_slice());
        if !self.started {
            self.started = true;
            self.out = answer;
            self.holes = next.to_vec();
            return;
        }
        let size = crate::protocol::kinds::result_code_layout(kind).expect("a kind routed in rounds has answers").0;
        for (k, &at) in self.holes.iter().enumerate() {
            self.out[at * size..(at + 1) * size].copy_from_slice(&answer[k * size..(k + 1) * size]);
        }
        self.holes = next.iter().map(|&k| self.holes[k]).collect();
    }

    /// The whole answer.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// How the answers of a request's parts become one answer.
#[derive(Debug)]
pub enum Merge {
    /// One shard answered the whole request.
    Single,
    /// `inner`, over all parts but the last `lookups`, which are LOOKUP_LOANS
    /// answers: record `i` of the merged answer, if it is ID_CONFLICT
    /// without its loan, shows loan answer `at` of lookup part `part`
    /// (`shown`: (i, part, at)).
    ShowLoans { inner: Box<Merge>, lookups: usize, shown: Vec<(usize, usize, usize)> },
    /// Every shard answered alike; the first one's answer is the answer.
    First,
    /// Records went to their shards; `slots` says, per record, which shard
    /// answered it (in order) or holds the answer given without a shard.
    Scatter { slots: Vec<Result<usize, Vec<u8>>>, targets: Vec<usize>, size: usize },
    /// Every shard answered; customer balances come from their shard,
    /// system accounts sum their parts.
    Balances(Vec<BalanceKey>),
    /// Every shard gave its STR rows for the month; the report is made here.
    Str(StrRequest, u64),
    /// Every shard gave its part of an STR page (the request with the time
    /// the report is as of); the page is made here.
    StrPage(StrPageRequest),
}

/// Where the records of requests go, for a switch of `shards` shards.
#[derive(Debug)]
pub struct Router {
    shards: usize,
    claims: Claims,
    /// The id the next FX quote gets (every shard holds every quote under
    /// the same id: QUOTE_AT).
    next_quote: u64,
    /// The number the next request spanning shards gets.
    next_request: u64,
    /// Rounds not yet complete: their parts not all answered (durable), or
    /// their rest not yet routed and complete.
    incomplete: std::collections::BTreeMap<u64, Open>,
}

/// What a round still waits for.
#[derive(Clone, Copy, Debug)]
struct Open {
    /// Parts not yet answered.
    parts: usize,
    /// Whether it has a rest whose continuation is not complete yet.
    rest: bool,
    /// The round it continues, whose rest it is.
    continues: Option<u64>,
}

/// How one record is placed.
enum Place {
    /// To this shard.
    To(usize),
    /// Its id or quote is held undecided elsewhere by another request.
    Contended,
    /// Its id was claimed on another shard by an earlier record of this
    /// request: route it after that one is answered.
    After,
}

impl Router {
    /// A router for `shards` shards whose next quote id is `next_quote`.
    #[must_use]
    pub fn new(shards: usize, next_quote: u64) -> Self {
        assert!(shards >= 1, "a switch has a shard");
        Self {
            shards,
            claims: Claims::default(),
            next_quote: next_quote.max(1),
            next_request: 1,
            incomplete: std::collections::BTreeMap::new(),
        }
    }

    /// Sizes the id claims for `ids` transfer and loan ids up front, as
    /// the shards size their stores: growing a table of millions of
    /// claims rehashes all of them under the router's lock (about a
    /// second at 8M), a stall for every request spanning shards. Only the
    /// table's control bytes are touched until claims fill it.
    pub fn reserve(&mut self, ids: usize) {
        self.claims.ids.reserve(ids.saturating_sub(self.claims.ids.len()));
    }

    /// Makes sure new quotes get ids above `next_quote - 1` (a shard's
    /// next id after recovery).
    pub fn note_quote_id(&mut self, next_quote: u64) {
        self.next_quote = self.next_quote.max(next_quote);
    }

    /// The number of shards.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Rebuilds the claims from what shard `shard` stores after recovery:
    /// its transfer and loan ids, its repayment ids. Call once per shard.
    pub fn restore_stored(
        &mut self,
        shard: usize,
        ids: impl IntoIterator<Item = u128>,
        repayments: impl IntoIterator<Item = u128>,
    ) {
        let owner = shard as u16;
        for id in ids {
            let claim = self.claims.ids.entry(id).or_insert(Claim { owner, pending: 0, stored: true });
            assert_eq!(claim.owner, owner, "id {id} is stored on two shards");
        }
        for id in repayments {
            let claim = self.claims.repayments.entry(id).or_insert(Claim { owner, pending: 0, stored: true });
            assert_eq!(claim.owner, owner, "repayment {id} is stored on two shards");
        }
    }

    /// Rebuilds the quote claims from the quotes each shard still holds
    /// (`live[s]`, any order): every shard is given every quote, so one
    /// held by some shards but not all was spent (or is expiring); it is
    /// claimed as spent by the first shard without it, and never spent
    /// again.
    pub fn restore_quotes(&mut self, live: &[Vec<u64>]) {
        assert_eq!(live.len(), self.shards, "one list per shard");
        let mut held: IdMap<u64, Vec<bool>> = IdMap::default();
        for (s, ids) in live.iter().enumerate() {
            for &id in ids {
                held.entry(id).or_insert_with(|| vec![false; self.shards])[s] = true;
                self.next_quote = self.next_quote.max(id + 1);
            }
        }
        for (id, on) in held {
            if let Some(owner) = on.iter().position(|&h| !h) {
                self.claims.quotes.insert(u128::from(id), Claim { owner: owner as u16, pending: 0, stored: true });
            }
        }
    }

    /// Makes requests spanning shards numbered after `applied`, the
    /// highest any shard applied (after recovery and [`reconcile`]
    /// (crate::engine::multi::reconcile), all of them are complete).
    pub fn restore_requests(&mut self, applied: u64) {
        self.next_request = self.next_request.max(applied + 1);
    }

    /// Rounds found with a rest nobody began (`multi::continuations`) are
    /// open until their continuation is complete, as they were before the
    /// restart: the complete mark stays below them, so no shard drops a
    /// rest still to be routed.
    pub fn restore_rests(&mut self, rounds: impl IntoIterator<Item = u64>) {
        for seq in rounds {
            self.incomplete.insert(seq, Open { parts: 0, rest: true, continues: None });
        }
    }

    /// Every request spanning shards up to this number is durable on every
    /// shard it names.
    #[must_use]
    pub fn complete(&self) -> u64 {
        self.incomplete.keys().next().map_or(self.next_request - 1, |first| first - 1)
    }

    /// Claims what a part applied without being routed (a round rolled
    /// forward at restart) stored, from its answer: the claims were
    /// rebuilt before it was applied.
    pub fn adopt(&mut self, shard: usize, kind: u16, body: &[u8], answer: &[u8]) {
        let (kind, body) = crate::shard::submission(kind, body);
        let keys: Vec<Vec<(Space, u128)>> = match kind {
            kind::SUBMIT_TRANSFERS => records::decode_all::<Transfer>(body)
                .map(|t| {
                    let mut keys = vec![(Space::Id, t.transfer_id)];
                    if t.fx_quote_id != 0 {
                        keys.push((Space::Quote, u128::from(t.fx_quote_id)));
                    }
                    keys
                })
                .collect(),
            kind::DISBURSE_LOANS => {
                records::decode_all::<Disburse>(body).map(|d| vec![(Space::Id, d.loan_id)]).collect()
            }
            kind::REPAY_LOANS => {
                records::decode_all::<Repay>(body).map(|r| vec![(Space::Repayment, r.repayment_id)]).collect()
            }
            _ => return,
        };
        for (i, keys) in keys.into_iter().enumerate() {
            let record = &answer[i * TransferResult::SIZE..(i + 1) * TransferResult::SIZE];
            for (space, key) in keys {
                if key != 0 && stores(space, record) {
                    let claim = self.claims.space(space).entry(key).or_insert(Claim {
                        owner: shard as u16,
                        pending: 0,
                        stored: true,
                    });
                    claim.stored = true;
                }
            }
        }
    }

    /// Records the answers of a part: the ids its shard stored stay
    /// claimed, the others are free again.
    pub fn settle(&mut self, settled: Settled) {
        for (space, key, stored) in settled.outcomes {
            self.claims.settle(space, key, stored);
        }
        if let Some(seq) = settled.request {
            self.part_done(seq);
        }
    }

    fn part_done(&mut self, seq: u64) {
        let open = self.incomplete.get_mut(&seq).expect("an incomplete round");
        assert!(open.parts > 0, "round {seq} answered once per part");
        open.parts -= 1;
        self.finish(seq);
    }

    /// Drops a round that waits for nothing more; the round it continues
    /// then no longer waits for its rest.
    fn finish(&mut self, seq: u64) {
        let open = self.incomplete[&seq];
        if open.parts == 0 && !open.rest {
            self.incomplete.remove(&seq);
            if let Some(parent) = open.continues {
                self.incomplete.get_mut(&parent).expect("a continued round is open").rest = false;
                self.finish(parent);
            }
        }
    }

    /// Gives back the claims of parts that were never sent (the queues
    /// were full).
    pub fn undo(&mut self, parts: Vec<Part>) {
        for part in parts {
            for t in part.claimed.takes {
                self.claims.settle(t.space, t.key, false);
            }
            if let Some(seq) = part.claimed.request {
                // Never sent: nothing of the round is anywhere; its parent
                // still waits for its rest to be routed.
                if let Some(open) = self.incomplete.get_mut(&seq) {
                    open.parts -= 1;
                    if open.parts == 0 {
                        self.incomplete.remove(&seq);
                    }
                }
            }
        }
    }

    /// Where the records of a request go (see [`Router::route_parts`]),
    /// `continues` naming the round whose rest `body` is. A logged request
    /// that goes to several shards (or is split in rounds) is numbered,
    /// and each shard gets its part as a MULTI record with the others'
    /// parts and the rest (`engine::multi`), so it is applied entirely or
    /// not at all.
    ///
    /// A SCOPED request (a channel's, with its account scope) is routed as
    /// the request it carries, and each of its parts, and its rest, goes
    /// SCOPED the same way, so every shard (and a shard given its part
    /// from another's copy after a restart) checks the scope itself.
    pub fn route(
        &mut self,
        kind: u16,
        body: &[u8],
        now_ms: u64,
        quote_ttl_ms: u64,
        continues: Option<u64>,
    ) -> Result<Routed, EngineError> {
        let (caller, kind, body) = match kind {
            kind::SCOPED => {
                let channels = |k: u16| internal::is_scoped_kind(k) && kinds::from_channel(k).is_some();
                let (caller, inner, request) = internal::decode_scoped(body)
                    .filter(|&(_, inner, _)| channels(inner))
                    .ok_or(EngineError::BadLength { kind, len: body.len() })?;
                (Some(caller), inner, request)
            }
            _ => (None, kind, body),
        };
        let mut routed = self.route_parts(kind, body, now_ms, quote_ttl_ms)?;
        if let (Some(caller), Routed::Plan { parts, rest, .. }) = (caller, &mut routed) {
            // Every part that names accounts, the lookups the router adds
            // too (a repayment's loan shown beside its ID_CONFLICT), so
            // nothing out of scope is shown through them.
            for part in parts.iter_mut().filter(|p| internal::is_scoped_kind(p.kind)) {
                part.body = internal::encode_scoped(&caller, part.kind, &part.body);
                part.kind = kind::SCOPED;
            }
            if let Some(rest) = rest {
                rest.body = internal::encode_scoped(&caller, kind, &rest.body);
            }
        }
        Ok(match routed {
            Routed::Plan { parts, merge, rest, .. }
                if !body.is_empty()
                    && (parts.iter().filter(|p| logged(p)).count() > 1 || rest.is_some() || continues.is_some()) =>
            {
                let rest_bytes = rest.as_ref().map_or(&[][..], |r| r.body.as_slice());
                let (parts, seq) = self.span(parts, rest_bytes, continues);
                Routed::Plan { parts, merge, rest, round: Some(seq) }
            }
            other => other,
        })
    }

    /// Numbers a round and wraps each logged part in a MULTI record that
    /// carries the other logged parts and the request's rest (a lookup
    /// that rides along stays as it is).
    fn span(&mut self, parts: Vec<Part>, rest: &[u8], continues: Option<u64>) -> (Vec<Part>, u64) {
        let complete = self.complete();
        let seq = self.next_request;
        self.next_request += 1;
        // A round continued after a restart is not open here: recovery
        // waits for its continuation before the switch takes traffic.
        let parent = continues.filter(|p| self.incomplete.contains_key(p));
        let open =
            Open { parts: parts.iter().filter(|p| logged(p)).count(), rest: !rest.is_empty(), continues: parent };
        self.incomplete.insert(seq, open);
        let header = crate::engine::multi::Header { seq, complete, continues: continues.unwrap_or(0) };
        let bodies: Vec<(usize, u16, &[u8])> = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| logged(p))
            .map(|(i, p)| (i, p.shard as u16, p.body.as_slice()))
            .collect();
        let mut wrapped: Vec<Option<Vec<u8>>> = vec![None; parts.len()];
        for &(i, _, mine) in &bodies {
            let others: Vec<(u16, &[u8])> =
                bodies.iter().filter(|&&(j, _, _)| j != i).map(|&(_, s, b)| (s, b)).collect();
            let mut body = Vec::new();
            let kind = parts[i].kind;
            crate::engine::multi::encode(header, kind, mine, kind, &others, rest, &mut body);
            wrapped[i] = Some(body);
        }
        let parts = parts
            .into_iter()
            .zip(wrapped)
            .map(|(part, body)| match body {
                Some(body) => Part {
                    shard: part.shard,
                    kind: kind::MULTI,
                    body,
                    claimed: Claimed { takes: part.claimed.takes, request: Some(seq) },
                },
                None => part,
            })
            .collect();
        (parts, seq)
    }

    /// Where the records of a request go, part by part. `now_ms` and
    /// `quote_ttl_ms` give new quotes their expiry. Internal kinds are
    /// refused (they are the shards' own records).
    fn route_parts(&mut self, kind: u16, body: &[u8], now_ms: u64, quote_ttl_ms: u64) -> Result<Routed, EngineError> {
        if kinds::from_channel(kind).is_none() {
            return Err(EngineError::UnknownKind(kind));
        }
        let n = self.shards;
        if kind == kind::EXPORT_STR {
            // Shards hand over their rows; the report is made by whoever
            // waits for the answer, off the shard threads.
            if body.len() != StrRequest::SIZE {
                return Err(EngineError::BadLength { kind, len: body.len() });
            }
            let merge = Merge::Str(StrRequest::decode(body), now_ms);
            return Ok(self.broadcast(kind::STR_ROWS, body, merge));
        }
        if kind == kind::EXPORT_STR_PAGE {
            if body.len() != StrPageRequest::SIZE {
                return Err(EngineError::BadLength { kind, len: body.len() });
            }
            // Every shard reads as of the same time, the first page's.
            let request = crate::engine::str_page_as_of(&StrPageRequest::decode(body), now_ms);
            return Ok(self.broadcast(kind::STR_PAGE, &records::encode_all(&[request]), Merge::StrPage(request)));
        }
        if n == 1 {
            let part = Part { shard: 0, kind, body: body.to_vec(), claimed: Claimed::default() };
            return Ok(Routed::Plan { parts: vec![part], merge: Merge::Single, rest: None, round: None });
        }
        match kind {
            kind::CREATE_ACCOUNTS => {
                self.scatter::<Account>(kind, body, None, |_, a, _, _| Place::To(shard_of(a.account_id, n)))
            }
            // A line and its loans live on their account's shard.
            kind::SET_CREDIT_LINES => {
                self.scatter::<CreditLine>(kind, body, None, |_, c, _, _| Place::To(shard_of(c.account_id, n)))
            }
            kind::DISBURSE_LOANS => self.scatter::<Disburse>(kind, body, None, |claims, d, round, takes| {
                claim(claims, round, takes, Space::Id, d.loan_id, shard_of(d.account_id, n))
            }),
            // The debit shard decides; a credit on another shard goes over
            // the link between them (`engine::links`).
            kind::SUBMIT_TRANSFERS => {
                self.scatter::<Transfer>(kind, body, Some(transfer_keys), |claims, t, round, takes| {
                    place_transfer(claims, round, takes, t, n)
                })
            }
            kind::REPAY_LOANS => {
                let routed = self.scatter::<Repay>(kind, body, None, |claims, r, round, takes| {
                    let loan = id_holder(claims, r.loan_id, n);
                    claim(claims, round, takes, Space::Repayment, r.repayment_id, loan)
                })?;
                Ok(self.show_loans(body, routed))
            }
            // Every shard holds every quote under one id the switch gives,
            // so a transfer on any shard may use it.
            kind::FX_QUOTE => {
                if !body.len().is_multiple_of(records::QuoteRequest::SIZE) {
                    return Err(EngineError::BadLength { kind, len: body.len() });
                }
                let expires_at_ms = now_ms.saturating_add(quote_ttl_ms);
                let mut at = Vec::with_capacity(body.len() / records::QuoteRequest::SIZE * QuoteAt::SIZE);
                for q in body.chunks_exact(records::QuoteRequest::SIZE) {
                    let request = records::QuoteRequest::decode(q);
                    QuoteAt { quote_id: self.next_quote, expires_at_ms, request }.push(&mut at);
                    self.next_quote += 1;
                }
                Ok(self.broadcast(kind::QUOTE_AT, &at, Merge::First))
            }
            kind::SET_FX_RATES | kind::SET_TIME => Ok(self.broadcast(kind, body, Merge::First)),
            kind::LOOKUP_BALANCES => {
                if !body.len().is_multiple_of(BalanceKey::SIZE) {
                    return Err(EngineError::BadLength { kind, len: body.len() });
                }
                let keys = body.chunks_exact(BalanceKey::SIZE).map(BalanceKey::decode).collect();
                Ok(self.broadcast(kind, body, Merge::Balances(keys)))
            }
            // Requests keyed by an id go to the shard that holds it.
            kind::CONFIRM_STEP_UP | kind::RESOLVE_REVIEW => {
                self.scatter::<StepUp>(kind, body, None, |claims, s, _, _| {
                    Place::To(id_holder(claims, s.transfer_id, n))
                })
            }
            kind::FINALIZE_PENDING => self.scatter::<Finalize>(kind, body, None, |claims, f, _, _| {
                Place::To(id_holder(claims, f.transfer_id, n))
            }),
            kind::CANCEL_TRANSFERS | kind::LOOKUP_TRANSFERS | kind::LOOKUP_LOANS => {
                self.scatter::<Id>(kind, body, None, |claims, i, _, _| Place::To(id_holder(claims, i.id, n)))
            }
            other => Err(EngineError::UnknownKind(other)),
        }
    }

    /// A repayment whose id another shard holds goes there (ID_CONFLICT),
    /// but its answer shows its loan (contract §4), which may live on
    /// another shard: that shard is asked for the loan too, and the merge
    /// shows it.
    fn show_loans(&self, body: &[u8], routed: Routed) -> Routed {
        let Routed::Plan { mut parts, merge: Merge::Scatter { slots, targets, size }, rest, round } = routed else {
            return routed;
        };
        let mut asks: Vec<Vec<u8>> = vec![Vec::new(); self.shards];
        let mut shown = Vec::new();
        for (i, (slot, r)) in slots.iter().zip(body.chunks_exact(Repay::SIZE).map(Repay::decode)).enumerate() {
            let Some(loan) = holder(&self.claims, Space::Id, r.loan_id) else { continue };
            if *slot != Ok(loan) {
                shown.push((i, loan, asks[loan].len() / Id::SIZE));
                records::push(&mut asks[loan], &Id { id: r.loan_id });
            }
        }
        let merge = Merge::Scatter { slots, targets, size };
        if shown.is_empty() {
            return Routed::Plan { parts, merge, rest, round };
        }
        let mut lookups = Vec::new();
        for (shard, ids) in asks.into_iter().enumerate() {
            if !ids.is_empty() {
                lookups.push(shard);
                parts.push(Part { shard, kind: kind::LOOKUP_LOANS, body: ids, claimed: Claimed::default() });
            }
        }
        let shown = shown
            .into_iter()
            .map(|(i, shard, at)| (i, lookups.iter().position(|&s| s == shard).expect("asked"), at))
            .collect();
        let merge = Merge::ShowLoans { inner: Box::new(merge), lookups: lookups.len(), shown };
        Routed::Plan { parts, merge, rest, round }
    }

    fn broadcast(&self, kind: u16, body: &[u8], merge: Merge) -> Routed {
        let parts = (0..self.shards)
            .map(|shard| Part { shard, kind, body: body.to_vec(), claimed: Claimed::default() })
            .collect();
        Routed::Plan { parts, merge, rest: None, round: None }
    }

    /// Places each record, taking its claims; if one is contended, gives
    /// back every claim this request took and sends nothing. A record
    /// placed `After` is left for the next round, and so are the later
    /// ones that share a key with a record left (`keys`; a kind without
    /// keys leaves every later record).
    fn scatter<R: Record>(
        &mut self,
        kind: u16,
        body: &[u8],
        keys: Option<fn(&R, &mut Vec<Key>)>,
        mut place: impl FnMut(&mut Claims, &mut R, &mut Round, &mut Vec<(Space, u128)>) -> Place,
    ) -> Result<Routed, EngineError> {
        if !body.len().is_multiple_of(R::SIZE) {
            return Err(EngineError::BadLength { kind, len: body.len() });
        }
        let n = self.shards;
        let size = crate::protocol::kinds::result_code_layout(kind).expect("a routed kind has answers").0;
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut claimed: Vec<Claimed> = (0..n).map(|_| Claimed::default()).collect();
        let mut counts = vec![0u32; n];
        let mut slots: Vec<Result<usize, Vec<u8>>> = Vec::with_capacity(body.len() / R::SIZE);
        let mut rest: Option<Rest> = None;
        // What this round's records did so far, and the record's own claims.
        let mut round = Round::default();
        let mut takes: Vec<(Space, u128)> = Vec::with_capacity(2);
        let mut mine: Vec<Key> = Vec::with_capacity(4);
        for (i, chunk) in body.chunks_exact(R::SIZE).enumerate() {
            let mut record = R::decode(chunk);
            mine.clear();
            if let Some(keys) = keys {
                keys(&record, &mut mine);
            }
            let left = rest.is_some() && (keys.is_none() || mine.iter().any(|k| round.left.contains(k)));
            if !left {
                takes.clear();
                match place(&mut self.claims, &mut record, &mut round, &mut takes) {
                    Place::To(s) => {
                        let at = bodies[s].len();
                        bodies[s].resize(at + R::SIZE, 0);
                        record.encode(&mut bodies[s][at..]);
                        for &(space, key) in &takes {
                            claimed[s].takes.push(Take { record: counts[s], space, key });
                        }
                        round.taken.extend_from_slice(&takes);
                        counts[s] += 1;
                        slots.push(Ok(s));
                        continue;
                    }
                    Place::After => {
                        for &(space, key) in &takes {
                            self.claims.settle(space, key, false);
                        }
                    }
                    Place::Contended => {
                        for &(space, key) in round.taken.iter().chain(&takes) {
                            self.claims.settle(space, key, false);
                        }
                        return Ok(Routed::Contended);
                    }
                }
            }
            // Left for the next round: its slot is filled from that
            // round's answer (`Gather`).
            round.left.extend(mine.iter().copied());
            let rest = rest.get_or_insert_with(|| Rest { records: Vec::new(), body: Vec::new() });
            rest.records.push(i);
            rest.body.extend_from_slice(chunk);
            slots.push(Err(vec![0; size]));
        }
        let mut parts = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        for (s, (b, c)) in bodies.into_iter().zip(claimed).enumerate() {
            if !b.is_empty() {
                parts.push(Part { shard: s, kind, body: b, claimed: c });
                targets.push(s);
            }
        }
        Ok(Routed::Plan { parts, merge: Merge::Scatter { slots, targets, size }, rest, round: None })
    }
}

/// What a record's outcome depends on, for records that may go ahead of
/// an earlier one left for a later round: a customer account, an id, a
/// quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(u64),
    Id(u128),
    Quote(u64),
}

/// A transfer's keys: its customer accounts (balances, day totals,
/// profiles, credit lines: all the state a transfer reads or changes
/// lives on its accounts; system accounts never refuse), its id and its
/// quote. Records sharing none of them have the same outcome in either
/// order.
fn transfer_keys(t: &Transfer, keys: &mut Vec<Key>) {
    for account in [t.debit_account, t.credit_account] {
        if account >= CUSTOMER_ID_MIN {
            keys.push(Key::Account(account));
        }
    }
    if t.transfer_id != 0 {
        keys.push(Key::Id(t.transfer_id));
    }
    if t.fx_quote_id != 0 {
        keys.push(Key::Quote(t.fx_quote_id));
    }
}

/// What the records placed so far in a round did, for the ones after them.
#[derive(Default)]
struct Round {
    /// Every claim taken.
    taken: Vec<(Space, u128)>,
    /// Customer accounts credited by a record decided on another shard
    /// than theirs: the credit lands after the decision, over a link.
    credited: std::collections::HashSet<u64, crate::hash::IdBuildHasher>,
    /// Customer accounts debited (their balance read) by a record.
    debited: std::collections::HashSet<u64, crate::hash::IdBuildHasher>,
    /// The keys of the records left for the next round.
    left: std::collections::HashSet<Key>,
}

/// The shard holding `key`, if any shard does or will (a claim pending).
fn holder(claims: &Claims, space: Space, key: u128) -> Option<usize> {
    claims.get(space, key).map(|c| usize::from(c.owner))
}

/// Where a request about transfer or loan `id` goes: its holder, or, for
/// an id nobody holds, a fixed shard that answers "not found".
fn id_holder(claims: &Claims, id: u128, n: usize) -> usize {
    holder(claims, Space::Id, id).unwrap_or_else(|| shard_of_id(id, n))
}

/// A key held undecided on another shard: by an earlier record of this
/// request (route this one after it is answered), or by another request
/// (wait).
fn held_elsewhere(round: &Round, space: Space, key: u128) -> Place {
    if round.taken.contains(&(space, key)) { Place::After } else { Place::Contended }
}

/// Places a record that would store `key` on `natural`: there if the key
/// is free or held there; to its holder if another shard stores it (which
/// answers ALREADY_EXISTS or ID_CONFLICT from what it stores); it waits if
/// another shard holds it undecided.
fn claim(
    claims: &mut Claims,
    round: &Round,
    takes: &mut Vec<(Space, u128)>,
    space: Space,
    key: u128,
    natural: usize,
) -> Place {
    if key == 0 {
        // INVALID_ID wherever it goes; nothing to claim.
        return Place::To(natural);
    }
    let to = match claims.get(space, key) {
        None => natural,
        Some(c) if usize::from(c.owner) == natural || c.stored => usize::from(c.owner),
        Some(_) => return held_elsewhere(round, space, key),
    };
    claims.take(space, key, to);
    takes.push((space, key));
    Place::To(to)
}

/// Places a transfer: after the records before it if it debits an account
/// one of them credits across shards; then by its id's claim, then its
/// quote's.
fn place_transfer(
    claims: &mut Claims,
    round: &mut Round,
    takes: &mut Vec<(Space, u128)>,
    t: &mut Transfer,
    n: usize,
) -> Place {
    let natural = route_transfer(t, n);
    let customer = |account: u64| account >= CUSTOMER_ID_MIN;
    let remote_credit = customer(t.credit_account) && shard_of(t.credit_account, n) != natural;
    if (customer(t.debit_account) && round.credited.contains(&t.debit_account))
        || (remote_credit && round.debited.contains(&t.credit_account))
    {
        // Records apply in order (contract §3): this one must see a credit
        // an earlier one sends across shards, or its own credit, sent
        // across shards, must land after an earlier record read that
        // balance. Both are decided, and sent, before it goes.
        return Place::After;
    }
    let held = (t.transfer_id != 0).then(|| claims.get(Space::Id, t.transfer_id)).flatten();
    let placed = match held {
        // Stored elsewhere: that shard answers ID_CONFLICT (an exact
        // resend routes alike); it will not spend the quote, so none is
        // claimed, nor will it move money.
        Some(c) if usize::from(c.owner) != natural && c.stored => {
            return claim(claims, round, takes, Space::Id, t.transfer_id, usize::from(c.owner));
        }
        Some(c) if usize::from(c.owner) != natural => return held_elsewhere(round, Space::Id, t.transfer_id),
        _ => {
            if t.fx_quote_id != 0 && t.fx_quote_id != QUOTE_SPENT_ELSEWHERE {
                let key = u128::from(t.fx_quote_id);
                match claims.get(Space::Quote, key) {
                    Some(q) if usize::from(q.owner) != natural && q.stored => t.fx_quote_id = QUOTE_SPENT_ELSEWHERE,
                    Some(q) if usize::from(q.owner) != natural => return held_elsewhere(round, Space::Quote, key),
                    _ => {
                        claims.take(Space::Quote, key, natural);
                        takes.push((Space::Quote, key));
                    }
                }
            }
            claim(claims, round, takes, Space::Id, t.transfer_id, natural)
        }
    };
    if let Place::To(shard) = placed {
        if customer(t.credit_account) && shard_of(t.credit_account, n) != shard {
            round.credited.insert(t.credit_account);
        }
        if customer(t.debit_account) {
            round.debited.insert(t.debit_account);
        }
    }
    placed
}

/// Merges the answers of a request's parts (in the order of the plan's
/// parts) into one answer.
#[must_use]
pub fn merge(how: Merge, mut answers: Vec<Vec<u8>>) -> Vec<u8> {
    match how {
        Merge::Single | Merge::First => answers.swap_remove(0),
        Merge::ShowLoans { inner, lookups, shown } => {
            let looked = answers.split_off(answers.len() - lookups);
            let mut out = merge(*inner, answers);
            for (i, part, at) in shown {
                let record = &mut out[i * LoanResult::SIZE..(i + 1) * LoanResult::SIZE];
                let mine = LoanResult::decode(record);
                if mine.code == ResultCode::IdConflict.as_u16() && mine.state == 0 {
                    let loan = LoanResult::decode(&looked[part][at * LoanResult::SIZE..(at + 1) * LoanResult::SIZE]);
                    if loan.code == ResultCode::Ok.as_u16() {
                        LoanResult { code: mine.code, ..loan }.encode(record);
                    }
                }
            }
            out
        }
        Merge::Scatter { slots, targets, size } => {
            let mut cursor = vec![0usize; targets.len()];
            let mut out = Vec::with_capacity(slots.len() * size);
            for slot in slots {
                match slot {
                    Ok(shard) => {
                        let part = targets.iter().position(|&t| t == shard).expect("shard was sent a part");
                        let at = cursor[part];
                        out.extend_from_slice(&answers[part][at..at + size]);
                        cursor[part] += size;
                    }
                    Err(bytes) => out.extend_from_slice(&bytes),
                }
            }
            out
        }
        Merge::Balances(keys) => {
            let n = answers.len();
            let mut out = Vec::with_capacity(keys.len() * Balance::SIZE);
            for (i, key) in keys.iter().enumerate() {
                let at = i * Balance::SIZE;
                let part = |s: usize| Balance::decode(&answers[s][at..at + Balance::SIZE]);
                let answer = if key.account_id < CUSTOMER_ID_MIN {
                    // The parts each fit; their sum may not.
                    let mut sum = part(0);
                    let mut balance = i128::from(sum.balance);
                    let mut held = u128::from(sum.held);
                    for s in 1..n {
                        let b = part(s);
                        balance += i128::from(b.balance);
                        held += u128::from(b.held);
                    }
                    match (i64::try_from(balance), u64::try_from(held)) {
                        (Ok(b), Ok(h)) if sum.code == 0 => {
                            sum.balance = b;
                            sum.held = h;
                        }
                        _ if sum.code == 0 => {
                            sum = Balance { code: ResultCode::Overflow.as_u16(), ..Balance::decode(&[0; 48]) };
                            sum.account_id = key.account_id;
                            sum.currency = key.currency;
                        }
                        _ => {}
                    }
                    sum
                } else {
                    part(shard_of(key.account_id, n))
                };
                records::push(&mut out, &answer);
            }
            out
        }
        Merge::Str(request, now_ms) => {
            let mut rows: Vec<_> =
                answers.iter().flat_map(|a| a.chunks_exact(ROW_SIZE)).filter_map(CaseRow::decode).collect();
            crate::engine::sort_rows(&mut rows);
            let mut out = Vec::new();
            crate::engine::str_answer(&rows, &request, now_ms, &mut out);
            out
        }
        Merge::StrPage(request) => {
            let parts = answers.iter().map(|a| PagePart::decode(a).expect("a shard's page part")).collect();
            let mut out = Vec::new();
            crate::engine::str_page_answer(parts, &request, &mut out);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Customer accounts on shard 0 and 1 of 2.
    fn accounts() -> (Vec<u64>, Vec<u64>) {
        let on = |s| (CUSTOMER_ID_MIN..).filter(move |&a| shard_of(a, 2) == s).take(3).collect();
        (on(0), on(1))
    }

    fn transfers(list: &[(u128, u64, u64)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(transfer_id, debit_account, credit_account) in list {
            let t = Transfer {
                transfer_id,
                debit_account,
                credit_account,
                amount: 100,
                debit_currency: 344,
                credit_currency: 344,
                destination_country: 0,
                flags: 0,
                fx_quote_id: 0,
                user_data: 0,
            };
            records::push(&mut body, &t);
        }
        body
    }

    fn plan(router: &mut Router, kind: u16, body: &[u8]) -> (Vec<Part>, Merge, Option<Rest>) {
        match router.route(kind, body, 0, 30_000, None).expect("routable") {
            Routed::Plan { parts, merge, rest, .. } => (parts, merge, rest),
            Routed::Contended => panic!("nothing is contended here"),
        }
    }

    /// The router goes by the table of kinds: every kind a channel sends
    /// is routed as its row says, and no other kind is routed.
    #[test]
    fn every_kind_routes_as_the_table_says() {
        use crate::protocol::kinds::{KINDS, Origin, Route};
        for spec in &KINDS {
            let mut router = Router::new(2, 1);
            let body = vec![0u8; spec.request_size.max(1) * usize::from(spec.request_size > 0)];
            let routed = router.route(spec.kind, &body, 0, 30_000, None);
            if spec.kind == kind::SCOPED {
                // Routed as the request it carries (a shape of its own).
                assert_eq!(routed.err(), Some(EngineError::BadLength { kind: spec.kind, len: 1 }));
                continue;
            }
            if spec.origin != Origin::Channel || spec.route == Route::Session {
                assert_eq!(routed.err(), Some(EngineError::UnknownKind(spec.kind)), "{}", spec.name);
                continue;
            }
            let Ok(Routed::Plan { parts, .. }) = routed else { panic!("{} is planned", spec.name) };
            let shards: Vec<usize> = parts.iter().map(|p| p.shard).collect();
            match spec.route {
                Route::Broadcast => assert_eq!(shards, [0, 1], "{} goes to every shard", spec.name),
                _ => assert_eq!(shards.len(), 1, "{}: one record goes to one shard", spec.name),
            }
        }
    }

    /// A scoped channel's request goes SCOPED to every shard, its rest
    /// too, inside the MULTI records a logged one spans shards with; a
    /// lookup's parts go SCOPED and unlogged.
    #[test]
    fn a_scoped_request_is_scoped_in_every_part_and_round() {
        use crate::protocol::internal::{Caller, Scope, decode_scoped, encode_scoped};
        let (a, b) = accounts();
        let caller = Caller { channel: 4, scope: Scope { own: true, range: None } };
        let mut router = Router::new(2, 1);
        // 2 waits for 1's credit: a rest; 3 goes to the other shard.
        let body = transfers(&[(1, a[0], b[0]), (2, b[0], a[1]), (3, b[1], a[2])]);
        let scoped = encode_scoped(&caller, kind::SUBMIT_TRANSFERS, &body);
        let (parts, _, rest) = plan(&mut router, kind::SCOPED, &scoped);
        assert_eq!(parts.len(), 2);
        let rest = rest.expect("2 waits");
        assert_eq!(decode_scoped(&rest.body), Some((caller, kind::SUBMIT_TRANSFERS, &body[64..128])));
        for part in &parts {
            assert_eq!(part.kind, kind::MULTI);
            let m = crate::engine::multi::decode(&part.body).expect("a MULTI record");
            assert_eq!((m.mine_kind, m.parts_kind), (kind::SCOPED, kind::SCOPED));
            let (c, inner, _) = decode_scoped(m.mine).expect("its own part is SCOPED");
            assert_eq!((c, inner), (caller, kind::SUBMIT_TRANSFERS));
            assert_eq!(m.rest, rest.body.as_slice(), "the rest is kept SCOPED");
            assert!(crate::engine::Engine::check_length(kind::MULTI, &part.body).is_ok());
        }
        // The rest, routed as the next round, is SCOPED again.
        let Ok(Routed::Plan { parts: next, .. }) = router.route(kind::SCOPED, &rest.body, 0, 30_000, Some(1)) else {
            panic!("the rest is routed")
        };
        let m = crate::engine::multi::decode(&next[0].body).expect("a continuation is a MULTI record");
        assert_eq!(decode_scoped(m.mine).map(|(c, k, _)| (c, k)), Some((caller, kind::SUBMIT_TRANSFERS)));

        let key = BalanceKey { account_id: a[0], currency: 344 };
        let mut keys = Vec::new();
        records::push(&mut keys, &key);
        let (parts, _, _) = plan(&mut router, kind::SCOPED, &encode_scoped(&caller, kind::LOOKUP_BALANCES, &keys));
        assert!(parts.iter().all(|p| p.kind == kind::SCOPED && !logged(p)), "lookups are not logged");
        assert_eq!(answer_kind(kind::SCOPED, &parts[0].body), kind::LOOKUP_BALANCES);
        let internal_inside = encode_scoped(&caller, kind::MULTI, &[]);
        assert!(router.route(kind::SCOPED, &internal_inside, 0, 0, None).is_err(), "only a channel's kinds");
    }

    #[test]
    fn a_transfer_that_must_see_a_cross_shard_credit_waits_and_independent_ones_go_ahead() {
        let (a, b) = accounts();
        let mut router = Router::new(2, 1);
        let body = transfers(&[
            (1, a[0], b[0]), // credits b0 across shards
            (2, b[0], a[1]), // debits b0: must see that credit
            (3, a[2], b[1]), // shares nothing with 2: goes ahead
            (4, b[2], a[1]), // shares a1 with 2: after it
            (5, b[1], a[0]), // debits b1, credited across shards by 3
        ]);
        let (parts, how, rest) = plan(&mut router, kind::SUBMIT_TRANSFERS, &body);
        let rest = rest.expect("some records wait");
        assert_eq!(rest.records, vec![1, 3, 4]);
        assert_eq!(rest.body, [&body[64..128], &body[192..320]].concat());
        assert_eq!(parts.len(), 1, "1 and 3 both go to shard 0");
        // The shard's answer for 1 and 3, then the next round's for 2, 4, 5.
        let answer =
            |ids: &[u128]| ids.iter().map(|&id| [&id.to_le_bytes()[..], &[7; 48]].concat()).collect::<Vec<_>>();
        let mut gather = Gather::default();
        gather.add(kind::SUBMIT_TRANSFERS, merge(how, vec![answer(&[1, 3]).concat()]), Some(&rest));
        gather.add(kind::SUBMIT_TRANSFERS, answer(&[2, 4, 5]).concat(), None);
        let out = gather.finish();
        let ids: Vec<u128> = out.chunks(64).map(|r| TransferResult::decode(r).transfer_id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_later_round_that_leaves_records_again_fills_the_right_slots() {
        let (a, b) = accounts();
        let mut router = Router::new(2, 1);
        // 2 waits for 1's credit, 3 for 2's: three rounds.
        let body = transfers(&[(1, a[0], b[0]), (2, b[0], a[1]), (3, a[1], b[1]), (4, a[2], b[2])]);
        let (_, _, rest) = plan(&mut router, kind::SUBMIT_TRANSFERS, &body);
        let first = rest.expect("2 and 3 wait");
        assert_eq!(first.records, vec![1, 2]);
        let (_, _, rest) = plan(&mut router, kind::SUBMIT_TRANSFERS, &first.body);
        let second = rest.expect("3 waits for 2");
        assert_eq!(second.records, vec![1]);
        let answer = |ids: &[u128]| -> Vec<u8> {
            ids.iter().flat_map(|&id| [&id.to_le_bytes()[..], &[7; 48]].concat()).collect()
        };
        let mut gather = Gather::default();
        let mut one = answer(&[1, 0, 0, 4]);
        one[64..192].fill(0);
        gather.add(kind::SUBMIT_TRANSFERS, one, Some(&first));
        gather.add(kind::SUBMIT_TRANSFERS, answer(&[2, 0]), Some(&second));
        gather.add(kind::SUBMIT_TRANSFERS, answer(&[3]), None);
        let ids: Vec<u128> = gather.finish().chunks(64).map(|r| TransferResult::decode(r).transfer_id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[test]
    fn other_kinds_leave_every_record_after_the_first_that_waits() {
        let (a, b) = accounts();
        let mut router = Router::new(2, 1);
        let loan = |loan_id: u128, account_id: u64| {
            let mut body = Vec::new();
            records::push(&mut body, &Disburse { loan_id, account_id, currency: 344, term_days: 30, principal: 100 });
            body
        };
        // Loan 9 is claimed on a's shard; the same id for b's account must
        // wait for that answer, and loan 10 (independent) waits with it.
        let body = [loan(9, a[0]), loan(9, b[0]), loan(10, a[1])].concat();
        let (_, _, rest) = plan(&mut router, kind::DISBURSE_LOANS, &body);
        assert_eq!(rest.expect("the reused id waits").records, vec![1, 2]);
    }
}
