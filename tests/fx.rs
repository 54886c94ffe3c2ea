//! Property test: random cross-currency traffic over random rates. After
//! every step the audit holds (each currency sums to zero, FX_POSITION's
//! legs included), and every accepted conversion is the exact decimal
//! product rounded the customer's way by less than one minor unit: never
//! credited more than the exact product, never debited less.

mod common;

use harbour::engine::book::SETTLEMENT_IN;
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::fx::product_le;
use harbour::money::CurrencyIndex;
use harbour::protocol::records::*;
use proptest::prelude::*;

const CURRENCIES: [u16; 6] = [344, 840, 392, 156, 414, 978];
const ACCOUNTS: [u64; 3] = [1024, 1025, 1026];

#[derive(Clone, Debug)]
enum Step {
    Rate(usize, usize, u64),
    Pay { from: usize, to: usize, debit: usize, credit: usize, amount: u64, credit_side: bool, pending: bool },
    Finalize(u128, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0..CURRENCIES.len();
    prop_oneof![
        2 => (c.clone(), c.clone(), prop_oneof![1u64..2_000_000_000, 1u64..200_000_000_000, Just(1u64), Just(u64::MAX)])
            .prop_map(|(a, b, r)| Step::Rate(a, b, r)),
        6 => (0..3usize, 0..3usize, c.clone(), c, prop_oneof![1u64..1_000, 1u64..10_000_000, Just(u64::MAX / 3)], any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(from, to, debit, credit, amount, credit_side, pending)| Step::Pay { from, to, debit, credit, amount, credit_side, pending }),
        1 => (1u128..40, any::<bool>()).prop_map(|(id, post)| Step::Finalize(id, post)),
    ]
}

fn idx(code: u16) -> CurrencyIndex {
    CurrencyIndex::of(code).unwrap()
}

fn minor(code: u16) -> u128 {
    10u128.pow(u32::from(idx(code).currency().minor_units))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn conversions_are_exact_and_books_balance(steps in prop::collection::vec(step(), 1..40)) {
        let mut e = Engine::new(EngineConfig { manual_clock: true, ..EngineConfig::default() }, MANUAL_CLOCK_START_MS);
        for (i, id) in ACCOUNTS.iter().enumerate() {
            e.create_account(&common::account(*id));
            for (j, cur) in CURRENCIES.iter().enumerate() {
                let t = common::deposit(10_000 + (i * 10 + j) as u128, *id, 1_000_000_000, *cur);
                prop_assert_eq!(e.submit_transfer(&t).code, 0);
            }
        }
        let mut next_id = 1u128;
        // The test's own rate table: which rate a conversion must use is
        // decided here, independently of the engine.
        let mut model: std::collections::BTreeMap<(u16, u16), u64> = Default::default();
        let expected_rate = |model: &std::collections::BTreeMap<(u16, u16), u64>, dc: u16, cc: u16| -> Option<(u128, u32)> {
            if let Some(&r) = model.get(&(dc, cc)) {
                return Some((u128::from(r), 1));
            }
            if dc == 344 || cc == 344 {
                return None;
            }
            Some((u128::from(*model.get(&(dc, 344))?) * u128::from(*model.get(&(344, cc))?), 2))
        };
        for s in &steps {
            match *s {
                Step::Rate(a, b, r) => {
                    let got = e.set_fx_rate(&FxRate { from: CURRENCIES[a], to: CURRENCIES[b], rate_e9: r }, 0);
                    prop_assert_eq!(got.code == 0, a != b, "a rate to itself is refused, any other accepted");
                    if a != b {
                        model.insert((CURRENCIES[a], CURRENCIES[b]), r);
                    }
                }
                Step::Pay { from, to, debit, credit, amount, credit_side, pending } => {
                    let (dc, cc) = (CURRENCIES[debit], CURRENCIES[credit]);
                    let rate = expected_rate(&model, dc, cc);
                    let mut flags = if credit_side { TRANSFER_AMOUNT_IN_CREDIT_CURRENCY } else { 0 };
                    if pending {
                        flags |= TRANSFER_PENDING;
                    }
                    let t = Transfer {
                        transfer_id: next_id,
                        debit_account: ACCOUNTS[from],
                        credit_account: ACCOUNTS[to],
                        amount,
                        debit_currency: dc,
                        credit_currency: cc,
                        flags,
                        ..Transfer::default()
                    };
                    next_id += 1;
                    let r = e.submit_transfer(&t);
                    if dc != cc && rate.is_none() {
                        prop_assert!(r.code != 0, "converted without a rate: {:?}", r);
                    }
                    if r.code == 0 && dc != cc {
                        let (product, legs) = rate.expect("accepted means a rate");
                        let scale = 10u128.pow(9 * legs);
                        prop_assert_eq!(u128::from(r.rate_e9), product / 10u128.pow(9 * (legs - 1)), "rate_e9 rounded down");
                        let (d, c) = (u128::from(r.debit_amount), u128::from(r.credit_amount));
                        // credit / minor(cc) vs debit / minor(dc) x product / scale, cross-multiplied:
                        // c * minor(dc) * scale  <=  d * minor(cc) * product
                        let lhs = |credit: u128| (credit * minor(dc), scale);
                        let rhs = (d * minor(cc), product);
                        let (a1, b1) = lhs(c);
                        prop_assert!(product_le(a1, b1, rhs.0, rhs.1), "credited more than the exact product: {:?}", r);
                        if credit_side {
                            // The debit is the least that covers the credit.
                            let (d_less, _) = (d - 1, 0);
                            prop_assert!(!product_le(a1, b1, d_less * minor(cc), product) || d_less == 0,
                                "debited more than needed: {:?}", r);
                            prop_assert_eq!(r.credit_amount, amount);
                        } else {
                            // The credit is the most the debit buys.
                            let (a2, b2) = lhs(c + 1);
                            prop_assert!(!product_le(a2, b2, rhs.0, rhs.1), "credited less than a whole unit short: {:?}", r);
                            prop_assert_eq!(r.debit_amount, amount);
                        }
                    }
                }
                Step::Finalize(id, post) => {
                    let action = if post { FINALIZE_POST } else { FINALIZE_VOID };
                    e.finalize_pending(&Finalize { transfer_id: id, action });
                }
            }
            if let Err(err) = e.audit() {
                prop_assert!(false, "audit after {:?}: {}", s, err);
            }
        }
        // FX_POSITION is the bank's open position: per currency, exactly
        // minus what the customers and the settlement account hold.
        for cur in CURRENCIES {
            let sum: i128 = [1u64, SETTLEMENT_IN, 1024, 1025, 1026]
                .iter()
                .map(|&a| i128::from(e.lookup_balance(&BalanceKey { account_id: a, currency: cur }).balance))
                .sum();
            prop_assert_eq!(sum, 0, "currency {} sums to zero", cur);
        }
    }
}
