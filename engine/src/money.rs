//! Currencies, countries and amounts: the reference tables of contract §4.1.
//!
//! Money is integer minor units everywhere. A currency is carried on the wire
//! and in the log as its ISO 4217 numeric code and inside the engine as a
//! dense index into [`CURRENCIES`], so per-currency state fits in small
//! arrays. Unknown codes never get an index (UNKNOWN_CURRENCY).

/// One currency the switch books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Currency {
    /// ISO 4217 numeric code.
    pub code: u16,
    /// ISO 4217 alphabetic code.
    pub alpha: &'static str,
    /// Digits after the decimal point (HKD 2, JPY 0, KWD 3).
    pub minor_units: u8,
}

/// The currencies of contract §4.1, in index order. HKD is index 0.
pub const CURRENCIES: [Currency; 14] = [
    Currency { code: 344, alpha: "HKD", minor_units: 2 },
    Currency { code: 840, alpha: "USD", minor_units: 2 },
    Currency { code: 156, alpha: "CNY", minor_units: 2 },
    Currency { code: 978, alpha: "EUR", minor_units: 2 },
    Currency { code: 826, alpha: "GBP", minor_units: 2 },
    Currency { code: 392, alpha: "JPY", minor_units: 0 },
    Currency { code: 702, alpha: "SGD", minor_units: 2 },
    Currency { code: 36, alpha: "AUD", minor_units: 2 },
    Currency { code: 124, alpha: "CAD", minor_units: 2 },
    Currency { code: 756, alpha: "CHF", minor_units: 2 },
    Currency { code: 446, alpha: "MOP", minor_units: 2 },
    Currency { code: 901, alpha: "TWD", minor_units: 2 },
    Currency { code: 410, alpha: "KRW", minor_units: 0 },
    Currency { code: 414, alpha: "KWD", minor_units: 3 },
];

/// Number of currencies; per-currency arrays are this long.
pub const CURRENCY_COUNT: usize = CURRENCIES.len();
const _: () = assert!(CURRENCY_COUNT <= u8::MAX as usize);

/// HKD, the switch's home currency.
pub const HKD: u16 = 344;

/// A currency's dense index into [`CURRENCIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurrencyIndex(u8);

impl CurrencyIndex {
    /// HKD's index.
    pub const HKD: CurrencyIndex = CurrencyIndex(0);

    /// The index of an ISO 4217 numeric code, `None` if the switch does not
    /// book it.
    #[must_use]
    pub fn of(code: u16) -> Option<Self> {
        // A linear scan over 14 entries beats a hash and is branch-predictable:
        // most traffic is the first one or two.
        CURRENCIES.iter().position(|c| c.code == code).map(|i| Self(i as u8))
    }

    /// Rebuilds an index read back from a snapshot; `None` if out of range.
    #[must_use]
    pub fn from_raw(raw: u8) -> Option<Self> {
        ((raw as usize) < CURRENCY_COUNT).then_some(Self(raw))
    }

    /// The raw index.
    #[must_use]
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The currency this index names.
    #[must_use]
    pub fn currency(self) -> &'static Currency {
        &CURRENCIES[self.0 as usize]
    }

    /// The ISO 4217 numeric code.
    #[must_use]
    pub fn code(self) -> u16 {
        self.currency().code
    }
}

/// Formats minor units as a decimal string in the currency's major units.
///
/// ```
/// use harbour_engine::money::{CurrencyIndex, format_minor};
/// let hkd = CurrencyIndex::of(344).unwrap().currency();
/// assert_eq!(format_minor(12345, hkd), "123.45");
/// let jpy = CurrencyIndex::of(392).unwrap().currency();
/// assert_eq!(format_minor(-7, jpy), "-7");
/// ```
#[must_use]
pub fn format_minor(amount: i128, currency: &Currency) -> String {
    let digits = u32::from(currency.minor_units);
    if digits == 0 {
        return amount.to_string();
    }
    let scale = 10i128.pow(digits);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale, width = digits as usize)
}

/// Assigned ISO 3166-1 numeric country codes (249 entries, sorted).
pub const COUNTRIES: [u16; 249] = [
    4, 8, 10, 12, 16, 20, 24, 28, 31, 32, 36, 40, 44, 48, 50, 51, 52, 56, 60, 64, 68, 70, 72, 74, 76, 84, 86, 90, 92,
    96, 100, 104, 108, 112, 116, 120, 124, 132, 136, 140, 144, 148, 152, 156, 158, 162, 166, 170, 174, 175, 178, 180,
    184, 188, 191, 192, 196, 203, 204, 208, 212, 214, 218, 222, 226, 231, 232, 233, 234, 238, 239, 242, 246, 248, 250,
    254, 258, 260, 262, 266, 268, 270, 275, 276, 288, 292, 296, 300, 304, 308, 312, 316, 320, 324, 328, 332, 334, 336,
    340, 344, 348, 352, 356, 360, 364, 368, 372, 376, 380, 384, 388, 392, 398, 400, 404, 408, 410, 414, 417, 418, 422,
    426, 428, 430, 434, 438, 440, 442, 446, 450, 454, 458, 462, 466, 470, 474, 478, 480, 484, 492, 496, 498, 499, 500,
    504, 508, 512, 516, 520, 524, 528, 531, 533, 534, 535, 540, 548, 554, 558, 562, 566, 570, 574, 578, 580, 581, 583,
    584, 585, 586, 591, 598, 600, 604, 608, 612, 616, 620, 624, 626, 630, 634, 638, 642, 643, 646, 652, 654, 659, 660,
    662, 663, 666, 670, 674, 678, 682, 686, 688, 690, 694, 702, 703, 704, 705, 706, 710, 716, 724, 728, 729, 732, 740,
    744, 748, 752, 756, 760, 762, 764, 768, 772, 776, 780, 784, 788, 792, 795, 796, 798, 800, 804, 807, 818, 826, 831,
    832, 833, 834, 840, 850, 854, 858, 860, 862, 876, 882, 887, 894,
];

/// Hong Kong's ISO 3166-1 numeric code.
pub const HONG_KONG: u16 = 344;

/// Whether `code` is an assigned ISO 3166-1 numeric country code.
#[must_use]
pub fn is_country(code: u16) -> bool {
    COUNTRIES.binary_search(&code).is_ok()
}

/// Whether a transfer's destination is valid: 0 (domestic) or a country.
#[must_use]
pub fn is_destination(code: u16) -> bool {
    code == 0 || is_country(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_table_is_the_contracts() {
        let check = |code: u16, alpha: &str, minor: u8| {
            let c = CurrencyIndex::of(code).unwrap_or_else(|| panic!("{alpha} known")).currency();
            assert_eq!((c.alpha, c.minor_units), (alpha, minor));
        };
        check(344, "HKD", 2);
        check(840, "USD", 2);
        check(392, "JPY", 0);
        check(410, "KRW", 0);
        check(414, "KWD", 3);
        check(36, "AUD", 2);
        assert_eq!(CurrencyIndex::of(HKD).map(CurrencyIndex::raw), Some(0));
        assert_eq!(CurrencyIndex::of(0), None);
        assert_eq!(CurrencyIndex::of(999), None);
        assert_eq!(CurrencyIndex::of(643), None, "RUB is not booked");
    }

    #[test]
    fn countries_are_sorted_and_unique() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        for known in [344, 156, 840, 408, 364, 104, 446, 158] {
            assert!(is_country(known), "{known}");
        }
        for unknown in [0, 1, 345, 999, 900] {
            assert!(!is_country(unknown), "{unknown}");
        }
        assert!(is_destination(0));
    }

    #[test]
    fn formats_minor_units() {
        let hkd = CurrencyIndex::of(344).unwrap().currency();
        let jpy = CurrencyIndex::of(392).unwrap().currency();
        let kwd = CurrencyIndex::of(414).unwrap().currency();
        assert_eq!(format_minor(12345, hkd), "123.45");
        assert_eq!(format_minor(-5, hkd), "-0.05");
        assert_eq!(format_minor(500, jpy), "500");
        assert_eq!(format_minor(1, kwd), "0.001");
    }
}
