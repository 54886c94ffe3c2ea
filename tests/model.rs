//! Property test: random command sequences against a simple reference
//! model. After every step the engine's answer must equal the model's, every
//! balance must agree, and the engine's audit must hold.

mod common;

use std::collections::BTreeMap;

use harbour::engine::holds::Holds;
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::ResultCode;
use harbour::protocol::records::*;
use proptest::prelude::*;

const ACCOUNTS: [u64; 10] = [1, 2, 3, 4, 5, 1024, 1025, 1026, 1027, 4242];
const CUSTOMERS: [u64; 4] = [1024, 1025, 1026, 1027];
const CURRENCIES: [u16; 4] = [344, 840, 392, 999];
const STEP_UP_MS: u64 = 600_000;
const MANUAL_MS: u64 = 86_400_000;
const CLIENT_MS: u64 = 7 * 86_400_000;
/// AML level 1's limit in the model: low, so random sequences cross it.
const DAILY_LIMIT: i128 = 60_000;
const HK_OFFSET_MS: u64 = 8 * 3_600_000;

#[derive(Clone, Debug)]
enum Cmd {
    Create(u64, u16),
    Submit(Transfer, u8, u64),
    StepUp(u128, u8, u8),
    Resolve(u128, u8, u8),
    Finalize(u128, u8),
    Cancel(u128),
    Advance(u64),
    Lookup(u128),
}

#[derive(Clone, Debug)]
struct MTransfer {
    request: Transfer,
    state: u8,
    holds: u8,
    submitted: u64,
    cooling_until: u64,
    /// Whether AML held it (a case), and how the case ended.
    case: Option<&'static str>,
}

fn hk_day(ms: u64) -> u64 {
    (ms + HK_OFFSET_MS) / 86_400_000
}

/// The reference: the contract's rules written as plainly as possible.
#[derive(Default)]
struct Model {
    now: u64,
    accounts: BTreeMap<u64, (u16, u64)>,
    /// (account, currency) -> (posted, held, incoming)
    balances: BTreeMap<(u64, u16), (i128, i128, i128)>,
    transfers: BTreeMap<u128, MTransfer>,
}

fn end_of(t: &MTransfer, hold: u8) -> u64 {
    match hold {
        1 | 2 => t.submitted + STEP_UP_MS,
        4 => t.cooling_until,
        8 => t.submitted + MANUAL_MS,
        16 => t.submitted + CLIENT_MS,
        _ => unreachable!(),
    }
}

fn soonest(t: &MTransfer) -> u64 {
    [1u8, 2, 4, 8, 16].iter().filter(|h| t.holds & **h != 0).map(|h| end_of(t, *h)).min().unwrap()
}

impl Model {
    fn new() -> Self {
        let mut m = Model { now: MANUAL_CLOCK_START_MS, ..Model::default() };
        for id in 1..=5 {
            m.accounts.insert(id, (344, 0));
        }
        m
    }

    fn bal(&mut self, account: u64, currency: u16) -> &mut (i128, i128, i128) {
        self.balances.entry((account, currency)).or_default()
    }

    fn create(&mut self, id: u64, country: u16) -> ResultCode {
        if id < 1024 {
            return ResultCode::InvalidId;
        }
        if let Some(&(c, r)) = self.accounts.get(&id) {
            return if (c, r) == (country, id) { ResultCode::AlreadyExists } else { ResultCode::AccountExists };
        }
        if !harbour::money::is_country(country) {
            return ResultCode::UnknownCountry;
        }
        self.accounts.insert(id, (country, id));
        ResultCode::Ok
    }

    fn submit(&mut self, t: &Transfer, extra: u8, cooling_until: u64) -> (ResultCode, TransferResult) {
        let zero = |code: ResultCode| {
            (code, TransferResult { transfer_id: t.transfer_id, code: code.as_u16(), ..Default::default() })
        };
        if t.transfer_id == 0 {
            return zero(ResultCode::InvalidId);
        }
        if let Some(existing) = self.transfers.get(&t.transfer_id) {
            let code = if existing.request == *t { ResultCode::AlreadyExists } else { ResultCode::IdConflict };
            return (code, self.result(t.transfer_id, code));
        }
        if !self.accounts.contains_key(&t.debit_account) {
            return zero(ResultCode::DebitAccountNotFound);
        }
        if !self.accounts.contains_key(&t.credit_account) {
            return zero(ResultCode::CreditAccountNotFound);
        }
        if t.debit_account == t.credit_account && t.debit_currency == t.credit_currency {
            return zero(ResultCode::SameAccount);
        }
        if [1, 2, 3, 5].contains(&t.debit_account) || [1, 2, 5].contains(&t.credit_account) {
            return zero(ResultCode::Forbidden);
        }
        if t.amount == 0 {
            return zero(ResultCode::InvalidAmount);
        }
        if harbour::money::CurrencyIndex::of(t.debit_currency).is_none()
            || harbour::money::CurrencyIndex::of(t.credit_currency).is_none()
        {
            return zero(ResultCode::UnknownCurrency);
        }
        if t.destination_country != 0 && !harbour::money::is_country(t.destination_country) {
            return zero(ResultCode::UnknownCountry);
        }
        if t.fx_quote_id != 0 {
            // The contract: a quote that was never given is QUOTE_INVALID.
            return zero(ResultCode::QuoteInvalid);
        }
        if t.debit_currency != t.credit_currency {
            return zero(ResultCode::NoFxRate);
        }
        let amount = i128::from(t.amount);
        let (cp, _, ci) = *self.bal(t.credit_account, t.credit_currency);
        let (dp, dh, _) = *self.bal(t.debit_account, t.debit_currency);
        if amount > i128::from(i64::MAX) || cp + ci + amount > i128::from(i64::MAX) {
            return zero(ResultCode::Overflow);
        }
        let customer = t.debit_account >= 1024;
        if !customer && dp - dh - amount < i128::from(i64::MIN) {
            return zero(ResultCode::Overflow);
        }
        if customer && dp - dh < amount {
            return zero(ResultCode::InsufficientFunds);
        }
        let mut holds = extra | if t.flags & TRANSFER_PENDING != 0 { 16 } else { 0 };
        // AML, written plainly: the day's total is recomputed from every
        // stored transfer of the account that still counts.
        let mut aml = 0;
        if customer && t.debit_account != t.credit_account {
            if t.debit_currency == 344 {
                let today = hk_day(self.now);
                let total: i128 = self
                    .transfers
                    .values()
                    .filter(|m| {
                        m.request.debit_account == t.debit_account && m.request.credit_account != t.debit_account
                    })
                    .filter(|m| m.request.debit_currency == 344 && m.state != STATE_VOIDED)
                    .filter(|m| hk_day(m.submitted) == today)
                    .map(|m| i128::from(m.request.amount))
                    .sum();
                if total + amount > DAILY_LIMIT {
                    aml |= 1;
                }
            } else {
                aml |= 8; // No rate to HKD in the model: MANUAL_REVIEW.
            }
            if t.destination_country == 408 {
                aml |= 2;
            }
        }
        holds |= aml;
        let case = (aml != 0).then_some("pending");
        let mt = MTransfer { request: *t, state: STATE_PENDING, holds, submitted: self.now, cooling_until, case };
        self.transfers.insert(t.transfer_id, mt);
        if holds == 0 {
            self.post(t.transfer_id);
        } else {
            self.bal(t.debit_account, t.debit_currency).1 += amount;
            self.bal(t.credit_account, t.credit_currency).2 += amount;
            self.fire();
        }
        (ResultCode::Ok, self.result(t.transfer_id, ResultCode::Ok))
    }

    fn post(&mut self, id: u128) {
        let t = self.transfers.get_mut(&id).unwrap();
        let r = t.request;
        if t.case.is_some() {
            t.case = Some("passed");
        }
        t.state = STATE_POSTED;
        t.holds = 0;
        let amount = i128::from(r.amount);
        self.bal(r.debit_account, r.debit_currency).0 -= amount;
        self.bal(r.credit_account, r.credit_currency).0 += amount;
    }

    fn unreserve(&mut self, id: u128) {
        let r = self.transfers[&id].request;
        let amount = i128::from(r.amount);
        self.bal(r.debit_account, r.debit_currency).1 -= amount;
        self.bal(r.credit_account, r.credit_currency).2 -= amount;
    }

    fn void(&mut self, id: u128, outcome: &'static str) {
        self.unreserve(id);
        let t = self.transfers.get_mut(&id).unwrap();
        if t.case.is_some() {
            t.case = Some(outcome);
        }
        t.state = STATE_VOIDED;
        t.holds = 0;
    }

    fn release(&mut self, id: u128, hold: u8) {
        let t = self.transfers.get_mut(&id).unwrap();
        t.holds &= !hold;
        if t.holds == 0 {
            self.unreserve(id);
            self.transfers.get_mut(&id).unwrap().state = STATE_PENDING;
            self.post(id);
        }
    }

    /// Fires every due timer, earliest first, ties by id.
    fn fire(&mut self) {
        loop {
            let due = self
                .transfers
                .iter()
                .filter(|(_, t)| t.state == STATE_PENDING)
                .map(|(id, t)| (soonest(t), *id))
                .filter(|(at, _)| *at <= self.now)
                .min();
            let Some((_, id)) = due else { return };
            let t = &self.transfers[&id];
            let closed = [1u8, 2, 8, 16].iter().any(|h| t.holds & h != 0 && end_of(t, *h) <= self.now);
            if closed {
                self.void(id, "expired");
            } else {
                self.release(id, 4);
            }
        }
    }

    fn result(&self, id: u128, code: ResultCode) -> TransferResult {
        let t = &self.transfers[&id];
        TransferResult {
            transfer_id: id,
            code: code.as_u16(),
            state: t.state,
            holds: t.holds,
            debit_amount: t.request.amount,
            credit_amount: t.request.amount,
            rate_e9: 1_000_000_000,
            auto_credit_amount: 0,
            hold_until_ms: if t.state == STATE_PENDING { soonest(t) } else { 0 },
        }
    }

    fn lookup_or(&self, id: u128, code: ResultCode) -> TransferResult {
        if id != 0 && self.transfers.contains_key(&id) {
            self.result(id, code)
        } else {
            TransferResult { transfer_id: id, code: code.as_u16(), ..Default::default() }
        }
    }

    fn find_pending(&self, id: u128) -> Result<(), ResultCode> {
        if id == 0 {
            return Err(ResultCode::InvalidId);
        }
        match self.transfers.get(&id) {
            None => Err(ResultCode::TransferNotFound),
            Some(_) => Ok(()),
        }
    }

    fn waiting(&self, id: u128, hold: u8) -> Result<(), ResultCode> {
        let t = &self.transfers[&id];
        if t.state != STATE_PENDING {
            return Err(ResultCode::NotPending);
        }
        if t.holds & hold == 0 {
            return Err(ResultCode::WrongMethod);
        }
        Ok(())
    }

    fn outcome(&mut self, id: u128, hold: u8, outcome: u8, check: Result<(), ResultCode>) -> TransferResult {
        if let Err(code) = check {
            return self.lookup_or(id, code);
        }
        if outcome == OUTCOME_PASS {
            self.release(id, hold)
        } else {
            self.void(id, "failed")
        }
        self.result(id, ResultCode::Ok)
    }

    fn step_up(&mut self, id: u128, method: u8, outcome: u8) -> TransferResult {
        let hold = [0, 1, 2, 8][method as usize];
        let check = self.find_pending(id).and_then(|()| {
            if method == METHOD_MANUAL_REVIEW { Err(ResultCode::Forbidden) } else { self.waiting(id, hold) }
        });
        self.outcome(id, hold, outcome, check)
    }

    fn resolve(&mut self, id: u128, method: u8, outcome: u8) -> TransferResult {
        let check = self.find_pending(id).and_then(|()| {
            if method != METHOD_MANUAL_REVIEW { Err(ResultCode::InvalidField) } else { self.waiting(id, 8) }
        });
        self.outcome(id, 8, outcome, check)
    }

    fn finalize(&mut self, id: u128, action: u8) -> TransferResult {
        let check = self.find_pending(id).and_then(|()| self.waiting(id, 16));
        if let Err(code) = check {
            return self.lookup_or(id, code);
        }
        if action == FINALIZE_POST {
            self.release(id, 16)
        } else {
            self.void(id, "cancelled")
        }
        self.result(id, ResultCode::Ok)
    }

    fn cancel(&mut self, id: u128) -> TransferResult {
        if let Err(code) = self.find_pending(id) {
            return self.lookup_or(id, code);
        }
        if self.transfers[&id].state != STATE_PENDING {
            return self.lookup_or(id, ResultCode::NotPending);
        }
        self.void(id, "cancelled");
        self.result(id, ResultCode::Ok)
    }

    /// AML cases as (transfer id, outcome), in submission order (ties by
    /// submission sequence: the model stores them in a map, so order by
    /// time, then by the order they were judged, kept in `case_order`).
    fn cases(&self, order: &[u128]) -> Vec<(u128, &'static str)> {
        order.iter().filter_map(|id| self.transfers[id].case.map(|o| (*id, o))).collect()
    }
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let id = 0u128..12;
    let transfer = (
        id.clone(),
        prop::sample::select(&ACCOUNTS[..]),
        prop::sample::select(&ACCOUNTS[..]),
        prop_oneof![
            Just(0u64),
            1u64..50_000,
            Just(50_000u64),
            Just(100_000u64),
            Just(100_001u64),
            Just(i64::MAX as u64),
            Just(u64::MAX)
        ],
        prop::sample::select(&CURRENCIES[..]),
        prop::sample::select(&CURRENCIES[..3]),
        any::<bool>(),
        0u64..4,
    );
    prop_oneof![
        1 => (prop::sample::select(&[1000u64, 1024, 1025, 1026, 1027, 5000][..]), prop::sample::select(&[344u16, 344, 999][..])).prop_map(|(a, c)| Cmd::Create(a, c)),
        8 => (transfer, 0u8..32, 0u64..3, prop::sample::select(&[0u16, 0, 344, 156, 408, 345][..]), prop_oneof![8 => Just(0u64), 1 => Just(5u64)], 0u16..4).prop_map(|((id, d, c, amount, dc, cc, pending, data), holds, cool, country, quote, extra_flags)| {
            let credit_currency = if cc == 344 || dc == 999 { dc } else { cc };
            // AMOUNT_IN_CREDIT_CURRENCY and AUTO_CREDIT change nothing for a
            // same-currency transfer without a credit line; they must still
            // be stored and compared.
            let flags = (if pending { TRANSFER_PENDING } else { 0 }) | (extra_flags & 3);
            let t = Transfer {
                transfer_id: id,
                debit_account: d,
                credit_account: c,
                amount,
                debit_currency: dc,
                credit_currency,
                destination_country: country,
                flags,
                fx_quote_id: quote,
                user_data: data,
            };
            // Holds other than CLIENT come from the caller (AML later).
            Cmd::Submit(t, holds & 0x0F, cool * 400_000)
        }),
        2 => (id.clone(), 1u8..4, 1u8..3).prop_map(|(i, m, o)| Cmd::StepUp(i, m, o)),
        1 => (id.clone(), 1u8..4, 1u8..3).prop_map(|(i, m, o)| Cmd::Resolve(i, m, o)),
        2 => (id.clone(), 1u8..3).prop_map(|(i, a)| Cmd::Finalize(i, a)),
        1 => id.clone().prop_map(Cmd::Cancel),
        2 => prop::sample::select(&[1u64, 300_000, 600_000, 3_600_000, 86_400_000, 7 * 86_400_000][..]).prop_map(Cmd::Advance),
        1 => id.prop_map(Cmd::Lookup),
    ]
}

fn setup() -> (Engine, Model) {
    let mut config = EngineConfig { manual_clock: true, ..EngineConfig::default() };
    // Levels 1 and 2 are modelled; level 3 has its own tests (tests/aml.rs).
    config.aml.daily_limit_hkd_minor = DAILY_LIMIT as u64;
    config.aml.behaviour = false;
    let mut engine = Engine::new(config, MANUAL_CLOCK_START_MS);
    let mut model = Model::new();
    for id in CUSTOMERS {
        engine.create_account(&Account { customer_ref: id, ..common::account(id) });
        model.create(id, 344);
    }
    for (i, id) in CUSTOMERS.iter().enumerate() {
        let t = common::deposit(1000 + i as u128, *id, 100_000, 344);
        engine.submit_transfer(&t);
        model.submit(&t, 0, 0);
    }
    (engine, model)
}

fn compare_balances(engine: &Engine, model: &Model) {
    for &account in &ACCOUNTS {
        for &currency in &CURRENCIES[..3] {
            let got = engine.lookup_balance(&BalanceKey { account_id: account, currency });
            match model.accounts.contains_key(&account) {
                false => assert_eq!(got.code, ResultCode::AccountNotFound.as_u16()),
                true => {
                    let (posted, held, _) = model.balances.get(&(account, currency)).copied().unwrap_or_default();
                    assert_eq!(
                        (i128::from(got.balance), i128::from(got.held)),
                        (posted, held),
                        "balance {account}/{currency}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_model(cmds in prop::collection::vec(cmd(), 1..60)) {
        let (mut engine, mut model) = setup();
        let mut judged = Vec::new();
        for (step, c) in cmds.iter().enumerate() {
            match c {
                Cmd::Create(id, country) => {
                    let a = Account { home_country: *country, ..common::account(*id) };
                    let a = Account { customer_ref: *id, ..a };
                    let got = engine.create_account(&a);
                    prop_assert_eq!(got.code, model.create(*id, *country).as_u16(), "step {} {:?}", step, c);
                }
                Cmd::Submit(t, holds, cooling) => {
                    let holds = Holds::from_bits(*holds).unwrap();
                    let cooling_until = model.now + cooling;
                    let got = engine.submit_with_holds(t, holds, cooling_until);
                    let (code, want) = model.submit(t, holds.bits(), cooling_until);
                    prop_assert_eq!(got, want, "step {} {:?}", step, c);
                    if code == ResultCode::Ok {
                        judged.push(t.transfer_id);
                    }
                }
                Cmd::StepUp(id, m, o) => {
                    let got = engine.confirm_step_up(&StepUp { transfer_id: *id, method: *m, outcome: *o });
                    prop_assert_eq!(got, model.step_up(*id, *m, *o), "step {} {:?}", step, c);
                }
                Cmd::Resolve(id, m, o) => {
                    let got = engine.resolve_review(&StepUp { transfer_id: *id, method: *m, outcome: *o });
                    prop_assert_eq!(got, model.resolve(*id, *m, *o), "step {} {:?}", step, c);
                }
                Cmd::Finalize(id, a) => {
                    let got = engine.finalize_pending(&Finalize { transfer_id: *id, action: *a });
                    prop_assert_eq!(got, model.finalize(*id, *a), "step {} {:?}", step, c);
                }
                Cmd::Cancel(id) => {
                    let got = engine.cancel_transfer(*id);
                    prop_assert_eq!(got, model.cancel(*id), "step {} {:?}", step, c);
                }
                Cmd::Advance(ms) => {
                    model.now += ms;
                    engine.advance(model.now);
                    model.fire();
                }
                Cmd::Lookup(id) => {
                    let want = if *id == 0 { model.lookup_or(0, ResultCode::InvalidId) }
                        else if model.transfers.contains_key(id) { model.result(*id, ResultCode::Ok) }
                        else { model.lookup_or(*id, ResultCode::TransferNotFound) };
                    prop_assert_eq!(engine.lookup_transfer(*id), want, "step {} {:?}", step, c);
                }
            }
            if let Err(e) = engine.audit() {
                prop_assert!(false, "audit after step {} {:?}: {}", step, c, e);
            }
            compare_balances(&engine, &model);
            let cases: Vec<(u128, &str)> = engine.cases().iter().map(|k| (k.transfer_id, k.outcome.name())).collect();
            prop_assert_eq!(cases, model.cases(&judged), "AML cases after step {} {:?}", step, c);
        }
    }
}
