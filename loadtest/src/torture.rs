//! The torture harness: real `harbour serve` processes under mixed traffic
//! from clients that remember every answer, killed with SIGKILL at random
//! moments, with disk-full and slow-disk phases; after every restart each
//! answered effect is checked against the books (`docs/reliability.md`,
//! "The torture harness").
//!
//! Accounts come in two groups. The *model* accounts only send each other
//! plain HKD transfers and take deposits, so the harness knows their exact
//! balances from the answers (and from which unanswered requests a restart
//! shows applied). The *mixed* accounts take every other kind: cross-currency
//! transfers, quotes, PENDING transfers and their finalizing, cancels,
//! step-ups, remittances (some to a high-risk country), automatic
//! micro-credit, loans and repayments, lookups. Exact resends of answered
//! requests go to both. After every restart:
//! - every request left unanswered by the kill is stored entirely or not at
//!   all;
//! - every transfer and loan answered OK in the cycle is stored, in a state
//!   its answer allows (POSTED stays POSTED, VOIDED stays VOIDED, PENDING
//!   may have moved on); every refused one (a result code, or ERROR BUSY)
//!   is not stored; and a sample of earlier cycles' answers is checked again;
//! - every model account's balance is exactly what the answers predict
//!   (each effect once: none lost, none doubled);
//! - no customer balance is negative;
//! - the start itself passed the engine's full audit (a shard whose
//!   recovered state fails it refuses to start).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harbour::client::{Client, ClientError};
use harbour::protocol::ResultCode;
use harbour::protocol::accounts::{REMITTANCE_OUT, SETTLEMENT_IN};
use harbour::protocol::frame::ErrorCode;
use harbour::protocol::records::{
    ACCOUNT_KIND_CUSTOMER, Account, BalanceKey, CREDIT_AUTO_MICRO_CREDIT, CreditLine, Disburse, FINALIZE_POST,
    FINALIZE_VOID, Finalize, FxRate, LoanResult, METHOD_SMS_OTP, OUTCOME_PASS, QuoteRequest, Repay, STATE_PENDING,
    STATE_POSTED, STATE_VOIDED, StepUp, TRANSFER_AUTO_CREDIT, TRANSFER_PENDING, Transfer, TransferResult,
};
use harbour::sim::Rng;
use serde::Serialize;

const HKD: u16 = 344;
const USD: u16 = 840;
const CNY: u16 = 156;
const KEY: &[u8] = b"hksw-torture-key";
/// Model accounts: plain HKD only, balances predicted exactly.
const MODEL: std::ops::Range<u64> = 1024..1056;
/// Mixed accounts: every other kind of request.
const MIXED: std::ops::Range<u64> = 2048..2080;
/// Mixed accounts with a credit line (loans, micro-credit).
const LINED: std::ops::Range<u64> = 2048..2056;
const MODEL_FUNDING: u64 = 100_000_000;
/// Earlier answers checked again after each restart.
const SAMPLE: usize = 2_000;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a torture run does.
#[derive(Clone, Debug)]
pub struct TortureConfig {
    /// The `harbour` binary.
    pub harbour: PathBuf,
    /// A working directory: `data/`, `harbour.toml`, the filler of the
    /// disk-full phases.
    pub dir: PathBuf,
    pub cycles: u64,
    pub shards: usize,
    pub seed: u64,
    pub connections: usize,
    /// The longest a cycle's traffic runs before the kill (each cycle draws
    /// a moment up to it).
    pub run_max: Duration,
    /// Every n-th cycle fills the disk past the reserve (0: never).
    pub disk_full_every: u64,
    /// Every n-th cycle runs with slow fsyncs (0: never).
    pub slow_disk_every: u64,
    /// Each shard's transfer capacity (the switch sizes its tables, and so
    /// its start, by it).
    pub transfers_capacity: usize,
    /// Called after every cycle (progress).
    pub progress: Option<fn(&TortureReport)>,
}

/// What a torture run found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TortureReport {
    pub cycles: u64,
    pub kills: u64,
    pub requests_answered: u64,
    pub requests_unanswered: u64,
    pub unanswered_applied: u64,
    pub unanswered_not_applied: u64,
    pub transfers_answered_ok: u64,
    pub refused_busy_disk: u64,
    pub refused_busy_other: u64,
    pub disk_full_cycles: u64,
    pub full_disk_starts_refused: u64,
    pub slow_disk_cycles: u64,
    /// Disk-full phases were asked for but the disk has under 2 GiB free.
    pub disk_full_skipped: bool,
    pub effects_checked: u64,
    pub seconds: f64,
    /// Every broken promise, with the cycle it was found in.
    pub violations: Vec<String>,
}

/// A number in `r`.
fn in_range(rng: &mut Rng, r: std::ops::Range<u64>) -> u64 {
    r.start + rng.below(r.end - r.start)
}

/// One request a client sent.
#[derive(Clone, Debug)]
enum Sent {
    Transfers {
        items: Vec<Transfer>,
        model: bool,
    },
    /// Finalize, cancel or step-up of one pending transfer.
    Settle(u128),
    Disburse(u128),
    Repay,
    Other,
}

/// What the switch said.
#[derive(Clone, Debug)]
enum Told {
    Transfers(Vec<TransferResult>),
    Loans(Vec<LoanResult>),
    Answered,
    Busy {
        disk: bool,
    },
    /// No answer: the switch was killed.
    Nothing,
}

/// The harness's memory across cycles.
#[derive(Default)]
struct Memory {
    /// Expected HKD balance of every model account.
    model: HashMap<u64, i64>,
    /// The state each transfer answered OK was told last (None: in doubt).
    states: HashMap<u128, Option<u8>>,
    told_ok: Vec<u128>,
    loans: Vec<u128>,
    /// Pending transfers a client may settle.
    pending: Vec<u128>,
    /// Model requests answered OK, for exact resends.
    resendable: Vec<Vec<Transfer>>,
    next_id: u64,
    clock_ms: u64,
}

fn config_text(shards: usize, transfers: usize, reserve: u64) -> String {
    format!(
        "shards = {shards}\nclock = \"manual\"\naccounts_capacity = 4096\ntransfers_capacity = {transfers}\n\
         [aml]\nbehaviour = false\n[wal]\ndisk_reserve_bytes = {reserve}\nsegment_bytes_max = 16777216\n\
         [[channels]]\nid = 1\nkey = \"{}\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\", \"LENDING\", \"TREASURY\", \"OPERATOR\"]\n",
        String::from_utf8_lossy(KEY)
    )
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let storage = harbour::wal::storage::FileStorage::new(dir).map_err(|e| e.to_string())?;
    harbour::wal::storage::Storage::free_bytes(&storage).map_err(|e| e.to_string())
}

/// Takes `len` bytes of real disk space (not a sparse file).
fn fill(path: &Path, len: u64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: a valid open descriptor and a non-negative length.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r != 0 {
        return Err(format!("fallocate {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts `harbour serve`; Err(stderr) if it exits instead.
fn start(cfg: &TortureConfig, slow_us: Option<u64>) -> Result<Server, String> {
    let mut command = Command::new(&cfg.harbour);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--data"])
        .arg(cfg.dir.join("data"))
        .arg("--config")
        .arg(cfg.dir.join("harbour.toml"))
        .env("HARBOUR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(us) = slow_us {
        command.env("HARBOUR_FAILPOINT_SYNC_DELAY_US", us.to_string());
    }
    let (child, addr) = listening(command, &cfg.harbour)?;
    Ok(Server { child, addr })
}

/// Spawns a `harbour serve` command (stdout piped here; stderr as the
/// caller set it, drained if piped, so the switch never blocks on it) and
/// waits at most `START_TIMEOUT` for the address it prints; Err(stderr) if
/// it exits instead.
pub(crate) fn listening(mut command: Command, harbour: &Path) -> Result<(Child, SocketAddr), String> {
    let mut child = command.stdout(Stdio::piped()).spawn().map_err(|e| format!("{}: {e}", harbour.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    if let Some(addr) = line.trim().strip_prefix("listening on ") {
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut BufReader::new(stderr), &mut std::io::sink()));
        }
        let addr = addr.parse().map_err(|_| format!("unexpected: {line:?}"))?;
        return Ok((child, addr));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    Err(format!("the switch did not start: {line:?} {err}"))
}

fn kill(server: &mut Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

async fn connect(addr: SocketAddr) -> Result<Client, String> {
    let c = Client::connect(addr, 1, KEY).await.map_err(|e| format!("connect: {e}"))?;
    Ok(c.with_timeout(Duration::from_secs(30)))
}

/// Accounts, rates, credit lines and the model's funding, once.
async fn set_up(c: &Client, memory: &mut Memory) -> Result<(), String> {
    let accounts: Vec<Account> = MODEL
        .chain(MIXED)
        .map(|id| Account {
            account_id: id,
            kind: ACCOUNT_KIND_CUSTOMER,
            flags: 0,
            home_country: 344,
            customer_ref: id,
        })
        .collect();
    let codes: Vec<u16> =
        c.create_accounts(&accounts).await.map_err(|e| e.to_string())?.iter().map(|r| r.code).collect();
    if codes.iter().any(|&c| c != 0) {
        return Err(format!("creating accounts: {codes:?}"));
    }
    let rates = [
        FxRate { from: USD, to: HKD, rate_e9: 7_800_000_000 },
        FxRate { from: HKD, to: USD, rate_e9: 127_000_000 },
        FxRate { from: HKD, to: CNY, rate_e9: 910_000_000 },
        FxRate { from: CNY, to: HKD, rate_e9: 1_080_000_000 },
    ];
    c.set_fx_rates(&rates).await.map_err(|e| e.to_string())?;
    let lines: Vec<CreditLine> = LINED
        .map(|id| CreditLine {
            account_id: id,
            currency: HKD,
            flags: CREDIT_AUTO_MICRO_CREDIT,
            apr_bps: 1_000,
            limit: 5_000_000,
            micro_credit_max: 100_000,
        })
        .collect();
    c.set_credit_lines(&lines).await.map_err(|e| e.to_string())?;
    let mut deposits = Vec::new();
    for id in MODEL {
        deposits.push(transfer(memory, SETTLEMENT_IN, id, MODEL_FUNDING, HKD));
        memory.model.insert(id, MODEL_FUNDING as i64);
    }
    for id in MIXED {
        for currency in [HKD, USD, CNY] {
            deposits.push(transfer(memory, SETTLEMENT_IN, id, 5_000_000, currency));
        }
    }
    let results = c.submit_transfers(&deposits).await.map_err(|e| e.to_string())?;
    if results.iter().any(|r| r.code != 0) {
        return Err("funding refused".into());
    }
    Ok(())
}

fn transfer(memory: &mut Memory, debit: u64, credit: u64, amount: u64, currency: u16) -> Transfer {
    memory.next_id += 1;
    Transfer {
        transfer_id: u128::from(memory.next_id),
        debit_account: debit,
        credit_account: credit,
        amount,
        debit_currency: currency,
        credit_currency: currency,
        destination_country: 0,
        flags: 0,
        fx_quote_id: 0,
        user_data: 0,
    }
}

/// Draws the next request of a client. Ids come from one counter, so every
/// id is fresh but for deliberate resends.
fn draw(rng: &mut Rng, memory: &mut Memory) -> (u16, Vec<u8>, Sent) {
    use harbour::protocol::kind;
    use harbour::protocol::records::encode_all;
    let pick = rng.below(100);
    if pick < 45 {
        // Plain HKD among the model accounts, or a deposit into one.
        let n = 1 + rng.below(6);
        let items: Vec<Transfer> = (0..n)
            .map(|_| {
                let debit = in_range(rng, MODEL);
                let mut credit = in_range(rng, MODEL);
                if credit == debit {
                    credit = MODEL.start + (credit + 1 - MODEL.start) % (MODEL.end - MODEL.start);
                }
                let amount = 1 + rng.below(100);
                if rng.below(10) == 0 {
                    transfer(memory, SETTLEMENT_IN, credit, amount * 10, HKD)
                } else {
                    transfer(memory, debit, credit, amount, HKD)
                }
            })
            .collect();
        return (kind::SUBMIT_TRANSFERS, encode_all(&items), Sent::Transfers { items, model: true });
    }
    if pick < 50 && !memory.resendable.is_empty() {
        let items = memory.resendable[rng.below(memory.resendable.len() as u64) as usize].clone();
        return (kind::SUBMIT_TRANSFERS, encode_all(&items), Sent::Transfers { items, model: true });
    }
    if pick < 75 {
        let n = 1 + rng.below(4);
        let items: Vec<Transfer> = (0..n)
            .map(|_| {
                let debit = in_range(rng, MIXED);
                let credit = MIXED.start + (debit + 1 + rng.below(30) - MIXED.start) % (MIXED.end - MIXED.start);
                let mut t = transfer(memory, debit, credit, 1 + rng.below(20_000), HKD);
                match rng.below(8) {
                    0 => (t.debit_currency, t.credit_currency) = (USD, HKD),
                    1 => (t.debit_currency, t.credit_currency) = (HKD, CNY),
                    2 => t.flags = TRANSFER_PENDING,
                    3 => {
                        t.credit_account = REMITTANCE_OUT;
                        t.destination_country = [156, 840, 408][rng.below(3) as usize];
                    }
                    4 => {
                        t.debit_account = in_range(rng, LINED);
                        t.flags = TRANSFER_AUTO_CREDIT;
                        t.amount = 100_000 + rng.below(6_000_000);
                    }
                    5 => t.amount = 1 << 40,
                    _ => {}
                }
                t
            })
            .collect();
        return (kind::SUBMIT_TRANSFERS, encode_all(&items), Sent::Transfers { items, model: false });
    }
    if pick < 85 && !memory.pending.is_empty() {
        let at = rng.below(memory.pending.len() as u64) as usize;
        let id = memory.pending.swap_remove(at);
        return match rng.below(4) {
            0 => (kind::CANCEL_TRANSFERS, encode_all(&[harbour::protocol::records::Id { id }]), Sent::Settle(id)),
            1 => {
                let s = StepUp { transfer_id: id, method: METHOD_SMS_OTP, outcome: OUTCOME_PASS };
                (kind::CONFIRM_STEP_UP, encode_all(&[s]), Sent::Settle(id))
            }
            n => {
                let action = if n == 2 { FINALIZE_POST } else { FINALIZE_VOID };
                (kind::FINALIZE_PENDING, encode_all(&[Finalize { transfer_id: id, action }]), Sent::Settle(id))
            }
        };
    }
    if pick < 90 {
        memory.next_id += 1;
        let loan_id = u128::from(memory.next_id);
        let d = Disburse {
            loan_id,
            account_id: in_range(rng, LINED),
            currency: HKD,
            term_days: 30,
            principal: 1 + rng.below(50_000),
        };
        return (kind::DISBURSE_LOANS, encode_all(&[d]), Sent::Disburse(loan_id));
    }
    if pick < 94 && !memory.loans.is_empty() {
        memory.next_id += 1;
        let r = Repay {
            repayment_id: u128::from(memory.next_id),
            loan_id: memory.loans[rng.below(memory.loans.len() as u64) as usize],
            amount: 1 + rng.below(20_000),
        };
        return (kind::REPAY_LOANS, encode_all(&[r]), Sent::Repay);
    }
    if pick < 97 {
        let q = QuoteRequest { from: USD, to: HKD, flags: 0, amount: 1 + rng.below(10_000) };
        return (kind::FX_QUOTE, encode_all(&[q]), Sent::Other);
    }
    let keys: Vec<BalanceKey> =
        (0..4).map(|_| BalanceKey { account_id: in_range(rng, MIXED), currency: HKD }).collect();
    (kind::LOOKUP_BALANCES, encode_all(&keys), Sent::Other)
}

fn told_of(kind: u16, body: &[u8]) -> Told {
    use harbour::protocol::kind as k;
    use harbour::protocol::records::decode_all;
    match kind {
        k::SUBMIT_TRANSFERS | k::CANCEL_TRANSFERS | k::CONFIRM_STEP_UP | k::FINALIZE_PENDING => {
            Told::Transfers(decode_all(body).collect())
        }
        k::DISBURSE_LOANS | k::REPAY_LOANS => Told::Loans(decode_all(body).collect()),
        _ => Told::Answered,
    }
}

/// One client's traffic until `stop` or the switch dies: every request and
/// what it was told.
async fn client(
    addr: SocketAddr,
    seed: u64,
    memory: Arc<parking_lot::Mutex<Memory>>,
    stop: Arc<AtomicBool>,
    disk_full: Arc<AtomicBool>,
) -> Vec<(Sent, Told)> {
    let mut out = Vec::new();
    let Ok(c) = connect(addr).await else { return out };
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        let (kind, body, sent) = draw(&mut rng, &mut memory.lock());
        let count = (body.len() / harbour::protocol::kinds::spec(kind).map_or(1, |s| s.request_size.max(1))) as u32;
        let told = match c.request(kind, count, &body).await {
            Ok(r) => told_of(kind, &r.body),
            Err(ClientError::Refused { code, detail }) if code == ErrorCode::Busy as u16 => {
                // A client backs off a little before its next request.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Told::Busy { disk: detail.contains("disk") || disk_full.load(Ordering::Relaxed) }
            }
            Err(_) => {
                out.push((sent, Told::Nothing));
                break;
            }
        };
        remember(&mut memory.lock(), &sent, &told);
        out.push((sent, told));
    }
    out
}

/// What an answer lets later requests use.
fn remember(memory: &mut Memory, sent: &Sent, told: &Told) {
    match (sent, told) {
        (Sent::Transfers { items, model }, Told::Transfers(results)) => {
            let fresh_ok = results.iter().all(|r| r.code == 0);
            for r in results.iter().filter(|r| r.code == 0) {
                if r.state == STATE_PENDING && !model {
                    memory.pending.push(r.transfer_id);
                }
            }
            if *model && fresh_ok && memory.resendable.len() < 1_000 {
                memory.resendable.push(items.clone());
            }
        }
        (Sent::Disburse(id), Told::Loans(results)) if results.first().is_some_and(|r| r.code == 0) => {
            memory.loans.push(*id);
        }
        _ => {}
    }
}

/// Looks up transfers: id → (found, state).
async fn lookup(c: &Client, ids: &[u128]) -> Result<Vec<TransferResult>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(4_000) {
        out.extend(c.lookup_transfers(chunk).await.map_err(|e| format!("lookup: {e}"))?);
    }
    Ok(out)
}

fn found(r: &TransferResult) -> bool {
    r.code == 0
}

fn allowed(told: u8, now: u8) -> bool {
    match told {
        STATE_PENDING => matches!(now, STATE_PENDING | STATE_POSTED | STATE_VOIDED),
        other => now == other,
    }
}

/// Checks one cycle's outcomes against the restarted switch; folds them into
/// `memory`; returns the violations.
async fn check(
    c: &Client,
    cycle: u64,
    outcomes: &[(Sent, Told)],
    memory: &mut Memory,
    report: &mut TortureReport,
    rng: &mut Rng,
) -> Result<Vec<String>, String> {
    let mut violations = Vec::new();
    let mut must_exist: Vec<(u128, Option<u8>)> = Vec::new();
    let mut must_not: Vec<u128> = Vec::new();
    // First every transfer accepted in the cycle: the clients ran side by
    // side, so a resend or a refusal of an id may come before its
    // acceptance in `outcomes`.
    let mut accepted_now: HashMap<u128, u32> = HashMap::new();
    for (sent, told) in outcomes {
        if let (Sent::Transfers { items, .. }, Told::Transfers(results)) = (sent, told) {
            for (t, _) in items.iter().zip(results).filter(|(_, r)| r.code == 0) {
                *accepted_now.entry(t.transfer_id).or_default() += 1;
            }
        }
    }
    let known = |memory: &Memory, id: u128| memory.states.contains_key(&id) || accepted_now.contains_key(&id);
    for (id, &n) in &accepted_now {
        if n > 1 || memory.states.contains_key(id) {
            violations.push(format!("cycle {cycle}: transfer {id} accepted twice"));
        }
    }
    for (sent, told) in outcomes {
        match told {
            Told::Nothing => report.requests_unanswered += 1,
            Told::Busy { disk } => {
                report.requests_answered += 1;
                if *disk {
                    report.refused_busy_disk += 1;
                } else {
                    report.refused_busy_other += 1;
                }
            }
            _ => report.requests_answered += 1,
        }
        match (sent, told) {
            (Sent::Transfers { items, model }, Told::Nothing) => {
                let ids: Vec<u128> = items.iter().map(|t| t.transfer_id).collect();
                let looked = lookup(c, &ids).await?;
                let stored = looked.iter().filter(|r| found(r)).count();
                if items.iter().all(|t| known(memory, t.transfer_id)) {
                    // A resend.
                    continue;
                }
                if !model {
                    // Some of a mixed request may be refused (funds, limits),
                    // so only what is stored is known: it is checked from
                    // now on.
                    for (t, r) in items.iter().zip(&looked).filter(|(_, r)| found(r)) {
                        memory.states.insert(t.transfer_id, Some(r.state));
                        memory.told_ok.push(t.transfer_id);
                    }
                    continue;
                }
                // A model request's transfers are all accepted: all of them
                // stored, or none.
                if stored == ids.len() {
                    report.unanswered_applied += 1;
                    for (t, r) in items.iter().zip(&looked) {
                        memory.states.insert(t.transfer_id, Some(r.state));
                        memory.told_ok.push(t.transfer_id);
                        if *model {
                            apply_model(memory, t);
                        }
                    }
                } else if stored == 0 {
                    report.unanswered_not_applied += 1;
                } else {
                    violations.push(format!(
                        "cycle {cycle}: an unanswered request of {} model transfers is stored in part ({stored})",
                        ids.len()
                    ));
                }
            }
            (Sent::Transfers { items, .. }, Told::Busy { .. }) => {
                must_not.extend(items.iter().filter(|t| !known(memory, t.transfer_id)).map(|t| t.transfer_id));
            }
            (Sent::Transfers { items, model }, Told::Transfers(results)) => {
                if results.len() != items.len() {
                    violations.push(format!("cycle {cycle}: {} results for {} transfers", results.len(), items.len()));
                    continue;
                }
                for (t, r) in items.iter().zip(results) {
                    if r.code == 0 {
                        report.transfers_answered_ok += 1;
                        if *model && r.state != STATE_POSTED {
                            violations.push(format!(
                                "cycle {cycle}: model transfer {} answered state {}",
                                t.transfer_id, r.state
                            ));
                        }
                        memory.states.insert(t.transfer_id, Some(r.state));
                        memory.told_ok.push(t.transfer_id);
                        must_exist.push((t.transfer_id, Some(r.state)));
                        if *model {
                            apply_model(memory, t);
                        }
                    } else if r.code == ResultCode::AlreadyExists as u16 {
                        if !known(memory, t.transfer_id) {
                            violations.push(format!(
                                "cycle {cycle}: transfer {} ALREADY_EXISTS, never accepted",
                                t.transfer_id
                            ));
                        }
                    } else if !known(memory, t.transfer_id) {
                        must_not.push(t.transfer_id);
                    }
                }
            }
            (Sent::Settle(id), Told::Transfers(results)) => match results.first() {
                Some(r) if r.code == 0 => {
                    memory.states.insert(*id, Some(r.state));
                    must_exist.push((*id, Some(r.state)));
                }
                _ => {
                    // Refused (moved on by a timer, say): still stored.
                    memory.states.insert(*id, None);
                    must_exist.push((*id, None));
                }
            },
            (Sent::Settle(id), _) => {
                memory.states.insert(*id, None);
            }
            (Sent::Disburse(id), Told::Loans(results)) => {
                let looked = c.lookup_loans(&[*id]).await.map_err(|e| format!("lookup loans: {e}"))?;
                let stored = looked.first().is_some_and(|l| l.code == 0);
                let ok = results.first().is_some_and(|r| r.code == 0);
                if ok != stored {
                    violations
                        .push(format!("cycle {cycle}: loan {id} answered {} but stored {stored}", results[0].code));
                }
                report.effects_checked += 1;
            }
            (Sent::Disburse(id), Told::Nothing) => {
                let looked = c.lookup_loans(&[*id]).await.map_err(|e| format!("lookup loans: {e}"))?;
                if looked.first().is_some_and(|l| l.code == 0) {
                    memory.loans.push(*id);
                }
            }
            _ => {}
        }
    }
    // Answered effects of this cycle, and a sample of earlier ones.
    for _ in 0..SAMPLE.min(memory.told_ok.len()) {
        let id = memory.told_ok[rng.below(memory.told_ok.len() as u64) as usize];
        must_exist.push((id, memory.states.get(&id).copied().flatten()));
    }
    let ids: Vec<u128> = must_exist.iter().map(|e| e.0).collect();
    for ((id, told), r) in must_exist.iter().zip(lookup(c, &ids).await?) {
        report.effects_checked += 1;
        if !found(&r) {
            violations.push(format!("cycle {cycle}: transfer {id}, answered OK, is not stored (code {})", r.code));
        } else if let Some(told) = told
            && !allowed(*told, r.state)
        {
            violations.push(format!("cycle {cycle}: transfer {id} answered state {told}, stored state {}", r.state));
        }
    }
    for (id, r) in must_not.iter().zip(lookup(c, &must_not).await?) {
        report.effects_checked += 1;
        if found(&r) {
            violations.push(format!("cycle {cycle}: transfer {id}, refused, is stored (state {})", r.state));
        }
    }
    // Exact balances of the model accounts; no customer below zero.
    let keys: Vec<BalanceKey> = MODEL.map(|id| BalanceKey { account_id: id, currency: HKD }).collect();
    let balances = c.lookup_balances(&keys).await.map_err(|e| format!("balances: {e}"))?;
    for b in &balances {
        report.effects_checked += 1;
        let expected = memory.model[&b.account_id];
        if b.balance != expected || b.held != 0 {
            violations.push(format!(
                "cycle {cycle}: model account {} holds {} (held {}), the answers say {expected}",
                b.account_id, b.balance, b.held
            ));
        }
    }
    let keys: Vec<BalanceKey> =
        MIXED.flat_map(|id| [HKD, USD, CNY].map(|currency| BalanceKey { account_id: id, currency })).collect();
    for b in c.lookup_balances(&keys).await.map_err(|e| format!("balances: {e}"))? {
        if b.balance < 0 {
            violations.push(format!("cycle {cycle}: customer {} has {} in {}", b.account_id, b.balance, b.currency));
        }
    }
    Ok(violations)
}

fn apply_model(memory: &mut Memory, t: &Transfer) {
    if let Some(b) = memory.model.get_mut(&t.debit_account) {
        *b -= t.amount as i64;
    }
    if let Some(b) = memory.model.get_mut(&t.credit_account) {
        *b += t.amount as i64;
    }
}

/// Runs the harness; Err only when it cannot run (the switch will not start
/// for a reason that is not a finding, a directory it cannot write).
pub async fn run(cfg: &TortureConfig) -> Result<TortureReport, String> {
    let began = Instant::now();
    std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
    let config_path = cfg.dir.join("harbour.toml");
    let filler = cfg.dir.join("filler");
    let _ = std::fs::remove_file(&filler);
    let write_config =
        |reserve: u64| std::fs::write(&config_path, config_text(cfg.shards, cfg.transfers_capacity, reserve));
    let mut report = TortureReport::default();
    let mut cfg = cfg.clone();
    if cfg.disk_full_every > 0 && free_bytes(&cfg.dir)? < 2 << 30 {
        cfg.disk_full_every = 0;
        report.disk_full_skipped = true;
    }
    let cfg = &cfg;
    // A cycle that fills the disk starts with the reserve 512 MiB below the
    // free space; any other with a token reserve.
    let reserve_for = |cycle: u64| -> Result<u64, String> {
        let full = cfg.disk_full_every > 0 && cycle.is_multiple_of(cfg.disk_full_every);
        Ok(if full { free_bytes(&cfg.dir)?.saturating_sub(512 << 20) } else { 1 << 20 })
    };
    write_config(reserve_for(1)?).map_err(|e| e.to_string())?;
    let mut rng = Rng(cfg.seed);
    let mut server = start(cfg, None)?;
    let mut setup = Memory { next_id: 1_000, ..Memory::default() };
    set_up(&connect(server.addr).await?, &mut setup).await?;
    let memory = Arc::new(parking_lot::Mutex::new(setup));
    for cycle in 1..=cfg.cycles {
        let disk_full = cfg.disk_full_every > 0 && cycle.is_multiple_of(cfg.disk_full_every);
        let slow = cfg.slow_disk_every > 0 && cycle.is_multiple_of(cfg.slow_disk_every) && !disk_full;
        // A new day each cycle (an OPERATOR request): daily AML totals
        // start again and hold timers fire.
        let c = connect(server.addr).await?;
        let clock = {
            let mut m = memory.lock();
            m.clock_ms = m.clock_ms.max(1_800_000_000_000) + 86_400_000;
            m.clock_ms
        };
        let _ = c.set_time(clock).await;
        drop(c);
        let stop = Arc::new(AtomicBool::new(false));
        let full = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..cfg.connections)
            .map(|i| {
                let seed = cfg.seed ^ (cycle << 20) ^ i as u64;
                tokio::spawn(client(server.addr, seed, Arc::clone(&memory), Arc::clone(&stop), Arc::clone(&full)))
            })
            .collect();
        let run_for = Duration::from_millis(10 + rng.below(cfg.run_max.as_millis() as u64));
        let mut kill_while_full = false;
        if disk_full {
            report.disk_full_cycles += 1;
            tokio::time::sleep(run_for / 3).await;
            let data = cfg.dir.join("data");
            let free = free_bytes(&data)?;
            // Taking the space above the reserve and a margin puts the disk
            // below it.
            let reserve = current_reserve(&config_path);
            fill(&filler, free.saturating_sub(reserve) + (64 << 20))?;
            full.store(true, Ordering::Relaxed);
            tokio::time::sleep(run_for / 3 + Duration::from_millis(120)).await;
            kill_while_full = rng.below(2) == 0;
            if !kill_while_full {
                let _ = std::fs::remove_file(&filler);
                full.store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        } else {
            tokio::time::sleep(run_for).await;
        }
        kill(&mut server);
        report.kills += 1;
        stop.store(true, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.extend(t.await.map_err(|e| e.to_string())?);
        }
        if kill_while_full {
            // A start on a disk still below the reserve is refused, with a
            // reason, not a crash loop.
            match start(cfg, None) {
                Err(e) if e.contains("reserve") => report.full_disk_starts_refused += 1,
                Err(e) => report.violations.push(format!("cycle {cycle}: a start on a full disk failed oddly: {e}")),
                Ok(mut s) => {
                    report.violations.push(format!("cycle {cycle}: started on a disk below its reserve"));
                    kill(&mut s);
                }
            }
            let _ = std::fs::remove_file(&filler);
        }
        write_config(reserve_for(cycle + 1)?).map_err(|e| e.to_string())?;
        let slow_us = slow.then(|| 1_000 + rng.below(9_000));
        report.slow_disk_cycles += u64::from(slow);
        // The restart whose recovery is checked (a slow cycle's slowness
        // applies to the traffic after it).
        server = match start(cfg, slow_us) {
            Ok(s) => s,
            Err(e) => {
                report.violations.push(format!("cycle {cycle}: the restart failed: {e}"));
                break;
            }
        };
        let c = connect(server.addr).await?;
        // Every client is done: the memory is the checker's alone.
        let mut m = std::mem::take(&mut *memory.lock());
        let found = check(&c, cycle, &outcomes, &mut m, &mut report, &mut rng).await;
        *memory.lock() = m;
        report.violations.extend(found?);
        report.cycles = cycle;
        report.seconds = began.elapsed().as_secs_f64();
        if let Some(progress) = cfg.progress {
            progress(&report);
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    kill(&mut server);
    let _ = std::fs::remove_file(&filler);
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

fn current_reserve(config: &Path) -> u64 {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("disk_reserve_bytes = ")).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
