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
        let (start, end) = month_bounds(year, month);
        let (first, last) = (self.first_case_from(start), self.first_case_from(end));
        let mut rows: Vec<CaseRow> = (first..last).map(|at| self.case_row(self.cases.get(at))).collect();
        sort_rows(&mut rows);
        rows
    }

    /// A case with what the report shows of its transfer and account.
    fn case_row(&self, case: &Case) -> CaseRow {
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
    }

    /// This shard's part of a page (`r.as_of_ms` already chosen, see
    /// [`str_page_as_of`]): how many of the month's cases were submitted by
    /// then, and the first `r.limit` of them after the cursor in report
    /// order. Memory is bounded by the limit, however many cases share a
    /// millisecond.
    #[must_use]
    pub fn str_page_part(&self, r: &StrPageRequest) -> PagePart {
        if !str_page_valid(r) {
            return PagePart::default();
        }
        let (start, end) = month_bounds(u32::from(r.year), u32::from(r.month));
        let end = end.min(r.as_of_ms.saturating_add(1));
        if start >= end {
            return PagePart::default();
        }
        let (first, last) = (self.first_case_from(start), self.first_case_from(end));
        let cursor = (r.after_ms, r.after_id);
        let limit = r.limit as usize;
        // (submitted_ms, transfer_id, index): the smallest `limit` are kept.
        let mut keys: Vec<(u64, u128, u32)> = Vec::new();
        let (mut dropped, mut last_ms) = (false, 0);
        let mut at = self.first_case_from(start.max(r.after_ms));
        while at < last {
            let c = self.cases.get(at);
            // Cases are in submission order: a later millisecond than every
            // kept key's cannot be among the first `limit`.
            if keys.len() >= limit && c.submitted_ms > last_ms {
                break;
            }
            if (c.submitted_ms, c.transfer_id) > cursor {
                keys.push((c.submitted_ms, c.transfer_id, at));
                last_ms = c.submitted_ms;
                if keys.len() >= 2 * limit {
                    keys.sort_unstable();
                    keys.truncate(limit);
                    dropped = true;
                }
            }
            at += 1;
        }
        keys.sort_unstable();
        let more = at < last || dropped || keys.len() > limit;
        keys.truncate(limit);
        let rows = keys.iter().map(|&(_, _, at)| self.case_row(self.cases.get(at))).collect();
        PagePart { cases: last - first, more, rows }
    }

    /// EXPORT_STR_PAGE on one engine: a StrPageHeader, then the page.
    pub(crate) fn export_str_page(&self, r: &StrPageRequest, out: &mut Vec<u8>) {
        let r = str_page_as_of(r, self.now_ms);
        str_page_answer(vec![self.str_page_part(&r)], &r, out);
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

/// The first and the first-after millisecond of a HK calendar month.
fn month_bounds(year: u32, month: u32) -> (u64, u64) {
    let end = if month == 12 { aml::hk_month_start_ms(year + 1, 1) } else { aml::hk_month_start_ms(year, month + 1) };
    (aml::hk_month_start_ms(year, month), end)
}

/// One shard's part of an STR page: the month's cases it holds submitted
/// by the page's `as_of_ms`, its next rows after the cursor (report
/// order), and whether it has more after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PagePart {
    pub cases: u32,
    pub more: bool,
    pub rows: Vec<CaseRow>,
}

impl PagePart {
    /// Bytes before the rows in the encoded form.
    const HEAD: usize = 8;

    /// Encodes the part as a shard hands it to the switch: `u32 cases,
    /// u8 more, [u8;3] reserved`, then `ROW_SIZE` bytes a row.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cases.to_le_bytes());
        out.extend_from_slice(&[u8::from(self.more), 0, 0, 0]);
        for row in &self.rows {
            row.encode(out);
        }
    }

    /// Decodes what [`PagePart::encode`] wrote; `None` if it is not one.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::HEAD || !(b.len() - Self::HEAD).is_multiple_of(report::ROW_SIZE) {
            return None;
        }
        let cases = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let rows = b[Self::HEAD..].chunks_exact(report::ROW_SIZE).map(CaseRow::decode).collect::<Option<_>>()?;
        Some(Self { cases, more: b[4] != 0, rows })
    }
}

/// Whether the rules take a page request: those of [`str_request_valid`]
/// and a limit in 1..=`STR_PAGE_LIMIT_MAX` (else INVALID_FIELD).
#[must_use]
pub fn str_page_valid(r: &StrPageRequest) -> bool {
    let month = StrRequest { year: r.year, month: r.month, format: r.format };
    str_request_valid(&month) && (1..=records::STR_PAGE_LIMIT_MAX).contains(&r.limit)
}

/// The request with the time its report is as of: the switch's now on the
/// first page (`as_of_ms` 0), never later than now.
#[must_use]
pub fn str_page_as_of(r: &StrPageRequest, now_ms: u64) -> StrPageRequest {
    let as_of_ms = if r.as_of_ms == 0 { now_ms } else { r.as_of_ms.min(now_ms) };
    StrPageRequest { as_of_ms, ..*r }
}

/// EXPORT_STR_PAGE's answer from every shard's part: a StrPageHeader and
/// the page's bytes. Precedence: INVALID_FIELD, NOTHING_TO_REPORT (no case
/// in the month by `as_of_ms`), OVERFLOW (a page past 256 MiB). The first
/// page opens the report, the one flagged LAST closes it; the pages in
/// order are the report EXPORT_STR makes at `as_of_ms`.
pub fn str_page_answer(parts: Vec<PagePart>, r: &StrPageRequest, out: &mut Vec<u8>) {
    let mut header = StrPageHeader {
        format: r.format,
        as_of_ms: r.as_of_ms,
        next_after_ms: r.after_ms,
        next_after_id: r.after_id,
        ..StrPageHeader::default()
    };
    let cases: u64 = parts.iter().map(|p| u64::from(p.cases)).sum();
    let code = if !str_page_valid(r) {
        Some(ResultCode::InvalidField)
    } else if cases == 0 {
        Some(ResultCode::NothingToReport)
    } else {
        None
    };
    if let Some(code) = code {
        header.code = code.as_u16();
        records::push(out, &header);
        return;
    }
    let more = parts.iter().any(|p| p.more);
    let mut rows: Vec<CaseRow> = parts.into_iter().flat_map(|p| p.rows).collect();
    sort_rows(&mut rows);
    let more = more || rows.len() > r.limit as usize;
    rows.truncate(r.limit as usize);
    let cases = u32::try_from(cases).unwrap_or(u32::MAX);
    let mut page = String::new();
    if r.first() {
        report::head(&mut page, u32::from(r.year), u32::from(r.month), r.format, r.as_of_ms, cases);
    }
    let made = report::body(&mut page, &rows, r.format);
    if !more {
        report::foot(&mut page, r.format);
        header.flags = records::STR_PAGE_LAST;
    }
    if made.is_err() || page.len() > report::REPORT_MAX {
        header = StrPageHeader { code: ResultCode::Overflow.as_u16(), flags: 0, ..header };
        records::push(out, &header);
        return;
    }
    if let Some(row) = rows.last() {
        (header.next_after_ms, header.next_after_id) = (row.case.submitted_ms, row.case.transfer_id);
    }
    header.cases = cases;
    header.rows = u32::try_from(rows.len()).expect("at most the limit");
    header.report_len = u32::try_from(page.len()).expect("a page is at most REPORT_MAX");
    records::push(out, &header);
    out.extend_from_slice(page.as_bytes());
}
