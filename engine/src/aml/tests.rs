//! Unit tests of AML's pure parts: calendar, valuation, profile.

use super::*;

#[test]
fn hong_kong_day_turns_at_1600_utc() {
    // 2026-11-27T15:59:59.999Z is 23:59:59.999 HKT; a millisecond later is
    // the next HK day.
    let before = days_from_civil(2026, 11, 27) as u64 * DAY_MS + 16 * 3_600_000 - 1;
    assert_eq!(hk_day(before) + 1, hk_day(before + 1));
    assert_eq!(hk_hour(before), 23);
    assert_eq!(hk_hour(before + 1), 0);
}

#[test]
fn calendar_round_trips() {
    for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 11, 27), (2026, 12, 31), (2100, 3, 1)] {
        assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
    }
    // A HK month starts at 16:00 UTC the day before.
    let start = hk_month_start_ms(2026, 11);
    assert_eq!(report::timestamp(start), "2026-10-31T16:00:00.000Z");
    assert_eq!(hk_month(start), (2026, 11));
    assert_eq!(hk_month(start - 1), (2026, 10));
}

#[test]
fn minor_units_divide_exactly_in_both_paths() {
    let edges = [0, 1, HKD_VALUE_SCALE - 1, HKD_VALUE_SCALE, 7_812_345_678 * 100_000, u128::from(u64::MAX) << 12];
    let past = [(u128::from(u64::MAX) << 12) + 4095, (u128::from(u64::MAX) + 1) << 12, u128::MAX];
    let mut x = 0x9e37_79b9_7f4a_7c15_u128;
    for v in edges.into_iter().chain(past).chain((0..10_000).map(|_| {
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(1);
        x >> (x % 100)
    })) {
        assert_eq!(minor_units(v), v / HKD_VALUE_SCALE, "{v}");
    }
}

#[test]
fn hkd_values_are_exact() {
    let mut rates = RateTable::default();
    let usd = CurrencyIndex::of(840).unwrap();
    let jpy = CurrencyIndex::of(392).unwrap();
    let kwd = CurrencyIndex::of(414).unwrap();
    assert_eq!(hkd_value(123, CurrencyIndex::HKD, &rates), Some(123 * HKD_VALUE_SCALE));
    assert_eq!(hkd_value(100, usd, &rates), None, "no direct rate to HKD");
    rates.set(usd, CurrencyIndex::HKD, 7_812_345_678); // 7.812345678
    // US$1.00 = HK$7.812345678 = 781.2345678 HKD cents, unrounded.
    assert_eq!(hkd_value(100, usd, &rates), Some(7_812_345_678 * 100_000));
    assert_eq!(report::hkd(hkd_value(100, usd, &rates).unwrap()), "7.812345678");
    rates.set(jpy, CurrencyIndex::HKD, 52_123_456); // 0.052123456
    assert_eq!(report::hkd(hkd_value(3, jpy, &rates).unwrap()), "0.156370368");
    rates.set(kwd, CurrencyIndex::HKD, 25_000_000_001);
    assert_eq!(report::hkd(hkd_value(1, kwd, &rates).unwrap()), "0.025000000001");
    // Far past u128: saturated, still "over".
    rates.set(kwd, CurrencyIndex::HKD, u64::MAX);
    assert!(hkd_value(u64::MAX, kwd, &rates).is_some());
}

#[test]
fn country_sets() {
    let set = CountrySet::of(&FATF_CALL_FOR_ACTION);
    assert!(set.contains(408) && set.contains(364) && set.contains(104));
    assert!(!set.contains(344) && !set.contains(0) && !set.contains(2000));
    assert_eq!(set.codes(), vec![104, 364, 408]);
    for c in FATF_INCREASED_MONITORING {
        assert!(crate::money::is_country(c), "{c} is an assigned country code");
    }
}

#[test]
fn log2_is_monotone_and_q8() {
    assert_eq!(log2_q8(1), 0);
    assert_eq!(log2_q8(2), 256);
    assert_eq!(log2_q8(1024), 10 * 256);
    let mut last = -1;
    for x in 1..5000u128 {
        let l = log2_q8(x);
        assert!(l >= last, "log2 of {x}");
        last = l;
    }
}

#[test]
fn profile_words_round_trip() {
    let p = Profile {
        day_total_lo: 1,
        day_total_hi: 2,
        cooling_until_ms: 3,
        last_lo: 4,
        last_hi: 40,
        amount_high: 44,
        payees: 5,
        hours: 6,
        countries: 7,
        count: 8,
        day: 9,
        amount_mean: 10,
        amount_spread: 11,
        burst: 12,
        burst_usual: 13,
        fresh: 14,
        fresh_usual: 15,
    };
    assert_eq!(Profile::from_words(p.to_words()), p);
    // Model 1 never sets model 2's fields: its words are the first
    // layout's (count and day in the halves of word 6).
    let v1 = Profile { fresh: 0, fresh_usual: 0, amount_high: 0, ..p };
    assert_eq!(v1.to_words()[6], 8 | (9 << 32));
    assert_eq!(v1.to_words()[3], 4 | (40 << 32));
}

#[test]
fn burst_counter_halves_per_half_life() {
    assert_eq!(decay(160, 0), 160);
    assert_eq!(decay(160, BURST_HALF_LIFE_MS), 80);
    assert_eq!(decay(160, 2 * BURST_HALF_LIFE_MS), 40);
    assert_eq!(decay(160, BURST_HALF_LIFE_MS / 2), 120);
    assert_eq!(decay(u16::MAX, 40 * BURST_HALF_LIFE_MS), 0);
}

#[test]
fn saturated_day_totals_uncount_exactly() {
    let mut rates = RateTable::default();
    let jpy = CurrencyIndex::of(392).unwrap();
    rates.set(jpy, CurrencyIndex::HKD, u64::MAX);
    let cfg = AmlConfig { behaviour: false, ..AmlConfig::default() };
    let mut s = AmlState::default();
    let o = Outgoing {
        now_ms: 1_788_192_000_000,
        debit_currency: jpy,
        debit_amount: u64::MAX,
        credit_account: 2048,
        credit_currency: jpy,
        destination_country: 0,
    };
    let first = s.judge(&cfg, &rates, &o);
    let second = s.judge(&cfg, &rates, &o);
    let p = &mut s.profile;
    assert_eq!(p.day_total(), u128::MAX, "saturated");
    assert!(second.counted < second.hkd_value, "only what fitted was counted");
    // Voiding both (in either order) brings the total back to zero.
    p.uncount(o.now_ms, first.counted);
    p.uncount(o.now_ms, second.counted);
    assert_eq!(p.day_total(), 0);
    // The clock's far end does not overflow the calendar.
    assert_eq!(hk_hour(u64::MAX), hk_hour(u64::MAX - 1));
}

#[test]
fn the_default_threshold_is_model_3s_point_for_the_default_budget() {
    let d = AmlConfig::default();
    assert_eq!(d.model, BehaviourModel::V3);
    assert_eq!(threshold_for_budget(BehaviourModel::V3, DEFAULT_FALSE_HOLD_BUDGET_BP), Some(d.threshold_q));
    assert_eq!(threshold_for_budget(BehaviourModel::V1, DEFAULT_FALSE_HOLD_BUDGET_BP), None);
    assert_eq!(BehaviourModel::from_version(3), Some(BehaviourModel::V3));
    assert_eq!(BehaviourModel::from_version(4), None);
}

/// Model 3 tests: an account paying HK$200 (± a little) to one of four
/// payees at 10:00-12:00 HKT, daily from day 0.
mod model_3 {
    use super::*;

    const DAY0: u64 = 1_790_784_000_000; // 2026-10-01T00:00 HKT
    const HOUR: u64 = 3_600_000;

    fn pay(now_ms: u64, to: u64, cents: u64, country: u16) -> Outgoing {
        let credit_account = if country == 0 { to } else { crate::protocol::accounts::REMITTANCE_OUT };
        Outgoing {
            now_ms,
            debit_currency: CurrencyIndex::HKD,
            debit_amount: cents,
            credit_account,
            credit_currency: CurrencyIndex::HKD,
            destination_country: country,
        }
    }

    fn habits(model: BehaviourModel, days: u64) -> (AmlState, AmlConfig) {
        let cfg = AmlConfig {
            model,
            threshold_q: if model == BehaviourModel::V3 { V3_DEFAULT_THRESHOLD_Q } else { V2_DEFAULT_THRESHOLD_Q },
            ..AmlConfig::default()
        };
        let mut s = AmlState::default();
        for d in 0..days {
            let o = pay(DAY0 + d * DAY_MS + 2 * HOUR + (d % 3) * HOUR, 1_000 + d % 4, 18_000 + (d % 5) * 1_000, 0);
            let j = s.judge(&cfg, &RateTable::default(), &o);
            assert!(!j.holds.contains(Holds::COOLING_OFF), "day {d}: a usual payment");
        }
        (s, cfg)
    }

    fn trips(s: &mut AmlState, cfg: &AmlConfig, o: &Outgoing) -> Option<Reasons> {
        let j = s.judge(cfg, &RateTable::default(), o);
        j.holds.contains(Holds::COOLING_OFF).then_some(j.reasons)
    }

    #[test]
    fn nothing_trips_before_the_history_spans_four_weeks() {
        // 100 times the usual, to a stranger, at 03:00.
        let far_out = |days: u64| pay(DAY0 + days * DAY_MS + 19 * HOUR, 9_999, 2_000_000, 0);
        let (mut young, cfg) = habits(BehaviourModel::V3, 20);
        assert_eq!(trips(&mut young, &cfg, &far_out(20)), None, "20 days of history: too new");
        let (mut v2, cfg2) = habits(BehaviourModel::V2, 20);
        assert!(trips(&mut v2, &cfg2, &far_out(20)).is_some(), "model 2 counts transfers, not days");
        let (mut grown, cfg) = habits(BehaviourModel::V3, 30);
        let r = trips(&mut grown, &cfg, &far_out(30)).expect("30 days: it trips");
        assert!(r.has(Reasons::UNUSUAL_AMOUNT) && r.has(Reasons::NEW_PAYEE) && r.has(Reasons::UNUSUAL_HOUR));
    }

    #[test]
    fn payments_to_a_payee_added_this_week_add_up() {
        let (mut s, cfg) = habits(BehaviourModel::V3, 35);
        let t = DAY0 + 35 * DAY_MS + 2 * HOUR;
        let shop = |at: u64| pay(at, 7_777, 80_000, 0);
        // Four times the usual to a new payee at a usual hour: a purchase
        // from a new shop, not enough alone.
        assert_eq!(trips(&mut s, &cfg, &shop(t)), None);
        // More of the same that day: by the fourth, over ten times the
        // usual to a payee added today, though each payment alone is
        // ordinary.
        let r = (1..4).find_map(|k| trips(&mut s, &cfg, &shop(t + k * HOUR))).expect("together they trip");
        assert!(r.has(Reasons::UNUSUAL_AMOUNT) && r.has(Reasons::NEW_PAYEE), "{:#x}", r.0);
        // Model 2 trips on the purchase itself, past anything the account
        // paid: the false alarm model 3's weights avoid.
        let (mut v2, cfg2) = habits(BehaviourModel::V2, 35);
        assert!(trips(&mut v2, &cfg2, &shop(t)).is_some());
    }

    #[test]
    fn a_payee_added_long_ago_does_not_add_up() {
        let (mut s, cfg) = habits(BehaviourModel::V3, 35);
        let t = DAY0 + 35 * DAY_MS + 2 * HOUR;
        for week in 0..3 {
            let o = pay(t + week * u64::from(payees::RECENT_DAYS) * DAY_MS, 7_777, 80_000, 0);
            assert_eq!(trips(&mut s, &cfg, &o), None, "week {week}: a payee added a week before is known");
        }
    }

    #[test]
    fn a_large_amount_trips_alone_only_past_anything_the_account_paid() {
        let (mut s, cfg) = habits(BehaviourModel::V3, 35);
        let t = DAY0 + 35 * DAY_MS + 2 * HOUR;
        // Once: 60 times the usual to a usual payee at a usual hour (rent
        // on a new lease, say) confirmed by the customer.
        let big = pay(t, 1_001, 1_200_000, 0);
        assert!(trips(&mut s, &cfg, &big).is_some(), "the first time it is past anything paid");
        s.confirm(&cfg, &big, 1_200_000 * HKD_VALUE_SCALE);
        // A month later the same amount is not past the mark: no trip.
        let again = pay(t + 30 * DAY_MS, 1_001, 1_200_000, 0);
        assert_eq!(trips(&mut s, &cfg, &again), None);
        // Model 2's mark sinks per transfer learned, model 3's per day.
        assert!(i32::from(s.profile.amount_high) >= log2_q8(1_200_000) - 60);
    }

    #[test]
    fn a_new_country_after_four_weeks_trips_alone() {
        let (mut s, cfg) = habits(BehaviourModel::V3, 35);
        let r = trips(&mut s, &cfg, &pay(DAY0 + 35 * DAY_MS + 2 * HOUR, 0, 18_000, 566)).expect("trips");
        assert!(r.has(Reasons::NEW_COUNTRY), "{:#x}", r.0);
    }
}
