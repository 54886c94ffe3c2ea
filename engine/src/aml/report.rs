//! The monthly Suspicious Transaction Report: the month's AML cases as XML
//! (schema `docs/str.xsd`, described in `docs/str.md`) or CSV with the same
//! columns in the same order.
//!
//! Pure formatting of case rows the engine hands over; rows are ordered by
//! submission time, then transfer id, so a report is the same bytes on
//! every run. Every value is a number or a name from a fixed set, so
//! nothing needs escaping. A report is bounded by [`REPORT_MAX`] (the
//! contract's 256 MiB).

use super::{Case, HKD_VALUE_SCALE, Outcome, Reasons, civil_from_days};
use crate::money::{self, CurrencyIndex};
use crate::protocol::records::Holds;

/// Largest report body (contract §4: up to 256 MiB).
pub const REPORT_MAX: usize = 256 << 20;

/// StrRequest format 1.
pub const FORMAT_XML: u8 = 1;
/// StrRequest format 2.
pub const FORMAT_CSV: u8 = 2;

/// The XML namespace of report version 1.
pub const NAMESPACE: &str = "urn:harbour:str:1";

/// The columns, in order: XML child elements of `<case>` and CSV header.
pub const COLUMNS: [&str; 23] = [
    "transfer_id",
    "submitted_at",
    "account",
    "customer_ref",
    "counterparty",
    "destination_country",
    "debit_amount",
    "debit_currency",
    "credit_amount",
    "credit_currency",
    "hkd_value",
    "day_total_hkd",
    "levels",
    "rules",
    "holds",
    "outcome",
    "state",
    "closed_at",
    "mule_senders",
    "mule_inbound_hkd",
    "mule_passed_on_permille",
    "mule_first_in_at",
    "mule_last_in_at",
];

/// The columns a case shows only when they apply (XML leaves the element
/// out, CSV the value empty).
const OPTIONAL: [&str; 6] =
    ["closed_at", "mule_senders", "mule_inbound_hkd", "mule_passed_on_permille", "mule_first_in_at", "mule_last_in_at"];

/// One case with what the report shows of its transfer and account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseRow {
    pub case: Case,
    pub debit_account: u64,
    pub customer_ref: u64,
    pub credit_account: u64,
    pub debit_amount: u64,
    pub credit_amount: u64,
    pub debit_currency: CurrencyIndex,
    pub credit_currency: CurrencyIndex,
    pub destination_country: u16,
    /// The transfer's state now (`records::STATE_*`).
    pub state: u8,
}

/// Bytes of an encoded row (shards hand rows to the switch in this form).
pub const ROW_SIZE: usize = 144;

impl CaseRow {
    /// Encodes the row into `ROW_SIZE` bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let c = &self.case;
        out.extend_from_slice(&c.transfer_id.to_le_bytes());
        out.extend_from_slice(&c.submitted_ms.to_le_bytes());
        out.extend_from_slice(&c.closed_ms.to_le_bytes());
        out.extend_from_slice(&c.hkd_value.to_le_bytes());
        out.extend_from_slice(&c.day_total.to_le_bytes());
        out.extend_from_slice(&c.reasons.0.to_le_bytes());
        out.push(c.holds);
        out.push(c.outcome as u8);
        for v in [self.debit_account, self.customer_ref, self.credit_account, self.debit_amount, self.credit_amount] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.debit_currency.raw());
        out.push(self.credit_currency.raw());
        out.extend_from_slice(&self.destination_country.to_le_bytes());
        out.push(self.state);
        let m = &c.mule;
        out.extend_from_slice(&m.senders.to_le_bytes());
        out.extend_from_slice(&m.passed_on_permille.to_le_bytes());
        for v in [m.inbound_hkd_minor, m.first_in_ms, m.last_in_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert!(out.len() - start <= ROW_SIZE);
        out.resize(start + ROW_SIZE, 0);
    }

    /// Decodes a row [`CaseRow::encode`] wrote; `None` if it is not one.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != ROW_SIZE {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u128_at = |at: usize| u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"));
        let case = Case {
            transfer_id: u128_at(0),
            submitted_ms: u64_at(16),
            closed_ms: u64_at(24),
            hkd_value: u128_at(32),
            day_total: u128_at(48),
            reasons: Reasons(u16::from_le_bytes([b[64], b[65]])),
            holds: b[66],
            outcome: Outcome::from_u8(b[67])?,
            mule: super::mule::Evidence {
                senders: u16::from_le_bytes([b[113], b[114]]),
                passed_on_permille: u32::from_le_bytes(b[115..119].try_into().expect("4 bytes")),
                inbound_hkd_minor: u64_at(119),
                first_in_ms: u64_at(127),
                last_in_ms: u64_at(135),
            },
        };
        Some(Self {
            case,
            debit_account: u64_at(68),
            customer_ref: u64_at(76),
            credit_account: u64_at(84),
            debit_amount: u64_at(92),
            credit_amount: u64_at(100),
            debit_currency: CurrencyIndex::from_raw(b[108])?,
            credit_currency: CurrencyIndex::from_raw(b[109])?,
            destination_country: u16::from_le_bytes([b[110], b[111]]),
            state: b[112],
        })
    }

    /// The row's values, one per column of [`COLUMNS`].
    #[must_use]
    pub fn values(&self) -> [String; COLUMNS.len()] {
        let c = &self.case;
        let join = |items: Vec<String>| items.join(" ");
        let levels = join(c.reasons.levels().iter().map(u8::to_string).collect());
        let rules =
            join(Reasons::NAMES.iter().filter(|(bit, _)| c.reasons.has(*bit)).map(|(_, n)| (*n).into()).collect());
        // The AML holds only (the report's schema names no other).
        let holds = Holds::from_bits(c.holds).unwrap_or_default().without(Holds::CLIENT).without(Holds::IN_FLIGHT);
        let holds = join(holds.names().map(str::to_string).collect());
        let state = match self.state {
            crate::protocol::records::STATE_POSTED => "POSTED",
            crate::protocol::records::STATE_PENDING => "PENDING",
            _ => "VOIDED",
        };
        let dc = self.debit_currency.currency();
        let cc = self.credit_currency.currency();
        // The mule rule's evidence, on its cases only.
        let m = &c.mule;
        let is_mule = c.holds & Holds::MULE_REVIEW.bits() != 0;
        let mule = |v: String| if is_mule { v } else { String::new() };
        [
            c.transfer_id.to_string(),
            timestamp(c.submitted_ms),
            self.debit_account.to_string(),
            self.customer_ref.to_string(),
            self.credit_account.to_string(),
            self.destination_country.to_string(),
            money::format_minor(i128::from(self.debit_amount), dc),
            dc.alpha.to_string(),
            money::format_minor(i128::from(self.credit_amount), cc),
            cc.alpha.to_string(),
            hkd(c.hkd_value),
            hkd(c.day_total),
            levels,
            rules,
            holds,
            c.outcome.name().to_string(),
            state.to_string(),
            if c.outcome == Outcome::Pending { String::new() } else { timestamp(c.closed_ms) },
            mule(m.senders.to_string()),
            mule(hkd(u128::from(m.inbound_hkd_minor) * HKD_VALUE_SCALE)),
            mule(m.passed_on_permille.to_string()),
            mule(timestamp(m.first_in_ms)),
            mule(timestamp(m.last_in_ms)),
        ]
    }
}

/// A switch time as ISO 8601 UTC with milliseconds.
#[must_use]
pub fn timestamp(ms: u64) -> String {
    let (y, mo, d) = civil_from_days((ms / super::DAY_MS) as i64);
    let in_day = ms % super::DAY_MS;
    let (h, mi, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// A value in value units as an exact HKD decimal: at least two places,
/// more only where the value has them.
#[must_use]
pub fn hkd(value: u128) -> String {
    // Value units are 10^-12 HKD minor = 10^-14 HKD.
    let unit = HKD_VALUE_SCALE * 100;
    let whole = value / unit;
    let mut fraction = format!("{:014}", value % unit);
    while fraction.len() > 2 && fraction.ends_with('0') {
        fraction.pop();
    }
    format!("{whole}.{fraction}")
}

/// Why a report was not produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// No case in the month.
    Empty,
    /// The report would pass `REPORT_MAX`.
    TooLarge,
}

/// Formats the rows of one month (already in report order) as a report.
/// `generated_ms` is the switch time it was asked at.
pub fn format(rows: &[CaseRow], year: u32, month: u32, format: u8, generated_ms: u64) -> Result<Vec<u8>, ReportError> {
    if rows.is_empty() {
        return Err(ReportError::Empty);
    }
    let cases = u32::try_from(rows.len()).map_err(|_| ReportError::TooLarge)?;
    let mut out = String::new();
    head(&mut out, year, month, format, generated_ms, cases);
    body(&mut out, rows, format)?;
    foot(&mut out, format);
    if out.len() > REPORT_MAX {
        return Err(ReportError::TooLarge);
    }
    Ok(out.into_bytes())
}

/// A report's opening, before its first case: the XML declaration and the
/// root element with the month, the time and the number of `cases`, or
/// the CSV header line.
pub fn head(out: &mut String, year: u32, month: u32, format: u8, generated_ms: u64, cases: u32) {
    if format == FORMAT_CSV {
        out.push_str(&COLUMNS.join(","));
        out.push_str("\r\n");
    } else {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&std::format!(
            "<str xmlns=\"{NAMESPACE}\" version=\"1\" month=\"{year:04}-{month:02}\" generated_at=\"{}\" \
             cases=\"{cases}\">\n",
            timestamp(generated_ms),
        ));
    }
}

/// The cases, one line each (XML without indentation: a month of a
/// million cases fits the contract's 256 MiB at about 610 bytes a case).
pub fn body(out: &mut String, rows: &[CaseRow], format: u8) -> Result<(), ReportError> {
    for row in rows {
        if format == FORMAT_CSV {
            out.push_str(&row.values().join(","));
            out.push_str("\r\n");
        } else {
            out.push_str("<case>");
            for (name, value) in COLUMNS.iter().zip(row.values()) {
                if OPTIONAL.contains(name) && value.is_empty() {
                    continue;
                }
                out.push_str(&std::format!("<{name}>{value}</{name}>"));
            }
            out.push_str("</case>\n");
        }
        if out.len() > REPORT_MAX {
            return Err(ReportError::TooLarge);
        }
    }
    Ok(())
}

/// A report's end, after its last case.
pub fn foot(out: &mut String, format: u8) {
    if format != FORMAT_CSV {
        out.push_str("</str>\n");
    }
}
