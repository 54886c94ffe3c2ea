//! A deterministic simulator of the whole switch: N shards, the router and
//! the links between shards, in one thread, driven by one seed.
//!
//! The seed decides the workload (every kind; transfer, loan and repayment
//! ids reused on purpose with other accounts; FX quotes raced by payers on
//! several shards), how many requests are in flight at once, the
//! interleaving of the shards' steps and of their link messages, and power
//! losses at any storage operation of any shard, after which every shard
//! recovers from its torn disk and the client resends what was not
//! answered. After every step the simulator checks the contract
//! ([`Sim::check_step`], [`Sim::check_recovered`]); with one request at a
//! time and no crash it also compares every answer and the final books
//! with a one-shard engine fed the same requests ([`run_seed`]). A failing
//! seed fails the same way every time: nothing here reads a clock, a
//! thread or an unordered map.
//!
//! It drives the real pieces: [`Shard::step`] (engine, log, snapshots,
//! links), [`Router`] (claims, merge, MULTI records) and
//! [`multi::reconcile`] at restart. What it stands in for is only the
//! threads and queues of `shard::Switch`.
//!
//! Limits: [`REQUESTS_IN_FLIGHT_MAX`] requests in flight, a workload of at
//! most [`WORK_MAX`] requests, [`STEPS_MAX`] steps per seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::clock::Clock;
use crate::engine::book::{INTERSHARD, REMITTANCE_OUT, SETTLEMENT_IN};
use crate::engine::{Engine, MANUAL_CLOCK_START_MS, multi};
use crate::protocol::records::*;
use crate::protocol::{ResultCode, kind};
use crate::router::{Claimed, Merge, Routed, Router, route_transfer, shard_of};
use crate::shard::{Shard, SwitchConfig};
use crate::wal::storage::{MemStorage, Storage};
use crate::wal::{Preallocate, WalConfig};

/// Most requests a simulated client has unanswered at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 8;
/// Most requests in one seed's workload.
pub const WORK_MAX: usize = 4096;
/// Most steps one seed runs before it is called stuck.
pub const STEPS_MAX: usize = 200_000;
const _: () = assert!(STEPS_MAX > WORK_MAX * 8);

const HKD: u16 = 344;
const USD: u16 = 840;
const CNY: u16 = 156;
/// Currencies the workload moves.
pub const CURRENCIES: [u16; 3] = [HKD, USD, CNY];
/// Customer accounts of the workload.
pub const ACCOUNTS: std::ops::Range<u64> = 1024..1040;

/// A small deterministic random source (splitmix64).
#[derive(Clone, Debug, Default)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::hash::mix64(self.0)
    }
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// How a seed runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub shards: usize,
    /// Requests in flight at most (1: one at a time).
    pub concurrency: usize,
    /// Whether power is lost now and then.
    pub crashes: bool,
    /// Requests in the workload.
    pub requests: usize,
}

impl Plan {
    /// The plan a seed gets: 1 to 4 shards, one request at a time or
    /// several, with or without crashes.
    #[must_use]
    pub fn of_seed(seed: u64) -> Plan {
        let mut rng = Rng(seed ^ 0x5eed);
        let shards = 1 + (seed % 4) as usize;
        let mode = (seed / 4) % 4;
        Plan {
            shards,
            concurrency: if mode & 1 == 0 { 1 } else { 2 + rng.below(REQUESTS_IN_FLIGHT_MAX as u64 - 1) as usize },
            crashes: mode & 2 != 0,
            requests: 60 + rng.below(60) as usize,
        }
    }
}

/// What a seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub steps: usize,
    pub requests_answered: usize,
    pub crashes: usize,
    /// Requests spanning shards that a restart applied on a shard that had
    /// lost its part.
    pub rolled_forward: usize,
    /// Routings put off by a claim held elsewhere.
    pub contended: usize,
    /// Records answered ID_CONFLICT.
    pub id_conflicts: usize,
    /// Records routed ahead of an earlier record of their request that
    /// was left for a later round.
    pub went_ahead: usize,
}

/// A broken promise: what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(Failure(format!($($arg)*)));
        }
    };
}

/// The configuration of shard `shard` of `shards` in a simulation: manual
/// clock, small segments and snapshots often (so crashes land in rolls
/// and snapshot writes), everything on the shard's own thread.
#[must_use]
pub fn shard_config(shard: usize, shards: usize) -> SwitchConfig {
    let mut c = SwitchConfig {
        shards,
        clock: Clock::Manual,
        wal: WalConfig { segment_bytes_max: 8192, preallocate: Preallocate::Inline },
        snapshot_in_background: false,
        snapshot_log_bytes: 12_000,
        ..SwitchConfig::default()
    };
    c.engine.manual_clock = true;
    c.engine.shard = shard as u16;
    c.engine.shards = shards as u16;
    c
}

/// A request: kind and body.
pub type Request = (u16, Vec<u8>);

/// A part waiting in a shard's queue.
struct Queued {
    request: usize,
    part: usize,
    kind: u16,
    body: Vec<u8>,
    claimed: Option<Claimed>,
}

/// An answer that waits for other shards' acknowledgements.
struct Deferred {
    request: usize,
    part: usize,
    need: Vec<u64>,
    kind: u16,
    answer: Vec<u8>,
    refunds: u64,
    claimed: Option<Claimed>,
}

/// A routed round of a request: its merge, its parts' answers so far, and
/// the rest with the round's number.
type Routing = (Merge, Vec<Option<Vec<u8>>>, Option<(crate::router::Rest, u64)>);

/// A request the client has sent and not yet been answered.
struct InFlight {
    /// The workload's index.
    work: usize,
    kind: u16,
    /// What is still to route (all of it, or the rest after a split).
    body: Vec<u8>,
    /// The routed round.
    round: Option<Routing>,
    /// Answers of earlier rounds.
    out: crate::router::Gather,
    /// Waiting for another request's claims.
    contended: bool,
    /// The round `body` continues (the rest of a request split in rounds).
    continues: Option<u64>,
}

/// The simulated switch.
pub struct Sim {
    disks: Vec<MemStorage>,
    shards: Vec<Shard>,
    router: Router,
    sent: Vec<Vec<u64>>,
    ack_sent: Vec<Vec<u64>>,
    /// Link messages on their way to each shard.
    inbox: Vec<VecDeque<Vec<u8>>>,
    queues: Vec<VecDeque<Queued>>,
    deferred: Vec<VecDeque<Deferred>>,
    in_flight: BTreeMap<usize, InFlight>,
    next_request: usize,
    /// Requests spanning shards: number → the shards it names.
    spans: BTreeMap<u64, Vec<usize>>,
    pub report: Report,
}

/// The machine lost power during a step.
#[derive(Debug)]
struct PowerLost;

impl Sim {
    /// A new switch of `shards` shards on empty disks.
    pub fn new(shards: usize) -> Result<Sim, Failure> {
        let disks: Vec<MemStorage> = (0..shards).map(|_| MemStorage::new()).collect();
        let mut sim = Self::open(disks)?;
        sim.continue_rests()?;
        Ok(sim)
    }

    /// Recovers every shard from `disks`, rebuilds the router's claims and
    /// rolls forward requests some shard lost its part of.
    fn open(disks: Vec<MemStorage>) -> Result<Sim, Failure> {
        let n = disks.len();
        let mut shards = Vec::with_capacity(n);
        let mut router = Router::new(n, 1);
        let mut quotes = Vec::with_capacity(n);
        for (i, disk) in disks.iter().enumerate() {
            let storage: Arc<dyn Storage> = Arc::new(disk.clone());
            let (shard, _) =
                Shard::open(storage, &shard_config(i, n)).map_err(|e| Failure(format!("shard {i} recovery: {e}")))?;
            router.note_quote_id(shard.engine().next_quote_id());
            if n > 1 {
                let stored = shard.engine().stored_ids();
                router.restore_stored(i, stored.ids, stored.repayments);
                quotes.push(stored.quotes);
                router.restore_requests(shard.engine().multi().applied);
            }
            shards.push(shard);
        }
        if n > 1 {
            router.restore_quotes(&quotes);
        }
        let mut sim = Sim {
            disks,
            shards,
            router,
            sent: vec![vec![0; n]; n],
            ack_sent: vec![vec![0; n]; n],
            inbox: vec![VecDeque::new(); n],
            queues: (0..n).map(|_| VecDeque::new()).collect(),
            deferred: (0..n).map(|_| VecDeque::new()).collect(),
            in_flight: BTreeMap::new(),
            next_request: 0,
            spans: BTreeMap::new(),
            report: Report::default(),
        };
        let due = multi::reconcile(&sim.shards.iter().map(|s| s.engine().multi()).collect::<Vec<_>>());
        for (s, records) in due.into_iter().enumerate() {
            for body in records {
                sim.report.rolled_forward += 1;
                let group = [(kind::MULTI, body.as_slice())];
                let (replies, _, result) = sim.shards[s].step(&[], &group);
                result.map_err(|e| Failure(format!("shard {s} roll-forward: {e}")))?;
                let answer =
                    replies[0].as_ref().map_err(|e| Failure(format!("shard {s} roll-forward refused: {e}")))?;
                sim.router.adopt(s, kind::MULTI, &body, answer);
            }
        }
        // After a restart every shard resends what was not acknowledged.
        for s in 0..n {
            sim.send_links(s);
        }
        Ok(sim)
    }

    /// The second half of a restart: a request split in rounds whose next
    /// round nobody began goes on (as `Switch::open` does).
    fn continue_rests(&mut self) -> Result<(), Failure> {
        let due = multi::continuations(&self.shards.iter().map(|s| s.engine().multi()).collect::<Vec<_>>());
        for (round, kind, rest) in due {
            self.report.rolled_forward += 1;
            self.submit_continuing(usize::MAX, kind, rest, Some(round))?;
            self.drain()?;
        }
        Ok(())
    }

    /// Steps every shard in turn until nothing is in flight (the answers
    /// go nowhere: recovery's own requests).
    fn drain(&mut self) -> Result<(), Failure> {
        let mut rng = Rng(0);
        for _ in 0..STEPS_MAX {
            if self.idle() {
                return Ok(());
            }
            self.retry_contended()?;
            for s in 0..self.n() {
                self.step(s, &mut rng).map_err(|_| Failure(format!("shard {s} failed during recovery")))?;
            }
        }
        Err(Failure("recovery's requests did not settle".into()))
    }

    /// The number of shards.
    #[must_use]
    pub fn n(&self) -> usize {
        self.shards.len()
    }

    /// The shards (read-only), for checks.
    #[must_use]
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Sends a request: routes it now, or holds it until the claims it
    /// needs are free. Returns its number.
    pub fn submit(&mut self, work: usize, kind: u16, body: Vec<u8>) -> Result<usize, Failure> {
        self.submit_continuing(work, kind, body, None)
    }

    fn submit_continuing(
        &mut self,
        work: usize,
        kind: u16,
        body: Vec<u8>,
        continues: Option<u64>,
    ) -> Result<usize, Failure> {
        let id = self.next_request;
        self.next_request += 1;
        let f = InFlight {
            work,
            kind,
            body,
            round: None,
            out: crate::router::Gather::default(),
            contended: false,
            continues,
        };
        self.in_flight.insert(id, f);
        self.route(id)?;
        Ok(id)
    }

    fn route(&mut self, id: usize) -> Result<(), Failure> {
        let now_ms = self.shards.iter().map(|s| s.engine().now_ms()).max().unwrap_or(MANUAL_CLOCK_START_MS);
        let f = self.in_flight.get_mut(&id).expect("in flight");
        let routed = self
            .router
            .route(f.kind, &f.body, now_ms, 30_000, f.continues)
            .map_err(|e| Failure(format!("request {id}: not routed: {e}")))?;
        match routed {
            Routed::Contended => {
                self.report.contended += 1;
                f.contended = true;
            }
            Routed::Plan { parts, merge, rest, round } => {
                f.contended = false;
                if let Some(r) = &rest {
                    let size = crate::protocol::kinds::applied_record_size(f.kind).unwrap_or(1);
                    self.report.went_ahead += f.body.len() / size - r.records[0] - r.records.len();
                }
                let rest = rest.map(|r| (r, round.expect("a round with a rest is numbered")));
                assert!(!parts.is_empty(), "the workload sends no empty request");
                f.round = Some((merge, (0..parts.len()).map(|_| None).collect(), rest));
                for (p, part) in parts.into_iter().enumerate() {
                    if part.kind == kind::MULTI {
                        let m = multi::decode(&part.body).expect("the router's record");
                        self.spans.entry(m.seq).or_default().push(part.shard);
                    }
                    let claimed = (!part.claimed.is_empty()).then_some(part.claimed);
                    let q = Queued { request: id, part: p, kind: part.kind, body: part.body, claimed };
                    self.queues[part.shard].push_back(q);
                }
            }
        }
        Ok(())
    }

    /// Routes again the requests that waited for claims.
    fn retry_contended(&mut self) -> Result<(), Failure> {
        let waiting: Vec<usize> = self.in_flight.iter().filter(|(_, f)| f.contended).map(|(&id, _)| id).collect();
        for id in waiting {
            self.route(id)?;
        }
        Ok(())
    }

    /// One step of shard `s`: its link messages (some or all, as `rng`
    /// says) and up to `take` queued parts. Returns the requests answered.
    fn step(&mut self, s: usize, rng: &mut Rng) -> Result<Vec<(usize, Vec<u8>)>, PowerLost> {
        let links_n = if self.inbox[s].is_empty() { 0 } else { 1 + rng.below(self.inbox[s].len() as u64) as usize };
        let links: Vec<Vec<u8>> = self.inbox[s].drain(..links_n).collect();
        let take = if self.queues[s].is_empty() { 0 } else { 1 + rng.below(self.queues[s].len() as u64) as usize };
        let batch: Vec<Queued> = self.queues[s].drain(..take).collect();
        let link_refs: Vec<&[u8]> = links.iter().map(Vec::as_slice).collect();
        let group: Vec<(u16, &[u8])> = batch.iter().map(|q| (q.kind, q.body.as_slice())).collect();
        let (replies, waits, result) = self.shards[s].step(&link_refs, &group);
        if result.is_err() {
            return Err(PowerLost);
        }
        let mut done = Vec::new();
        for ((q, reply), wait) in batch.into_iter().zip(replies).zip(waits) {
            let answer = reply.expect("the router sends only well-formed parts");
            let inner = answer_kind(q.kind, &q.body);
            match wait {
                Some(need) => {
                    let refunds = self.shards[s].engine().refunds();
                    let d = Deferred {
                        request: q.request,
                        part: q.part,
                        need,
                        kind: inner,
                        answer,
                        refunds,
                        claimed: q.claimed,
                    };
                    self.deferred[s].push_back(d);
                }
                None => done.extend(self.part_answered(q.request, q.part, answer, q.claimed)),
            }
        }
        // Answers whose acknowledgements came, in order.
        while let Some(d) = self.deferred[s].front() {
            let links = &self.shards[s].engine().links().links;
            if !d.need.iter().zip(links).all(|(&seq, link)| link.acked() >= seq) {
                break;
            }
            let mut d = self.deferred[s].pop_front().expect("front exists");
            self.shards[s].engine().settle_answers(d.kind, &mut d.answer, Some(d.refunds));
            done.extend(self.part_answered(d.request, d.part, d.answer, d.claimed));
        }
        self.send_links(s);
        Ok(done)
    }

    /// A part's answer is in: its claims settle; once every part of the
    /// round is in, the round merges, and the request is answered or its
    /// rest routed.
    fn part_answered(
        &mut self,
        request: usize,
        part: usize,
        answer: Vec<u8>,
        claimed: Option<Claimed>,
    ) -> Option<(usize, Vec<u8>)> {
        if let Some(c) = claimed {
            self.router.settle(c.outcomes(Some(&answer)));
        }
        let f = self.in_flight.get_mut(&request).expect("in flight");
        let (_, answers, _) = f.round.as_mut().expect("a routed round");
        answers[part] = Some(answer);
        if answers.iter().any(Option::is_none) {
            return None;
        }
        let (merge, answers, rest) = f.round.take().expect("a routed round");
        let merged = crate::router::merge(merge, answers.into_iter().map(|a| a.expect("all in")).collect());
        f.out.add(f.kind, merged, rest.as_ref().map(|(r, _)| r));
        match rest {
            Some((rest, round)) => {
                f.body = rest.body;
                f.continues = Some(round);
                f.contended = true; // routed at the next retry
                None
            }
            None => {
                let f = self.in_flight.remove(&request).expect("in flight");
                Some((f.work, f.out.finish()))
            }
        }
    }

    /// What shard `s` owes the others goes to their inboxes.
    fn send_links(&mut self, s: usize) {
        for peer in (0..self.n()).filter(|&p| p != s) {
            let (ack, entries) = self.shards[s].engine().links().message(peer as u16, self.sent[s][peer]);
            if entries.is_empty() && ack == self.ack_sent[s][peer] {
                continue;
            }
            let mut body = Vec::new();
            crate::engine::links::encode_link_in(s as u16, ack, &entries, &mut body);
            self.inbox[peer].push_back(body);
            if let Some(last) = entries.last() {
                self.sent[s][peer] = last.seq;
            }
            self.ack_sent[s][peer] = ack;
        }
    }

    /// Whether nothing is queued, waiting or on its way anywhere.
    fn idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.queues.iter().all(VecDeque::is_empty)
            && self.inbox.iter().all(VecDeque::is_empty)
            && self.deferred.iter().all(VecDeque::is_empty)
    }

    /// Power is lost on every shard's disk at once (unsynced tails tear,
    /// as `seed` says); every shard recovers.
    fn crash_and_recover(&mut self, seed: u64) -> Result<(), Failure> {
        let disks: Vec<MemStorage> =
            self.disks.iter().enumerate().map(|(i, d)| d.after_crash(seed.wrapping_add(i as u64))).collect();
        let mut report = std::mem::take(&mut self.report);
        let spans = std::mem::take(&mut self.spans);
        let next_request = self.next_request;
        *self = Sim::open(disks)?;
        report.rolled_forward += self.report.rolled_forward;
        report.crashes += 1;
        self.report = report;
        self.spans = spans;
        self.next_request = next_request;
        // Right after recovery a shard's complete mark covers only rounds
        // that were durable on every shard they name, so `has` is exact
        // here; later marks also cover rounds lost everywhere. Each round
        // is checked now, then forgotten (its number may be given again).
        self.check_spans()?;
        self.spans.clear();
        self.continue_rests()
    }
}

/// The kind a part's answer is read as (a MULTI record's own part's).
fn answer_kind(kind: u16, body: &[u8]) -> u16 {
    if kind == kind::MULTI {
        return multi::decode(body).map_or(kind, |m| m.mine_kind);
    }
    kind
}

// ---- the workload -------------------------------------------------------------

fn transfer(id: u128, debit: u64, credit: u64, amount: u64, currency: u16) -> Transfer {
    Transfer {
        transfer_id: id,
        debit_account: debit,
        credit_account: credit,
        amount,
        debit_currency: currency,
        credit_currency: currency,
        ..Transfer::default()
    }
}

/// Seeded mixed traffic: accounts, rates, lines and deposits first, then
/// transfers of every shape (ids reused with other accounts on purpose,
/// quotes shared by payers on several shards), step-ups, cancels,
/// finalizes, reviews, loans and repayments (their ids reused too), quotes,
/// lookups and time passing.
#[must_use]
// Long by design: one arm per kind of request, read as a table of
// the traffic a seed draws from.
pub fn workload(seed: u64, requests: usize) -> Vec<Request> {
    let mut rng = Rng(seed);
    let accounts: Vec<u64> = ACCOUNTS.collect();
    let accounts_body: Vec<Account> = accounts
        .iter()
        .map(|&a| Account { account_id: a, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: 344, customer_ref: a })
        .collect();
    let lines: Vec<CreditLine> = accounts[..6]
        .iter()
        .map(|&a| CreditLine {
            account_id: a,
            currency: HKD,
            flags: CREDIT_AUTO_MICRO_CREDIT,
            apr_bps: 1_000,
            limit: 150_000,
            micro_credit_max: 60_000,
        })
        .collect();
    let mut out: Vec<Request> = vec![
        (kind::CREATE_ACCOUNTS, encode_all(&accounts_body)),
        (
            kind::SET_FX_RATES,
            encode_all(&[
                FxRate { from: USD, to: HKD, rate_e9: 7_800_000_000 },
                FxRate { from: HKD, to: USD, rate_e9: 127_000_000 },
                FxRate { from: CNY, to: HKD, rate_e9: 1_080_000_000 },
                FxRate { from: HKD, to: CNY, rate_e9: 910_000_000 },
            ]),
        ),
        (kind::SET_CREDIT_LINES, encode_all(&lines)),
    ];
    let mut next_id: u128 = 1;
    let mut deposits = Vec::new();
    for &a in &accounts {
        for c in [HKD, USD] {
            deposits.push(transfer(next_id, SETTLEMENT_IN, a, 200_000 + rng.below(100_000), c));
            next_id += 1;
        }
    }
    out.push((kind::SUBMIT_TRANSFERS, encode_all(&deposits)));
    let mut sent: Vec<Transfer> = Vec::new();
    let mut quotes: Vec<QuoteRequest> = Vec::new();
    let mut loans: Vec<u128> = Vec::new();
    let mut repayments: Vec<u128> = Vec::new();
    let mut clock = MANUAL_CLOCK_START_MS;
    while out.len() < requests.min(WORK_MAX) {
        let any_id = |rng: &mut Rng, next_id: u128| 1 + u128::from(rng.below(next_id as u64));
        let request = match rng.below(24) {
            0..=10 => {
                let mut ts = Vec::new();
                for _ in 0..=rng.below(4) {
                    if !sent.is_empty() && rng.one_in(10) {
                        // An exact resend.
                        ts.push(sent[rng.below(sent.len() as u64) as usize]);
                        continue;
                    }
                    let debit = rng.pick(&accounts);
                    let mut credit = rng.pick(&accounts);
                    let (dc, cc) = rng.pick(&[(HKD, HKD), (HKD, HKD), (HKD, HKD), (USD, HKD), (HKD, USD), (HKD, CNY)]);
                    if credit == debit && dc == cc {
                        credit = if debit + 1 < ACCOUNTS.end { debit + 1 } else { ACCOUNTS.start };
                    }
                    let mut t = Transfer {
                        debit_currency: dc,
                        credit_currency: cc,
                        ..transfer(next_id, debit, credit, 1 + rng.below(30_000), dc)
                    };
                    next_id += 1;
                    match rng.below(14) {
                        0 => {
                            t.credit_account = REMITTANCE_OUT;
                            t.credit_currency = dc;
                            t.destination_country = rng.pick(&[156, 840, 408]);
                        }
                        1 | 2 => t.flags = TRANSFER_PENDING,
                        3 => {
                            t.flags = TRANSFER_AUTO_CREDIT;
                            t.debit_currency = HKD;
                            t.amount = 50_000 + rng.below(300_000);
                        }
                        4 | 5 if !quotes.is_empty() => {
                            // A quote, maybe one other payers use too: quote
                            // ids are given from 1 in order.
                            let at = rng.below(quotes.len() as u64);
                            let q = quotes[at as usize];
                            (t.debit_currency, t.credit_currency, t.amount, t.flags) = (q.from, q.to, q.amount, 0);
                            t.credit_account = t.debit_account;
                            t.fx_quote_id = at + 1;
                        }
                        6 => t.amount = 1_000_000_000,
                        7 | 8 if !sent.is_empty() => {
                            // An id reused with other accounts (or a loan's).
                            t.transfer_id = if !loans.is_empty() && rng.one_in(3) {
                                rng.pick(&loans)
                            } else {
                                sent[rng.below(sent.len() as u64) as usize].transfer_id
                            };
                        }
                        _ => {}
                    }
                    sent.push(t);
                    ts.push(t);
                }
                (kind::SUBMIT_TRANSFERS, encode_all(&ts))
            }
            11 => {
                let action = rng.pick(&[FINALIZE_POST, FINALIZE_POST, FINALIZE_VOID]);
                (kind::FINALIZE_PENDING, encode_all(&[Finalize { transfer_id: any_id(&mut rng, next_id), action }]))
            }
            12 => (kind::CANCEL_TRANSFERS, encode_all(&[Id { id: any_id(&mut rng, next_id) }])),
            13 => {
                let method = rng.pick(&[METHOD_FACE, METHOD_SMS_OTP]);
                let outcome = rng.pick(&[OUTCOME_PASS, OUTCOME_PASS, OUTCOME_FAIL]);
                let s = StepUp { transfer_id: any_id(&mut rng, next_id), method, outcome };
                (kind::CONFIRM_STEP_UP, encode_all(&[s]))
            }
            14 => {
                let outcome = rng.pick(&[OUTCOME_PASS, OUTCOME_FAIL]);
                let s = StepUp { transfer_id: any_id(&mut rng, next_id), method: METHOD_MANUAL_REVIEW, outcome };
                (kind::RESOLVE_REVIEW, encode_all(&[s]))
            }
            15 => {
                clock += rng.pick(&[1_000, 60_000, 3_600_000, 86_400_000]);
                (kind::SET_TIME, encode_all(&[SetTime { unix_ms: clock }]))
            }
            16 | 17 => {
                let (from, to) = rng.pick(&[(USD, HKD), (HKD, USD), (HKD, CNY)]);
                let q = QuoteRequest { from, to, flags: 0, amount: 1_000 + rng.below(20_000) };
                quotes.push(q);
                (kind::FX_QUOTE, encode_all(&[q]))
            }
            18 => {
                // A loan: a fresh id, or one a transfer or loan has.
                let loan_id = if !sent.is_empty() && rng.one_in(4) {
                    sent[rng.below(sent.len() as u64) as usize].transfer_id
                } else {
                    next_id += 1;
                    next_id - 1
                };
                loans.push(loan_id);
                let d = Disburse {
                    loan_id,
                    account_id: rng.pick(&accounts[..6]),
                    currency: HKD,
                    term_days: 30,
                    principal: 1 + rng.below(20_000),
                };
                (kind::DISBURSE_LOANS, encode_all(&[d]))
            }
            19 if !loans.is_empty() => {
                let repayment_id = if !repayments.is_empty() && rng.one_in(3) {
                    rng.pick(&repayments)
                } else {
                    next_id += 1;
                    next_id - 1
                };
                repayments.push(repayment_id);
                let r = Repay { repayment_id, loan_id: rng.pick(&loans), amount: rng.pick(&[1, 500, 5_000]) };
                (kind::REPAY_LOANS, encode_all(&[r]))
            }
            20 => {
                let ids: Vec<Id> = (0..=rng.below(3)).map(|_| Id { id: any_id(&mut rng, next_id) }).collect();
                (rng.pick(&[kind::LOOKUP_TRANSFERS, kind::LOOKUP_LOANS]), encode_all(&ids))
            }
            21 => {
                let keys: Vec<BalanceKey> = (0..=rng.below(3))
                    .map(|_| {
                        let customer = rng.pick(&accounts);
                        BalanceKey { account_id: rng.pick(&[1, 3, 4, customer]), currency: HKD }
                    })
                    .collect();
                (kind::LOOKUP_BALANCES, encode_all(&keys))
            }
            _ => {
                let t =
                    transfer(next_id, SETTLEMENT_IN, rng.pick(&accounts), 1 + rng.below(50_000), rng.pick(&CURRENCIES));
                next_id += 1;
                (kind::SUBMIT_TRANSFERS, encode_all(&[t]))
            }
        };
        out.push(request);
    }
    out
}

// ---- the checks ---------------------------------------------------------------

/// What the client was told, to check against the books.
#[derive(Default)]
struct Told {
    /// Transfer id → the state its accepted answer showed.
    transfers: BTreeMap<u128, u8>,
    /// Quote id → how many transfers were answered OK with it.
    quotes_spent: BTreeMap<u64, usize>,
}

impl Sim {
    /// After every step: each shard's audit, and each id stored by at most
    /// one shard.
    fn check_step(&self, ids: &BTreeSet<u128>) -> Result<(), Failure> {
        for (s, shard) in self.shards.iter().enumerate() {
            if let Err(e) = shard.engine().audit() {
                return Err(Failure(format!("shard {s} audit: {e}")));
            }
        }
        for &id in ids {
            let holders = self.holders(id);
            ensure!(holders.len() <= 1, "id {id} stored on shards {holders:?}");
        }
        Ok(())
    }

    /// The shards storing `id` as a transfer or a loan.
    fn holders(&self, id: u128) -> Vec<usize> {
        (0..self.n())
            .filter(|&s| {
                let e = self.shards[s].engine();
                e.lookup_transfer(id).state != 0 || e.lookup_loan(id).state != 0
            })
            .collect()
    }

    /// After a restart: every request spanning shards is applied by all
    /// the shards it names or by none, and every answered transfer is
    /// there in the state it was answered in (a pending one may have moved
    /// on since).
    fn check_recovered(&self, told: &Told) -> Result<(), Failure> {
        self.check_spans()?;
        for (&id, &state) in &told.transfers {
            let holders = self.holders(id);
            ensure!(holders.len() == 1, "answered transfer {id} stored on shards {holders:?}");
            let now = self.shards[holders[0]].engine().lookup_transfer(id);
            ensure!(
                state == STATE_PENDING || now.state == state,
                "transfer {id} answered in state {state}, now {}",
                now.state
            );
        }
        Ok(())
    }

    /// Every request spanning shards is applied on all the shards it names
    /// or on none.
    fn check_spans(&self) -> Result<(), Failure> {
        for (&seq, shards) in &self.spans {
            let applied: Vec<bool> = shards.iter().map(|&s| self.shards[s].engine().multi().has(seq)).collect();
            ensure!(
                applied.iter().all(|&a| a) || applied.iter().all(|&a| !a),
                "request {seq} spanning shards {shards:?} applied on {applied:?} only"
            );
        }
        Ok(())
    }

    /// With nothing in flight: the shards' parts of INTERSHARD sum to zero
    /// in every currency, no money appeared from nowhere, and no link has
    /// anything unacknowledged.
    fn check_settled(&self) -> Result<(), Failure> {
        for currency in CURRENCIES {
            let key = BalanceKey { account_id: INTERSHARD, currency };
            let (mut balance, mut held) = (0i128, 0u128);
            let mut settlement = 0i128;
            for s in &self.shards {
                let b = s.engine().lookup_balance(&key);
                balance += i128::from(b.balance);
                held += u128::from(b.held);
                settlement +=
                    i128::from(s.engine().lookup_balance(&BalanceKey { account_id: SETTLEMENT_IN, currency }).balance);
            }
            ensure!((balance, held) == (0, 0), "INTERSHARD {currency} sums to {balance} (held {held})");
            ensure!(settlement <= 0, "money appeared in {currency}: SETTLEMENT_IN at {settlement}");
        }
        for (s, shard) in self.shards.iter().enumerate() {
            ensure!(shard.engine().links().unacked() == 0, "shard {s} has entries unacknowledged");
        }
        Ok(())
    }
}

/// Checks an answer against what the contract fixes whatever the order:
/// a transfer id is accepted (OK) once, a quote serves one accepted
/// transfer.
fn check_answer(kind: u16, body: &[u8], answer: &[u8], told: &mut Told, report: &mut Report) -> Result<(), Failure> {
    if kind != kind::SUBMIT_TRANSFERS {
        return Ok(());
    }
    ensure!(answer.len() == body.len(), "SUBMIT_TRANSFERS answered {} bytes for {}", answer.len(), body.len());
    for (t, r) in decode_all::<Transfer>(body).zip(decode_all::<TransferResult>(answer)) {
        ensure!(r.transfer_id == t.transfer_id, "answer for {} names {}", t.transfer_id, r.transfer_id);
        if r.code == ResultCode::IdConflict.as_u16() {
            report.id_conflicts += 1;
        }
        if r.code != ResultCode::Ok.as_u16() {
            continue;
        }
        ensure!(
            told.transfers.insert(t.transfer_id, r.state).is_none(),
            "transfer id {} accepted twice",
            t.transfer_id
        );
        if t.fx_quote_id != 0 {
            let spent = told.quotes_spent.entry(t.fx_quote_id).or_default();
            *spent += 1;
            ensure!(*spent == 1, "quote {} served {} transfers", t.fx_quote_id, spent);
        }
    }
    Ok(())
}

/// Runs one seed as [`Plan::of_seed`] says and checks it; `Err` names the
/// broken promise.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    let plan = Plan::of_seed(seed);
    run(seed, plan).map_err(|f| Failure(format!("seed {seed} ({plan:?}): {f}")))
}

/// Runs `plan` with the randomness of `seed`.
// Long by design: one loop of the whole switch (send, step a shard or a
// link, crash, restart, check), kept whole so a failing seed reads as one
// story.
pub fn run(seed: u64, plan: Plan) -> Result<Report, Failure> {
    let work = workload(seed, plan.requests);
    let ids: BTreeSet<u128> = work
        .iter()
        .flat_map(|(k, body)| match *k {
            kind::SUBMIT_TRANSFERS => decode_all::<Transfer>(body).map(|t| t.transfer_id).collect::<Vec<_>>(),
            kind::DISBURSE_LOANS => decode_all::<Disburse>(body).map(|d| d.loan_id).collect(),
            _ => Vec::new(),
        })
        .collect();
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xd1ce);
    let mut sim = Sim::new(plan.shards)?;
    // The one-shard reference, fed each request as it is answered (with
    // one request at a time and no crash, that is the order it applied).
    let exact = plan.concurrency == 1 && !plan.crashes;
    let mut reference = Engine::new(shard_config(0, 1).engine, MANUAL_CLOCK_START_MS);
    let mut told = Told::default();
    let mut next_work = 0;
    let mut answered = vec![false; work.len()];
    let mut steps = 0;
    // Requests sent and not answered, by workload index (for resending).
    let mut unanswered: BTreeSet<usize> = BTreeSet::new();
    while next_work < work.len() || !sim.idle() {
        steps += 1;
        ensure!(steps < STEPS_MAX, "no progress after {steps} steps");
        // Send while there is room: the first requests (accounts, rates,
        // lines, deposits) one at a time, so the rest finds them.
        let room = if next_work < 4 { 1 } else { plan.concurrency };
        if next_work < work.len()
            && sim.in_flight.len() < room
            && (sim.in_flight.is_empty() || rng.one_in(2))
            && (!exact || sim.idle())
        {
            let (k, body) = &work[next_work];
            sim.submit(next_work, *k, body.clone())?;
            unanswered.insert(next_work);
            next_work += 1;
            continue;
        }
        if plan.crashes && rng.one_in(40) {
            // Power is lost at a storage operation of one shard, during its
            // next step, or between steps.
            let s = rng.below(plan.shards as u64) as usize;
            let torn = rng.next_u64();
            if rng.one_in(2) {
                sim.disks[s].crash_in(1 + rng.below(6));
                let mut step_rng = rng.clone();
                let _ = sim.step(s, &mut step_rng);
            }
            sim.crash_and_recover(torn)?;
            sim.check_recovered(&told)?;
            // The client resends every unanswered request, with the same ids.
            for &w in &unanswered {
                let (k, body) = &work[w];
                sim.submit(w, *k, body.clone())?;
            }
            continue;
        }
        sim.retry_contended()?;
        let busy: Vec<usize> = (0..plan.shards)
            .filter(|&s| !sim.queues[s].is_empty() || !sim.inbox[s].is_empty() || !sim.deferred[s].is_empty())
            .collect();
        if busy.is_empty() {
            continue;
        }
        let s = rng.pick(&busy);
        let done = match sim.step(s, &mut rng) {
            Ok(done) => done,
            Err(PowerLost) => return Err(Failure(format!("shard {s} lost power with no crash planned"))),
        };
        for (w, answer) in done {
            let (k, body) = &work[w];
            if !unanswered.remove(&w) {
                // A resend answered after the original: one answer each.
                continue;
            }
            answered[w] = true;
            sim.report.requests_answered += 1;
            check_answer(*k, body, &answer, &mut told, &mut sim.report)
                .map_err(|f| Failure(format!("request {w} (kind {k:#06x}): {f}")))?;
            if exact {
                let mut expected = Vec::new();
                reference.apply(*k, body, reference.now_ms(), &mut expected).expect("a valid request");
                if *k == kind::SUBMIT_TRANSFERS && answer != expected {
                    let got: Vec<TransferResult> = decode_all(&answer).collect();
                    let want: Vec<TransferResult> = decode_all(&expected).collect();
                    let sent: Vec<Transfer> = decode_all(body).collect();
                    let i = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(0);
                    return Err(Failure(format!(
                        "request {w}: record {i} of {} answered {:?} where one shard answers {:?}; records {sent:?}",
                        got.len(),
                        got.get(i),
                        want.get(i)
                    )));
                }
                ensure!(
                    answer == expected,
                    "request {w} (kind {k:#06x}) answered\n{answer:?}\nwhere one shard answers\n{expected:?}"
                );
                if std::env::var("SIMTRACE").is_ok() {
                    for a in ACCOUNTS {
                        for c in CURRENCIES {
                            let key = BalanceKey { account_id: a, currency: c };
                            let got = sim.shards[shard_of(a, sim.n())].engine().lookup_balance(&key);
                            let want = reference.lookup_balance(&key);
                            if got != want {
                                eprintln!(
                                    "after request {w} kind {k:#x} {:?}: account {a} {c}: {got:?} vs {want:?}",
                                    decode_all::<Transfer>(body).collect::<Vec<_>>()
                                );
                            }
                        }
                    }
                }
            }
        }
        sim.check_step(&ids)?;
    }
    sim.check_settled()?;
    sim.check_recovered(&told)?;
    ensure!(answered.iter().all(|&a| a), "a request went unanswered");
    if exact {
        compare_books(&sim, &reference, &ids)?;
    }
    // A last restart recovers exactly what was answered.
    let torn = rng.next_u64();
    sim.crash_and_recover(torn)?;
    sim.check_recovered(&told)?;
    sim.report.steps = steps;
    Ok(sim.report)
}

/// Every balance, transfer, loan and AML case equals the reference's.
fn compare_books(sim: &Sim, one: &Engine, ids: &BTreeSet<u128>) -> Result<(), Failure> {
    for &id in ids {
        let holder = sim.holders(id).first().copied().unwrap_or(0);
        let e = sim.shards[holder].engine();
        ensure!(e.lookup_transfer(id) == one.lookup_transfer(id), "transfer {id} differs from one shard's");
        ensure!(e.lookup_loan(id) == one.lookup_loan(id), "loan {id} differs from one shard's");
    }
    for account_id in (1..=INTERSHARD).chain(ACCOUNTS) {
        for currency in CURRENCIES {
            let key = BalanceKey { account_id, currency };
            let want = one.lookup_balance(&key);
            let got = if account_id >= ACCOUNTS.start {
                sim.shards[shard_of(account_id, sim.n())].engine().lookup_balance(&key)
            } else {
                let mut sum = sim.shards[0].engine().lookup_balance(&key);
                for s in &sim.shards[1..] {
                    let b = s.engine().lookup_balance(&key);
                    sum.balance += b.balance;
                    sum.held += b.held;
                }
                sum
            };
            ensure!(got == want, "account {account_id} in {currency}: {got:?} where one shard has {want:?}");
        }
    }
    let mut cases: Vec<_> = sim.shards.iter().flat_map(|s| s.engine().cases()).collect();
    let mut want = one.cases();
    cases.sort_by_key(|c| c.transfer_id);
    want.sort_by_key(|c| c.transfer_id);
    ensure!(cases == want, "AML cases differ from one shard's");
    Ok(())
}

/// Whether the workload's transfer crossed shards (for the tests' sanity).
#[must_use]
pub fn crosses(t: &Transfer, shards: usize) -> bool {
    t.credit_account >= ACCOUNTS.start && shard_of(t.credit_account, shards) != route_transfer(t, shards)
}
