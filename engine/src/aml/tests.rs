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
    let mut p = Profile::default();
    let o = Outgoing {
        now_ms: 1_788_192_000_000,
        debit_currency: jpy,
        debit_amount: u64::MAX,
        credit_account: 2048,
        credit_currency: jpy,
        destination_country: 0,
    };
    let first = p.judge(&cfg, &rates, &o);
    let second = p.judge(&cfg, &rates, &o);
    assert_eq!(p.day_total(), u128::MAX, "saturated");
    assert!(second.counted < second.hkd_value, "only what fitted was counted");
    // Voiding both (in either order) brings the total back to zero.
    p.uncount(o.now_ms, first.counted);
    p.uncount(o.now_ms, second.counted);
    assert_eq!(p.day_total(), 0);
    // The clock's far end does not overflow the calendar.
    assert_eq!(hk_hour(u64::MAX), hk_hour(u64::MAX - 1));
}
