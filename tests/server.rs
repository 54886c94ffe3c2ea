//! End-to-end over loopback: a real server on an ephemeral port, driven by
//! the Rust client and by hand-made frames for every bad input.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{HKD, account, deposit, transfer};
use harbour::client::{Client, ClientError};
use harbour::config::Config;
use harbour::engine::book::SETTLEMENT_IN;
use harbour::protocol::frame::{self, ErrorCode, Header, RESPONSE_BIT, role};
use harbour::protocol::records::*;
use harbour::protocol::session::{Challenge, Hello};
use harbour::protocol::{ResultCode, kind};
use harbour::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &[u8] = b"hksw-dev-key";

fn config(dir: &std::path::Path) -> Config {
    let mut c = common::server_config(dir);
    c.channels.push(common::channel(2, b"accounts-only-key", role::ACCOUNTS));
    c
}

/// A server with its metrics endpoint on an ephemeral port.
async fn start_with_metrics(dir: &std::path::Path) -> server::Running {
    let mut cfg = config(dir);
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    server::start(&cfg).await.expect("starts")
}

/// The metrics endpoint's whole HTTP answer.
async fn scrape(addr: SocketAddr) -> String {
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).await.unwrap();
    text
}

async fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, 1, KEY).await.expect("connects")
}

fn codes(results: &[TransferResult]) -> Vec<ResultCode> {
    results.iter().map(|r| ResultCode::from_u16(r.code).expect("defined")).collect()
}

async fn balance(c: &Client, account_id: u64) -> (i64, u64) {
    let b = c.lookup_balances(&[BalanceKey { account_id, currency: HKD }]).await.unwrap()[0];
    (b.balance, b.held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_and_survives_a_restart() {
    money_moves(1).await;
}

/// The same traffic and the same answers with the two customers on
/// different shards: every transfer between them crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_across_shards_and_survives_a_restart() {
    assert_ne!(harbour::shard::shard_of(1024, 2), harbour::shard::shard_of(1025, 2));
    money_moves(2).await;
}

fn sharded(dir: &std::path::Path, shards: usize) -> Config {
    let mut c = config(dir);
    c.switch.shards = shards;
    c
}

async fn money_moves(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| sharded(dir, shards);
    let running = server::start(&config(dir.path())).await.expect("starts");
    let c = client(running.addr).await;
    c.ping().await.unwrap();
    let created = c.create_accounts(&[account(1024), account(1025), account(1024)]).await.unwrap();
    let created: Vec<u16> = created.iter().map(|r| r.code).collect();
    assert_eq!(created, [0, 0, ResultCode::AlreadyExists.as_u16()]);

    let deposits = c.submit_transfers(&[deposit(1, 1024, 100_000, HKD)]).await.unwrap();
    assert_eq!(codes(&deposits), [ResultCode::Ok]);
    let moved = c
        .submit_transfers(&[
            transfer(2, 1024, 1025, 30_000, HKD),
            transfer(2, 1024, 1025, 30_000, HKD),
            transfer(3, 1024, 1025, 1, 999),
            Transfer { flags: TRANSFER_PENDING, ..transfer(4, 1024, 1025, 5_000, HKD) },
            transfer(5, 1025, 1024, 1_000_000, HKD),
        ])
        .await
        .unwrap();
    assert_eq!(
        codes(&moved),
        [
            ResultCode::Ok,
            ResultCode::AlreadyExists,
            ResultCode::UnknownCurrency,
            ResultCode::Ok,
            ResultCode::InsufficientFunds
        ]
    );
    assert_eq!(moved[3].state, STATE_PENDING);
    assert_eq!(balance(&c, 1024).await, (70_000, 5_000));
    let fin = c.finalize_pending(&[Finalize { transfer_id: 4, action: FINALIZE_POST }]).await.unwrap();
    assert_eq!((fin[0].code, fin[0].state), (0, STATE_POSTED));
    assert_eq!(balance(&c, 1025).await, (35_000, 0));
    assert_eq!(balance(&c, SETTLEMENT_IN).await, (-100_000, 0));

    // Pipelining: many requests in flight on one connection, answers matched
    // by id whatever their order.
    let batch: Vec<Transfer> = (100..2100).map(|i| transfer(i, 1024, 1025, 1, HKD)).collect();
    let sent = futures_all(&c, &batch).await;
    assert_eq!(sent, 2000);
    assert_eq!(balance(&c, 1024).await, (65_000 - 2000, 0));

    // A clock move fires the CLIENT hold's 7-day window.
    c.submit_transfers(&[Transfer { flags: TRANSFER_PENDING, ..transfer(9, 1024, 1025, 10, HKD) }]).await.unwrap();
    let now = c.limits().server_time_ms;
    assert_eq!(c.set_time(now + 8 * 86_400_000).await.unwrap().code, 0);
    assert_eq!(c.lookup_transfers(&[9]).await.unwrap()[0].state, STATE_VOIDED);
    drop(c);
    running.stop().await.expect("stops cleanly");

    let running = server::start(&config(dir.path())).await.expect("restarts");
    let c = client(running.addr).await;
    let looked = c.lookup_transfers(&[1, 2, 4, 5, 9, 2099]).await.unwrap();
    let states: Vec<u8> = looked.iter().map(|r| r.state).collect();
    assert_eq!(states, [STATE_POSTED, STATE_POSTED, STATE_POSTED, STATE_NONE, STATE_VOIDED, STATE_POSTED]);
    assert_eq!(balance(&c, 1024).await, (63_000, 0));
    let again = c.submit_transfers(&[transfer(2, 1024, 1025, 30_000, HKD)]).await.unwrap();
    assert_eq!(codes(&again), [ResultCode::AlreadyExists], "idempotent across the restart");
    running.stop().await.unwrap();
}

/// Sends one-transfer requests keeping `max_in_flight` of them in flight;
/// returns how many were answered OK.
async fn futures_all(c: &Client, batch: &[Transfer]) -> usize {
    let window = c.limits().max_in_flight as usize;
    let mut in_flight = std::collections::VecDeque::new();
    let mut ok = 0;
    let mut settle = |answer: harbour::client::Response| {
        if TransferResult::decode(&answer.body).code == 0 {
            ok += 1;
        }
    };
    for t in batch {
        if in_flight.len() == window {
            let f: harbour::client::InFlight<'_> = in_flight.pop_front().unwrap();
            settle(f.wait().await.unwrap());
        }
        in_flight.push_back(c.send(kind::SUBMIT_TRANSFERS, 1, &encode_all(&[*t])).await.unwrap());
    }
    for f in in_flight {
        settle(f.wait().await.unwrap());
    }
    ok
}

// ---- raw frames ------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    nonce: [u8; 16],
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw { stream, buf: BytesMut::new(), nonce: [0; 16] };
        let (h, body) = raw.read().await.expect("CHALLENGE");
        assert_eq!(h.kind, kind::CHALLENGE);
        raw.nonce = Challenge::decode(&body).unwrap().server_nonce;
        raw
    }

    async fn authenticated(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.hello(1, KEY).await;
        let (h, body) = raw.read().await.expect("HELLO answer");
        assert_eq!((h.kind, h.request_id), (kind::HELLO | RESPONSE_BIT, 77));
        let limits = harbour::protocol::session::HelloResponse::decode(&body).expect("24 bytes");
        assert_eq!((limits.code, limits.roles), (0, role::ALL));
        assert_eq!((limits.max_batch, limits.max_body), (8189, 1 << 20));
        assert!(limits.max_in_flight >= 64);
        raw
    }

    async fn hello(&mut self, channel: u32, key: &[u8]) {
        let hello = Hello::new(channel, key, &self.nonce, [5; 16]);
        self.send(kind::HELLO, 1, 77, &hello.encode()).await;
    }

    async fn send(&mut self, kind: u16, count: u32, id: u64, body: &[u8]) {
        let mut out = BytesMut::new();
        frame::encode(&mut out, kind, count, id, body);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the switch closed the connection.
    async fn read(&mut self) -> Option<(Header, Bytes)> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, 1 << 24).expect("the switch sends good frames") {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
                .expect("the switch answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn expect_error(&mut self, code: ErrorCode, request_id: u64) {
        let (h, body) = self.read().await.expect("an ERROR frame");
        assert_eq!(h.kind, frame::ERROR_KIND, "expected {code}");
        let (got, detail) = frame::parse_error_body(&body).unwrap();
        assert_eq!((ErrorCode::from_u16(got), h.request_id), (Some(code), request_id), "{detail}");
        if code.closes() {
            assert!(self.read().await.is_none(), "{code} closes the connection");
        }
    }

    async fn expect_ping(&mut self, id: u64) {
        self.send(kind::PING, 0, id, &[]).await;
        let (h, _) = self.read().await.expect("PING answer: the connection stays open");
        assert_eq!((h.kind, h.request_id), (kind::PING | RESPONSE_BIT, id));
    }
}

fn frame_bytes(kind: u16, count: u32, id: u64, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode(&mut out, kind, count, id, body);
    out
}

/// Recomputes the header CRC after a test changed a header field.
fn reseal(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_error_gets_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(&config(dir.path())).await.expect("starts");
    let addr = running.addr;
    let c = client(addr).await;
    c.create_accounts(&[account(1024), account(1025)]).await.unwrap();
    c.submit_transfers(&[deposit(1, 1024, 1_000, HKD)]).await.unwrap();

    // Garbage bytes.
    let mut raw = Raw::connect(addr).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    raw.expect_error(ErrorCode::BadMagic, 0).await;

    // Version 2.
    let mut raw = Raw::authenticated(addr).await;
    let mut bytes = frame_bytes(kind::PING, 0, 11, &[]);
    bytes[4] = 2;
    reseal(&mut bytes);
    raw.send_bytes(&bytes).await;
    raw.expect_error(ErrorCode::BadVersion, 11).await;

    // Header checksum.
    let mut raw = Raw::authenticated(addr).await;
    let mut bytes = frame_bytes(kind::PING, 0, 12, &[]);
    bytes[29] ^= 1;
    raw.send_bytes(&bytes).await;
    raw.expect_error(ErrorCode::BadChecksum, 12).await;

    // Body checksum.
    let mut raw = Raw::authenticated(addr).await;
    let mut bytes = frame_bytes(kind::SUBMIT_TRANSFERS, 1, 13, &encode_all(&[transfer(50, 1024, 1025, 1, HKD)]));
    bytes[40] ^= 1;
    raw.send_bytes(&bytes).await;
    raw.expect_error(ErrorCode::BadChecksum, 13).await;

    // Oversized frame: the header alone is refused, the body never read.
    let mut raw = Raw::authenticated(addr).await;
    let mut bytes = frame_bytes(kind::SUBMIT_TRANSFERS, 0, 14, &[]);
    bytes[8..12].copy_from_slice(&((1u32 << 20) + 64).to_le_bytes());
    reseal(&mut bytes);
    raw.send_bytes(&bytes).await;
    raw.expect_error(ErrorCode::FrameTooLarge, 14).await;

    // Not authenticated: anything but HELLO first, even an unknown kind
    // (the session is checked before the kind).
    let mut raw = Raw::connect(addr).await;
    raw.send(kind::PING, 0, 15, &[]).await;
    raw.expect_error(ErrorCode::NotAuthenticated, 15).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(0x0099, 0, 16, &[]).await;
    raw.expect_error(ErrorCode::NotAuthenticated, 16).await;

    // Wrong key, unknown channel, and a HELLO replayed from another session.
    let mut raw = Raw::connect(addr).await;
    raw.hello(1, b"not-the-key!").await;
    raw.expect_error(ErrorCode::AuthFailed, 77).await;
    let mut raw = Raw::connect(addr).await;
    raw.hello(99, KEY).await;
    raw.expect_error(ErrorCode::AuthFailed, 77).await;
    let first = Raw::connect(addr).await;
    let replayed = Hello::new(1, KEY, &first.nonce, [5; 16]);
    let mut second = Raw::connect(addr).await;
    second.send(kind::HELLO, 1, 78, &replayed.encode()).await;
    second.expect_error(ErrorCode::AuthFailed, 78).await;

    // Errors that leave the connection open.
    let mut raw = Raw::authenticated(addr).await;
    raw.send(0x0099, 0, 20, &[]).await;
    raw.expect_error(ErrorCode::UnknownKind, 20).await;
    raw.send(kind::SUBMIT_TRANSFERS, 2, 21, &encode_all(&[transfer(51, 1024, 1025, 1, HKD)])).await;
    raw.expect_error(ErrorCode::BadLength, 21).await;
    raw.send(kind::PING, 1, 22, &[]).await;
    raw.expect_error(ErrorCode::BadLength, 22).await;
    let report = encode_all(&[StrRequest { year: 2026, month: 1, format: 1 }; 2]);
    raw.send(kind::EXPORT_STR, 2, 28, &report).await;
    raw.expect_error(ErrorCode::BadLength, 28).await;
    raw.send(kind::EXPORT_STR, 0, 29, &[]).await;
    raw.expect_error(ErrorCode::BadLength, 29).await;
    // Count 0 is allowed for every batch kind and gets an empty answer.
    raw.send(kind::SUBMIT_TRANSFERS, 0, 32, &[]).await;
    let (h, body) = raw.read().await.expect("an empty answer");
    assert_eq!((h.kind, h.count, body.len()), (kind::SUBMIT_TRANSFERS | RESPONSE_BIT, 0, 0));
    // The first failed check is the one reported: batch size before records.
    let mut many = encode_all(&vec![account(3000); 8190]);
    many[31] = 1;
    raw.send(kind::CREATE_ACCOUNTS, 8190, 33, &many).await;
    raw.expect_error(ErrorCode::BatchTooLarge, 33).await;
    let ids = vec![Id { id: 1 }; 8190];
    raw.send(kind::LOOKUP_TRANSFERS, 8190, 23, &encode_all(&ids)).await;
    raw.expect_error(ErrorCode::BatchTooLarge, 23).await;
    let malformed =
        encode_all(&[transfer(52, 1024, 1025, 1, HKD), Transfer { flags: 8, ..transfer(53, 1024, 1025, 1, HKD) }]);
    raw.send(kind::SUBMIT_TRANSFERS, 2, 24, &malformed).await;
    raw.expect_error(ErrorCode::Malformed, 24).await;
    let mut bad_account = encode_all(&[account(2000)]);
    bad_account[31] = 1;
    raw.send(kind::CREATE_ACCOUNTS, 1, 25, &bad_account).await;
    raw.expect_error(ErrorCode::Malformed, 25).await;
    let hello = Hello::new(1, KEY, &raw.nonce, [5; 16]);
    raw.send(kind::HELLO, 1, 26, &hello.encode()).await;
    raw.expect_error(ErrorCode::Malformed, 26).await;
    raw.expect_ping(27).await;

    // A role the channel does not have.
    let mut limited = Raw::connect(addr).await;
    limited.hello(2, b"accounts-only-key").await;
    limited.read().await.expect("HELLO answer");
    limited.send(kind::SUBMIT_TRANSFERS, 1, 30, &encode_all(&[transfer(54, 1024, 1025, 1, HKD)])).await;
    limited.expect_error(ErrorCode::Forbidden, 30).await;
    // The role is checked before the length.
    limited.send(kind::SUBMIT_TRANSFERS, 2, 32, &encode_all(&[transfer(54, 1024, 1025, 1, HKD)])).await;
    limited.expect_error(ErrorCode::Forbidden, 32).await;
    limited.expect_ping(31).await;

    // A frame cut off mid-body waits without blocking anyone, then vanishes
    // with its connection.
    let mut cut = Raw::authenticated(addr).await;
    let whole = frame_bytes(kind::SUBMIT_TRANSFERS, 1, 40, &encode_all(&[transfer(55, 1024, 1025, 1, HKD)]));
    cut.send_bytes(&whole[..60]).await;
    c.ping().await.expect("others are served meanwhile");
    drop(cut);

    // Nothing any bad frame carried was applied.
    let looked = c.lookup_transfers(&[50, 51, 52, 53, 54, 55]).await.unwrap();
    assert!(looked.iter().all(|r| r.code == ResultCode::TransferNotFound.as_u16()), "{looked:?}");
    assert_eq!(balance(&c, 1024).await, (1_000, 0));
    assert_eq!(c.create_accounts(&[account(2000)]).await.unwrap()[0].code, 0, "the malformed account was not created");
    running.stop().await.unwrap();
}

/// `n` one-deposit requests (transfer ids 1..=n into account 1024, request
/// ids 1000..), as one buffer of frames.
fn deposit_frames(n: u64) -> BytesMut {
    let mut bytes = BytesMut::new();
    for i in 0..n {
        let body = encode_all(&[deposit(u128::from(i) + 1, 1024, 1, HKD)]);
        frame::encode(&mut bytes, kind::SUBMIT_TRANSFERS, 1, 1000 + i, &body);
    }
    bytes
}

/// Pipelines `n` one-deposit requests in one write and reads every answer:
/// request id -> "OK" or the ERROR's name. Each is answered exactly once.
async fn flood(raw: &mut Raw, n: u64) -> std::collections::BTreeMap<u64, &'static str> {
    raw.send_bytes(&deposit_frames(n)).await;
    let mut answered = std::collections::BTreeMap::new();
    while (answered.len() as u64) < n {
        let (h, body) = raw.read().await.expect("every request is answered");
        let outcome = if h.kind == frame::ERROR_KIND {
            ErrorCode::from_u16(frame::parse_error_body(&body).unwrap().0).unwrap().name()
        } else {
            "OK"
        };
        assert!(answered.insert(h.request_id, outcome).is_none(), "answered twice: {}", h.request_id);
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_in_flight_is_refused_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_in_flight = 64;
    let running = server::start(&cfg).await.expect("starts");
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024)]).await.unwrap();
    let mut raw = Raw::authenticated(running.addr).await;
    // 2,000 requests arrive long before the first group's fsync is done.
    let answered = flood(&mut raw, 2000).await;
    let count = |what: &str| answered.values().filter(|v| **v == what).count();
    assert!(count("TOO_MANY_IN_FLIGHT") > 0, "the limit was reached");
    assert_eq!(count("OK") + count("TOO_MANY_IN_FLIGHT"), 2000, "the deep queue never said BUSY");
    assert_eq!(balance(&c, 1024).await, (count("OK") as i64, 0));
    raw.expect_ping(9).await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shard_queue_answers_busy_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_in_flight = 4096;
    cfg.switch.queue_depth_max = 2;
    cfg.switch.group_requests_max = 1;
    let running = server::start(&cfg).await.expect("starts");
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024)]).await.unwrap();

    // 400 deposits in one write: far more than a queue of two holds.
    let mut raw = Raw::authenticated(running.addr).await;
    let answered = flood(&mut raw, 400).await;
    let count = |what: &str| answered.values().filter(|v| **v == what).count();
    let (ok, busy) = (count("OK"), count("BUSY"));
    assert_eq!(ok + busy, 400, "max_in_flight is out of the way");
    assert!(busy > 0, "the queue filled ({ok} OK)");
    // Exactly the answered deposits were applied.
    assert_eq!(balance(&c, 1024).await, (ok as i64, 0));
    let refused: Vec<u128> =
        answered.iter().filter(|(_, v)| **v != "OK").map(|(id, _)| u128::from(*id - 1000 + 1)).collect();
    let looked = c.lookup_transfers(&refused).await.unwrap();
    assert!(looked.iter().all(|r| r.state == STATE_NONE), "a refused request changed nothing");
    raw.expect_ping(9).await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_and_idle_connections_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.connections_max = 3;
    cfg.idle_timeout_ms = 300;
    cfg.handshake_timeout_ms = 400;
    let running = server::start(&cfg).await.expect("starts");
    // Three sessions take the three seats.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(running.addr).await;
        raw.hello(1, KEY).await;
        raw.read().await.expect("HELLO answer");
        held.push(raw);
    }
    // A fourth is admitted to say HELLO (connections awaiting HELLO have
    // places of their own, docs/security.md), then told BUSY and closed.
    let mut waiting = Raw::connect(running.addr).await;
    match Client::connect(running.addr, 1, KEY).await {
        Err(e) => {
            assert_eq!(e.error_code(), Some(ErrorCode::Busy), "{e}");
            assert!(e.to_string().contains("connection limit reached"), "{e}");
        }
        Ok(_) => panic!("a fourth session past connections_max = 3"),
    }
    // The seated ones are still served.
    held[0].expect_ping(5).await;
    // An idle session closes after the idle timeout, a connection that never
    // says HELLO after the handshake timeout; both free their places.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(held[0].read().await.is_none(), "idle session closed");
    assert!(waiting.read().await.is_none(), "connection without HELLO closed");
    // (A closed connection keeps its place while it lingers for the peer's
    // close, at most a second; these peers close now.)
    drop(held);
    // The server notices the closes asynchronously: a seat frees shortly.
    let mut c = None;
    for _ in 0..60 {
        match Client::connect(running.addr, 1, KEY).await {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err(e) => {
                assert_eq!(e.error_code(), Some(ErrorCode::Busy), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    c.expect("a place is free again").ping().await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_answers_and_the_client_reports_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_metrics(dir.path()).await;
    let c = client(running.addr).await;
    let line = CreditLine { account_id: 1024, currency: 344, flags: 0, apr_bps: 100, limit: 1, micro_credit_max: 0 };
    let answer = c.request(kind::SET_CREDIT_LINES, 1, &encode_all(&[line])).await.unwrap();
    let answer = RecordResult::decode(&answer.body);
    assert_eq!((answer.key, answer.code), (1024, ResultCode::AccountNotFound.as_u16()));
    let loans: Vec<LoanResult> = c.batch(kind::LOOKUP_LOANS, &[Id { id: 7 }]).await.unwrap();
    assert_eq!((loans[0].loan_id, loans[0].code), (7, ResultCode::LoanNotFound.as_u16()));
    let str_answer =
        c.request(kind::EXPORT_STR, 1, &encode_all(&[StrRequest { year: 2026, month: 1, format: 1 }])).await.unwrap();
    // EXPORT_STR works (issue 5): a month without cases has nothing to report.
    let header = StrHeader::decode(&str_answer.body);
    assert_eq!((header.code, header.report_len), (ResultCode::NothingToReport.as_u16(), 0));
    assert_eq!(str_answer.body.len(), StrHeader::SIZE);

    let limited = Client::connect(running.addr, 2, b"accounts-only-key").await.unwrap();
    let refused = limited.submit_transfers(&[transfer(1, 4, 1024, 1, HKD)]).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::Forbidden));
    match Client::connect(running.addr, 1, b"wrong-key-here").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::AuthFailed as u16),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a wrong key authenticated"),
    }

    // The operators' endpoint answers in the Prometheus text format.
    let text = scrape(running.metrics_addr.expect("metrics on")).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in text.split("\r\n\r\n").nth(1).unwrap().lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(name.starts_with("harbour_"), "{line}");
        value.parse::<f64>().expect("a number");
    }
    // Counters are per process (tests share them), so at least ours.
    let forbidden = text
        .lines()
        .find_map(|l| l.strip_prefix("harbour_frame_errors_total{code=\"FORBIDDEN\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(forbidden >= Some(1), "{text}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_everything_begun_and_applies_nothing_else() {
    stopping_answers_everything_begun(1).await;
}

/// With two shards the transfers cross (1025 is on the other shard): a
/// stop still answers every one begun, in flight or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_settles_what_is_in_flight_between_shards() {
    stopping_answers_everything_begun(2).await;
}

async fn stopping_answers_everything_begun(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| sharded(dir, shards);
    let running = server::start(&config(dir.path())).await.expect("starts");
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024), account(1025)]).await.unwrap();
    c.submit_transfers(&[deposit(1 << 64, 1025, 1_000, HKD)]).await.unwrap();
    drop(c);
    let mut raw = Raw::authenticated(running.addr).await;
    let mut frames = BytesMut::new();
    for i in 0..300u64 {
        // Deposits into 1024 and, every third, a cent from 1025 to 1024.
        let t = if i % 3 == 0 {
            transfer(u128::from(i) + 1, 1025, 1024, 1, HKD)
        } else {
            deposit(u128::from(i) + 1, 1024, 1, HKD)
        };
        frame::encode(&mut frames, kind::SUBMIT_TRANSFERS, 1, 1000 + i, &encode_all(&[t]));
    }
    raw.send_bytes(&frames).await;
    // Stop while those are being applied.
    let first = raw.read().await.expect("a first answer");
    let stopping = tokio::spawn(running.stop());
    let mut ok: Vec<u128> = Vec::new();
    let mut frame = Some(first);
    while let Some((h, _)) = frame {
        if h.kind == kind::SUBMIT_TRANSFERS | RESPONSE_BIT {
            ok.push(u128::from(h.request_id - 1000 + 1));
        }
        frame = raw.read().await;
    }
    stopping.await.unwrap().expect("stops cleanly");

    // After a restart, exactly the answered transfers exist.
    let running = server::start(&config(dir.path())).await.expect("restarts");
    let c = client(running.addr).await;
    let ids: Vec<u128> = (1..=300).collect();
    let looked = c.lookup_transfers(&ids).await.unwrap();
    let applied: Vec<u128> = looked.iter().filter(|r| r.state == STATE_POSTED).map(|r| r.transfer_id).collect();
    // Several shards answer out of order.
    ok.sort_unstable();
    assert_eq!(applied, ok, "answered = applied");
    assert_eq!(balance(&c, 1024).await, (ok.len() as i64, 0));
    let crossed = ok.iter().filter(|&&id| (id - 1) % 3 == 0).count() as i64;
    assert_eq!(balance(&c, 1025).await, (1_000 - crossed, 0));
    assert_eq!(balance(&c, harbour::engine::book::INTERSHARD).await, (0, 0));
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_stops_reading_cannot_hold_up_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.write_timeout_ms = 300;
    let running = server::start(&cfg).await.expect("starts");
    let mut raw = Raw::authenticated(running.addr).await;
    // Large answers (8,189 balances, 393 KB each) that are never read.
    let keys = encode_all(&vec![BalanceKey { account_id: 4, currency: HKD }; 8189]);
    for i in 0..40 {
        raw.send(kind::LOOKUP_BALANCES, 8189, 100 + i, &keys).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "shutdown finished despite the stuck channel");
}

/// A channel that stops reading is closed at the write timeout, and what
/// it sends after that is never applied: it could not be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_stops_reading_is_closed_and_what_it_sends_after_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.write_timeout_ms = 300;
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    let running = server::start(&cfg).await.expect("starts");
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024)]).await.unwrap();
    let mut raw = Raw::authenticated(running.addr).await;
    // Large answers (8,189 balances, 393 KB each) that are not read.
    let keys = encode_all(&vec![BalanceKey { account_id: 4, currency: HKD }; 8189]);
    for i in 0..40 {
        raw.send(kind::LOOKUP_BALANCES, 8189, 100 + i, &keys).await;
    }
    // Past the write timeout, a deposit: the switch has given the channel
    // up, so it must not apply it (it may not even read it).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let late = frame_bytes(kind::SUBMIT_TRANSFERS, 1, 9_999, &encode_all(&[deposit(777, 1024, 5_000, HKD)]));
    let _ = raw.stream.write_all(&late).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = c.lookup_transfers(&[777]).await.unwrap();
    assert_eq!(found[0].code, ResultCode::TransferNotFound.as_u16(), "a request after the give-up was applied");
    assert_eq!(balance(&c, 1024).await, (0, 0));
    // The channel finds the connection closed after what was written.
    let mut frames = 0;
    while let Some((h, _)) = raw.read().await {
        assert_ne!(h.request_id, 9_999, "the late request was never answered either");
        frames += 1;
    }
    assert!(frames < 40, "the switch gave up before writing every answer ({frames})");
    let metrics = scrape(running.metrics_addr.expect("metrics")).await;
    let closed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("harbour_write_timeouts_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the counter is exported");
    assert!(closed >= 1, "the close is counted");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_frees_places_as_answers_arrive_not_as_callers_wait() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(&config(dir.path())).await.expect("starts");
    let c = std::sync::Arc::new(client(running.addr).await);
    c.create_accounts(&[account(1024)]).await.unwrap();
    // Two tasks each hold 100 unanswered-by-them requests: 200 > the window
    // of 128, which only works if answers free places on arrival.
    let tasks: Vec<_> = (0..2u128)
        .map(|t| {
            let c = std::sync::Arc::clone(&c);
            tokio::spawn(async move {
                let mut held = Vec::new();
                for i in 0..100u128 {
                    let body = encode_all(&[deposit(1 + t * 1000 + i, 1024, 1, HKD)]);
                    held.push(c.send(kind::SUBMIT_TRANSFERS, 1, &body).await.expect("a place frees up"));
                }
                let mut ok = 0;
                for f in held {
                    ok += usize::from(TransferResult::decode(&f.wait().await.unwrap().body).code == 0);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += tokio::time::timeout(Duration::from_secs(20), t).await.expect("no deadlock").unwrap();
    }
    assert_eq!(ok, 200);
    assert_eq!(balance(&c, 1024).await, (200, 0));
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currencies_convert_over_the_wire_with_quotes_and_the_manual_clock() {
    currencies_convert(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currencies_convert_across_shards_with_quotes() {
    currencies_convert(2).await;
}

async fn currencies_convert(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| sharded(dir, shards);
    let running = server::start(&config(dir.path())).await.expect("starts");
    let c = client(running.addr).await;
    const USD: u16 = 840;
    const CNY: u16 = 156;
    c.create_accounts(&[account(1024), account(1025)]).await.unwrap();
    c.submit_transfers(&[deposit(1, 1024, 100_000, HKD)]).await.unwrap();
    let set = c
        .set_fx_rates(&[
            FxRate { from: HKD, to: USD, rate_e9: 128_000_000 },
            FxRate { from: USD, to: HKD, rate_e9: 7_780_000_000 },
            FxRate { from: HKD, to: CNY, rate_e9: 923_456_789 },
            FxRate { from: USD, to: USD, rate_e9: 1 },
        ])
        .await
        .unwrap();
    let set: Vec<u16> = set.iter().map(|r| r.code).collect();
    assert_eq!(set, [0, 0, 0, ResultCode::InvalidField.as_u16()]);
    let limited = Client::connect(running.addr, 2, b"accounts-only-key").await.unwrap();
    let refused = limited.set_fx_rates(&[FxRate { from: HKD, to: USD, rate_e9: 1 }]).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::Forbidden), "only TREASURY sets rates");

    // A quote locks 0.128; the rate then moves to 0.100; the quoted transfer
    // still gets 12.80 for HK$100.00.
    let q = c.fx_quote(&[QuoteRequest { from: HKD, to: USD, flags: 0, amount: 10_000 }]).await.unwrap()[0];
    assert_eq!((q.code, q.credit_amount), (0, 1_280));
    c.set_fx_rates(&[FxRate { from: HKD, to: USD, rate_e9: 100_000_000 }]).await.unwrap();
    let t = Transfer { fx_quote_id: q.quote_id, credit_currency: USD, ..transfer(2, 1024, 1025, 10_000, HKD) };
    let r = c.submit_transfers(&[t]).await.unwrap()[0];
    assert_eq!((r.code, r.credit_amount, r.rate_e9), (0, 1_280, 128_000_000));
    // Without a quote: the current rate.
    let now = Transfer { credit_currency: USD, ..transfer(3, 1024, 1025, 10_000, HKD) };
    assert_eq!(c.submit_transfers(&[now]).await.unwrap()[0].credit_amount, 1_000);

    // A quote expires on the switch's clock: good one ms before, not at.
    let q = c.fx_quote(&[QuoteRequest { from: HKD, to: CNY, flags: 0, amount: 1_000 }]).await.unwrap()[0];
    assert_eq!(c.set_time(q.expires_at_ms - 1).await.unwrap().code, 0);
    let early = Transfer { fx_quote_id: q.quote_id, credit_currency: CNY, ..transfer(4, 1024, 1025, 1_000, HKD) };
    let q2 = c.fx_quote(&[QuoteRequest { from: HKD, to: CNY, flags: 0, amount: 1_000 }]).await.unwrap()[0];
    assert_eq!(c.set_time(q.expires_at_ms).await.unwrap().code, 0);
    assert_eq!(c.submit_transfers(&[early]).await.unwrap()[0].code, ResultCode::QuoteInvalid.as_u16());
    let late = Transfer { fx_quote_id: q2.quote_id, credit_currency: CNY, ..transfer(5, 1024, 1025, 1_000, HKD) };
    let r = c.submit_transfers(&[late]).await.unwrap()[0];
    assert_eq!((r.code, r.credit_amount), (0, 923), "HK$10.00 x 0.923456789 = 9.23 CNY");

    // FX_POSITION shows the bank's open position per currency.
    let fx = c
        .lookup_balances(&[BalanceKey { account_id: 1, currency: HKD }, BalanceKey { account_id: 1, currency: USD }])
        .await
        .unwrap();
    assert_eq!((fx[0].balance, fx[1].balance), (21_000, -2_280));
    drop(c);
    drop(limited);
    running.stop().await.unwrap();

    // Rates and quotes are replayed: the same answers after a restart.
    let running = server::start(&config(dir.path())).await.expect("restarts");
    let c = client(running.addr).await;
    let r = c.lookup_transfers(&[2, 5]).await.unwrap();
    assert_eq!((r[0].credit_amount, r[1].credit_amount), (1_280, 923));
    let q = c.fx_quote(&[QuoteRequest { from: USD, to: CNY, flags: 0, amount: 10_000 }]).await.unwrap()[0];
    assert_eq!((q.code, q.credit_amount), (0, 71_844), "the cross through HKD survives in the rate table");
    running.stop().await.unwrap();
}

/// A stand-in switch that answers a client's first two requests in reverse
/// order: the client must match answers by request id, not by order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_matches_answers_that_arrive_out_of_order() {
    use harbour::protocol::session::HelloResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut out = BytesMut::new();
        let challenge = Challenge { server_nonce: [3; 16], server_version: 1 };
        frame::encode(&mut out, kind::CHALLENGE, 1, 0, &challenge.encode());
        s.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < 3 {
            if let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
                if f.0.kind == kind::HELLO {
                    let limits = HelloResponse {
                        code: 0,
                        roles: role::ALL,
                        max_batch: 8189,
                        max_in_flight: 64,
                        max_body: 1 << 20,
                        server_time_ms: 0,
                    };
                    let mut out = BytesMut::new();
                    frame::encode(&mut out, kind::HELLO | RESPONSE_BIT, 1, f.0.request_id, &limits.encode());
                    s.write_all(&out).await.unwrap();
                }
                frames.push(f);
                continue;
            }
            s.read_buf(&mut buf).await.unwrap();
        }
        // Answer the second lookup first, each with its own id echoed.
        let mut out = BytesMut::new();
        for (h, body) in [&frames[2], &frames[1]] {
            let id = Id::decode(body).id;
            let answer = TransferResult { transfer_id: id, code: 14, ..TransferResult::default() };
            frame::encode(&mut out, kind::LOOKUP_TRANSFERS | RESPONSE_BIT, 1, h.request_id, &encode_all(&[answer]));
        }
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let c = Client::connect(addr, 1, KEY).await.unwrap();
    let first = c.send(kind::LOOKUP_TRANSFERS, 1, &encode_all(&[Id { id: 111 }])).await.unwrap();
    let second = c.send(kind::LOOKUP_TRANSFERS, 1, &encode_all(&[Id { id: 222 }])).await.unwrap();
    let a = TransferResult::decode(&first.wait().await.unwrap().body);
    let b = TransferResult::decode(&second.wait().await.unwrap().body);
    assert_eq!((a.transfer_id, b.transfer_id), (111, 222), "each answer went to its own request");
    fake.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aml_over_the_wire_holds_releases_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_metrics(dir.path()).await;
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024), account(1025)]).await.unwrap();
    c.submit_transfers(&[deposit(1, 1024, 20_000_000, HKD)]).await.unwrap();
    let remit = |id, amount, country| Transfer { destination_country: country, ..transfer(id, 1024, 3, amount, HKD) };
    let got = c
        .submit_transfers(&[
            remit(2, 100, 408),                      // level 2
            transfer(3, 1024, 1025, 7_999_900, HKD), // exactly HK$80,000.00 with #2
            transfer(4, 1024, 1025, 1, HKD),         // one cent over: level 1
            remit(5, 100, 608),                      // over the day's limit too
        ])
        .await
        .unwrap();
    let holds: Vec<(u8, u8)> = got.iter().map(|r| (r.state, r.holds)).collect();
    assert_eq!(holds, vec![(STATE_PENDING, 2), (STATE_POSTED, 0), (STATE_PENDING, 1), (STATE_PENDING, 1)]);
    // Step-ups from the channel, a cancel from the customer.
    let answers = c
        .confirm_step_up(&[
            StepUp { transfer_id: 2, method: METHOD_FACE, outcome: OUTCOME_PASS },
            StepUp { transfer_id: 2, method: METHOD_SMS_OTP, outcome: OUTCOME_PASS },
            StepUp { transfer_id: 4, method: METHOD_FACE, outcome: OUTCOME_FAIL },
        ])
        .await
        .unwrap();
    assert_eq!(codes(&answers), [ResultCode::WrongMethod, ResultCode::Ok, ResultCode::Ok]);
    assert_eq!((answers[1].state, answers[2].state), (STATE_POSTED, STATE_VOIDED));
    assert_eq!(c.cancel_transfers(&[5]).await.unwrap()[0].state, STATE_VOIDED);
    // The month's report, both formats.
    let (header, xml) = c.export_str(2026, 1, 1).await.unwrap();
    assert_eq!((header.code, header.format), (0, 1));
    let xml = String::from_utf8(xml).unwrap();
    assert_eq!(xml.matches("<case>").count(), 3);
    for outcome in ["passed", "failed", "cancelled"] {
        assert!(xml.contains(&format!("<outcome>{outcome}</outcome>")), "{outcome}: {xml}");
    }
    let (header, csv) = c.export_str(2026, 1, 2).await.unwrap();
    assert_eq!((header.code, header.format, csv.iter().filter(|b| **b == b'\n').count()), (0, 2, 4));
    // The same report a case a page (EXPORT_STR_PAGE).
    let mut request = StrPageRequest { year: 2026, month: 1, format: 1, limit: 1, ..StrPageRequest::default() };
    let mut pages = Vec::new();
    loop {
        let (header, page) = c.export_str_page(&request).await.unwrap();
        assert_eq!((header.code, header.cases, header.rows), (0, 3, 1), "{header:?}");
        pages.extend_from_slice(&page);
        if header.last() {
            break;
        }
        request.as_of_ms = header.as_of_ms;
        (request.after_ms, request.after_id) = (header.next_after_ms, header.next_after_id);
    }
    assert_eq!(String::from_utf8(pages).unwrap(), xml);
    let bad = c.export_str_page(&StrPageRequest { limit: 0, ..request }).await.unwrap();
    assert_eq!(bad.0.code, ResultCode::InvalidField.as_u16());
    // A month outside 1..12 is INVALID_FIELD; a bad format never reaches
    // the engine (MALFORMED).
    assert_eq!(c.export_str(2026, 13, 1).await.unwrap().0.code, ResultCode::InvalidField.as_u16());
    let bad = c.export_str(2026, 1, 3).await.unwrap_err();
    assert_eq!(bad.error_code(), Some(ErrorCode::Malformed));
    // The operators see the holds.
    let text = scrape(running.metrics_addr.expect("metrics on")).await;
    for hold in ["FACE_REVIEW", "SMS_OTP"] {
        let line = text.lines().find(|l| l.starts_with("harbour_aml_holds_total") && l.contains(hold)).unwrap();
        let value: u64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert!(value >= 1, "{line}");
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_is_prometheus_text_with_stage_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with_metrics(dir.path()).await;
    let c = client(running.addr).await;
    c.create_accounts(&[account(1024), account(1025)]).await.unwrap();
    let ts: Vec<Transfer> = (1..=50).map(|i| deposit(i, 1024 + (i as u64 % 2), 100, HKD)).collect();
    c.submit_transfers(&ts).await.unwrap();
    for i in 0..20u128 {
        c.submit_transfers(&[transfer(100 + i, 1024, 1025, 1, HKD)]).await.unwrap();
    }
    let text = scrape(running.metrics_addr.expect("metrics on")).await;
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    let find = |name: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("{name} {label:?} in {body}"))
            .value
            .clone()
    };
    // Histograms per stage: counts, and buckets that never decrease.
    // The whole timeline of a request (`aml` only with a remote scorer).
    let timeline = harbour::metrics::Stage::ALL.map(harbour::metrics::Stage::name);
    for stage in timeline.into_iter().filter(|s| *s != "aml" && *s != "upkeep") {
        match find("harbour_stage_seconds", ("stage", stage)) {
            prometheus_parse::Value::Histogram(buckets) => {
                let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
                assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{stage}: {counts:?}");
                assert!(*counts.last().unwrap() >= 20.0, "{stage} saw the requests: {counts:?}");
            }
            other => panic!("{stage}: {other:?}"),
        }
        match find("harbour_stage_seconds_quantiles", ("stage", stage)) {
            prometheus_parse::Value::Summary(quantiles) => {
                let p99 = quantiles.iter().find(|q| q.quantile == 0.99).expect("p99").count;
                assert!(p99 > 0.0 && p99 < 10.0, "{stage} p99 {p99} s");
            }
            other => panic!("{stage}: {other:?}"),
        }
    }
    match find("harbour_request_seconds", ("kind", "SUBMIT_TRANSFERS")) {
        prometheus_parse::Value::Histogram(b) => assert!(b.last().unwrap().count >= 21.0),
        other => panic!("{other:?}"),
    }
    match find("harbour_results_total", ("code", "OK")) {
        prometheus_parse::Value::Counter(n) => assert!(n >= 72.0, "{n}"),
        other => panic!("{other:?}"),
    }
    assert!(body.contains("harbour_log_bytes_total") && body.contains("harbour_queue_depth"));
    // Every metric the Grafana dashboard and docs/operations.md name exists.
    for doc in ["docs/grafana-dashboard.json", "docs/operations.md"] {
        let text = std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let name = word.trim_end_matches("_bucket");
            // A cluster node's metrics: tests/cluster_serve.rs.
            let cluster_only = name.starts_with("harbour_cluster_");
            if name.starts_with("harbour_") && name.len() > "harbour_".len() && !cluster_only {
                let base = name.trim_end_matches("_total");
                assert!(body.contains(base), "{doc} names {name}, which the endpoint does not serve");
            }
        }
    }
    // `harbour top` reads the same endpoint.
    let metrics = running.metrics_addr.unwrap();
    let first = tokio::task::spawn_blocking(move || harbour::top::scrape(metrics, None)).await.unwrap().unwrap();
    let screen = harbour::top::render(&harbour::top::parse(&first), None, Duration::from_secs(1));
    assert!(screen.contains("fsync") && screen.contains("SUBMIT_TRANSFERS") && screen.contains("OK"), "{screen}");
    running.stop().await.unwrap();
}

/// Answers waiting for channels that read slowly are bounded switch-wide
/// (`answer_bytes_max`): past it requests are answered BUSY with nothing
/// applied, and every request is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_waiting_for_slow_readers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.answer_bytes_max = 4 << 20;
    let running = server::start(&cfg).await.expect("starts");
    let raw = Raw::authenticated(running.addr).await;
    let (mut read, mut write) = raw.stream.into_split();
    // Large answers (8,189 balances, 393 KB each), not read for a while.
    let keys = encode_all(&vec![BalanceKey { account_id: 4, currency: HKD }; 8189]);
    let n = 60u64;
    let sender = tokio::spawn(async move {
        for i in 0..n {
            write.write_all(&frame_bytes(kind::LOOKUP_BALANCES, 8189, 100 + i, &keys)).await.unwrap();
        }
        write
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut buf = raw.buf;
    let mut answered = std::collections::BTreeMap::new();
    while (answered.len() as u64) < n {
        let (h, body) = loop {
            if let Some(f) = frame::decode(&mut buf, 1 << 24).expect("good frames") {
                break f;
            }
            let got = tokio::time::timeout(Duration::from_secs(10), read.read_buf(&mut buf)).await;
            assert!(matches!(got, Ok(Ok(k)) if k > 0), "the switch answers every request");
        };
        let outcome = if h.kind == frame::ERROR_KIND {
            let (code, detail) = frame::parse_error_body(&body).unwrap();
            assert_eq!(ErrorCode::from_u16(code), Some(ErrorCode::Busy), "{detail}");
            assert!(detail.contains("budget"), "{detail}");
            "BUSY"
        } else {
            "OK"
        };
        assert!(answered.insert(h.request_id, outcome).is_none(), "answered twice: {}", h.request_id);
    }
    let busy = answered.values().filter(|v| **v == "BUSY").count();
    assert!(busy > 0 && busy < n as usize, "some answers waited, then the budget refused ({busy} BUSY)");
    drop(sender.await.unwrap());
    running.stop().await.unwrap();
}
