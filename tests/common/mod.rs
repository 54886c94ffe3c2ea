//! Helpers shared by the integration tests: building requests and a seeded
//! workload generator.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harbour::engine::book::SETTLEMENT_IN;
use harbour::protocol::kind;
use harbour::protocol::records::*;
use harbour::scorer::{REQUEST_MAGIC, RESPONSE_MAGIC, SCORER_HEADER_SIZE};

pub const HKD: u16 = 344;
pub const USD: u16 = 840;

/// A small deterministic random source (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        harbour::hash::mix64(self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

pub fn account(id: u64) -> Account {
    Account { account_id: id, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: 344, customer_ref: id * 7 }
}

pub fn transfer(id: u128, debit: u64, credit: u64, amount: u64, currency: u16) -> Transfer {
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

/// HKD lines that draw micro-credit (HK$1,500.00 limit, HK$600.00 a draw,
/// 10% APR), one per account.
pub fn micro_credit_lines(accounts: &[u64]) -> Vec<CreditLine> {
    accounts
        .iter()
        .map(|&a| CreditLine {
            account_id: a,
            currency: HKD,
            flags: CREDIT_AUTO_MICRO_CREDIT,
            apr_bps: 1_000,
            limit: 150_000,
            micro_credit_max: 60_000,
        })
        .collect()
}

pub fn deposit(id: u128, to: u64, amount: u64, currency: u16) -> Transfer {
    transfer(id, SETTLEMENT_IN, to, amount, currency)
}

/// A server configuration for tests: `dir` for data, ephemeral port, no
/// metrics, manual clock, small capacities and segments so a debug build
/// starts quickly; the development channel only.
pub fn server_config(dir: &std::path::Path) -> harbour::config::Config {
    let mut c = harbour::config::Config {
        data: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics: None,
        backend: harbour::shard::Backend::Std,
        ..harbour::config::Config::default()
    };
    c.switch.clock = harbour::clock::Clock::Manual;
    c.switch.engine.accounts_capacity = 1024;
    c.switch.engine.transfers_capacity = 4096;
    c.switch.wal.segment_bytes_max = 1 << 20;
    c
}

/// A request as the shard takes it.
pub type Request = (u16, Vec<u8>);

/// A seeded workload of groups of requests over a few accounts: account
/// creation, deposits, transfers (some pending, some drawing micro-credit),
/// finalizes, cancels, clock moves, credit lines, loans, repayments and
/// lookups. Ids repeat on purpose so resends and conflicts occur (loan and
/// transfer ids share one space).
pub fn workload(seed: u64, groups: usize) -> Vec<Vec<Request>> {
    let mut rng = Rng(seed);
    let accounts: Vec<u64> = (1024..1032).collect();
    let mut out = Vec::with_capacity(groups);
    let mut clock = harbour::engine::MANUAL_CLOCK_START_MS;
    let mut next_id: u128 = 1;
    // Half the accounts start with a line that draws micro-credit.
    let lines = micro_credit_lines(&accounts[..4]);
    out.push(vec![
        (kind::CREATE_ACCOUNTS, encode_all(&accounts.iter().map(|&a| account(a)).collect::<Vec<_>>())),
        (kind::SET_CREDIT_LINES, encode_all(&lines)),
    ]);
    for _ in 1..groups {
        let mut group = Vec::new();
        for _ in 0..=rng.below(4) {
            let request = match rng.below(14) {
                0..=4 => {
                    let n = 1 + rng.below(4);
                    let mut ts = Vec::new();
                    for _ in 0..n {
                        let id = if rng.below(8) == 0 && next_id > 1 {
                            1 + rng.below(next_id as u64 - 1) as u128
                        } else {
                            next_id
                        };
                        next_id += 1;
                        let currency = rng.pick(&[HKD, HKD, USD]);
                        let mut t = if rng.below(3) == 0 {
                            deposit(id, rng.pick(&accounts), 1 + rng.below(50_000), currency)
                        } else {
                            transfer(id, rng.pick(&accounts), rng.pick(&accounts), 1 + rng.below(20_000), currency)
                        };
                        if rng.below(4) == 0 {
                            t.flags = TRANSFER_PENDING;
                        }
                        if rng.below(4) == 0 {
                            // Larger, so shortfalls and micro-loans occur.
                            t.flags |= TRANSFER_AUTO_CREDIT;
                            t.amount = 1 + rng.below(80_000);
                        }
                        ts.push(t);
                    }
                    (kind::SUBMIT_TRANSFERS, encode_all(&ts))
                }
                5 => {
                    let id = 1 + rng.below(next_id as u64) as u128;
                    let action = rng.pick(&[FINALIZE_POST, FINALIZE_VOID]);
                    (kind::FINALIZE_PENDING, encode_all(&[Finalize { transfer_id: id, action }]))
                }
                6 => (kind::CANCEL_TRANSFERS, encode_all(&[Id { id: 1 + rng.below(next_id as u64) as u128 }])),
                7 => {
                    clock += rng.pick(&[1_000, 3_600_000, 3 * 86_400_000]);
                    (kind::SET_TIME, encode_all(&[SetTime { unix_ms: clock }]))
                }
                8 => {
                    let keys: Vec<BalanceKey> =
                        accounts.iter().map(|&a| BalanceKey { account_id: a, currency: HKD }).collect();
                    (kind::LOOKUP_BALANCES, encode_all(&keys))
                }
                9 => (kind::LOOKUP_TRANSFERS, encode_all(&[Id { id: 1 + rng.below(next_id as u64) as u128 }])),
                10 => {
                    let line = CreditLine {
                        account_id: rng.pick(&accounts),
                        currency: rng.pick(&[HKD, HKD, USD]),
                        flags: rng.pick(&[0, CREDIT_AUTO_MICRO_CREDIT, CREDIT_AUTO_MICRO_CREDIT]),
                        apr_bps: rng.pick(&[0, 1_000, 3_650, 4_800, 4_801]),
                        limit: rng.below(200_000),
                        micro_credit_max: rng.below(80_000),
                    };
                    (kind::SET_CREDIT_LINES, encode_all(&[line]))
                }
                11 => {
                    let loan_id = if rng.below(6) == 0 { 1 + rng.below(next_id as u64) as u128 } else { next_id };
                    next_id += 1;
                    let d = Disburse {
                        loan_id,
                        account_id: rng.pick(&accounts),
                        currency: rng.pick(&[HKD, HKD, USD]),
                        term_days: rng.pick(&[0, 30, 90]),
                        principal: rng.below(60_000),
                    };
                    (kind::DISBURSE_LOANS, encode_all(&[d]))
                }
                12 => {
                    let r = Repay {
                        repayment_id: 1 + rng.below(64) as u128,
                        loan_id: 1 + rng.below(next_id as u64) as u128,
                        amount: rng.pick(&[1, 500, 5_000, 50_000]),
                    };
                    (kind::REPAY_LOANS, encode_all(&[r]))
                }
                _ => (kind::LOOKUP_LOANS, encode_all(&[Id { id: 1 + rng.below(next_id as u64) as u128 }])),
            };
            group.push(request);
        }
        out.push(group);
    }
    out
}

/// Borrowed view of a group, as `Shard::process` takes it.
pub fn view(group: &[Request]) -> Vec<(u16, &[u8])> {
    group.iter().map(|(k, b)| (*k, b.as_slice())).collect()
}

/// A scorer service: answers after `delay`, asking for review of every
/// transfer of more than `review_above` minor units.
pub fn scorer(delay: Duration, review_above: u64) -> SocketAddr {
    counted_scorer(delay, review_above).0
}

/// A scorer service and the count of transfers it was asked about.
pub fn counted_scorer(delay: Duration, review_above: u64) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                loop {
                    let mut header = [0u8; SCORER_HEADER_SIZE];
                    if stream.read_exact(&mut header).is_err() {
                        return;
                    }
                    assert_eq!(header[0..4], REQUEST_MAGIC);
                    let count = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
                    counter.fetch_add(count, Ordering::SeqCst);
                    let mut body = vec![0u8; count * Transfer::SIZE];
                    stream.read_exact(&mut body).unwrap();
                    std::thread::sleep(delay);
                    let verdicts: Vec<u8> =
                        decode_all::<Transfer>(&body).map(|t| u8::from(t.amount > review_above)).collect();
                    header[0..4].copy_from_slice(&RESPONSE_MAGIC);
                    if stream.write_all(&header).and_then(|()| stream.write_all(&verdicts)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, asked)
}

/// The lines of the first ```sh block under `## {section}`.
pub fn readme_block(section: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme.find(&format!("\n## {section}\n")).unwrap_or_else(|| panic!("README has no section {section}"));
    let block = &readme[at..];
    let start = block.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let end = start + block[start..].find("```").expect("the block ends");
    block[start..end].lines().map(str::to_string).collect()
}

/// A channel with `roles` and every limit and scope at its default.
pub fn channel(id: u32, key: &[u8], roles: u16) -> harbour::config::Channel {
    harbour::config::Channel {
        id,
        key: key.to_vec(),
        previous_key: None,
        roles,
        connections_max: None,
        max_in_flight: None,
        records_per_second: None,
        scope: Default::default(),
    }
}

/// Applies a command to a library engine at its own time; the answer.
pub fn apply(e: &mut harbour::engine::Engine, kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind, body, now, &mut out).expect("a well-formed command");
    out
}

/// SUBMIT_TRANSFERS of one transfer to a library engine; its answer.
pub fn submit(e: &mut harbour::engine::Engine, t: &Transfer) -> TransferResult {
    TransferResult::decode(&apply(e, kind::SUBMIT_TRANSFERS, &encode_all(&[*t])))
}
