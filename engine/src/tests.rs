//! Engine rules, table-driven: each table reads like the contract.

use super::*;
use crate::protocol::records::*;

const HKD: u16 = 344;
const USD: u16 = 840;
const ALICE: u64 = 1024;
const BOB: u64 = 1025;
const CAROL: u64 = 1026;
const DAY_MS: u64 = 86_400_000;

fn engine() -> Engine {
    let mut e = Engine::new(EngineConfig { manual_clock: true, ..EngineConfig::default() }, MANUAL_CLOCK_START_MS);
    for id in [ALICE, BOB, CAROL] {
        let r = e.create_account(&Account { account_id: id, kind: 1, flags: 0, home_country: 344, customer_ref: id });
        assert_eq!(r.code, 0);
    }
    // Alice has HK$1,000.00, Bob nothing, Carol US$50.00.
    assert_eq!(e.submit_transfer(&deposit(9_001, ALICE, 100_000, HKD)).code, 0);
    assert_eq!(e.submit_transfer(&deposit(9_002, CAROL, 5_000, USD)).code, 0);
    e
}

fn deposit(id: u128, to: u64, amount: u64, currency: u16) -> Transfer {
    transfer(id, book::SETTLEMENT_IN, to, amount, currency)
}

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

fn balance(e: &Engine, account: u64, currency: u16) -> (i64, u64) {
    let b = e.lookup_balance(&BalanceKey { account_id: account, currency });
    assert_eq!(b.code, 0, "balance of {account}");
    (b.balance, b.held)
}

fn code(c: u16) -> ResultCode {
    ResultCode::from_u16(c).expect("a defined code")
}

/// Applies each case to the same engine in order; every answer must carry
/// the expected code and the audit must hold after each.
fn check_transfers(e: &mut Engine, cases: &[(&str, Transfer, ResultCode)]) {
    for (name, t, expected) in cases {
        let r = e.submit_transfer(t);
        assert_eq!(code(r.code), *expected, "{name}");
        assert_eq!(r.transfer_id, t.transfer_id, "{name}: id echoed");
        e.audit().unwrap_or_else(|err| panic!("{name}: audit: {err}"));
    }
}

#[test]
fn transfer_codes_in_precedence_order() {
    let mut e = engine();
    let ok = transfer(1, ALICE, BOB, 100, HKD);
    let t = |f: &dyn Fn(&mut Transfer)| {
        let mut t = transfer(50, ALICE, BOB, 100, HKD);
        f(&mut t);
        t
    };
    check_transfers(
        &mut e,
        &[
            ("first transfer posts", ok, ResultCode::Ok),
            ("identical resend", ok, ResultCode::AlreadyExists),
            ("same id, other amount", Transfer { amount: 101, ..ok }, ResultCode::IdConflict),
            ("same id, other user_data", Transfer { user_data: 1, ..ok }, ResultCode::IdConflict),
            (
                "zero id beats everything",
                t(&|t| {
                    t.transfer_id = 0;
                    t.debit_account = 77;
                }),
                ResultCode::InvalidId,
            ),
            (
                "debit missing before credit missing",
                t(&|t| {
                    t.debit_account = 7777;
                    t.credit_account = 8888;
                }),
                ResultCode::DebitAccountNotFound,
            ),
            ("system id that is not an account", t(&|t| t.debit_account = 7), ResultCode::DebitAccountNotFound),
            ("INTERSHARD is the shards' own", t(&|t| t.debit_account = 6), ResultCode::Forbidden),
            ("credit missing", t(&|t| t.credit_account = 8888), ResultCode::CreditAccountNotFound),
            (
                "same account before forbidden and amount",
                t(&|t| {
                    t.credit_account = ALICE;
                    t.amount = 0;
                }),
                ResultCode::SameAccount,
            ),
            ("debit FX_POSITION", t(&|t| t.debit_account = book::FX_POSITION), ResultCode::Forbidden),
            ("debit LOAN_FUNDING", t(&|t| t.debit_account = book::LOAN_FUNDING), ResultCode::Forbidden),
            ("debit REMITTANCE_OUT", t(&|t| t.debit_account = book::REMITTANCE_OUT), ResultCode::Forbidden),
            ("debit INTEREST_INCOME", t(&|t| t.debit_account = book::INTEREST_INCOME), ResultCode::Forbidden),
            ("credit FX_POSITION", t(&|t| t.credit_account = book::FX_POSITION), ResultCode::Forbidden),
            ("credit LOAN_FUNDING", t(&|t| t.credit_account = book::LOAN_FUNDING), ResultCode::Forbidden),
            ("credit INTEREST_INCOME", t(&|t| t.credit_account = book::INTEREST_INCOME), ResultCode::Forbidden),
            (
                "forbidden before zero amount",
                t(&|t| {
                    t.credit_account = book::FX_POSITION;
                    t.amount = 0;
                }),
                ResultCode::Forbidden,
            ),
            (
                "zero amount before unknown currency",
                t(&|t| {
                    t.amount = 0;
                    t.debit_currency = 999;
                }),
                ResultCode::InvalidAmount,
            ),
            (
                "unknown debit currency",
                t(&|t| {
                    t.debit_currency = 999;
                    t.credit_currency = 999;
                }),
                ResultCode::UnknownCurrency,
            ),
            ("unknown credit currency", t(&|t| t.credit_currency = 1), ResultCode::UnknownCurrency),
            ("unknown country", t(&|t| t.destination_country = 345), ResultCode::UnknownCountry),
            (
                "unknown country before quote",
                t(&|t| {
                    t.destination_country = 999;
                    t.fx_quote_id = 3;
                }),
                ResultCode::UnknownCountry,
            ),
            ("a quote nobody gave", t(&|t| t.fx_quote_id = 3), ResultCode::QuoteInvalid),
            ("no rate yet for a cross", t(&|t| t.credit_currency = USD), ResultCode::NoFxRate),
            (
                "conversion within one account is not SAME_ACCOUNT",
                t(&|t| {
                    t.credit_account = ALICE;
                    t.credit_currency = USD;
                }),
                ResultCode::NoFxRate,
            ),
            (
                "amount beyond i64",
                t(&|t| {
                    t.debit_account = book::SETTLEMENT_IN;
                    t.amount = u64::MAX;
                }),
                ResultCode::Overflow,
            ),
            ("overflow before insufficient funds", t(&|t| t.amount = u64::MAX), ResultCode::Overflow),
            ("more than Alice has", t(&|t| t.amount = 100_000), ResultCode::InsufficientFunds),
            ("undefined flag bit (library only)", t(&|t| t.flags = 8), ResultCode::InvalidField),
            ("domestic country 0 is fine", t(&|t| t.destination_country = 0), ResultCode::Ok),
            ("Hong Kong as destination", transfer(51, ALICE, BOB, 1, HKD), ResultCode::Ok),
            (
                "cross-border to REMITTANCE_OUT",
                Transfer { destination_country: 156, ..transfer(52, ALICE, book::REMITTANCE_OUT, 1, HKD) },
                ResultCode::Ok,
            ),
            ("withdrawal to SETTLEMENT_IN", transfer(53, ALICE, book::SETTLEMENT_IN, 1, HKD), ResultCode::Ok),
            (
                "exactly the rest of Alice's money",
                transfer(54, ALICE, BOB, 100_000 - 100 - 100 - 3, HKD),
                ResultCode::Ok,
            ),
            ("one cent more is too much", transfer(55, ALICE, BOB, 1, HKD), ResultCode::InsufficientFunds),
        ],
    );
    assert_eq!(balance(&e, ALICE, HKD), (0, 0));
    assert_eq!(balance(&e, BOB, HKD), (100_000 - 2, 0), "all but the remittance and the withdrawal");
    assert_eq!(balance(&e, book::REMITTANCE_OUT, HKD), (1, 0));
}

#[test]
fn rejected_transfer_is_not_stored_and_is_judged_afresh() {
    let mut e = engine();
    let t = transfer(7, ALICE, BOB, 200_000, HKD);
    let r = e.submit_transfer(&t);
    assert_eq!(code(r.code), ResultCode::InsufficientFunds);
    assert_eq!((r.state, r.debit_amount), (STATE_NONE, 0), "rejected: nothing else shown");
    assert_eq!(code(e.lookup_transfer(7).code), ResultCode::TransferNotFound);
    e.submit_transfer(&deposit(8, ALICE, 100_000, HKD));
    assert_eq!(code(e.submit_transfer(&t).code), ResultCode::Ok, "same id, now funded");
}

#[test]
fn id_conflict_shows_the_stored_transfer() {
    let mut e = engine();
    let t = transfer(5, ALICE, BOB, 300, HKD);
    e.submit_transfer(&t);
    let r = e.submit_transfer(&Transfer { credit_account: CAROL, ..t });
    assert_eq!(code(r.code), ResultCode::IdConflict);
    assert_eq!((r.state, r.debit_amount, r.credit_amount, r.rate_e9), (STATE_POSTED, 300, 300, RATE_ONE_E9));
    assert_eq!(balance(&e, CAROL, HKD), (0, 0), "conflict moved nothing");
}

#[test]
fn system_account_overflow_and_credit_overflow() {
    const EUR: u16 = 978;
    let mut e = engine();
    let big = i64::MAX as u64;
    check_transfers(
        &mut e,
        &[
            ("Bob receives i64::MAX", deposit(1, BOB, big, EUR), ResultCode::Ok),
            ("one more overflows Bob", deposit(2, BOB, 1, EUR), ResultCode::Overflow),
            ("settlement reaches i64::MIN", deposit(3, ALICE, 1, EUR), ResultCode::Ok),
            ("settlement would pass i64::MIN", deposit(4, ALICE, 1, EUR), ResultCode::Overflow),
        ],
    );
    assert_eq!(balance(&e, book::SETTLEMENT_IN, EUR), (i64::MIN, 0));
}

#[test]
fn accounts_in_precedence_order() {
    let mut e = engine();
    let a = Account { account_id: 5000, kind: 1, flags: 0, home_country: 344, customer_ref: 9 };
    let cases: &[(&str, Account, ResultCode)] = &[
        ("new", a, ResultCode::Ok),
        ("identical resend", a, ResultCode::AlreadyExists),
        ("same id, other ref", Account { customer_ref: 10, ..a }, ResultCode::AccountExists),
        ("same id, other country and unknown", Account { home_country: 999, ..a }, ResultCode::AccountExists),
        ("system range", Account { account_id: 1023, ..a }, ResultCode::InvalidId),
        ("system account id", Account { account_id: 4, ..a }, ResultCode::InvalidId),
        ("zero", Account { account_id: 0, ..a }, ResultCode::InvalidId),
        ("unknown country", Account { account_id: 5001, home_country: 999, ..a }, ResultCode::UnknownCountry),
        ("country 0 is not assigned", Account { account_id: 5001, home_country: 0, ..a }, ResultCode::UnknownCountry),
        ("kind 2 (library only)", Account { account_id: 5001, kind: 2, ..a }, ResultCode::InvalidField),
        ("Macau customer", Account { account_id: 5001, home_country: 446, ..a }, ResultCode::Ok),
    ];
    for (name, account, expected) in cases {
        let r = e.create_account(account);
        assert_eq!((r.key, code(r.code)), (account.account_id, *expected), "{name}");
    }
    assert_eq!(e.book().account_count(), 6 + 3 + 2);
}

#[test]
fn lookups_and_clock_codes() {
    let mut e = engine();
    let lookup = |e: &Engine, account_id, currency| code(e.lookup_balance(&BalanceKey { account_id, currency }).code);
    assert_eq!(lookup(&e, 4242, HKD), ResultCode::AccountNotFound);
    assert_eq!(lookup(&e, 4242, 999), ResultCode::AccountNotFound, "existence before values");
    assert_eq!(lookup(&e, ALICE, 999), ResultCode::UnknownCurrency);
    assert_eq!(lookup(&e, ALICE, 392), ResultCode::Ok, "untouched currency is zero");
    assert_eq!(balance(&e, book::SETTLEMENT_IN, HKD), (-100_000, 0));
    assert_eq!(code(e.lookup_transfer(0).code), ResultCode::InvalidId);
    assert_eq!(code(e.lookup_transfer(404).code), ResultCode::TransferNotFound);

    let now = e.now_ms();
    assert_eq!(code(e.set_time(&SetTime { unix_ms: now - 1 }, 0).code), ResultCode::TimeBackwards);
    assert_eq!(code(e.set_time(&SetTime { unix_ms: now }, 0).code), ResultCode::Ok, "standing still is fine");
    assert_eq!(code(e.set_time(&SetTime { unix_ms: now + 5 }, 3).code), ResultCode::Ok);
    assert_eq!(e.now_ms(), now + 5);
    let mut system = Engine::new(EngineConfig::default(), 0);
    let r = system.set_time(&SetTime { unix_ms: 10 }, 2);
    assert_eq!((r.key, code(r.code)), (2, ResultCode::ClockNotManual));
}

fn pending(id: u128, debit: u64, credit: u64, amount: u64) -> Transfer {
    Transfer { flags: TRANSFER_PENDING, ..transfer(id, debit, credit, amount, HKD) }
}

#[test]
fn client_pending_reserves_then_posts_or_voids() {
    let mut e = engine();
    let start = e.now_ms();
    let r = e.submit_transfer(&pending(1, ALICE, BOB, 60_000));
    assert_eq!((code(r.code), r.state, r.holds), (ResultCode::Ok, STATE_PENDING, Holds::CLIENT.bits()));
    assert_eq!(r.hold_until_ms, start + 7 * DAY_MS, "CLIENT window is 7 days");
    assert_eq!(balance(&e, ALICE, HKD), (100_000, 60_000), "reserved, not moved");
    assert_eq!(balance(&e, BOB, HKD), (0, 0));
    assert_eq!(
        code(e.submit_transfer(&transfer(2, ALICE, BOB, 40_001, HKD)).code),
        ResultCode::InsufficientFunds,
        "held money is not available"
    );
    let r = e.finalize_pending(&Finalize { transfer_id: 1, action: FINALIZE_POST });
    assert_eq!((code(r.code), r.state, r.holds, r.hold_until_ms), (ResultCode::Ok, STATE_POSTED, 0, 0));
    assert_eq!(balance(&e, ALICE, HKD), (40_000, 0));
    assert_eq!(balance(&e, BOB, HKD), (60_000, 0));
    e.audit().expect("audit");

    e.submit_transfer(&pending(3, ALICE, BOB, 10_000));
    let r = e.finalize_pending(&Finalize { transfer_id: 3, action: FINALIZE_VOID });
    assert_eq!((code(r.code), r.state), (ResultCode::Ok, STATE_VOIDED));
    assert_eq!(balance(&e, ALICE, HKD), (40_000, 0), "void released the reservation");

    e.submit_transfer(&pending(4, ALICE, BOB, 10_000));
    let r = e.cancel_transfer(4);
    assert_eq!((code(r.code), r.state), (ResultCode::Ok, STATE_VOIDED));
    e.audit().expect("audit");

    let cases: &[(&str, ResultCode, ResultCode)] = &[
        (
            "finalize posted",
            code(e.finalize_pending(&Finalize { transfer_id: 1, action: 1 }).code),
            ResultCode::NotPending,
        ),
        (
            "finalize voided",
            code(e.finalize_pending(&Finalize { transfer_id: 3, action: 2 }).code),
            ResultCode::NotPending,
        ),
        (
            "finalize unknown",
            code(e.finalize_pending(&Finalize { transfer_id: 99, action: 1 }).code),
            ResultCode::TransferNotFound,
        ),
        (
            "finalize id 0",
            code(e.finalize_pending(&Finalize { transfer_id: 0, action: 1 }).code),
            ResultCode::InvalidId,
        ),
        ("cancel posted", code(e.cancel_transfer(1).code), ResultCode::NotPending),
        ("cancel unknown", code(e.cancel_transfer(99).code), ResultCode::TransferNotFound),
    ];
    for (name, got, expected) in cases {
        assert_eq!(got, expected, "{name}");
    }
    let r = e.lookup_transfer(4);
    assert_eq!((code(r.code), r.state, r.debit_amount), (ResultCode::Ok, STATE_VOIDED, 10_000));
}

#[test]
fn client_hold_expires_at_the_end_of_its_window() {
    let mut e = engine();
    let start = e.now_ms();
    e.submit_transfer(&pending(1, ALICE, BOB, 500));
    e.advance(start + 7 * DAY_MS - 1);
    assert_eq!(e.lookup_transfer(1).state, STATE_PENDING, "one ms before the end");
    e.advance(start + 7 * DAY_MS);
    assert_eq!(e.lookup_transfer(1).state, STATE_VOIDED, "at the end the window has closed");
    assert_eq!(balance(&e, ALICE, HKD), (100_000, 0));
    assert_eq!(e.pending_count(), 0);
    e.audit().expect("audit");
}

#[test]
fn step_up_holds_combine_and_release_one_by_one() {
    let mut e = engine();
    let start = e.now_ms();
    let held = Holds::FACE_REVIEW.with(Holds::SMS_OTP);
    let r = e.submit_with_holds(&transfer(1, ALICE, BOB, 700, HKD), held, 0);
    assert_eq!((r.state, r.holds, r.hold_until_ms), (STATE_PENDING, 3, start + 10 * 60_000));
    let step = |method, outcome| StepUp { transfer_id: 1, method, outcome };
    let cases: &[(&str, StepUp, bool, ResultCode, u8, u8)] = &[
        (
            "manual review by a channel",
            step(METHOD_MANUAL_REVIEW, OUTCOME_PASS),
            false,
            ResultCode::Forbidden,
            STATE_PENDING,
            3,
        ),
        (
            "operator with a face method",
            step(METHOD_FACE, OUTCOME_PASS),
            true,
            ResultCode::InvalidField,
            STATE_PENDING,
            3,
        ),
        (
            "operator, no manual hold",
            step(METHOD_MANUAL_REVIEW, OUTCOME_PASS),
            true,
            ResultCode::WrongMethod,
            STATE_PENDING,
            3,
        ),
        ("face passes", step(METHOD_FACE, OUTCOME_PASS), false, ResultCode::Ok, STATE_PENDING, 2),
        ("face again", step(METHOD_FACE, OUTCOME_PASS), false, ResultCode::WrongMethod, STATE_PENDING, 2),
        ("sms passes: posts", step(METHOD_SMS_OTP, OUTCOME_PASS), false, ResultCode::Ok, STATE_POSTED, 0),
        ("sms after posting", step(METHOD_SMS_OTP, OUTCOME_PASS), false, ResultCode::NotPending, STATE_POSTED, 0),
    ];
    for (name, s, operator, expected, state, holds) in cases {
        let r = if *operator { e.resolve_review(s) } else { e.confirm_step_up(s) };
        assert_eq!((code(r.code), r.state, r.holds), (*expected, *state, *holds), "{name}");
        e.audit().unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    assert_eq!(balance(&e, BOB, HKD), (700, 0));

    e.submit_with_holds(&transfer(2, ALICE, BOB, 700, HKD), Holds::MANUAL_REVIEW.with(Holds::SMS_OTP), 0);
    let r = e.confirm_step_up(&StepUp { transfer_id: 2, method: METHOD_SMS_OTP, outcome: OUTCOME_FAIL });
    assert_eq!((code(r.code), r.state), (ResultCode::Ok, STATE_VOIDED), "one FAIL voids");
    let r = e.resolve_review(&StepUp { transfer_id: 3, method: METHOD_MANUAL_REVIEW, outcome: OUTCOME_PASS });
    assert_eq!(code(r.code), ResultCode::TransferNotFound);
    e.audit().expect("audit");
}

#[test]
fn cooling_off_releases_at_its_end_and_windows_void() {
    let mut e = engine();
    let start = e.now_ms();
    // Cooling-off for 5 minutes plus a face check (10-minute window).
    let holds = Holds::COOLING_OFF.with(Holds::FACE_REVIEW);
    let r = e.submit_with_holds(&transfer(1, ALICE, BOB, 100, HKD), holds, start + 5 * 60_000);
    assert_eq!(r.hold_until_ms, start + 5 * 60_000, "soonest end");
    e.advance(start + 5 * 60_000);
    let r = e.lookup_transfer(1);
    assert_eq!((r.state, r.holds, r.hold_until_ms), (STATE_PENDING, 1, start + 10 * 60_000), "cooling-off over");
    e.advance(start + 10 * 60_000);
    assert_eq!(e.lookup_transfer(1).state, STATE_VOIDED, "face window closed unpassed");

    // Cooling-off alone posts at its end.
    let r = e.submit_with_holds(&transfer(2, ALICE, BOB, 100, HKD), Holds::COOLING_OFF, e.now_ms() + DAY_MS);
    assert_eq!(r.state, STATE_PENDING);
    let r = e.cancel_transfer(2);
    assert_eq!(r.state, STATE_VOIDED, "cancel works during cooling-off");
    e.submit_with_holds(&transfer(3, ALICE, BOB, 100, HKD), Holds::COOLING_OFF, e.now_ms() + DAY_MS);
    e.advance(e.now_ms() + DAY_MS);
    assert_eq!(e.lookup_transfer(3).state, STATE_POSTED);
    assert_eq!(balance(&e, BOB, HKD), (100, 0));

    // A cooling-off period already over posts in the same step.
    let r = e.submit_with_holds(&transfer(4, ALICE, BOB, 100, HKD), Holds::COOLING_OFF, e.now_ms());
    assert_eq!(r.state, STATE_POSTED);
    e.audit().expect("audit");
}

#[test]
fn timers_due_together_all_fire_in_one_advance() {
    // Both are pending on cooling-off ending at the same instant. Funds are
    // reserved at submission, so the firing order cannot change balances;
    // the (due, id) order keeps the stored state identical on replay, which
    // the crash and replay tests check by state hash.
    let mut e = engine();
    let end = e.now_ms() + 1000;
    e.submit_with_holds(&transfer(20, ALICE, BOB, 60_000, HKD), Holds::COOLING_OFF, end);
    e.submit_with_holds(&transfer(10, ALICE, CAROL, 40_000, HKD), Holds::COOLING_OFF, end);
    assert_eq!(e.advance(end), 2);
    assert_eq!(e.lookup_transfer(10).state, STATE_POSTED);
    assert_eq!(e.lookup_transfer(20).state, STATE_POSTED);
    assert_eq!(balance(&e, ALICE, HKD), (0, 0));
    e.audit().expect("audit");
}

#[test]
fn apply_decodes_bodies_and_refuses_bad_lengths() {
    let mut e = engine();
    let body = encode_all(&[transfer(1, ALICE, BOB, 10, HKD), transfer(2, ALICE, BOB, 0, HKD)]);
    let mut out = Vec::new();
    e.apply(kind::SUBMIT_TRANSFERS, &body, e.now_ms(), &mut out).expect("applies");
    let results: Vec<TransferResult> = decode_all(&out).collect();
    assert_eq!(results.iter().map(|r| code(r.code)).collect::<Vec<_>>(), [ResultCode::Ok, ResultCode::InvalidAmount]);
    assert_eq!(
        e.apply(kind::SUBMIT_TRANSFERS, &body[..63], 0, &mut out),
        Err(EngineError::BadLength { kind: kind::SUBMIT_TRANSFERS, len: 63 })
    );
    assert_eq!(e.apply(0x7777, &[], 0, &mut out), Err(EngineError::UnknownKind(0x7777)));
    assert_eq!(e.apply(kind::TICK, &[1], 0, &mut out), Err(EngineError::BadLength { kind: kind::TICK, len: 1 }));
    out.clear();
    e.apply(kind::SUBMIT_TRANSFERS, &[], 0, &mut out).expect("count 0 is allowed");
    assert!(out.is_empty());
}

#[test]
fn a_snapshot_from_before_aml_still_decodes() {
    // Version 2 had no AML fields, version 3 no credit: with AML off, no
    // pending transfers, no profiles and no loans, a version 4 encoding is
    // version 2's plus two empty AML sections and three empty credit ones
    // (40 zero bytes).
    let config = EngineConfig {
        manual_clock: true,
        aml: crate::aml::AmlConfig { enabled: false, ..Default::default() },
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, MANUAL_CLOCK_START_MS);
    e.create_account(&Account { account_id: ALICE, kind: 1, flags: 0, home_country: 344, customer_ref: 1 });
    e.submit_transfer(&deposit(1, ALICE, 500, HKD));
    let mut v10 = Vec::new();
    e.encode_state(&mut v10);
    // Version 10 added model 3's payee memories: a count (0 here) after
    // the inbound states' count.
    let at = v10.len() - 108 - 16;
    assert_eq!(v10[at - 16..v10.len() - 108], [0; 32], "no profiles, inbound states, payee memories or cases");
    let mut v9 = [&v10[..at], &v10[at + 8..]].concat();
    v9[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v9).expect("version 9 decodes").state_hash(), e.state_hash());
    // Version 9 added the mule rule's inbound states: a count (0 here)
    // between the profiles and the cases, whose section ends before the
    // credit (24 bytes), links (44) and multi-shard (40) sections.
    let at = v9.len() - 108 - 16;
    assert_eq!(v9[at - 8..v9.len() - 108], [0; 24], "no profiles, inbound states or cases");
    let mut v7 = [&v9[..at], &v9[at + 8..]].concat();
    v7[4..8].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v7).expect("version 8 decodes").state_hash(), e.state_hash());
    // Version 8 changed only the profiles' words (none here).
    // Version 7 added who opened each account: a u32 after each account
    // entry of 19 bytes (0 here: none was opened by a channel).
    assert_eq!(v7[16..24], 7u64.to_le_bytes(), "six system accounts and Alice");
    let mut v6 = v7[..24].to_vec();
    for at in (0..7).map(|i| 24 + i * 23) {
        assert_eq!(v7[at + 19..at + 23], [0; 4]);
        v6.extend_from_slice(&v7[at..at + 19]);
    }
    v6.extend_from_slice(&v7[24 + 7 * 23..]);
    v6[4..8].copy_from_slice(&6u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v6).expect("version 6 decodes").state_hash(), e.state_hash());
    // Version 6 added the rounds of requests spanning shards (40 zero
    // bytes for a shard that never saw one).
    assert_eq!(v6[v6.len() - 40..], [0; 40]);
    let mut v5 = v6[..v6.len() - 40].to_vec();
    v5[4..8].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v5).expect("version 5 decodes").state_hash(), e.state_hash());
    // Version 5 added INTERSHARD (the sixth account entry, 19 bytes, never
    // touched so without balances) and the links section (44 bytes for one
    // shard, and no quote spent early).
    let mut v4 = v5[..v5.len() - 44].to_vec();
    assert_eq!(v4[16..24], 7u64.to_le_bytes(), "six system accounts and Alice");
    v4[16..24].copy_from_slice(&6u64.to_le_bytes());
    let sixth = 24 + 5 * 19;
    assert_eq!(v4[sixth..sixth + 8], 6u64.to_le_bytes());
    v4.drain(sixth..sixth + 19);
    v4[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v4).expect("version 4 decodes").state_hash(), e.state_hash());
    assert_eq!(v4[v4.len() - 40..], [0; 40]);
    let mut v3 = v4[..v4.len() - 24].to_vec();
    v3[4..8].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(Engine::decode_state(config, &v3).expect("version 3 decodes").state_hash(), e.state_hash());
    let mut v2 = v4[..v4.len() - 40].to_vec();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let restored = Engine::decode_state(config, &v2).expect("version 2 decodes");
    assert_eq!(restored.state_hash(), e.state_hash());
    v2[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(Engine::decode_state(config, &v2).is_err(), "version 1 does not");
}

#[test]
fn snapshot_round_trips_exactly() {
    let mut e = engine();
    e.submit_transfer(&pending(1, ALICE, BOB, 500));
    e.submit_with_holds(&transfer(2, CAROL, BOB, 5, USD), Holds::COOLING_OFF, e.now_ms() + 60_000);
    e.submit_transfer(&transfer(3, ALICE, CAROL, 5, HKD));
    let mut bytes = Vec::new();
    e.encode_state(&mut bytes);
    let restored = Engine::decode_state(*e.config(), &bytes).expect("decodes");
    assert_eq!(restored.state_hash(), e.state_hash());
    assert_eq!(restored.lookup_transfer(1), e.lookup_transfer(1));

    // Changing any value changes the hash; damaged bytes never decode into a
    // state that breaks the audit.
    let mut other = e.clone();
    other.submit_transfer(&transfer(4, ALICE, CAROL, 1, HKD));
    assert_ne!(other.state_hash(), e.state_hash());
    assert!(Engine::decode_state(*e.config(), &bytes[..bytes.len() - 1]).is_err(), "truncated");
    // A damaged encoding either fails to decode or decodes to another state
    // (never silently to the original), which then round-trips exactly.
    let mut decoded = 0;
    for at in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5A;
        if let Ok(engine) = Engine::decode_state(*e.config(), &damaged) {
            assert_ne!(engine.state_hash(), e.state_hash(), "byte {at}");
            let mut again = Vec::new();
            engine.encode_state(&mut again);
            let twice = Engine::decode_state(*e.config(), &again).expect("a canonical encoding decodes");
            assert_eq!(twice.state_hash(), engine.state_hash(), "byte {at}");
            decoded += 1;
        }
    }
    assert!(decoded > 0, "some damage (customer refs, user data) still decodes")
}

#[test]
fn audit_catches_broken_books() {
    let mut e = engine();
    e.submit_transfer(&pending(1, ALICE, BOB, 500));
    e.audit().expect("healthy");
    let mut leaked = e.clone();
    leaked.book.balance_mut(ALICE, CurrencyIndex::of(HKD).unwrap()).held += 1;
    assert!(matches!(leaked.audit(), Err(AuditError::ReservationMismatch { field: "held", .. })));
    let mut minted = e.clone();
    minted.book.balance_mut(BOB, CurrencyIndex::of(HKD).unwrap()).posted += 1;
    assert!(matches!(minted.audit(), Err(AuditError::NonZeroSum { currency: 344, sum: 1 })));
    let mut negative = e.clone();
    negative.book.balance_mut(BOB, CurrencyIndex::of(HKD).unwrap()).posted -= 1;
    negative.book.balance_mut(book::SETTLEMENT_IN, CurrencyIndex::of(HKD).unwrap()).posted += 1;
    assert!(matches!(negative.audit(), Err(AuditError::NegativeCustomer { account: BOB, .. })));
}

// ---- FX ---------------------------------------------------------------------

const JPY: u16 = 392;
const CNY: u16 = 156;

fn rate(e: &mut Engine, from: u16, to: u16, rate_e9: u64) {
    let r = e.set_fx_rate(&FxRate { from, to, rate_e9 }, 0);
    assert_eq!(code(r.code), ResultCode::Ok, "rate {from}->{to}");
}

fn fx_engine() -> Engine {
    let mut e = engine();
    rate(&mut e, HKD, USD, 128_000_000);
    rate(&mut e, USD, HKD, 7_780_000_000);
    rate(&mut e, HKD, CNY, 923_456_789);
    e
}

fn cross(id: u128, debit: u64, credit: u64, amount: u64, from: u16, to: u16) -> Transfer {
    Transfer { debit_currency: from, credit_currency: to, ..transfer(id, debit, credit, amount, from) }
}

#[test]
fn rates_are_set_with_codes() {
    let mut e = engine();
    let cases: &[(&str, FxRate, ResultCode)] = &[
        ("a rate", FxRate { from: HKD, to: USD, rate_e9: 128_000_000 }, ResultCode::Ok),
        ("unknown currency", FxRate { from: 999, to: USD, rate_e9: 1 }, ResultCode::UnknownCurrency),
        ("unknown before same", FxRate { from: 999, to: 999, rate_e9: 0 }, ResultCode::UnknownCurrency),
        ("to itself", FxRate { from: USD, to: USD, rate_e9: 1 }, ResultCode::InvalidField),
        ("zero", FxRate { from: USD, to: HKD, rate_e9: 0 }, ResultCode::InvalidField),
    ];
    for (i, (name, r, expected)) in cases.iter().enumerate() {
        let got = e.set_fx_rate(r, i as u64);
        assert_eq!((got.key, code(got.code)), (i as u64, *expected), "{name}");
    }
}

#[test]
fn a_conversion_moves_both_legs_through_fx_position() {
    let mut e = fx_engine();
    // Alice converts HK$100.00 of her own money to USD: 12.80.
    let r = e.submit_transfer(&cross(1, ALICE, ALICE, 10_000, HKD, USD));
    assert_eq!(
        (code(r.code), r.debit_amount, r.credit_amount, r.rate_e9),
        (ResultCode::Ok, 10_000, 1_280, 128_000_000)
    );
    assert_eq!(balance(&e, ALICE, HKD), (90_000, 0));
    assert_eq!(balance(&e, ALICE, USD), (1_280, 0));
    assert_eq!(balance(&e, book::FX_POSITION, HKD), (10_000, 0), "the bank's open HKD position");
    assert_eq!(balance(&e, book::FX_POSITION, USD), (-1_280, 0));
    // Carol pays Bob US$... in CNY through HKD: USD->HKD 7.78, HKD->CNY 0.923456789.
    let r = e.submit_transfer(&cross(2, CAROL, BOB, 1_000, USD, CNY));
    assert_eq!((code(r.code), r.debit_amount, r.credit_amount), (ResultCode::Ok, 1_000, 7_184));
    assert_eq!(r.rate_e9, 7_184_493_818, "7.78 x 0.923456789, rounded down in the answer");
    e.audit().expect("every currency still sums to zero");
    let looked = e.lookup_transfer(2);
    assert_eq!((looked.credit_amount, looked.rate_e9), (7_184, 7_184_493_818), "LOOKUP shows the same");
}

#[test]
fn fx_codes_in_precedence_order() {
    let mut e = fx_engine();
    check_transfers(
        &mut e,
        &[
            ("no route JPY", cross(1, ALICE, BOB, 100, HKD, JPY), ResultCode::NoFxRate),
            (
                "unknown quote before no rate",
                Transfer { fx_quote_id: 9, ..cross(2, ALICE, BOB, 100, HKD, JPY) },
                ResultCode::QuoteInvalid,
            ),
            ("a cent that rounds to nothing", cross(3, ALICE, BOB, 1, HKD, USD), ResultCode::InvalidAmount),
            ("overflow before funds", cross(4, ALICE, BOB, u64::MAX / 2, USD, HKD), ResultCode::Overflow),
            (
                "funds checked on the debit amount",
                Transfer { flags: TRANSFER_AMOUNT_IN_CREDIT_CURRENCY, ..cross(5, ALICE, BOB, 12_801, HKD, USD) },
                ResultCode::InsufficientFunds,
            ),
            (
                "credit side rounds the debit up",
                Transfer { flags: TRANSFER_AMOUNT_IN_CREDIT_CURRENCY, ..cross(6, ALICE, BOB, 100, HKD, USD) },
                ResultCode::Ok,
            ),
        ],
    );
    assert_eq!(e.lookup_transfer(6).debit_amount, 782, "US$1.00 costs HK$7.8125 -> 7.82");
    let resend = Transfer { flags: TRANSFER_AMOUNT_IN_CREDIT_CURRENCY, ..cross(6, ALICE, BOB, 100, HKD, USD) };
    assert_eq!(code(e.submit_transfer(&resend).code), ResultCode::AlreadyExists);
}

#[test]
fn quotes_lock_a_rate_for_one_transfer_until_they_expire() {
    let mut e = fx_engine();
    let q = e.fx_quote(&QuoteRequest { from: HKD, to: USD, flags: 0, amount: 10_000 });
    assert_eq!((code(q.code), q.quote_id, q.credit_amount, q.rate_e9), (ResultCode::Ok, 1, 1_280, 128_000_000));
    assert_eq!(q.expires_at_ms, e.now_ms() + 30_000);
    // The rate moves; the quote holds.
    rate(&mut e, HKD, USD, 100_000_000);
    let with_quote = Transfer { fx_quote_id: q.quote_id, ..cross(1, ALICE, BOB, 10_000, HKD, USD) };
    let mismatches: &[(&str, Transfer)] = &[
        ("other amount", Transfer { amount: 10_001, ..with_quote }),
        ("other pair", Transfer { credit_currency: CNY, ..with_quote }),
        ("other side", Transfer { flags: TRANSFER_AMOUNT_IN_CREDIT_CURRENCY, ..with_quote }),
    ];
    for (name, t) in mismatches {
        assert_eq!(code(e.submit_transfer(t).code), ResultCode::QuoteInvalid, "{name}");
    }
    // A transfer refused for another reason leaves the quote unspent.
    let poor = Transfer { fx_quote_id: q.quote_id, ..cross(2, BOB, ALICE, 10_000, HKD, USD) };
    assert_eq!(code(e.submit_transfer(&poor).code), ResultCode::InsufficientFunds);
    let r = e.submit_transfer(&with_quote);
    assert_eq!((code(r.code), r.credit_amount, r.rate_e9), (ResultCode::Ok, 1_280, 128_000_000), "the locked rate");
    let again = Transfer { transfer_id: 3, ..with_quote };
    assert_eq!(code(e.submit_transfer(&again).code), ResultCode::QuoteInvalid, "spent");
    // Expiry: good before expires_at, not at it.
    let q2 = e.fx_quote(&QuoteRequest { from: HKD, to: USD, flags: 0, amount: 5_000 });
    let use_q2 = Transfer { fx_quote_id: q2.quote_id, ..cross(4, ALICE, BOB, 5_000, HKD, USD) };
    e.advance(q2.expires_at_ms - 1);
    let mut early = e.clone();
    assert_eq!(code(early.submit_transfer(&use_q2).code), ResultCode::Ok, "good one ms before expires_at");
    let q3 = e.fx_quote(&QuoteRequest { from: HKD, to: USD, flags: 0, amount: 5_000 });
    e.advance(q2.expires_at_ms);
    assert_eq!(code(e.submit_transfer(&use_q2).code), ResultCode::QuoteInvalid, "expired at expires_at");
    let use_q3 = Transfer { fx_quote_id: q3.quote_id, ..cross(5, ALICE, BOB, 5_000, HKD, USD) };
    let r = e.submit_transfer(&use_q3);
    assert_eq!((code(r.code), r.credit_amount), (ResultCode::Ok, 500), "q3 was taken at the new rate 0.10");
    let refused = |req: QuoteRequest| code(e.clone().fx_quote(&req).code);
    assert_eq!(
        refused(QuoteRequest { from: 999, to: USD, flags: 0, amount: 0 }),
        ResultCode::InvalidAmount,
        "as for transfers"
    );
    assert_eq!(refused(QuoteRequest { from: HKD, to: USD, flags: 4, amount: 1 }), ResultCode::InvalidField);
    assert_eq!(refused(QuoteRequest { from: 999, to: USD, flags: 0, amount: 1 }), ResultCode::UnknownCurrency);
    assert_eq!(refused(QuoteRequest { from: USD, to: USD, flags: 0, amount: 1 }), ResultCode::InvalidField);
    assert_eq!(refused(QuoteRequest { from: HKD, to: USD, flags: 0, amount: 0 }), ResultCode::InvalidAmount);
    assert_eq!(refused(QuoteRequest { from: HKD, to: JPY, flags: 0, amount: 1 }), ResultCode::NoFxRate);
    assert_eq!(refused(QuoteRequest { from: HKD, to: USD, flags: 0, amount: 1 }), ResultCode::InvalidAmount);
    e.audit().expect("audit");
}

#[test]
fn a_pending_conversion_reserves_every_leg_and_voids_cleanly() {
    let mut e = fx_engine();
    let t = Transfer { flags: TRANSFER_PENDING, ..cross(1, ALICE, BOB, 10_000, HKD, USD) };
    let r = e.submit_transfer(&t);
    assert_eq!((r.state, r.credit_amount), (STATE_PENDING, 1_280));
    assert_eq!(balance(&e, ALICE, HKD), (100_000, 10_000));
    assert_eq!(balance(&e, book::FX_POSITION, USD), (0, 1_280), "FX_POSITION's USD leg is held");
    e.audit().expect("reservations add up, FX legs included");
    // Voiding releases everything; the snapshot round trip keeps it exact.
    let mut voided = e.clone();
    voided.finalize_pending(&Finalize { transfer_id: 1, action: FINALIZE_VOID });
    assert_eq!(balance(&voided, book::FX_POSITION, USD), (0, 0));
    voided.audit().expect("audit");
    e.finalize_pending(&Finalize { transfer_id: 1, action: FINALIZE_POST });
    assert_eq!(balance(&e, BOB, USD), (1_280, 0));
    assert_eq!(balance(&e, book::FX_POSITION, HKD), (10_000, 0));
    e.audit().expect("audit");
    let q = e.fx_quote(&QuoteRequest { from: USD, to: HKD, flags: 0, amount: 100 });
    let mut bytes = Vec::new();
    e.encode_state(&mut bytes);
    let mut restored = Engine::decode_state(*e.config(), &bytes).expect("decodes");
    assert_eq!(restored.state_hash(), e.state_hash(), "rates and quotes are in the snapshot");
    // The restored engine decides as the original does: a quoted, a direct
    // and a crossed conversion.
    let next = [
        Transfer { fx_quote_id: q.quote_id, ..cross(9, CAROL, BOB, 100, USD, HKD) },
        cross(10, ALICE, BOB, 5_000, HKD, USD),
        cross(11, CAROL, BOB, 300, USD, CNY),
    ];
    for t in &next {
        let (a, b) = (e.submit_transfer(t), restored.submit_transfer(t));
        assert_eq!(a, b, "{t:?}");
        assert_eq!(code(a.code), ResultCode::Ok);
    }

    // A quote spent by a held transfer stays spent when that transfer voids.
    let q = e.fx_quote(&QuoteRequest { from: HKD, to: USD, flags: 0, amount: 1_000 });
    let held = Transfer { flags: TRANSFER_PENDING, fx_quote_id: q.quote_id, ..cross(12, ALICE, BOB, 1_000, HKD, USD) };
    assert_eq!(e.submit_transfer(&held).state, STATE_PENDING);
    e.cancel_transfer(12);
    let again = Transfer { fx_quote_id: q.quote_id, ..cross(13, ALICE, BOB, 1_000, HKD, USD) };
    assert_eq!(code(e.submit_transfer(&again).code), ResultCode::QuoteInvalid);
}

#[test]
fn fx_position_legs_are_checked_for_overflow() {
    let mut e = engine();
    rate(&mut e, HKD, USD, 10_000_000_000); // 10 USD per HKD
    let big = 500_000_000_000_000_000u64; // 5 x 10^17 HKD cents -> 5 x 10^18 USD cents
    let t1 = cross(1, book::SETTLEMENT_IN, BOB, big, HKD, USD);
    assert_eq!(code(e.submit_transfer(&t1).code), ResultCode::Ok);
    // Carol could take it and SETTLEMENT_IN could pay it, but FX_POSITION
    // would pass i64::MIN in USD.
    let t2 = cross(2, book::SETTLEMENT_IN, CAROL, big, HKD, USD);
    assert_eq!(code(e.submit_transfer(&t2).code), ResultCode::Overflow);
    assert_eq!(balance(&e, CAROL, USD), (5_000, 0), "nothing moved: only her first US$50.00");
    // A converted leg above i64::MAX is OVERFLOW, never a panic at posting.
    rate(&mut e, USD, HKD, u64::MAX);
    let t3 = cross(3, BOB, ALICE, 1_000_000_000, USD, HKD);
    assert_eq!(code(e.submit_transfer(&t3).code), ResultCode::Overflow);
    e.audit().expect("audit");
}

#[test]
fn what_a_shard_keeps_of_rounds_spanning_shards_is_in_its_snapshot() {
    let config = EngineConfig { manual_clock: true, shard: 0, shards: 2, ..EngineConfig::default() };
    let mut e = Engine::new(config, MANUAL_CLOCK_START_MS);
    let accounts = encode_all(&[Account { account_id: ALICE, kind: 1, flags: 0, home_country: 344, customer_ref: 1 }]);
    let mut round = Vec::new();
    let header = crate::multi::Header { seq: 3, complete: 1, continues: 2 };
    let other: &[u8] = &[0; 32];
    crate::multi::encode(
        header,
        kind::CREATE_ACCOUNTS,
        &accounts,
        kind::CREATE_ACCOUNTS,
        &[(1, other)],
        other,
        &mut round,
    );
    let mut out = Vec::new();
    e.apply(kind::MULTI, &round, MANUAL_CLOCK_START_MS, &mut out).expect("a well-formed round");
    assert_eq!(RecordResult::decode(&out).code, 0, "its own part applied");
    assert!(e.multi().has(3) && !e.multi().has(2) && e.multi().continued.contains(&2));
    assert_eq!(e.multi().retained.len(), 1);
    let mut bytes = Vec::new();
    e.encode_state(&mut bytes);
    let restored = Engine::decode_state(config, &bytes).expect("decodes");
    assert_eq!(restored.multi(), e.multi());
    assert_eq!(restored.state_hash(), e.state_hash());
    // A round applied twice is a broken invariant, not a request.
    let mut bad = round.clone();
    bad[40] = 1;
    assert!(e.apply(kind::MULTI, &bad, MANUAL_CLOCK_START_MS, &mut out).is_err(), "reserved bytes");
}

/// Applies `kind`'s `records` as `caller` (a SCOPED record) and returns
/// each answer's result code.
fn as_caller<R: Record>(e: &mut Engine, caller: internal::Caller, kind: u16, records: &[R]) -> Vec<ResultCode> {
    let mut body = Vec::new();
    for r in records {
        records::push(&mut body, r);
    }
    let scoped = internal::encode_scoped(&caller, kind, &body);
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind::SCOPED, &scoped, now, &mut out).expect("a well-formed SCOPED record");
    let (size, at) = kinds::result_code_layout(kind).expect("a kind with codes");
    out.chunks_exact(size).map(|r| code(u16::from_le_bytes([r[at], r[at + 1]]))).collect()
}

#[test]
fn a_scoped_channel_acts_only_on_its_own_accounts() {
    use internal::{Caller, Scope};
    const CARDS: u32 = 7;
    const DAVE: u64 = 2_000;
    let mut e = engine();
    let cards = Caller { channel: CARDS, scope: Scope { own: true, range: None } };
    let dave = Account { account_id: DAVE, kind: 1, flags: 0, home_country: 344, customer_ref: 9 };
    assert_eq!(as_caller(&mut e, cards, kind::CREATE_ACCOUNTS, &[dave]), [ResultCode::Ok]);
    assert_eq!(e.submit_transfer(&deposit(9_003, DAVE, 10_000, HKD)).code, 0);
    // Alice's pending transfer, which the card system must not finalize.
    let pending = Transfer { flags: records::TRANSFER_PENDING, ..transfer(60, ALICE, BOB, 500, HKD) };
    assert_eq!(e.submit_transfer(&pending).code, 0);
    let before = (balance(&e, ALICE, HKD), balance(&e, BOB, HKD), balance(&e, DAVE, HKD));

    let refused = as_caller(
        &mut e,
        cards,
        kind::SUBMIT_TRANSFERS,
        &[
            transfer(61, ALICE, DAVE, 100, HKD),
            deposit(62, DAVE, 100, HKD),
            // Existence and identity come before permission.
            transfer(63, 4_444, DAVE, 100, HKD),
            transfer(60, ALICE, BOB, 500, HKD),
        ],
    );
    use ResultCode::*;
    assert_eq!(refused, [Forbidden, Forbidden, DebitAccountNotFound, IdConflict]);
    let fin = Finalize { transfer_id: 60, action: records::FINALIZE_POST };
    assert_eq!(as_caller(&mut e, cards, kind::FINALIZE_PENDING, &[fin]), [Forbidden]);
    assert_eq!(as_caller(&mut e, cards, kind::CANCEL_TRANSFERS, &[Id { id: 60 }]), [Forbidden]);
    assert_eq!(as_caller(&mut e, cards, kind::LOOKUP_TRANSFERS, &[Id { id: 60 }]), [Forbidden]);
    let key = |account_id| BalanceKey { account_id, currency: HKD };
    assert_eq!(as_caller(&mut e, cards, kind::LOOKUP_BALANCES, &[key(ALICE), key(DAVE)]), [Forbidden, Ok]);
    assert_eq!((balance(&e, ALICE, HKD), balance(&e, BOB, HKD), balance(&e, DAVE, HKD)), before, "nothing moved");
    assert_eq!(e.lookup_transfer(60).state, records::STATE_PENDING);

    // Its own customer pays anyone, and a refused answer shows nothing of
    // the transfer it names.
    assert_eq!(as_caller(&mut e, cards, kind::SUBMIT_TRANSFERS, &[transfer(64, DAVE, ALICE, 100, HKD)]), [Ok]);
    let mut out = Vec::new();
    let scoped = internal::encode_scoped(&cards, kind::LOOKUP_TRANSFERS, &{
        let mut b = Vec::new();
        records::push(&mut b, &Id { id: 60 });
        b
    });
    e.apply(kind::SCOPED, &scoped, e.now_ms(), &mut out).expect("applies");
    assert_eq!(TransferResult::decode(&out).debit_amount, 0, "another channel's transfer is not shown");

    // A range scope opens exactly its range; an unscoped caller, all.
    let ranged = Caller { channel: 8, scope: Scope { own: false, range: Some((ALICE, ALICE)) } };
    let two = [transfer(65, ALICE, BOB, 1, HKD), transfer(66, DAVE, BOB, 1, HKD)];
    assert_eq!(as_caller(&mut e, ranged, kind::SUBMIT_TRANSFERS, &two), [Ok, Forbidden]);
    let all = Caller { channel: 9, scope: Scope::default() };
    assert_eq!(as_caller(&mut e, all, kind::SUBMIT_TRANSFERS, &[transfer(67, DAVE, BOB, 1, HKD)]), [Ok]);

    // Who opened each account survives a snapshot.
    let mut state = Vec::new();
    e.encode_state(&mut state);
    let mut back = Engine::decode_state(e.config, &state).expect("decodes");
    assert_eq!(as_caller(&mut back, cards, kind::SUBMIT_TRANSFERS, &[transfer(68, DAVE, BOB, 1, HKD)]), [Ok]);
    assert_eq!(as_caller(&mut back, cards, kind::SUBMIT_TRANSFERS, &[transfer(69, BOB, DAVE, 1, HKD)]), [Forbidden]);
    back.audit().expect("the books add up");
}

#[test]
fn malformed_scoped_records_are_refused_whole() {
    let caller = internal::Caller { channel: 7, scope: internal::Scope { own: true, range: None } };
    let mut body = Vec::new();
    records::push(&mut body, &Id { id: 60 });
    for (name, record) in [
        ("a kind that is neither scoped nor audited", internal::encode_scoped(&caller, kind::FX_QUOTE, &[])),
        (
            "nested",
            internal::encode_scoped(
                &caller,
                kind::SCOPED,
                &internal::encode_scoped(&caller, kind::CANCEL_TRANSFERS, &body),
            ),
        ),
        ("a cut record", internal::encode_scoped(&caller, kind::CANCEL_TRANSFERS, &body[..5])),
        ("a cut header", body.clone()),
    ] {
        assert!(Engine::check_length(kind::SCOPED, &record).is_err(), "{name}");
    }
}
