//! Cross-shard transfers, deterministically: shards driven step by step by
//! a simulated switch that moves their link messages itself.
//!
//! - `several_shards_decide_like_one`: random mixed traffic (same- and
//!   cross-shard, same- and cross-currency, holds, step-ups, finalizes,
//!   cancels, quotes, AUTO_CREDIT micro-loans, loans, time passing) through
//!   three shards gives every answer and every final balance, transfer, loan
//!   and AML case that one shard (the reference) gives.
//! - `every_crash_point_of_the_protocol_recovers`: a machine running two
//!   shards loses power at every storage operation of either shard's log in
//!   turn (the other shard's unsynced bytes tear too); after recovery and
//!   resending, every shard's audit holds, nothing is in flight, INTERSHARD
//!   sums to zero in every currency (so no credit was applied twice, lost, or
//!   applied for a voided transfer), and every acknowledged transfer is
//!   there in the state it was acknowledged in.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{HKD, Rng, USD, account, deposit, transfer};
use harbour::clock::Clock;
use harbour::engine::book::{INTERSHARD, REMITTANCE_OUT, SETTLEMENT_IN};
use harbour::engine::links::encode_link_in;
use harbour::engine::multi;
use harbour::engine::{Engine, MANUAL_CLOCK_START_MS};
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};
use harbour::router::{Routed, Router};
use harbour::shard::{Shard, SwitchConfig, route_transfer, shard_of};
use harbour::wal::storage::{FaultPlan, MemStorage, Storage};
use harbour::wal::{Preallocate, WalConfig};
use proptest::prelude::*;

const CNY: u16 = 156;
const CURRENCIES: [u16; 3] = [HKD, USD, CNY];
const ACCOUNTS: std::ops::Range<u64> = 1024..1036;
/// Loan and repayment ids live apart from transfer ids here (reuse on
/// purpose is `harbour::sim`'s and `tests/switch.rs`'s).
const LOAN_IDS: u128 = 1 << 64;
const REPAYMENT_IDS: u128 = 1 << 80;

fn config(shard: usize, shards: usize) -> SwitchConfig {
    let mut c = SwitchConfig {
        shards,
        clock: Clock::Manual,
        wal: WalConfig { segment_bytes_max: 4096, preallocate: Preallocate::Inline },
        snapshot_in_background: false,
        snapshot_log_bytes: 6000,
        ..SwitchConfig::default()
    };
    c.engine.manual_clock = true;
    c.engine.shard = shard as u16;
    c.engine.shards = shards as u16;
    c
}

type Request = (u16, Vec<u8>);

/// One record's answer from the simulated switch.
struct Answered {
    answer: Vec<u8>,
}

/// Shards driven one step at a time, with their link messages in between,
/// and the switch's router in front of them.
struct Sim {
    shards: Vec<Shard>,
    router: Router,
    /// Per shard, per peer: the last entry sent and the last acknowledgement.
    sent: Vec<Vec<u64>>,
    ack_sent: Vec<Vec<u64>>,
    /// Link messages waiting for each shard.
    inbox: Vec<Vec<Vec<u8>>>,
    /// Requests spanning shards sent: number → the shards it names.
    spans: BTreeMap<u64, Vec<usize>>,
    /// Parts a restart gave a shard that had lost them.
    rolled_forward: usize,
}

/// The machine lost power: the run ends here.
#[derive(Debug)]
struct Crashed;

impl Sim {
    fn open(storages: &[Arc<dyn Storage>]) -> Result<Sim, Crashed> {
        let n = storages.len();
        let mut shards = Vec::new();
        let mut router = Router::new(n, 1);
        let mut quotes = Vec::new();
        for (i, s) in storages.iter().enumerate() {
            let shard = Shard::open(Arc::clone(s), &config(i, n)).map_err(|_| Crashed)?.0;
            let stored = shard.engine().stored_ids();
            router.note_quote_id(shard.engine().next_quote_id());
            router.restore_stored(i, stored.ids, stored.repayments);
            router.restore_requests(shard.engine().multi().applied);
            quotes.push(stored.quotes);
            shards.push(shard);
        }
        router.restore_quotes(&quotes);
        let mut sim = Sim {
            shards,
            router,
            sent: vec![vec![0; n]; n],
            ack_sent: vec![vec![0; n]; n],
            inbox: vec![Vec::new(); n],
            spans: BTreeMap::new(),
            rolled_forward: 0,
        };
        // What a shard lost of a request spanning shards, it is given.
        let due = multi::reconcile(&sim.shards.iter().map(|s| s.engine().multi()).collect::<Vec<_>>());
        for (s, records) in due.into_iter().enumerate() {
            for body in records {
                sim.rolled_forward += 1;
                let (answer, _) = sim.step(s, &[(kind::MULTI, &body)])?.swap_remove(0);
                sim.router.adopt(s, kind::MULTI, &body, &answer);
            }
        }
        // After a restart every shard resends what was not acknowledged.
        for s in 0..n {
            sim.send(s);
        }
        Ok(sim)
    }

    /// The second half of a restart: a request split in rounds whose next
    /// round nobody began goes on (as `Switch::open` does).
    fn continue_rests(&mut self) -> Result<(), Crashed> {
        self.settle()?;
        let due = multi::continuations(&self.shards.iter().map(|s| s.engine().multi()).collect::<Vec<_>>());
        for (round, kind, rest) in due {
            self.rolled_forward += 1;
            self.continue_request(kind, &rest, round)?;
        }
        Ok(())
    }

    fn n(&self) -> usize {
        self.shards.len()
    }

    /// One step of shard `s`: its waiting link messages and `group`; then
    /// what it now owes the others goes to their inboxes.
    fn step(&mut self, s: usize, group: &[(u16, &[u8])]) -> Result<Vec<(Vec<u8>, bool)>, Crashed> {
        let inbox = std::mem::take(&mut self.inbox[s]);
        let links: Vec<&[u8]> = inbox.iter().map(Vec::as_slice).collect();
        let (replies, waits, result) = self.shards[s].step(&links, group);
        result.map_err(|_| Crashed)?;
        self.send(s);
        Ok(replies.into_iter().zip(waits).map(|(r, w)| (r.expect("valid request"), w.is_some())).collect())
    }

    /// What shard `s` owes the others (durable entries, acknowledgements)
    /// goes to their inboxes.
    fn send(&mut self, s: usize) {
        for peer in (0..self.n()).filter(|&p| p != s) {
            let (ack, entries) = self.shards[s].engine().links().message(peer as u16, self.sent[s][peer]);
            if entries.is_empty() && ack == self.ack_sent[s][peer] {
                continue;
            }
            let mut body = Vec::new();
            encode_link_in(s as u16, ack, &entries, &mut body);
            self.inbox[peer].push(body);
            if let Some(last) = entries.last() {
                self.sent[s][peer] = last.seq;
            }
            self.ack_sent[s][peer] = ack;
        }
    }

    /// Steps shards until no link message is left anywhere.
    fn settle(&mut self) -> Result<(), Crashed> {
        for _ in 0..64 {
            let Some(s) = (0..self.n()).find(|&s| !self.inbox[s].is_empty()) else { return Ok(()) };
            self.step(s, &[])?;
        }
        panic!("links did not settle");
    }

    /// Which shard stores a transfer (or loan) id, if any.
    fn holder(&self, id: u128, loan: bool) -> Option<usize> {
        (0..self.n()).find(|&s| {
            let e = self.shards[s].engine();
            if loan { e.lookup_loan(id).state != 0 } else { e.lookup_transfer(id).state != 0 }
        })
    }

    /// Routes a request as the switch does (claims, MULTI records for a
    /// request spanning shards), applies its parts shard by shard,
    /// settles, and returns the merged answer per record.
    fn request(&mut self, kind: u16, body: &[u8]) -> Result<Vec<Answered>, Crashed> {
        self.route_and_apply(kind, body, None)
    }

    /// Routes the rest of a request, continuing round `round`.
    fn continue_request(&mut self, kind: u16, body: &[u8], round: u64) -> Result<Vec<Answered>, Crashed> {
        self.route_and_apply(kind, body, Some(round))
    }

    fn route_and_apply(&mut self, kind: u16, body: &[u8], continues: Option<u64>) -> Result<Vec<Answered>, Crashed> {
        let now = self.shards.iter().map(|s| s.engine().now_ms()).max().unwrap();
        let mut out = harbour::router::Gather::default();
        let mut body = body.to_vec();
        let mut continues = continues;
        loop {
            let routed = self.router.route(kind, &body, now, 30_000, continues).expect("routable");
            let Routed::Plan { parts, merge, rest, round } = routed else {
                panic!("one request at a time is never contended");
            };
            let mut answers = Vec::new();
            for part in parts {
                if part.kind == kind::MULTI {
                    let seq = multi::decode(&part.body).unwrap().seq;
                    self.spans.entry(seq).or_default().push(part.shard);
                }
                let (mut answer, waited) = self.step(part.shard, &[(part.kind, &part.body)])?.swap_remove(0);
                // As the shard thread does: the refund count when answered.
                let refunds = self.shards[part.shard].engine().refunds();
                self.settle()?;
                if waited {
                    let inner =
                        if part.kind == kind::MULTI { multi::decode(&part.body).unwrap().mine_kind } else { part.kind };
                    self.shards[part.shard].engine().settle_answers(inner, &mut answer, Some(refunds));
                }
                if !part.claimed.is_empty() {
                    self.router.settle(part.claimed.outcomes(Some(&answer)));
                }
                answers.push(answer);
            }
            out.add(kind, harbour::router::merge(merge, answers), rest.as_ref());
            match rest {
                Some(rest) => {
                    body = rest.body;
                    continues = round;
                }
                None => break,
            }
        }
        let out = out.finish();
        let answer_size = harbour::protocol::kinds::result_code_layout(kind).map_or(out.len(), |(s, _)| s);
        Ok(out.chunks(answer_size.max(1)).map(|a| Answered { answer: a.to_vec() }).collect())
    }
}

/// Seeded mixed traffic: accounts, rates, lines and deposits first, then
/// transfers of every shape and what follows them.
fn workload(seed: u64, requests: usize) -> Vec<Request> {
    let mut rng = Rng(seed);
    let accounts: Vec<u64> = ACCOUNTS.collect();
    let mut out: Vec<Request> = vec![
        (kind::CREATE_ACCOUNTS, encode_all(&accounts.iter().map(|&a| account(a)).collect::<Vec<_>>())),
        (
            kind::SET_FX_RATES,
            encode_all(&[
                FxRate { from: USD, to: HKD, rate_e9: 7_800_000_000 },
                FxRate { from: HKD, to: USD, rate_e9: 127_000_000 },
                FxRate { from: CNY, to: HKD, rate_e9: 1_080_000_000 },
                FxRate { from: HKD, to: CNY, rate_e9: 910_000_000 },
            ]),
        ),
        (kind::SET_CREDIT_LINES, encode_all(&common::micro_credit_lines(&accounts[..4]))),
    ];
    let mut next_id: u128 = 1;
    let mut deposits = Vec::new();
    for &a in &accounts {
        for c in [HKD, USD] {
            deposits.push(deposit(next_id, a, 200_000 + rng.below(100_000), c));
            next_id += 1;
        }
    }
    out.push((kind::SUBMIT_TRANSFERS, encode_all(&deposits)));
    let mut sent: Vec<Transfer> = Vec::new();
    let mut quotes: Vec<QuoteRequest> = Vec::new();
    let (mut loans, mut repayments) = (0u128, 0u128);
    let mut clock = MANUAL_CLOCK_START_MS;
    while out.len() < requests {
        let any_id = |rng: &mut Rng| 1 + rng.below(next_id as u64) as u128;
        let request = match rng.below(20) {
            0..=9 => {
                let mut ts = Vec::new();
                for _ in 0..=rng.below(3) {
                    if !sent.is_empty() && rng.below(10) == 0 {
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
                    match rng.below(12) {
                        0 => {
                            t.credit_account = REMITTANCE_OUT;
                            t.credit_currency = dc;
                            t.destination_country = rng.pick(&[156, 840, 408]);
                        }
                        1 | 2 => t.flags = TRANSFER_PENDING,
                        3 | 4 => {
                            t.flags = TRANSFER_AUTO_CREDIT;
                            t.debit_currency = HKD;
                            t.amount = 50_000 + rng.below(300_000);
                        }
                        5 if dc != cc && !quotes.is_empty() => {
                            // Quote ids are given from 1 in order.
                            let at = rng.below(quotes.len() as u64);
                            let q = quotes[at as usize];
                            (t.debit_currency, t.credit_currency, t.amount) = (q.from, q.to, q.amount);
                            t.fx_quote_id = at + 1;
                        }
                        6 => t.amount = 1_000_000_000,
                        _ => {}
                    }
                    sent.push(t);
                    ts.push(t);
                }
                (kind::SUBMIT_TRANSFERS, encode_all(&ts))
            }
            10 => {
                let action = rng.pick(&[FINALIZE_POST, FINALIZE_POST, FINALIZE_VOID]);
                (kind::FINALIZE_PENDING, encode_all(&[Finalize { transfer_id: any_id(&mut rng), action }]))
            }
            11 => (kind::CANCEL_TRANSFERS, encode_all(&[Id { id: any_id(&mut rng) }])),
            12 => {
                let method = rng.pick(&[METHOD_FACE, METHOD_SMS_OTP]);
                let outcome = rng.pick(&[OUTCOME_PASS, OUTCOME_PASS, OUTCOME_FAIL]);
                (kind::CONFIRM_STEP_UP, encode_all(&[StepUp { transfer_id: any_id(&mut rng), method, outcome }]))
            }
            13 => {
                let outcome = rng.pick(&[OUTCOME_PASS, OUTCOME_FAIL]);
                let s = StepUp { transfer_id: any_id(&mut rng), method: METHOD_MANUAL_REVIEW, outcome };
                (kind::RESOLVE_REVIEW, encode_all(&[s]))
            }
            14 => {
                clock += rng.pick(&[1_000, 60_000, 3_600_000, 86_400_000]);
                (kind::SET_TIME, encode_all(&[SetTime { unix_ms: clock }]))
            }
            15 => {
                let (from, to) = rng.pick(&[(USD, HKD), (HKD, USD), (HKD, CNY)]);
                // Large enough never to round to zero: the switch gives
                // ids even to refused quotes, one shard only to good ones.
                let q = QuoteRequest { from, to, flags: 0, amount: 1_000 + rng.below(20_000) };
                quotes.push(q);
                (kind::FX_QUOTE, encode_all(&[q]))
            }
            16 => {
                loans += 1;
                let d = Disburse {
                    loan_id: LOAN_IDS + loans,
                    account_id: rng.pick(&accounts[..4]),
                    currency: HKD,
                    term_days: 30,
                    principal: 1 + rng.below(20_000),
                };
                (kind::DISBURSE_LOANS, encode_all(&[d]))
            }
            17 if loans > 0 => {
                repayments += 1;
                let r = Repay {
                    repayment_id: REPAYMENT_IDS + repayments,
                    loan_id: LOAN_IDS + 1 + rng.below(loans as u64) as u128,
                    amount: rng.pick(&[1, 500, 5_000]),
                };
                (kind::REPAY_LOANS, encode_all(&[r]))
            }
            _ => {
                let t = deposit(next_id, rng.pick(&accounts), 1 + rng.below(50_000), rng.pick(&CURRENCIES));
                next_id += 1;
                (kind::SUBMIT_TRANSFERS, encode_all(&[t]))
            }
        };
        out.push(request);
    }
    out
}

/// Customer balances, and system balances summed over shards.
fn balance(sim: &Sim, account_id: u64, currency: u16) -> Balance {
    let key = BalanceKey { account_id, currency };
    if account_id >= ACCOUNTS.start {
        return sim.shards[shard_of(account_id, sim.n())].engine().lookup_balance(&key);
    }
    let mut sum = sim.shards[0].engine().lookup_balance(&key);
    for s in &sim.shards[1..] {
        let b = s.engine().lookup_balance(&key);
        sum.balance += b.balance;
        sum.held += b.held;
    }
    sum
}

fn ids_in(work: &[Request]) -> (Vec<u128>, Vec<u128>) {
    let mut transfers = Vec::new();
    let mut loans = Vec::new();
    for (k, body) in work {
        match *k {
            kind::SUBMIT_TRANSFERS => transfers.extend(decode_all::<Transfer>(body).map(|t| t.transfer_id)),
            kind::DISBURSE_LOANS => loans.extend(decode_all::<Disburse>(body).map(|d| d.loan_id)),
            _ => {}
        }
    }
    transfers.sort_unstable();
    transfers.dedup();
    // Micro-loans carry their transfer's id.
    loans.extend(transfers.iter().copied());
    (transfers, loans)
}

/// Runs `work` through one engine and through `shards` simulated shards,
/// comparing every answer and the final state.
fn check_like_one(seed: u64, shards: usize, requests: usize) {
    let work = workload(seed, requests);
    let mut one = Engine::new(config(0, 1).engine, MANUAL_CLOCK_START_MS);
    let storages: Vec<Arc<dyn Storage>> =
        (0..shards).map(|_| Arc::new(MemStorage::new()) as Arc<dyn Storage>).collect();
    let mut sim = Sim::open(&storages).expect("opens");
    sim.continue_rests().expect("no faults");
    let mut crossed = 0;
    for (i, (k, body)) in work.iter().enumerate() {
        let mut expected = Vec::new();
        one.apply(*k, body, one.now_ms(), &mut expected).expect("valid request");
        let answered = sim.request(*k, body).expect("no faults");
        let size = expected.len() / answered.len().max(1);
        for (r, a) in answered.iter().enumerate() {
            let want = &expected[r * size..(r + 1) * size];
            assert_eq!(a.answer, want, "seed {seed} request {i} kind {k:#x} record {r}");
        }
        if *k == kind::SUBMIT_TRANSFERS {
            crossed += decode_all::<Transfer>(body)
                .filter(|t| {
                    t.credit_account >= ACCOUNTS.start
                        && shard_of(t.credit_account, shards) != route_transfer(t, shards)
                })
                .count();
        }
        for s in &sim.shards {
            s.engine().audit().unwrap_or_else(|e| panic!("seed {seed} request {i}: audit: {e}"));
            assert_eq!(s.engine().links().unacked(), 0, "settled");
        }
    }
    assert!(crossed > requests / 4, "seed {seed}: only {crossed} transfers crossed shards");
    let (transfers, loans) = ids_in(&work);
    for id in transfers {
        let at = sim.holder(id, false).unwrap_or(0);
        assert_eq!(sim.shards[at].engine().lookup_transfer(id), one.lookup_transfer(id), "seed {seed} transfer {id}");
    }
    for id in loans {
        let at = sim.holder(id, true).unwrap_or(0);
        assert_eq!(sim.shards[at].engine().lookup_loan(id), one.lookup_loan(id), "seed {seed} loan {id}");
    }
    for account_id in (1..=INTERSHARD).chain(ACCOUNTS) {
        for currency in CURRENCIES {
            let (got, want) =
                (balance(&sim, account_id, currency), one.lookup_balance(&BalanceKey { account_id, currency }));
            assert_eq!(got, want, "seed {seed} account {account_id} currency {currency}");
        }
    }
    let mut cases: Vec<_> = sim.shards.iter().flat_map(|s| s.engine().cases()).collect();
    let mut want = one.cases();
    cases.sort_by_key(|c| c.transfer_id);
    want.sort_by_key(|c| c.transfer_id);
    assert_eq!(cases, want, "seed {seed}: AML cases");
}

#[test]
fn several_shards_decide_like_one_on_a_fixed_seed() {
    check_like_one(7, 3, 300);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn several_shards_decide_like_one(seed in any::<u64>(), shards in 2usize..=4) {
        check_like_one(seed, shards, 160);
    }
}

/// What the channel was told about each transfer it got an answer for.
type Acknowledged = BTreeMap<u128, u8>;

/// Runs `work` on two shards until the machine loses power; fills in what
/// was acknowledged and which requests spanned which shards.
fn run_until_crash(
    storages: &[Arc<dyn Storage>],
    work: &[Request],
    acked: &mut Acknowledged,
    spans: &mut BTreeMap<u64, Vec<usize>>,
) {
    let Ok(mut sim) = Sim::open(storages) else { return };
    if sim.continue_rests().is_err() {
        return;
    }
    for (k, body) in work {
        let answered = sim.request(*k, body);
        spans.clone_from(&sim.spans);
        let Ok(answered) = answered else { return };
        if *k == kind::SUBMIT_TRANSFERS {
            for a in answered {
                let r = TransferResult::decode(&a.answer);
                if r.code == ResultCode::Ok.as_u16() {
                    acked.insert(r.transfer_id, r.state);
                }
            }
        }
    }
}

#[test]
fn every_crash_point_of_the_protocol_recovers() {
    let (points, rolled): (Vec<usize>, Vec<usize>) = [11, 12, 13].into_iter().map(crash_at_every_point).unzip();
    let (points, rolled) = (points.iter().sum::<usize>(), rolled.iter().sum::<usize>());
    eprintln!("{points} crash points recovered, {rolled} request parts rolled forward");
    assert!(points > 600, "only {points} crash points");
    assert!(rolled > 0, "no crash fell between two parts of a request spanning shards");
}

/// Crashes a run of `workload_seed` at every storage operation; returns the
/// crash points and how many request parts recoveries rolled forward.
fn crash_at_every_point(workload_seed: u64) -> (usize, usize) {
    let work = workload(workload_seed, 70);
    // How many storage operations each shard's log takes in a clean run.
    let clean = [MemStorage::new(), MemStorage::new()];
    let storages: Vec<Arc<dyn Storage>> = clean.iter().map(|m| Arc::new(m.clone()) as Arc<dyn Storage>).collect();
    run_until_crash(&storages, &work, &mut Acknowledged::new(), &mut BTreeMap::new());
    let (mut points, mut rolled_forward) = (0, 0);
    for (crashing, clean) in clean.iter().enumerate() {
        for crash_at in 1..=clean.ops() + 1 {
            let seed = (workload_seed << 32) | (crash_at * 2) | crashing as u64;
            let disks: Vec<MemStorage> = (0..2)
                .map(|s| {
                    let plan = FaultPlan { crash_at_op: (s == crashing).then_some(crash_at), fail_sync_number: None };
                    MemStorage::with_faults(plan, seed)
                })
                .collect();
            let storages: Vec<Arc<dyn Storage>> =
                disks.iter().map(|m| Arc::new(m.clone()) as Arc<dyn Storage>).collect();
            let mut acked = Acknowledged::new();
            let mut spans = BTreeMap::new();
            run_until_crash(&storages, &work, &mut acked, &mut spans);
            // Power comes back on both shards' disks.
            let after: Vec<Arc<dyn Storage>> = disks
                .iter()
                .map(|d| Arc::new(d.after_crash(seed.wrapping_mul(0x5851_f42d))) as Arc<dyn Storage>)
                .collect();
            let context = format!("workload {workload_seed}, crash in shard {crashing} at op {crash_at}");
            let mut sim =
                Sim::open(&after).unwrap_or_else(|e| panic!("crash in shard {crashing} at op {crash_at}: {e:?}"));
            // Right after recovery, every round is on all the shards it
            // names or on none; later complete marks also cover rounds lost
            // everywhere, so the rounds are checked here, then forgotten.
            sim.spans = spans;
            check_spans(&sim, &context);
            sim.spans.clear();
            sim.continue_rests().expect("no faults after recovery");
            rolled_forward += sim.rolled_forward;
            sim.settle().expect("no faults after recovery");
            check_recovered(&sim, &acked, &context);
            // The recovered shards go on: a payment each way, then the
            // same checks.
            let (a, b) = (ACCOUNTS.start, ACCOUNTS.start + 1);
            let more = [transfer(1 << 100, a, b, 1, HKD), transfer((1 << 100) + 1, b, a, 1, HKD)];
            sim.request(kind::SUBMIT_TRANSFERS, &encode_all(&more)).expect("no faults after recovery");
            check_recovered(&sim, &acked, &context);
            points += 1;
        }
    }
    (points, rolled_forward)
}

/// A request spanning shards is applied on all the shards it names or on
/// none (contract §6), whichever of them lost power mid-way.
fn check_spans(sim: &Sim, context: &str) {
    for (&seq, shards) in &sim.spans {
        let applied: Vec<bool> = shards.iter().map(|&s| sim.shards[s].engine().multi().has(seq)).collect();
        assert!(
            applied.iter().all(|&a| a) || applied.iter().all(|&a| !a),
            "{context}: request {seq} applied on {applied:?}"
        );
    }
}

fn check_recovered(sim: &Sim, acked: &Acknowledged, context: &str) {
    for (s, shard) in sim.shards.iter().enumerate() {
        shard.engine().audit().unwrap_or_else(|e| panic!("{context}: shard {s} audit: {e}"));
        assert_eq!(shard.engine().links().unacked(), 0, "{context}: shard {s} has something in flight");
    }
    for currency in CURRENCIES {
        let b = balance(sim, INTERSHARD, currency);
        assert_eq!((b.balance, b.held), (0, 0), "{context}: INTERSHARD {currency} does not sum to zero");
        let settlement = balance(sim, SETTLEMENT_IN, currency);
        assert!(settlement.balance <= 0, "{context}: money appeared");
    }
    for (&id, &state) in acked {
        let at = sim.holder(id, false).unwrap_or_else(|| panic!("{context}: acknowledged transfer {id} lost"));
        let now = sim.shards[at].engine().lookup_transfer(id);
        // What was acknowledged as settled stays so; a pending one may have
        // moved on only by the traffic after it.
        if state != STATE_PENDING {
            assert_eq!(now.state, state, "{context}: transfer {id}");
        }
        let others = (0..sim.n()).filter(|&s| s != at && sim.shards[s].engine().lookup_transfer(id).state != 0).count();
        assert_eq!(others, 0, "{context}: transfer {id} stored twice");
    }
}

/// Two shards and two customers, one on each, each with HK$1,000.00.
fn pair() -> (Sim, u64, u64) {
    let storages: Vec<Arc<dyn Storage>> = (0..2).map(|_| Arc::new(MemStorage::new()) as Arc<dyn Storage>).collect();
    let mut sim = Sim::open(&storages).expect("opens");
    sim.continue_rests().expect("no faults");
    let a = ACCOUNTS.clone().find(|&a| shard_of(a, 2) == 0).unwrap();
    let b = ACCOUNTS.clone().find(|&b| shard_of(b, 2) == 1).unwrap();
    sim.request(kind::CREATE_ACCOUNTS, &encode_all(&[account(a), account(b)])).unwrap();
    sim.request(kind::SUBMIT_TRANSFERS, &encode_all(&[deposit(1, a, 100_000, HKD), deposit(2, b, 100_000, HKD)]))
        .unwrap();
    (sim, a, b)
}

fn one_result(sim: &mut Sim, kind: u16, body: &[u8]) -> TransferResult {
    TransferResult::decode(&sim.request(kind, body).unwrap()[0].answer)
}

#[test]
fn a_transfer_in_flight_is_reserved_shown_pending_and_cannot_be_undone() {
    let (mut sim, a, b) = pair();
    // Shard 0 decides; its credit waits in shard 1's inbox.
    let t = transfer(10, a, b, 2_500, HKD);
    let (answer, waits) = sim.step(0, &[(kind::SUBMIT_TRANSFERS, &encode_all(&[t]))]).unwrap().swap_remove(0);
    assert!(waits, "the answer waits for shard 1");
    let r = TransferResult::decode(&answer);
    assert_eq!((r.state, r.holds, r.hold_until_ms), (STATE_PENDING, 32, 0), "in flight");
    let held = sim.shards[0].engine().lookup_balance(&BalanceKey { account_id: a, currency: HKD });
    assert_eq!((held.balance, held.held), (100_000, 2_500), "reserved, not yet moved");
    let credit = sim.shards[1].engine().lookup_balance(&BalanceKey { account_id: b, currency: HKD });
    assert_eq!(credit.balance, 100_000, "not credited before shard 1 applies it");
    for (kind, body) in [
        (kind::CANCEL_TRANSFERS, encode_all(&[Id { id: 10 }])),
        (kind::FINALIZE_PENDING, encode_all(&[Finalize { transfer_id: 10, action: FINALIZE_VOID }])),
        (kind::CONFIRM_STEP_UP, encode_all(&[StepUp { transfer_id: 10, method: METHOD_FACE, outcome: OUTCOME_FAIL }])),
    ] {
        let (answer, _) = sim.step(0, &[(kind, &body)]).unwrap().swap_remove(0);
        let r = TransferResult::decode(&answer);
        assert_eq!((ResultCode::from_u16(r.code), r.state), (Some(ResultCode::InFlight), STATE_PENDING), "{kind:#x}");
    }
    // The same message delivered twice is applied once.
    let duplicate = sim.inbox[1].clone();
    sim.inbox[1].extend(duplicate);
    sim.settle().unwrap();
    let now = sim.shards[0].engine().lookup_transfer(10);
    assert_eq!((now.state, now.holds), (STATE_POSTED, 0));
    assert_eq!(balance(&sim, a, HKD).balance, 97_500);
    assert_eq!(balance(&sim, b, HKD).balance, 102_500);
    assert_eq!(balance(&sim, INTERSHARD, HKD).balance, 0);
    for s in &sim.shards {
        s.engine().audit().unwrap();
    }
}

#[test]
fn a_credit_the_other_shard_cannot_take_is_refunded_and_answered_overflow() {
    let (mut sim, a, b) = pair();
    // b's balance is one cent short of the most a balance holds.
    let top = (i64::MAX as u64) - 100_000 - 1;
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[deposit(3, b, top, HKD)]));
    assert_eq!(r.code, 0);
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[transfer(11, a, b, 2, HKD)]));
    assert_eq!((ResultCode::from_u16(r.code), r.state), (Some(ResultCode::Overflow), STATE_VOIDED));
    assert_eq!(
        (balance(&sim, a, HKD).balance, balance(&sim, a, HKD).held),
        (100_000, 0),
        "the reservation is released"
    );
    assert_eq!(balance(&sim, b, HKD).balance, i64::MAX - 1);
    assert_eq!(balance(&sim, INTERSHARD, HKD).balance, 0);
    // One cent still fits, and posts.
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[transfer(12, a, b, 1, HKD)]));
    assert_eq!((r.code, r.state), (0, STATE_POSTED));
    for s in &sim.shards {
        s.engine().audit().unwrap();
    }
}

#[test]
fn a_pending_transfer_to_another_shard_goes_in_flight_when_released() {
    let (mut sim, a, b) = pair();
    let t = Transfer { flags: TRANSFER_PENDING, ..transfer(13, a, b, 700, HKD) };
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[t]));
    assert_eq!((r.state, r.holds), (STATE_PENDING, 16), "a client hold, nothing sent yet");
    assert_eq!(sim.shards[0].engine().links().unacked(), 0);
    let r = one_result(
        &mut sim,
        kind::FINALIZE_PENDING,
        &encode_all(&[Finalize { transfer_id: 13, action: FINALIZE_POST }]),
    );
    assert_eq!((r.code, r.state), (0, STATE_POSTED), "answered once credited");
    assert_eq!(balance(&sim, b, HKD).balance, 100_700);
    // A conversion to another shard: the FX legs stay on the debit shard.
    sim.request(kind::SET_FX_RATES, &encode_all(&[FxRate { from: HKD, to: USD, rate_e9: 128_000_000 }])).unwrap();
    let t = Transfer { credit_currency: USD, ..transfer(14, a, b, 10_000, HKD) };
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[t]));
    assert_eq!((r.code, r.state, r.credit_amount), (0, STATE_POSTED, 1_280));
    assert_eq!(balance(&sim, b, USD).balance, 1_280);
    let fx = sim.shards[0].engine().lookup_balance(&BalanceKey { account_id: 1, currency: USD });
    assert_eq!(fx.balance, -1_280, "shard 0's FX position paid the dollars");
    assert_eq!(balance(&sim, INTERSHARD, USD).balance, 0);
}

#[test]
fn a_quote_spent_on_one_shard_is_dead_on_the_others_even_before_they_hold_it() {
    let (mut sim, a, b) = pair();
    sim.request(kind::SET_FX_RATES, &encode_all(&[FxRate { from: HKD, to: USD, rate_e9: 128_000_000 }])).unwrap();
    let q = QuoteRequest { from: HKD, to: USD, flags: 0, amount: 10_000 };
    let mut at = Vec::new();
    at.extend_from_slice(&50u64.to_le_bytes());
    at.extend_from_slice(&(MANUAL_CLOCK_START_MS + 30_000).to_le_bytes());
    at.extend_from_slice(&encode_all(&[q]));
    // Shard 0 is given quote 50 and a transfer spends it there before shard
    // 1 is given it (a client that guessed the id).
    sim.step(0, &[(kind::QUOTE_AT, &at)]).unwrap();
    let spend = Transfer { fx_quote_id: 50, credit_currency: USD, ..transfer(20, a, a, 10_000, HKD) };
    assert_eq!(one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[spend])).code, 0);
    let (answer, _) = sim.step(1, &[(kind::QUOTE_AT, &at)]).unwrap().swap_remove(0);
    assert_eq!(Quote::decode(&answer).quote_id, 50, "answered alike on every shard");
    let again = Transfer { fx_quote_id: 50, credit_currency: USD, ..transfer(21, b, b, 10_000, HKD) };
    let r = one_result(&mut sim, kind::SUBMIT_TRANSFERS, &encode_all(&[again]));
    assert_eq!(ResultCode::from_u16(r.code), Some(ResultCode::QuoteInvalid), "spent once only");
    // Ids the switch would never give are refused, not trusted.
    for id in [0u64, 50, u64::MAX] {
        let mut bad = at.clone();
        bad[..8].copy_from_slice(&id.to_le_bytes());
        let (answer, _) = sim.step(0, &[(kind::QUOTE_AT, &bad)]).unwrap().swap_remove(0);
        assert_eq!(Quote::decode(&answer).code, ResultCode::InvalidId.as_u16(), "quote id {id}");
    }
    for s in &sim.shards {
        s.engine().audit().unwrap();
    }
}

#[test]
fn a_switch_whose_shard_does_not_recover_stops_the_others_at_once() {
    // Shard 0 has logged an account whose notice shard 1 never got.
    let good = MemStorage::new();
    let (mut zero, _) = Shard::open(Arc::new(good.clone()), &config(0, 2)).unwrap();
    let (_, waits, result) = zero.step(&[], &[(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024)]))]);
    result.unwrap();
    assert!(waits[0].is_some(), "the answer waits for shard 1");
    drop(zero);
    // Shard 1's disk fails at its first operation.
    let failing = MemStorage::with_faults(FaultPlan { crash_at_op: Some(1), fail_sync_number: None }, 1);
    let storages: Vec<Arc<dyn Storage>> = vec![Arc::new(good), Arc::new(failing)];
    let started = std::time::Instant::now();
    let opened = harbour::shard::Switch::open(config(0, 2), storages);
    assert!(matches!(opened, Err(harbour::shard::OpenError::Recovery { shard: 1, .. })));
    // Not the 5 s a stop gives shards to settle what is in flight.
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
}
