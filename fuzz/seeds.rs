//! Writes the committed seed corpus, `seeds/<target>/`, from the crates' own
//! encoders: small valid inputs that take each target past its first
//! checks. Run in `fuzz/`: `cargo +nightly run --bin seeds`.

use std::path::Path;

use bytes::BytesMut;
use harbour::engine::links::{self, Entry, EntryKind};
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS, multi, shard_of};
use harbour::protocol::accounts::SETTLEMENT_IN;
use harbour::protocol::frame::{self, ErrorCode};
use harbour::protocol::internal::{QuoteAt, Verdict, encode_judged};
use harbour::protocol::kind;
use harbour::protocol::records::*;
use harbour::protocol::session::{Challenge, Hello, HelloResponse};
use harbour::traffic::TrafficWriter;
use harbour_fuzz::{op, push_command};

const HKD: u16 = 344;
const USD: u16 = 840;

/// A request: kind, milliseconds after the one before, body.
type Step = (u16, u32, Vec<u8>);

fn account(id: u64) -> Account {
    Account { account_id: id, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: 344, customer_ref: id * 7 }
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

fn accounts(ids: &[u64]) -> Step {
    (kind::CREATE_ACCOUNTS, 0, encode_all(&ids.iter().map(|&i| account(i)).collect::<Vec<_>>()))
}

/// Accounts, deposits, a payment, a pending one finalized, one cancelled,
/// lookups.
fn payments() -> Vec<Step> {
    let pending = |id| Transfer { flags: TRANSFER_PENDING, ..transfer(id, 1024, 1025, 300, HKD) };
    vec![
        accounts(&[1024, 1025]),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[transfer(1, SETTLEMENT_IN, 1024, 100_000, HKD)])),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[transfer(2, 1024, 1025, 2_500, HKD), pending(3), pending(4)])),
        (kind::FINALIZE_PENDING, 10, encode_all(&[Finalize { transfer_id: 3, action: FINALIZE_POST }])),
        (kind::CANCEL_TRANSFERS, 10, encode_all(&[Id { id: 4 }])),
        (kind::LOOKUP_TRANSFERS, 10, encode_all(&[Id { id: 2 }, Id { id: 3 }, Id { id: 99 }])),
        (kind::LOOKUP_BALANCES, 10, encode_all(&[BalanceKey { account_id: 1024, currency: HKD }])),
    ]
}

/// Rates, quotes (direct and as the router logs them), a cross-currency
/// payment on a quote, the clock moved past the quotes.
fn fx() -> Vec<Step> {
    let q = QuoteRequest { from: HKD, to: USD, flags: 0, amount: 10_000 };
    let mut quote_at = Vec::new();
    QuoteAt { quote_id: 7, expires_at_ms: MANUAL_CLOCK_START_MS + 60_000, request: q }.push(&mut quote_at);
    let cross = Transfer { credit_currency: USD, fx_quote_id: 7, ..transfer(1, 1024, 1025, 10_000, HKD) };
    vec![
        accounts(&[1024, 1025]),
        (kind::SET_FX_RATES, 0, encode_all(&[FxRate { from: HKD, to: USD, rate_e9: 128_000_000 }])),
        (kind::SET_FX_RATES, 0, encode_all(&[FxRate { from: USD, to: HKD, rate_e9: 7_800_000_000 }])),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[transfer(9, SETTLEMENT_IN, 1024, 1_000_000, HKD)])),
        (kind::FX_QUOTE, 10, encode_all(&[q])),
        (kind::QUOTE_AT, 10, quote_at),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[cross])),
        (kind::SET_TIME, 0, encode_all(&[SetTime { unix_ms: MANUAL_CLOCK_START_MS + 120_000 }])),
    ]
}

/// A credit line, a loan, a repayment, lookups.
fn credit() -> Vec<Step> {
    let line = CreditLine {
        account_id: 1024,
        currency: HKD,
        flags: CREDIT_AUTO_MICRO_CREDIT,
        apr_bps: 1_000,
        limit: 150_000,
        micro_credit_max: 60_000,
    };
    let disburse = Disburse { loan_id: 50, account_id: 1024, currency: HKD, term_days: 30, principal: 40_000 };
    vec![
        accounts(&[1024, 1025]),
        (kind::SET_CREDIT_LINES, 0, encode_all(&[line])),
        (kind::DISBURSE_LOANS, 10, encode_all(&[disburse])),
        (kind::REPAY_LOANS, 86_400_000, encode_all(&[Repay { repayment_id: 51, loan_id: 50, amount: 10_000 }])),
        (kind::LOOKUP_LOANS, 10, encode_all(&[Id { id: 50 }])),
        // Spends past the balance: micro-credit covers it.
        (
            kind::SUBMIT_TRANSFERS,
            10,
            encode_all(&[Transfer { flags: TRANSFER_AUTO_CREDIT, ..transfer(52, 1024, 1025, 45_000, HKD) }]),
        ),
    ]
}

/// AML: transfers judged by the remote scorer (held for review), a step-up
/// and a review resolved, the STR export and its rows, a TICK.
fn aml() -> Vec<Step> {
    let big = |id| transfer(id, 1024, 1025, 90_000_000, HKD);
    let judged = encode_judged(
        &[Verdict { index: 0, reason: harbour::aml::Reasons::REMOTE_SCORER }],
        &encode_all(&[big(2), big(3)]),
    );
    let str_request = StrRequest { year: 1970, month: 1, format: STR_FORMAT_CSV };
    let str_page = StrPageRequest { year: 1970, month: 1, format: STR_FORMAT_XML, limit: 1, ..Default::default() };
    vec![
        accounts(&[1024, 1025]),
        (kind::SUBMIT_TRANSFERS, 0, encode_all(&[transfer(1, SETTLEMENT_IN, 1024, 900_000_000, HKD)])),
        (kind::SUBMIT_JUDGED, 10, judged),
        (
            kind::CONFIRM_STEP_UP,
            10,
            encode_all(&[StepUp { transfer_id: 3, method: METHOD_SMS_OTP, outcome: OUTCOME_PASS }]),
        ),
        (
            kind::RESOLVE_REVIEW,
            10,
            encode_all(&[StepUp { transfer_id: 2, method: METHOD_MANUAL_REVIEW, outcome: OUTCOME_FAIL }]),
        ),
        (kind::TICK, 3_600_000, Vec::new()),
        (kind::EXPORT_STR, 10, encode_all(&[str_request])),
        (kind::STR_ROWS, 10, encode_all(&[str_request])),
        (kind::EXPORT_STR_PAGE, 10, encode_all(&[str_page])),
        (kind::STR_PAGE, 10, encode_all(&[str_page])),
    ]
}

/// Shard 0 of 2: an account announced by shard 1, a transfer to it (in
/// flight), shard 1's acknowledgement, a credit from shard 1, and a MULTI.
fn two_shards() -> Vec<Step> {
    let (mine, theirs) = {
        let on = |shard: usize| (1024u64..).find(|&id| shard_of(id, 2) == shard).expect("an id");
        (on(0), on(1))
    };
    let mut announce = Vec::new();
    let entry = |seq, kind, id, account, amount| Entry { seq, kind, id, account, currency: HKD, amount };
    links::encode_link_in(1, 0, &[entry(1, EntryKind::Account, 0, theirs, 0)], &mut announce);
    let mut credit_in = Vec::new();
    links::encode_link_in(1, 1, &[entry(2, EntryKind::Credit, 77, mine, 500)], &mut credit_in);
    let mut multi_body = Vec::new();
    let accounts_body = encode_all(&[account(mine)]);
    let other = encode_all(&[account(theirs)]);
    let header = multi::Header { seq: 1, complete: 0, continues: 0 };
    multi::encode(
        header,
        kind::CREATE_ACCOUNTS,
        &accounts_body,
        kind::CREATE_ACCOUNTS,
        &[(1, &other)],
        &[],
        &mut multi_body,
    );
    vec![
        (kind::MULTI, 0, multi_body),
        (kind::LINK_IN, 10, announce),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[transfer(1, SETTLEMENT_IN, mine, 10_000, HKD)])),
        (kind::SUBMIT_TRANSFERS, 10, encode_all(&[transfer(2, mine, theirs, 1_000, HKD)])),
        (kind::LINK_IN, 10, credit_in),
    ]
}

fn workloads() -> Vec<(&'static str, u8, Vec<Step>)> {
    vec![
        ("payments", 0, payments()),
        ("fx", 0, fx()),
        ("credit", 0, credit()),
        ("aml", 0, aml()),
        ("two-shards", 1, two_shards()),
    ]
}

fn engine_config(two_shards: bool) -> EngineConfig {
    EngineConfig {
        accounts_capacity: 16,
        transfers_capacity: 16,
        loans_capacity: 16,
        pending_capacity: 16,
        manual_clock: true,
        shard: 0,
        shards: if two_shards { 2 } else { 1 },
        ..EngineConfig::default()
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn frame_seeds(dir: &Path) {
    let frame = |kind, count, id, body: &[u8]| {
        let mut out = BytesMut::new();
        frame::encode(&mut out, kind, count, id, body);
        out.to_vec()
    };
    let with_max = |max: u16, bytes: Vec<u8>| [max.to_le_bytes().to_vec(), bytes].concat();
    let hello = Hello::new(1, b"key", &[7; 16], [9; 16]).encode();
    let challenge = Challenge { server_nonce: [7; 16], server_version: 1 }.encode();
    let answer =
        HelloResponse { code: 0, roles: 63, max_batch: 8190, max_in_flight: 64, max_body: 1 << 20, server_time_ms: 5 }
            .encode();
    let mut two = frame(kind::PING, 0, 1, &[]);
    two.extend(frame(kind::LOOKUP_TRANSFERS, 1, 2, &encode_all(&[Id { id: 3 }])));
    two.extend(&frame(kind::PING, 0, 3, &[])[..10]);
    let transfers = encode_all(&[transfer(1, SETTLEMENT_IN, 1024, 100_000, HKD)]);
    write(dir, "ping", &with_max(1024, frame(kind::PING, 0, 9, &[])));
    write(dir, "two-and-a-part", &with_max(1024, two));
    write(dir, "submit", &with_max(1024, frame(kind::SUBMIT_TRANSFERS, 1, 7, &transfers)));
    write(dir, "submit-too-large", &with_max(16, frame(kind::SUBMIT_TRANSFERS, 1, 7, &transfers)));
    write(dir, "hello", &with_max(1024, frame(kind::HELLO, 1, 1, &hello)));
    write(dir, "challenge", &with_max(1024, frame(kind::CHALLENGE, 1, 0, &challenge)));
    write(dir, "hello-answer", &with_max(1024, frame(kind::HELLO | frame::RESPONSE_BIT, 1, 1, &answer)));
    let error = frame::error_body(ErrorCode::Forbidden, "role PAYMENTS needed");
    write(dir, "error", &with_max(1024, frame(frame::ERROR_KIND, 0, 4, &error)));
    write(dir, "http", &with_max(1024, b"GET / HTTP/1.1\r\n\r\n".to_vec()));
}

fn commands(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, advance_ms, body) in steps {
        push_command(&mut out, *kind, *advance_ms, body);
    }
    out
}

fn records_seeds(dir: &Path) {
    for (name, flags, steps) in workloads() {
        write(dir, name, &[vec![flags], commands(&steps)].concat());
    }
}

fn snapshot_seeds(dir: &Path) {
    for (name, flags, steps) in workloads() {
        let mut engine = Engine::new(engine_config(flags & 1 != 0), MANUAL_CLOCK_START_MS);
        let mut now_ms = MANUAL_CLOCK_START_MS;
        let mut out = Vec::new();
        for (kind, advance_ms, body) in &steps {
            now_ms += u64::from(*advance_ms);
            engine.apply(*kind, body, now_ms, &mut out).expect("a seed's step applies");
        }
        engine.audit().expect("a seed's state is sound");
        let mut state = Vec::new();
        engine.encode_state(&mut state);
        write(dir, name, &[vec![flags], state].concat());
    }
    let mut empty = Vec::new();
    Engine::new(engine_config(false), 0).encode_state(&mut empty);
    write(dir, "new", &[vec![0], empty].concat());
}

fn traffic_seeds(dir: &Path) {
    for (name, _, steps) in workloads().into_iter().take(2) {
        let mut writer = TrafficWriter::new(Vec::new(), 1_764_720_000_000).expect("in memory");
        let mut offset_ns = 0;
        for (kind, advance_ms, body) in steps.iter().filter(|s| s.0 < 0xF000) {
            offset_ns += u64::from(*advance_ms) * 1_000_000;
            let size = harbour::protocol::kinds::spec(*kind).map_or(1, |s| s.request_size.max(1));
            writer.write(offset_ns, *kind, (body.len() / size) as u32, body).expect("in memory");
        }
        let bytes = writer.finish().expect("in memory");
        write(dir, name, &bytes);
        write(dir, &format!("{name}-torn"), &bytes[..bytes.len() - 5]);
    }
    let empty = TrafficWriter::new(Vec::new(), 0).expect("in memory").finish().expect("in memory");
    write(dir, "empty", &empty);
}

fn recovery_seeds(dir: &Path) {
    for (name, flags, steps) in workloads() {
        // Structured: the workload in groups of two, a snapshot midway.
        let mut ops = vec![flags << 1];
        for (i, (kind, advance_ms, body)) in steps.iter().enumerate() {
            ops.push(op::RECORD);
            push_command(&mut ops, *kind, *advance_ms, body);
            if i % 2 == 1 {
                ops.push(op::COMMIT);
            }
            if i == steps.len() / 2 {
                ops.push(op::SNAPSHOT);
            }
        }
        write(dir, name, &ops);
    }
    // Damage: the payments again, the last segment's byte 50 flipped.
    let mut damaged = vec![0];
    for (kind, advance_ms, body) in payments() {
        damaged.push(op::RECORD);
        push_command(&mut damaged, kind, advance_ms, &body);
    }
    damaged.push(op::DAMAGE);
    damaged.extend_from_slice(&50u32.to_le_bytes());
    damaged.push(0x40);
    write(dir, "payments-damaged", &damaged);
    // Raw: no snapshot, a segment of zeros (a preallocated, empty log).
    write(dir, "raw-zeros", &[&[1u8, 0, 0][..], &[0; 64]].concat());
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    frame_seeds(&root.join("frame"));
    records_seeds(&root.join("records"));
    snapshot_seeds(&root.join("snapshot"));
    traffic_seeds(&root.join("traffic"));
    recovery_seeds(&root.join("recovery"));
    println!("seeds written to {}", root.display());
}
