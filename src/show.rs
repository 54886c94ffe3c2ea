//! How answers read to a person at the command line (`harbour`'s client
//! commands): times in Hong Kong time (ISO 8601, `+08:00`), hold reasons
//! by name, and for each refusal a hint at what to do. Scripts take
//! `--json`, with raw values (times in Unix ms) beside the readable ones.
//! Pure formatting: no I/O.

use crate::protocol::ResultCode;
use crate::protocol::records::Holds;

/// Hong Kong's offset from UTC (no daylight saving since 1979).
const HONG_KONG_OFFSET_MS: i64 = 8 * 3_600_000;

/// `ms` (Unix milliseconds) as ISO 8601 in Hong Kong time, to the second
/// unless it has milliseconds: `2026-12-03T17:05:00+08:00`.
#[must_use]
pub fn hk_time(ms: u64) -> String {
    let local = i64::try_from(ms).unwrap_or(i64::MAX - HONG_KONG_OFFSET_MS) + HONG_KONG_OFFSET_MS;
    let (days, in_day) = (local.div_euclid(86_400_000), local.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}+08:00")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}+08:00")
    }
}

/// The calendar date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A hold mask by name: `SMS_OTP`, `FACE_REVIEW+COOLING_OFF`.
#[must_use]
pub fn holds(bits: u8) -> String {
    let names: Vec<&str> = hold_names(bits).collect();
    if names.is_empty() { "none".into() } else { names.join("+") }
}

/// Each hold of a mask, by name, in bit order (undefined bits ignored).
pub fn hold_names(bits: u8) -> impl Iterator<Item = &'static str> {
    Holds::from_bits(bits & 0x7f).unwrap_or_default().names()
}

/// What releases a hold, for a person: the command that does it.
#[must_use]
pub fn release(bits: u8, id: u128) -> String {
    let mut ways = Vec::new();
    for name in hold_names(bits) {
        ways.push(match name {
            "FACE_REVIEW" => format!("harbour step-up --id {id} --method face"),
            "SMS_OTP" => format!("harbour step-up --id {id} --method sms"),
            "COOLING_OFF" => "it posts when the cooling-off ends".to_string(),
            "MANUAL_REVIEW" | "MULE_REVIEW" => format!("an operator's harbour review --id {id}"),
            "CLIENT" => format!("harbour finalize --id {id} [--void]"),
            _ => "it posts within milliseconds".to_string(),
        });
    }
    ways.join("; ")
}

/// What a refusal means and what to do, where there is more to say than
/// its name.
#[must_use]
pub fn hint(code: ResultCode) -> Option<&'static str> {
    use ResultCode::*;
    Some(match code {
        InvalidId => "customer account ids start at 1024 (1-6 are the bank's system accounts); other ids at 1",
        IdConflict => "the id is taken by something else: use a new id, or resend exactly what was sent",
        DebitAccountNotFound | CreditAccountNotFound | AccountNotFound => {
            "no such account: create it with `harbour account create --id N`"
        }
        SameAccount => "debit and credit are the same account and currency",
        Forbidden => "this channel may not do that (its roles, or a system account that cannot be used so)",
        InvalidAmount => "the amount must be more than zero (and not round to zero when converted)",
        UnknownCurrency => "currencies are ISO 4217 (HKD, USD, CNY, EUR, GBP, JPY, ...)",
        UnknownCountry => "countries are ISO 3166-1 numeric (Hong Kong 344, China 156)",
        InsufficientFunds => "the debit account's available balance (posted less held) is below the amount",
        NoFxRate => "no customer rate for this pair: a TREASURY channel sets one with `harbour rate`",
        QuoteInvalid => "the quote is unknown, spent, expired, or for another pair, amount or side",
        NotPending => "the transfer is not pending: look it up with `harbour lookup --id N`",
        WrongMethod => "the transfer is not held for that: `harbour lookup --id N` names its holds",
        TransferNotFound => "no transfer with this id",
        CreditLimitExceeded => "past the account's credit line (or its active loans)",
        NoCreditLine => "no credit line in this currency: a LENDING channel sets one with `harbour credit-line`",
        LoanNotFound => "no loan with this id",
        Overpayment => "more than is owed now: `harbour loan show --id N` shows what is",
        ClockNotManual => "the switch's clock is the system's: start it with --clock manual to set it",
        TimeBackwards => "the clock never goes back",
        NothingToReport => "no AML cases in that month",
        _ => return None,
    })
}

/// A refusal in one line: its name, then its hint.
#[must_use]
pub fn refusal(code: u16) -> String {
    match ResultCode::from_u16(code) {
        Some(c) => match hint(c) {
            Some(h) => format!("{}: {h}", c.name()),
            None => c.name().to_string(),
        },
        None => format!("code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_hong_kong() {
        assert_eq!(hk_time(0), "1970-01-01T08:00:00+08:00");
        // 2026-12-03 16:00:00 UTC is midnight in Hong Kong.
        assert_eq!(hk_time(1_796_313_600_000), "2026-12-04T00:00:00+08:00");
        assert_eq!(hk_time(1_796_313_600_123), "2026-12-04T00:00:00.123+08:00");
        // A leap day.
        assert_eq!(hk_time(1_709_164_800_000), "2024-02-29T08:00:00+08:00");
    }

    #[test]
    fn holds_and_refusals_read_by_name() {
        assert_eq!(holds(0x02), "SMS_OTP");
        assert_eq!(holds(0x05), "FACE_REVIEW+COOLING_OFF");
        assert_eq!(holds(0), "none");
        assert!(release(0x10, 3).contains("harbour finalize --id 3"));
        assert!(refusal(ResultCode::InvalidId.as_u16()).contains("1024"));
        assert_eq!(refusal(ResultCode::Ok.as_u16()), "OK");
        assert_eq!(refusal(999), "code 999");
    }
}
