//! Credit: lines, disbursements, micro-credit on shortfall, repayments and
//! interest, table-driven through `Engine::apply` and end to end over the
//! wire. The audit (per-currency zero sum, LOAN_FUNDING = −principal
//! outstanding, INTEREST_INCOME = interest paid) runs after every step.

mod common;

use std::net::SocketAddr;

use common::{HKD, USD, account, deposit, transfer};
use harbour::aml::AmlConfig;
use harbour::credit::{LOAN_ACTIVE, LOAN_REPAID};
use harbour::engine::book::{INTEREST_INCOME, LOAN_FUNDING};
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};
use harbour::server;

const ALICE: u64 = 1024;
const BOB: u64 = 1025;
const DAY: u64 = 86_400_000;

fn engine() -> Engine {
    // AML stays on (its holds matter for voided micro-loans below).
    let config = EngineConfig { manual_clock: true, aml: AmlConfig::default(), ..EngineConfig::default() };
    let mut e = Engine::new(config, MANUAL_CLOCK_START_MS);
    for id in [ALICE, BOB] {
        assert_eq!(e.create_account(&account(id)).code, 0);
    }
    e
}

fn apply<R: Record, A: Record>(e: &mut Engine, kind: u16, items: &[R]) -> Vec<A> {
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind, &encode_all(items), now, &mut out).expect("a well-formed command");
    e.audit().unwrap_or_else(|err| panic!("audit after kind {kind:#06x}: {err}"));
    decode_all(&out).collect()
}

fn line(account_id: u64, apr_bps: u32, limit: u64, micro: Option<u64>) -> CreditLine {
    CreditLine {
        account_id,
        currency: HKD,
        flags: if micro.is_some() { CREDIT_AUTO_MICRO_CREDIT } else { 0 },
        apr_bps,
        limit,
        micro_credit_max: micro.unwrap_or(0),
    }
}

fn disburse(loan_id: u128, account_id: u64, principal: u64) -> Disburse {
    Disburse { loan_id, account_id, currency: HKD, term_days: 30, principal }
}

fn code(c: u16) -> ResultCode {
    ResultCode::from_u16(c).expect("defined")
}

fn balance(e: &Engine, account_id: u64) -> Balance {
    e.lookup_balance(&BalanceKey { account_id, currency: HKD })
}

#[test]
fn credit_lines_and_their_codes() {
    let mut e = engine();
    let table: [(&str, CreditLine, ResultCode); 7] = [
        ("a line", line(ALICE, 1_000, 1_000_000, Some(50_000)), ResultCode::Ok),
        ("48% is the ceiling", line(BOB, 4_800, 1, None), ResultCode::Ok),
        ("48.01% is refused", line(BOB, 4_801, 1, None), ResultCode::InvalidField),
        ("no such account", line(4_242, 100, 1, None), ResultCode::AccountNotFound),
        ("a system account", line(LOAN_FUNDING, 100, 1, None), ResultCode::Forbidden),
        ("an unknown currency", CreditLine { currency: 999, ..line(ALICE, 100, 1, None) }, ResultCode::UnknownCurrency),
        ("an undefined flag", CreditLine { flags: 2, ..line(ALICE, 100, 1, None) }, ResultCode::InvalidField),
    ];
    for (name, l, want) in table {
        let got: Vec<RecordResult> = apply(&mut e, kind::SET_CREDIT_LINES, &[l]);
        assert_eq!((code(got[0].code), got[0].key), (want, l.account_id), "{name}");
    }
    let b = balance(&e, ALICE);
    assert_eq!((b.credit_available, b.loans_outstanding), (1_000_000, 0));
}

#[test]
fn disbursement_moves_the_principal_within_the_line() {
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 1_000, 1_000_000, None)]);
    let table: [(&str, Disburse, ResultCode); 9] = [
        ("HK$6,000 of a HK$10,000 line", disburse(1, ALICE, 600_000), ResultCode::Ok),
        ("the same again: idempotent", disburse(1, ALICE, 600_000), ResultCode::AlreadyExists),
        ("the same id, another amount", disburse(1, ALICE, 1), ResultCode::IdConflict),
        ("id 0", disburse(0, ALICE, 1), ResultCode::InvalidId),
        ("no such account", disburse(2, 4_242, 1), ResultCode::AccountNotFound),
        ("a system account", disburse(2, LOAN_FUNDING, 1), ResultCode::Forbidden),
        ("zero principal", disburse(2, ALICE, 0), ResultCode::InvalidAmount),
        ("past the limit", disburse(2, ALICE, 400_001), ResultCode::CreditLimitExceeded),
        ("Bob has no line", disburse(2, BOB, 1), ResultCode::NoCreditLine),
    ];
    for (name, d, want) in table {
        let got: Vec<LoanResult> = apply(&mut e, kind::DISBURSE_LOANS, &[d]);
        assert_eq!((code(got[0].code), got[0].loan_id), (want, d.loan_id), "{name}");
    }
    let loan = e.lookup_loan(1);
    assert_eq!((loan.state, loan.apr_bps, loan.ear_bps), (LOAN_ACTIVE, 1_000, 1_052));
    assert_eq!(
        (loan.principal_outstanding, loan.interest_accrued, loan.disbursed_at_ms),
        (600_000, 0, MANUAL_CLOCK_START_MS)
    );
    assert_eq!(balance(&e, ALICE).balance, 600_000);
    assert_eq!(balance(&e, LOAN_FUNDING).balance, -600_000);
    assert_eq!((balance(&e, ALICE).credit_available, balance(&e, ALICE).loans_outstanding), (400_000, 600_000));
    // The rest of the line, exactly (a zero term: no due date).
    let got: Vec<LoanResult> =
        apply(&mut e, kind::DISBURSE_LOANS, &[Disburse { term_days: 0, ..disburse(2, ALICE, 400_000) }]);
    assert_eq!(code(got[0].code), ResultCode::Ok);
    // Loan and transfer ids share one space, both ways.
    let t = transfer(2, ALICE, BOB, 1, HKD);
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[t]);
    assert_eq!((code(got[0].code), got[0].state), (ResultCode::IdConflict, STATE_NONE), "a transfer id naming a loan");
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[transfer(9, ALICE, BOB, 1, HKD)]);
    let got: Vec<LoanResult> = apply(&mut e, kind::DISBURSE_LOANS, &[disburse(9, ALICE, 1)]);
    assert_eq!((code(got[0].code), got[0].state), (ResultCode::IdConflict, 0), "a loan id naming a transfer");
    // A later change of the line does not reprice a loan.
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 3_000, 2_000_000, None)]);
    assert_eq!(e.lookup_loan(1).apr_bps, 1_000);
    assert_eq!(balance(&e, ALICE).credit_available, 1_000_000);
}

#[test]
fn repayment_pays_interest_first_then_principal() {
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 1_000, 1_000_000, None)]);
    apply::<_, LoanResult>(&mut e, kind::DISBURSE_LOANS, &[disburse(1, ALICE, 1_000_000)]);
    let start = e.now_ms();
    // Ten days at 10% on HK$10,000: 274 a day (273.97 rounded half up).
    e.advance(start + 10 * DAY);
    assert_eq!(e.lookup_loan(1).interest_accrued, 2_740);
    assert_eq!(balance(&e, ALICE).loans_outstanding, 1_002_740);
    let repay = |id: u128, amount: u64| Repay { repayment_id: id, loan_id: 1, amount };
    // HK$27.40 + HK$100.00: all the interest, then HK$100 of principal.
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(100, 12_740)]);
    assert_eq!(code(got[0].code), ResultCode::Ok);
    assert_eq!((got[0].principal_outstanding, got[0].interest_accrued), (990_000, 0));
    assert_eq!(balance(&e, INTEREST_INCOME).balance, 2_740);
    assert_eq!(balance(&e, LOAN_FUNDING).balance, -990_000);
    // Interest now runs on the new principal: 990,000 × 1000 / 3,650,000 = 271.2 → 271.
    e.advance(start + 11 * DAY);
    assert_eq!(e.lookup_loan(1).interest_accrued, 271);
    let table: [(&str, Repay, ResultCode); 6] = [
        ("resend: idempotent", repay(100, 12_740), ResultCode::AlreadyExists),
        ("the same id, another amount", repay(100, 1), ResultCode::IdConflict),
        ("repayment id 0", repay(0, 1), ResultCode::InvalidId),
        ("no such loan", Repay { loan_id: 77, ..repay(101, 1) }, ResultCode::LoanNotFound),
        ("zero", repay(101, 0), ResultCode::InvalidAmount),
        ("one cent more than owed", repay(101, 990_000 + 271 + 1), ResultCode::Overpayment),
    ];
    for (name, r, want) in table {
        let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[r]);
        assert_eq!(code(got[0].code), want, "{name}");
    }
    // Not enough in the account (Alice spent some): INSUFFICIENT_FUNDS.
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[transfer(50, ALICE, BOB, 500_000, HKD)]);
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(102, 990_271)]);
    assert_eq!(code(got[0].code), ResultCode::InsufficientFunds);
    // Back in funds, the rest clears it: REPAID.
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(51, ALICE, 600_000, HKD)]);
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(103, 990_271)]);
    assert_eq!((code(got[0].code), got[0].state, got[0].principal_outstanding), (ResultCode::Ok, LOAN_REPAID, 0));
    assert_eq!(balance(&e, INTEREST_INCOME).balance, 2_740 + 271);
    assert_eq!(balance(&e, LOAN_FUNDING).balance, 0);
    assert_eq!((balance(&e, ALICE).loans_outstanding, balance(&e, ALICE).credit_available), (0, 1_000_000));
    // A repaid loan owes nothing: any payment is an overpayment.
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(104, 1)]);
    assert_eq!(code(got[0].code), ResultCode::Overpayment);
    e.advance(start + 400 * DAY);
    assert_eq!(e.lookup_loan(1).interest_accrued, 0, "no interest after repayment");
}

#[test]
fn micro_credit_covers_exactly_the_shortfall() {
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 2_000, 100_000, Some(30_000))]);
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(1, ALICE, 10_000, HKD)]);
    let auto =
        |id: u128, amount: u64| Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(id, ALICE, BOB, amount, HKD) };
    // HK$100 in the account, HK$350 to pay: a HK$250 micro-loan.
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[auto(2, 35_000)]);
    assert_eq!((code(got[0].code), got[0].state, got[0].auto_credit_amount), (ResultCode::Ok, STATE_POSTED, 25_000));
    assert_eq!((balance(&e, ALICE).balance, balance(&e, BOB).balance), (0, 35_000));
    let loan = e.lookup_loan(2);
    assert_eq!(
        (loan.state, loan.principal_outstanding, loan.apr_bps, loan.account_id),
        (LOAN_ACTIVE, 25_000, 2_000, ALICE)
    );
    assert_eq!(balance(&e, ALICE).credit_available, 75_000);
    // Enough money: no loan, even with the flag.
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(3, ALICE, 5_000, HKD)]);
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[auto(4, 5_000)]);
    assert_eq!((got[0].state, got[0].auto_credit_amount), (STATE_POSTED, 0));
    assert_eq!(e.lookup_loan(4).code, ResultCode::LoanNotFound.as_u16());
    // Refusals draw nothing.
    let before = e.state_hash();
    let table: [(&str, Transfer, ResultCode); 3] = [
        ("past micro_credit_max (HK$300.01)", auto(5, 30_001), ResultCode::InsufficientFunds),
        ("without the flag", transfer(5, ALICE, BOB, 1, HKD), ResultCode::InsufficientFunds),
        (
            "Bob has no line",
            Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(5, BOB, ALICE, 1_000_000, HKD) },
            ResultCode::InsufficientFunds,
        ),
    ];
    for (name, t, want) in table {
        let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[t]);
        assert_eq!((code(got[0].code), got[0].auto_credit_amount), (want, 0), "{name}");
    }
    // Past the remaining limit: HK$750 left, draw HK$300 twice, then HK$150.01.
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[auto(6, 30_000), auto(7, 30_000)]);
    assert_eq!(balance(&e, ALICE).credit_available, 15_000);
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[auto(8, 15_001)]);
    assert_eq!(code(got[0].code), ResultCode::InsufficientFunds, "past the remaining limit");
    assert_ne!(e.state_hash(), before);
    // A line without AUTO_MICRO_CREDIT never draws.
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 2_000, 100_000, None)]);
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[auto(9, 100)]);
    assert_eq!(code(got[0].code), ResultCode::InsufficientFunds);
    // The resend of a drawn transfer shows its micro-loan.
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[auto(2, 35_000)]);
    assert_eq!((code(got[0].code), got[0].auto_credit_amount), (ResultCode::AlreadyExists, 25_000));
}

#[test]
fn a_voided_held_transfer_repays_its_micro_loan_without_interest() {
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 4_800, 1_000_000, Some(1_000_000))]);
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(1, ALICE, 10_000, HKD)]);
    // Held by the client (flag PENDING): the micro-loan is drawn at once.
    let held = Transfer { flags: TRANSFER_AUTO_CREDIT | TRANSFER_PENDING, ..transfer(1_000, ALICE, BOB, 60_000, HKD) };
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[held]);
    assert_eq!((got[0].state, got[0].holds, got[0].auto_credit_amount), (STATE_PENDING, 16, 50_000));
    let b = balance(&e, ALICE);
    assert_eq!((b.balance, b.held, b.loans_outstanding), (60_000, 60_000, 50_000));
    // A day later a period of interest has accrued on it ...
    e.advance(e.now_ms() + DAY);
    assert_eq!(e.lookup_loan(1_000).interest_accrued, 66, "HK$500 at 48%: 50,000 × 4800 / 3,650,000 = 65.75 → 66");
    // ... and the client voids it: the loan is repaid with no interest.
    let got: Vec<TransferResult> =
        apply(&mut e, kind::FINALIZE_PENDING, &[Finalize { transfer_id: 1_000, action: FINALIZE_VOID }]);
    assert_eq!(got[0].state, STATE_VOIDED);
    let loan = e.lookup_loan(1_000);
    assert_eq!((loan.state, loan.principal_outstanding, loan.interest_accrued), (LOAN_REPAID, 0, 0));
    let b = balance(&e, ALICE);
    assert_eq!((b.balance, b.held, b.loans_outstanding, b.credit_available), (10_000, 0, 0, 1_000_000));
    assert_eq!((balance(&e, LOAN_FUNDING).balance, balance(&e, INTEREST_INCOME).balance), (0, 0));
    // To Iran: AML holds it for SMS_OTP; nobody confirms and the window
    // closes: voided by expiry, the loan goes with it.
    let t = Transfer { flags: TRANSFER_AUTO_CREDIT, destination_country: 364, ..transfer(2, ALICE, 3, 60_000, HKD) };
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[t]);
    assert_eq!((got[0].state, got[0].holds, got[0].auto_credit_amount), (STATE_PENDING, 2, 50_000));
    e.advance(e.now_ms() + 10 * 60_000);
    e.audit().unwrap();
    assert_eq!(e.lookup_transfer(2).state, STATE_VOIDED);
    assert_eq!((e.lookup_loan(2).state, balance(&e, ALICE).balance), (LOAN_REPAID, 10_000));
    // Voided by the customer inside the window: the same.
    let t = Transfer { transfer_id: 3, ..t };
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[t]);
    assert_eq!(got[0].auto_credit_amount, 50_000);
    let got: Vec<TransferResult> = apply(&mut e, kind::CANCEL_TRANSFERS, &[Id { id: 3 }]);
    assert_eq!(got[0].state, STATE_VOIDED);
    assert_eq!((e.lookup_loan(3).state, balance(&e, ALICE).balance), (LOAN_REPAID, 10_000));
    // Passed instead: it posts and the loan stays.
    let t = Transfer { transfer_id: 4, ..t };
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[t]);
    let step = StepUp { transfer_id: 4, method: METHOD_SMS_OTP, outcome: OUTCOME_PASS };
    let got: Vec<TransferResult> = apply(&mut e, kind::CONFIRM_STEP_UP, &[step]);
    assert_eq!((got[0].state, got[0].auto_credit_amount), (STATE_POSTED, 50_000));
    assert_eq!((e.lookup_loan(4).state, balance(&e, ALICE).balance), (LOAN_ACTIVE, 0));
}

#[test]
fn loans_survive_a_snapshot() {
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 1_000, 1_000_000, Some(10_000))]);
    apply::<_, LoanResult>(&mut e, kind::DISBURSE_LOANS, &[disburse(1, ALICE, 500_000)]);
    let auto = Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(2, ALICE, BOB, 505_000, HKD) };
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[auto, deposit(3, ALICE, 100, HKD)]);
    e.advance(e.now_ms() + 3 * DAY);
    apply::<_, LoanResult>(&mut e, kind::REPAY_LOANS, &[Repay { repayment_id: 9, loan_id: 2, amount: 1 }]);
    let mut bytes = Vec::new();
    e.encode_state(&mut bytes);
    let mut restored = Engine::decode_state(*e.config(), &bytes).expect("decodes");
    assert_eq!(restored.state_hash(), e.state_hash());
    for id in [1, 2] {
        assert_eq!(restored.lookup_loan(id), e.lookup_loan(id));
    }
    let resend = Repay { repayment_id: 9, loan_id: 2, amount: 1 };
    let got: Vec<LoanResult> = apply(&mut restored, kind::REPAY_LOANS, &[resend]);
    assert_eq!(code(got[0].code), ResultCode::AlreadyExists, "repayment ids survive");
}

// ---- over the wire ---------------------------------------------------------

async fn start(dir: &std::path::Path) -> (server::Running, harbour::client::Client) {
    let running = server::start(&common::server_config(dir)).await.expect("starts");
    let addr: SocketAddr = running.addr;
    let client = harbour::client::Client::connect(addr, 1, b"hksw-dev-key").await.expect("connects");
    (running, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_over_the_wire_from_line_to_repaid_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (running, c) = start(dir.path()).await;
    c.create_accounts(&[account(ALICE), account(BOB)]).await.unwrap();
    let lines = c.set_credit_lines(&[line(ALICE, 1_000, 2_000_000, Some(100_000))]).await.unwrap();
    assert_eq!(lines[0].code, 0);
    // The loan: microseconds from request to money in the account.
    let got = c.disburse_loans(&[disburse(77, ALICE, 1_000_000)]).await.unwrap();
    assert_eq!((got[0].code, got[0].state, got[0].ear_bps), (0, LOAN_ACTIVE, 1_052));
    // A payment HK$500 more than the balance: a micro-loan covers it.
    let pay = Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(78, ALICE, BOB, 1_050_000, HKD) };
    let got = c.submit_transfers(&[pay]).await.unwrap();
    assert_eq!((got[0].code, got[0].state, got[0].auto_credit_amount), (0, STATE_POSTED, 50_000));
    let b = c.lookup_balances(&[BalanceKey { account_id: ALICE, currency: HKD }]).await.unwrap()[0];
    assert_eq!((b.balance, b.loans_outstanding, b.credit_available), (0, 1_050_000, 950_000));
    // Thirty days later.
    c.set_time(MANUAL_CLOCK_START_MS + 30 * DAY).await.unwrap();
    let loans = c.lookup_loans(&[77, 78]).await.unwrap();
    assert_eq!(loans[0].interest_accrued, 30 * 274, "HK$10,000 at 10%: HK$2.74 a day");
    assert_eq!(loans[1].interest_accrued, 30 * 14, "HK$500 at 10%: 13.7 → 14 cents a day");
    drop(c);
    running.stop().await.unwrap();

    // After a restart everything is there, and the repayment works.
    let (running, c) = start(dir.path()).await;
    assert_eq!(c.lookup_loans(&[77]).await.unwrap()[0].interest_accrued, 30 * 274);
    c.submit_transfers(&[deposit(79, ALICE, 2_000_000, HKD)]).await.unwrap();
    let owed = 1_000_000 + 30 * 274;
    let got = c
        .repay_loans(&[
            Repay { repayment_id: 1, loan_id: 77, amount: 500_000 },
            Repay { repayment_id: 2, loan_id: 77, amount: owed },
            Repay { repayment_id: 3, loan_id: 77, amount: owed - 500_000 },
        ])
        .await
        .unwrap();
    let codes: Vec<u16> = got.iter().map(|r| r.code).collect();
    assert_eq!(codes, [0, ResultCode::Overpayment.as_u16(), 0]);
    assert_eq!((got[2].state, got[2].principal_outstanding, got[2].interest_accrued), (LOAN_REPAID, 0, 0));
    let funding = c.lookup_balances(&[BalanceKey { account_id: LOAN_FUNDING, currency: HKD }]).await.unwrap()[0];
    let income = c.lookup_balances(&[BalanceKey { account_id: INTEREST_INCOME, currency: HKD }]).await.unwrap()[0];
    assert_eq!((funding.balance, income.balance), (-50_000, 30 * 274), "the micro-loan is still out");
    // USD has no line.
    let usd = Disburse { currency: USD, ..disburse(80, ALICE, 1) };
    assert_eq!(c.disburse_loans(&[usd]).await.unwrap()[0].code, ResultCode::NoCreditLine.as_u16());
    running.stop().await.unwrap();
}

#[test]
fn the_worked_example_in_docs_credit_md() {
    let mut e = engine();
    let start = e.now_ms();
    let got: Vec<RecordResult> = apply(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 1_000, 2_000_000, Some(50_000))]);
    assert_eq!(got[0].code, 0);
    let got: Vec<LoanResult> = apply(&mut e, kind::DISBURSE_LOANS, &[disburse(900, ALICE, 1_000_000)]);
    assert_eq!((got[0].ear_bps, balance(&e, LOAN_FUNDING).balance), (1_052, -1_000_000));
    e.advance(start + 5 * 60_000);
    let pay = Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(901, ALICE, BOB, 1_025_000, HKD) };
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[pay]);
    assert_eq!((got[0].state, got[0].auto_credit_amount), (STATE_POSTED, 25_000));
    e.advance(start + 30 * DAY + 5 * 60_000);
    assert_eq!((e.lookup_loan(900).interest_accrued, e.lookup_loan(901).interest_accrued), (8_220, 210));
    let b = balance(&e, ALICE);
    assert_eq!((b.loans_outstanding, b.credit_available), (1_033_430, 975_000));
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(902, ALICE, 2_000_000, HKD)]);
    let repay = |id: u128, amount: u64| Repay { repayment_id: id, loan_id: 900, amount };
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(1, 500_000)]);
    assert_eq!((got[0].principal_outstanding, got[0].interest_accrued), (508_220, 0));
    assert_eq!(balance(&e, INTEREST_INCOME).balance, 8_220);
    e.advance(start + 31 * DAY + 5 * 60_000);
    assert_eq!(e.lookup_loan(900).interest_accrued, 139);
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(2, 508_360)]);
    assert_eq!(code(got[0].code), ResultCode::Overpayment);
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[repay(3, 508_359)]);
    assert_eq!((code(got[0].code), got[0].state), (ResultCode::Ok, LOAN_REPAID));
    assert_eq!((balance(&e, LOAN_FUNDING).balance, balance(&e, INTEREST_INCOME).balance), (-25_000, 8_359));
    assert_eq!(e.lookup_loan(901).interest_accrued, 217);
}

#[test]
fn a_line_carries_at_most_1024_active_loans() {
    use harbour::credit::ACTIVE_LOANS_PER_LINE_MAX;
    let mut e = engine();
    apply::<_, RecordResult>(&mut e, kind::SET_CREDIT_LINES, &[line(ALICE, 100, 1_000_000_000, Some(1_000))]);
    // A payment one cent short, again and again: a one-cent loan each.
    let n = u128::from(ACTIVE_LOANS_PER_LINE_MAX);
    let short: Vec<Transfer> =
        (1..=n).map(|id| Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(id, ALICE, BOB, 1, HKD) }).collect();
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &short);
    assert!(got.iter().all(|r| r.code == 0 && r.auto_credit_amount == 1));
    let one_more = Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(n + 1, ALICE, BOB, 1, HKD) };
    let got: Vec<TransferResult> = apply(&mut e, kind::SUBMIT_TRANSFERS, &[one_more]);
    assert_eq!(code(got[0].code), ResultCode::InsufficientFunds, "the line is full: nothing drawn");
    let got: Vec<LoanResult> = apply(&mut e, kind::DISBURSE_LOANS, &[disburse(n + 2, ALICE, 1)]);
    assert_eq!(code(got[0].code), ResultCode::CreditLimitExceeded);
    // Repaying one makes room for one.
    apply::<_, TransferResult>(&mut e, kind::SUBMIT_TRANSFERS, &[deposit(n + 3, ALICE, 10, HKD)]);
    let got: Vec<LoanResult> = apply(&mut e, kind::REPAY_LOANS, &[Repay { repayment_id: 1, loan_id: 7, amount: 1 }]);
    assert_eq!(got[0].state, LOAN_REPAID);
    let got: Vec<LoanResult> = apply(&mut e, kind::DISBURSE_LOANS, &[disburse(n + 2, ALICE, 1)]);
    assert_eq!(code(got[0].code), ResultCode::Ok);
    assert_eq!(balance(&e, ALICE).loans_outstanding, u64::from(ACTIVE_LOANS_PER_LINE_MAX));
}
