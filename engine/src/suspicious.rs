//! The Suspicious Transaction Report: AML cases as report rows, and
//! EXPORT_STR's answer.

use super::*;

impl Engine {
    /// Every AML case, in submission order (a copy).
    #[must_use]
    pub fn cases(&self) -> Vec<Case> {
        self.cases.iter().copied().collect()
    }

    /// The first case submitted at or after `ms` (cases are in submission
    /// order).
    pub(crate) fn first_case_from(&self, ms: u64) -> u32 {
        let (mut lo, mut hi) = (0u32, self.cases.len() as u32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.cases.get(mid).submitted_ms < ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The case rows of a HK calendar month, in report order (submission
    /// time, then transfer id: cases are stored in submission order).
    #[must_use]
    pub fn str_rows(&self, year: u32, month: u32) -> Vec<CaseRow> {
        if !(1..=12).contains(&month) {
            return Vec::new();
        }
        let start = aml::hk_month_start_ms(year, month);
        let end =
            if month == 12 { aml::hk_month_start_ms(year + 1, 1) } else { aml::hk_month_start_ms(year, month + 1) };
        let (first, last) = (self.first_case_from(start), self.first_case_from(end));
        let mut rows: Vec<CaseRow> = (first..last)
            .map(|at| self.cases.get(at))
            .map(|case| {
                let s = self.transfers.get(self.transfers.find(case.transfer_id).expect("a case's transfer is stored"));
                let account = self.book.account(s.debit_account).expect("a case's account exists");
                CaseRow {
                    case: *case,
                    debit_account: s.debit_account,
                    customer_ref: account.customer_ref,
                    credit_account: s.credit_account,
                    debit_amount: s.debit_amount,
                    credit_amount: s.credit_amount,
                    debit_currency: s.debit_currency,
                    credit_currency: s.credit_currency,
                    destination_country: s.destination_country,
                    state: s.state,
                }
            })
            .collect();
        sort_rows(&mut rows);
        rows
    }

    /// EXPORT_STR: StrHeader, then the report. Precedence: INVALID_FIELD
    /// (month outside 1..12, or an unknown format), NOTHING_TO_REPORT.
    pub(crate) fn export_str(&self, r: &StrRequest, out: &mut Vec<u8>) {
        let rows = if str_request_valid(r) { self.str_rows(u32::from(r.year), u32::from(r.month)) } else { Vec::new() };
        str_answer(&rows, r, self.now_ms, out);
    }
}

/// Puts case rows in report order: submission time, then transfer id.
pub fn sort_rows(rows: &mut [CaseRow]) {
    rows.sort_unstable_by_key(|r| (r.case.submitted_ms, r.case.transfer_id));
}

/// Whether the rules take an STR request: a month in 1..=12 and a known
/// format (else INVALID_FIELD).
#[must_use]
pub fn str_request_valid(r: &StrRequest) -> bool {
    (1..=12).contains(&r.month) && matches!(r.format, report::FORMAT_XML | report::FORMAT_CSV)
}

/// EXPORT_STR's answer for `rows` (the month's, in report order): a
/// StrHeader and the report, or INVALID_FIELD for a request the rules
/// refuse.
pub fn str_answer(rows: &[CaseRow], r: &StrRequest, now_ms: u64, out: &mut Vec<u8>) {
    let mut header = StrHeader { code: 0, format: r.format, report_len: 0 };
    let body = if str_request_valid(r) {
        report::format(rows, u32::from(r.year), u32::from(r.month), r.format, now_ms)
    } else {
        header.code = ResultCode::InvalidField.as_u16();
        Ok(Vec::new())
    };
    match body {
        Ok(bytes) => {
            header.report_len = u32::try_from(bytes.len()).expect("a report is at most REPORT_MAX");
            records::push(out, &header);
            out.extend_from_slice(&bytes);
        }
        Err(e) => {
            header.code = match e {
                ReportError::Empty => ResultCode::NothingToReport,
                ReportError::TooLarge => ResultCode::Overflow,
            }
            .as_u16();
            records::push(out, &header);
        }
    }
}

/// A step-up outcome is PASS or FAIL (values come before state).
pub(crate) fn check_outcome(outcome: u8) -> Result<(), ResultCode> {
    if matches!(outcome, records::OUTCOME_PASS | records::OUTCOME_FAIL) {
        Ok(())
    } else {
        Err(ResultCode::InvalidField)
    }
}
