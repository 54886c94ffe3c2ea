//! Foreign exchange: the rate table and exact conversions.
//!
//! Rates are exact decimals with nine places: the wire's `rate_e9` is the
//! rate × 10^9, an integer, and the table keeps it as such, so nothing is
//! ever rounded on the way in. A conversion multiplies exactly (through HKD
//! it multiplies the two rates exactly) and rounds once, at the end, to the
//! target currency's minor unit: down for the credit side (the customer is
//! never credited more than the exact product), up for the debit side (never
//! debited less). Intermediate products use 256-bit arithmetic where 128
//! bits do not suffice; a result that does not fit `u64` is OVERFLOW.
//!
//! Pure and deterministic; the engine owns the table and logs every change.

use crate::money::{CURRENCY_COUNT, CurrencyIndex};

/// `rate_e9` of 1: one unit of a currency in itself.
pub const RATE_SCALE: u64 = 1_000_000_000;

/// Parses a decimal rate (e.g. `7.78`, `0.052123456`) exactly into
/// `rate_e9`; more than nine decimal places, zero, or too large is an error.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    use std::str::FromStr;
    let d = rust_decimal::Decimal::from_str_exact(text.trim()).map_err(|e| format!("rate {text:?}: {e}"))?;
    let scaled =
        d.checked_mul(rust_decimal::Decimal::from(RATE_SCALE)).ok_or_else(|| format!("rate {text:?} too large"))?;
    if !scaled.fract().is_zero() {
        return Err(format!("rate {text:?} has more than nine decimal places"));
    }
    let value =
        u64::from_str(&scaled.trunc().normalize().to_string()).map_err(|_| format!("rate {text:?} out of range"))?;
    if value == 0 {
        return Err("a rate must be positive".into());
    }
    Ok(value)
}

/// Formats `rate_e9` as the exact decimal it stands for (e.g. `7.78`).
#[must_use]
pub fn format_rate(rate_e9: u64) -> String {
    rust_decimal::Decimal::from_i128_with_scale(i128::from(rate_e9), 9).normalize().to_string()
}

/// How a conversion failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FxError {
    /// No direct rate, and no pair of rates through HKD.
    NoRate,
    /// The converted amount rounds to zero minor units.
    RoundsToZero,
    /// The converted amount does not fit 64 bits.
    Overflow,
}

/// The rates by which customers convert: `to` per `from`, × 10^9, spread
/// included. 0 means no rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateTable {
    rates: [[u64; CURRENCY_COUNT]; CURRENCY_COUNT],
}

impl Default for RateTable {
    fn default() -> Self {
        Self { rates: [[0; CURRENCY_COUNT]; CURRENCY_COUNT] }
    }
}

/// The exact rate a conversion uses: a product of one or two table rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// The product of the rates used (each × 10^9).
    product: u128,
    /// How many rates were multiplied (1 direct, 2 through HKD).
    legs: u32,
}

impl Rate {
    /// A direct rate.
    #[must_use]
    pub fn direct(rate_e9: u64) -> Self {
        Self { product: u128::from(rate_e9), legs: 1 }
    }

    /// Two rates multiplied (a cross through HKD).
    #[must_use]
    pub fn cross(first_e9: u64, second_e9: u64) -> Self {
        Self { product: u128::from(first_e9) * u128::from(second_e9), legs: 2 }
    }

    /// 10^(9 × legs): the product's scale.
    fn scale(self) -> u128 {
        10u128.pow(9 * self.legs)
    }

    /// The rate as the wire shows it: × 10^9, rounded down; `None` if a
    /// cross rate is too large for the wire's 64 bits (such a conversion is
    /// refused as OVERFLOW).
    #[must_use]
    pub fn rate_e9(self) -> Option<u64> {
        u64::try_from(self.product / (self.scale() / u128::from(RATE_SCALE))).ok()
    }

    /// The stored form: (product's low and high 64 bits, legs).
    #[must_use]
    pub fn parts(self) -> (u128, u32) {
        (self.product, self.legs)
    }

    /// Rebuilds a rate from [`Rate::parts`]; `None` if malformed.
    #[must_use]
    pub fn from_parts(product: u128, legs: u32) -> Option<Self> {
        (product > 0 && (legs == 1 || legs == 2)).then_some(Self { product, legs })
    }
}

impl RateTable {
    /// Sets (or replaces) the rate from `from` to `to`.
    pub fn set(&mut self, from: CurrencyIndex, to: CurrencyIndex, rate_e9: u64) {
        assert_ne!(from, to, "a currency has no rate to itself");
        self.rates[from.raw() as usize][to.raw() as usize] = rate_e9;
    }

    /// The direct rate, if set.
    #[must_use]
    pub fn direct(&self, from: CurrencyIndex, to: CurrencyIndex) -> Option<u64> {
        Some(self.rates[from.raw() as usize][to.raw() as usize]).filter(|&r| r != 0)
    }

    /// The rate a conversion uses: direct if set, else through HKD.
    #[must_use]
    pub fn rate(&self, from: CurrencyIndex, to: CurrencyIndex) -> Option<Rate> {
        if from == to {
            return None;
        }
        if let Some(r) = self.direct(from, to) {
            return Some(Rate::direct(r));
        }
        let hkd = CurrencyIndex::HKD;
        if from == hkd || to == hkd {
            return None;
        }
        Some(Rate::cross(self.direct(from, hkd)?, self.direct(hkd, to)?))
    }

    /// Every set rate as (from, to, rate_e9), in index order.
    #[must_use]
    pub fn entries(&self) -> Vec<(CurrencyIndex, CurrencyIndex, u64)> {
        let mut out = Vec::new();
        for (f, row) in self.rates.iter().enumerate() {
            for (t, &r) in row.iter().enumerate() {
                if r != 0 {
                    let idx = |i: usize| CurrencyIndex::from_raw(i as u8).expect("table index");
                    out.push((idx(f), idx(t), r));
                }
            }
        }
        out
    }
}

/// Which side of a transfer its `amount` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

/// Converts an amount exactly: returns (debit minor units, credit minor
/// units). With the amount on the debit side the credit is rounded down;
/// on the credit side the debit is rounded up. Both legs must fit a
/// balance (`i64`), and the rate the wire shows must fit its 64 bits;
/// otherwise OVERFLOW.
pub fn convert(
    amount: u64,
    side: Side,
    from: CurrencyIndex,
    to: CurrencyIndex,
    rate: Rate,
) -> Result<(u64, u64), FxError> {
    if rate.rate_e9().is_none() {
        return Err(FxError::Overflow);
    }
    let minor_from = 10u128.pow(u32::from(from.currency().minor_units));
    let minor_to = 10u128.pow(u32::from(to.currency().minor_units));
    // credit_minor / minor_to = debit_minor / minor_from × product / scale
    let converted = match side {
        // credit = floor(debit × minor_to × product / (minor_from × scale))
        Side::Debit => {
            let n = u128::from(amount) * minor_to;
            mul_div(n, rate.product, minor_from * rate.scale(), Round::Down)
        }
        // debit = ceil(credit × minor_from × scale / (minor_to × product)),
        // as two ceiling divisions (the product may not fit with minor_to).
        Side::Credit => {
            let n = u128::from(amount) * minor_from;
            mul_div(n, rate.scale(), rate.product, Round::Up).and_then(|q| div_round(q, minor_to, Round::Up))
        }
    };
    let converted = converted.and_then(|v| u64::try_from(v).ok()).ok_or(FxError::Overflow)?;
    if converted == 0 {
        return Err(FxError::RoundsToZero);
    }
    let leg_max = i64::MAX as u64;
    if converted > leg_max || amount > leg_max {
        return Err(FxError::Overflow);
    }
    Ok(match side {
        Side::Debit => (amount, converted),
        Side::Credit => (converted, amount),
    })
}

/// Which way a division rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    Down,
    Up,
}

fn div_round(n: u128, d: u128, round: Round) -> Option<u128> {
    let q = n / d;
    Some(if round == Round::Up && !n.is_multiple_of(d) { q + 1 } else { q })
}

/// `a × b / d`, rounded as asked, exactly (256-bit intermediate); `None`
/// if the quotient does not fit 128 bits.
#[must_use]
pub fn mul_div(a: u128, b: u128, d: u128, round: Round) -> Option<u128> {
    assert!(d > 0, "division by zero");
    if let Some(n) = a.checked_mul(b) {
        return div_round(n, d, round);
    }
    let (hi, lo) = mul_wide(a, b);
    if hi >= d {
        return None;
    }
    // Long division of (hi, lo) by d, one bit at a time; hi < d keeps the
    // quotient within 128 bits.
    let (mut rem, mut quot) = (hi, 0u128);
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        quot <<= 1;
        if carry == 1 || rem >= d {
            rem = rem.wrapping_sub(d);
            quot |= 1;
        }
    }
    if round == Round::Up && rem != 0 { quot.checked_add(1) } else { Some(quot) }
}

/// The full 256-bit product of two u128, as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let mask = u128::from(u64::MAX);
    let (a_hi, a_lo) = (a >> 64, a & mask);
    let (b_hi, b_lo) = (b >> 64, b & mask);
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let cross = (lo_lo >> 64) + (hi_lo & mask) + (lo_hi & mask);
    let lo = (lo_lo & mask) | (cross << 64);
    let hi = hi_hi + (hi_lo >> 64) + (lo_hi >> 64) + (cross >> 64);
    (hi, lo)
}

/// Whether `a × b <= c × d`, exactly (for tests and audits of rounding).
#[must_use]
pub fn product_le(a: u128, b: u128, c: u128, d: u128) -> bool {
    mul_wide(a, b) <= mul_wide(c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: u16) -> CurrencyIndex {
        CurrencyIndex::of(code).expect("known currency")
    }

    const HKD: u16 = 344;
    const USD: u16 = 840;
    const JPY: u16 = 392;
    const CNY: u16 = 156;
    const KWD: u16 = 414;

    fn table() -> RateTable {
        let mut t = RateTable::default();
        t.set(cur(HKD), cur(USD), 128_000_000); // 0.128 USD per HKD
        t.set(cur(USD), cur(HKD), 7_780_000_000); // 7.78 HKD per USD
        t.set(cur(USD), cur(JPY), 149_250_000_000); // 149.25 JPY per USD
        t.set(cur(JPY), cur(HKD), 52_123_456); // 0.052123456 HKD per JPY
        t.set(cur(HKD), cur(CNY), 923_456_789); // 0.923456789 CNY per HKD
        t.set(cur(HKD), cur(KWD), 39_123_456); // 0.039123456 KWD per HKD
        t
    }

    /// (name, from, to, amount, side, expected (debit, credit)).
    type Case = (&'static str, u16, u16, u64, Side, Result<(u64, u64), FxError>);

    /// (from, to, amount, side) -> expected (debit, credit), computed by hand.
    #[test]
    fn conversions_match_hand_computed_amounts() {
        let t = table();
        let cases: &[Case] = &[
            // HK$100.00 × 0.128 = US$12.80 exactly.
            ("HKD to USD", HKD, USD, 10_000, Side::Debit, Ok((10_000, 1_280))),
            // HK$0.01 × 0.128 = 0.00128 USD: rounds down to 0 cents.
            ("one HKD cent rounds to zero", HKD, USD, 1, Side::Debit, Err(FxError::RoundsToZero)),
            // HK$0.08 × 0.128 = 0.01024 USD -> 1 cent.
            ("eight cents make one", HKD, USD, 8, Side::Debit, Ok((8, 1))),
            // To receive US$1.00: 1 / 0.128 = 7.8125 HKD -> HK$7.82 (up).
            ("amount on the credit side rounds the debit up", HKD, USD, 100, Side::Credit, Ok((782, 100))),
            // US$1.00 × 149.25 = 149.25 JPY -> 149 yen (JPY has no minor unit).
            ("USD to JPY", USD, JPY, 100, Side::Debit, Ok((100, 149))),
            // 10,000 yen × 0.052123456 = 521.23456 HKD -> HK$521.23.
            ("JPY to HKD, nine-decimal rate", JPY, HKD, 10_000, Side::Debit, Ok((10_000, 52_123))),
            // To receive HK$1.00: 1 / 0.052123456 = 19.1851... yen -> 20 yen.
            ("JPY debit rounds up to a whole yen", JPY, HKD, 100, Side::Credit, Ok((20, 100))),
            // Cross USD -> CNY through HKD: 7.78 × 0.923456789 = 7.18449381842
            // per USD; US$100.00 -> 718.449381842 CNY -> 718.44.
            ("USD to CNY through HKD, rounded once", USD, CNY, 10_000, Side::Debit, Ok((10_000, 71_844))),
            // Cross JPY -> USD: no direct, JPY->HKD and HKD->USD: 0.052123456 ×
            // 0.128 = 0.006671802368 USD per yen; 1,000,000 yen -> 6,671.802368
            // USD -> US$6,671.80.
            ("JPY to USD through HKD", JPY, USD, 1_000_000, Side::Debit, Ok((1_000_000, 667_180))),
            // KWD has three decimals: HK$1,000.00 × 0.039123456 = 39.123456 KWD
            // -> 39.123 (39,123 fils).
            ("HKD to KWD, three decimals", HKD, KWD, 100_000, Side::Debit, Ok((100_000, 39_123))),
            // u64::MAX cents of USD × 7.78 does not fit.
            ("near the u64 limit", USD, HKD, u64::MAX, Side::Debit, Err(FxError::Overflow)),
            // CNY -> USD: no direct; CNY->HKD is missing too.
            ("no route", CNY, USD, 100, Side::Debit, Err(FxError::NoRate)),
            // HKD -> JPY: no direct, and HKD is an end, so no cross.
            ("no cross from HKD itself", HKD, JPY, 100, Side::Debit, Err(FxError::NoRate)),
        ];
        for (name, from, to, amount, side, expected) in cases {
            let got = t
                .rate(cur(*from), cur(*to))
                .ok_or(FxError::NoRate)
                .and_then(|r| convert(*amount, *side, cur(*from), cur(*to), r));
            assert_eq!(got, *expected, "{name}");
        }
        assert_eq!(
            t.rate(cur(USD), cur(CNY)).and_then(Rate::rate_e9),
            Some(7_184_493_818),
            "cross rate_e9 rounded down"
        );
        assert_eq!(t.rate(cur(USD), cur(USD)), None, "no rate from a currency to itself");
        let huge = Rate::cross(u64::MAX, u64::MAX);
        assert_eq!(huge.rate_e9(), None);
        assert_eq!(
            convert(1, Side::Debit, cur(USD), cur(CNY), huge),
            Err(FxError::Overflow),
            "a cross too large to show"
        );
        // A leg above i64::MAX could never be posted: OVERFLOW.
        let big = convert(i64::MAX as u64 / 7, Side::Debit, cur(USD), cur(HKD), Rate::direct(7_780_000_000));
        assert_eq!(big, Err(FxError::Overflow));
    }

    #[test]
    fn rates_parse_and_print_exactly() {
        assert_eq!(parse_rate("7.78"), Ok(7_780_000_000));
        assert_eq!(parse_rate("0.052123456"), Ok(52_123_456));
        assert_eq!(parse_rate("149.25"), Ok(149_250_000_000));
        assert!(parse_rate("0.0521234567").unwrap_err().contains("nine decimal"));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("abc").is_err());
        assert!(parse_rate("99999999999999999999").is_err());
        assert_eq!(format_rate(7_780_000_000), "7.78");
        assert_eq!(format_rate(52_123_456), "0.052123456");
    }

    #[test]
    fn large_amounts_use_wide_arithmetic_exactly() {
        // Credit side through a tiny cross rate: credit x 100 x 10^18 needs
        // more than 128 bits before the division. 10^15 cents at a rate of
        // 10^-9 x 10^-9 per unit: debit = 10^15 x 10^18 = 10^33 cents, which
        // does not fit u64: OVERFLOW, found exactly rather than wrapped.
        let tiny = Rate::cross(1, 1);
        assert_eq!(convert(1_000_000_000_000_000, Side::Credit, cur(USD), cur(CNY), tiny), Err(FxError::Overflow));
        // Exact wide results, including a divisor above 2^127 (the long
        // division's carry) and rounding up a non-zero remainder.
        let big_d = (1u128 << 127) + 12_345;
        assert_eq!(mul_div(u128::MAX, u128::MAX, big_d, Round::Down), None);
        // Expected values computed independently with Python's big integers.
        assert_eq!(mul_div(u128::MAX, 1 << 126, big_d, Round::Down), Some(0x7fff_ffff_ffff_ffff_ffff_ffff_ffff_cfc6));
        assert_eq!(mul_div(u128::MAX, 1 << 126, big_d, Round::Up), Some(0x7fff_ffff_ffff_ffff_ffff_ffff_ffff_cfc7));
        assert_eq!(mul_div(3 << 120, 5 << 120, 1 << 112, Round::Down), None, "15 << 128 does not fit");
        assert_eq!(mul_div(3 << 120, 5 << 120, 1 << 126, Round::Down), Some(15 << 114));
        assert_eq!(mul_div(u128::MAX, 2, 4, Round::Down), Some(u128::MAX / 2));
        assert_eq!(mul_div(u128::MAX, 3, 3, Round::Up), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 3, 2, Round::Down), None, "quotient over 128 bits");
        assert_eq!(mul_div(7, 3, 2, Round::Up), Some(11));
        assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 90, Round::Down), Some(1 << 110));
        assert!(product_le(u128::MAX, 2, 2, u128::MAX));
        assert!(!product_le(u128::MAX, 3, 2, u128::MAX));
    }
}
