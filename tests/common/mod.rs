//! Helpers shared by the integration tests: building requests and a seeded
//! workload generator.
#![allow(dead_code)]

use harbour::engine::book::SETTLEMENT_IN;
use harbour::protocol::kind;
use harbour::protocol::records::*;

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

pub fn deposit(id: u128, to: u64, amount: u64, currency: u16) -> Transfer {
    transfer(id, SETTLEMENT_IN, to, amount, currency)
}

/// A request as the shard takes it.
pub type Request = (u16, Vec<u8>);

/// A seeded workload of groups of requests over a few accounts: account
/// creation, deposits, transfers (some pending), finalizes, cancels, clock
/// moves and lookups. Ids repeat on purpose so resends and conflicts occur.
pub fn workload(seed: u64, groups: usize) -> Vec<Vec<Request>> {
    let mut rng = Rng(seed);
    let accounts: Vec<u64> = (1024..1032).collect();
    let mut out = Vec::with_capacity(groups);
    let mut clock = harbour::engine::MANUAL_CLOCK_START_MS;
    let mut next_id: u128 = 1;
    out.push(vec![(kind::CREATE_ACCOUNTS, encode_all(&accounts.iter().map(|&a| account(a)).collect::<Vec<_>>()))]);
    for _ in 1..groups {
        let mut group = Vec::new();
        for _ in 0..=rng.below(4) {
            let request = match rng.below(10) {
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
                _ => (kind::LOOKUP_TRANSFERS, encode_all(&[Id { id: 1 + rng.below(next_id as u64) as u128 }])),
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
