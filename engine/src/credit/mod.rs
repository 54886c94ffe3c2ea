//! Credit: credit lines, loans and their interest, as contract §6 defines
//! them. Pure arithmetic and records; the engine owns the store
//! (`engine::loans`) and moves the money.
//!
//! Interest is simple and accrues per whole 24-hour period since
//! disbursement. Each period's interest is `principal_outstanding ×
//! apr_bps / 10000 / 365`, rounded half-up to the minor unit, with the
//! principal outstanding at the period's end. Because the principal only
//! changes through logged commands (repayments, voids), interest is
//! accrued lazily: a loan remembers how many periods it has accrued and
//! every command that touches it first accrues the periods completed since,
//! all at the one principal that was outstanding through them. A lookup
//! computes the same figure without changing anything.
//!
//! `ear_bps`, for disclosure, is `(1 + APR/365)^365 − 1` in basis points,
//! rounded half-up, computed with exact decimals (`rust_decimal`, 28
//! significant digits), never floats.

use rust_decimal::Decimal;

use crate::money::CurrencyIndex;

/// The Money Lenders Ordinance's ceiling: an APR above 48% is refused.
pub const APR_BPS_MAX: u32 = 4_800;
/// Most active loans one line carries (disbursements and micro-loans):
/// past it a disbursement is CREDIT_LIMIT_EXCEEDED and a micro-loan is not
/// drawn. Bounds what a balance lookup or a repayment walks per line.
pub const ACTIVE_LOANS_PER_LINE_MAX: u32 = 1_024;
/// One interest period.
pub const PERIOD_MS: u64 = 86_400_000;
/// Basis points per unit times days per year: the divisor of a period's
/// interest.
const DAILY_DIVISOR: u128 = 10_000 * 365;

/// `principal × apr_bps / 10000 / 365`, rounded half-up to the minor unit:
/// one period's interest.
#[must_use]
pub fn period_interest(principal: u64, apr_bps: u32) -> u64 {
    let numerator = u128::from(principal) * u128::from(apr_bps);
    let rounded = (2 * numerator + DAILY_DIVISOR) / (2 * DAILY_DIVISOR);
    u64::try_from(rounded).expect("principal × apr / 3,650,000 fits u64")
}

/// Whole 24-hour periods from `from_ms` to `to_ms`.
#[must_use]
pub fn periods(from_ms: u64, to_ms: u64) -> u64 {
    to_ms.saturating_sub(from_ms) / PERIOD_MS
}

/// The effective annual rate of an APR with daily compounding, in basis
/// points, rounded half-up: `(1 + apr/365)^365 − 1`.
#[must_use]
pub fn ear_bps(apr_bps: u32) -> u32 {
    let daily = Decimal::ONE + Decimal::from(apr_bps) / Decimal::from(DAILY_DIVISOR as u64);
    // Square-and-multiply: 365 = 0b1_0110_1101.
    let mut result = Decimal::ONE;
    let mut base = daily;
    let mut e = 365u32;
    while e > 0 {
        if e & 1 == 1 {
            result = result.checked_mul(base).expect("(1 + r)^365 fits a Decimal for r ≤ 48%");
        }
        base = base.checked_mul(base).expect("the square fits a Decimal");
        e >>= 1;
    }
    let bps = (result - Decimal::ONE) * Decimal::from(10_000);
    let rounded = bps.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    u32::try_from(rounded.mantissa() / 10i128.pow(rounded.scale())).expect("an EAR in bps fits u32")
}

/// LoanResult state: the loan has something outstanding.
pub const LOAN_ACTIVE: u8 = 1;
/// LoanResult state: paid off (or a micro-loan repaid when its transfer was
/// voided).
pub const LOAN_REPAID: u8 = 2;

/// One account's credit line in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditLine {
    pub flags: u16,
    pub apr_bps: u32,
    /// `ear_bps(apr_bps)`, computed once when the line is set.
    pub ear_bps: u32,
    /// Most principal outstanding across the account's loans in this
    /// currency.
    pub limit: u64,
    /// Most one automatic micro-loan may draw.
    pub micro_credit_max: u64,
    /// Principal outstanding now, over the account's loans in this
    /// currency (kept in step with the loans; the audit recomputes it).
    pub principal: u64,
}

impl CreditLine {
    /// What the line can still lend.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.principal)
    }
}

/// One loan: a disbursement, or a micro-loan drawn by an AUTO_CREDIT
/// transfer (whose id it shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loan {
    pub id: u128,
    pub account: u64,
    pub currency: CurrencyIndex,
    /// Whether an AUTO_CREDIT transfer drew it.
    pub micro: bool,
    pub state: u8,
    /// The line's APR and EAR when it was disbursed (a later change of
    /// the line does not reprice it).
    pub apr_bps: u32,
    pub ear_bps: u32,
    /// The request's term (sets the due date only); 0 for a micro-loan.
    pub term_days: u32,
    /// Principal at disbursement.
    pub principal: u64,
    pub principal_outstanding: u64,
    /// Interest accrued and not yet paid, as of `periods_accrued`.
    pub interest_accrued: u64,
    /// Interest paid so far (credited to INTEREST_INCOME).
    pub interest_paid: u64,
    /// Whole periods since disbursement already accrued.
    pub periods_accrued: u64,
    pub disbursed_at_ms: u64,
    /// The store's link to the next active loan of the same line
    /// (`NO_LOAN` at the end); not part of the loan's state.
    pub next: u32,
}

/// `Loan::next` at the end of a line's list.
pub const NO_LOAN: u32 = u32::MAX;

impl Loan {
    /// A new active loan of `principal` on `line`'s terms (its APR and EAR
    /// now), disbursed at `now_ms`.
    #[must_use]
    pub fn new(
        id: u128,
        account: u64,
        currency: CurrencyIndex,
        line: &CreditLine,
        term_days: u32,
        principal: u64,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            account,
            currency,
            state: LOAN_ACTIVE,
            apr_bps: line.apr_bps,
            ear_bps: line.ear_bps,
            term_days,
            principal,
            principal_outstanding: principal,
            disbursed_at_ms: now_ms,
            ..Self::blank()
        }
    }

    /// A zeroed loan (arena filler).
    #[must_use]
    pub const fn blank() -> Self {
        Self {
            id: 0,
            account: 0,
            currency: CurrencyIndex::HKD,
            micro: false,
            state: 0,
            apr_bps: 0,
            ear_bps: 0,
            term_days: 0,
            principal: 0,
            principal_outstanding: 0,
            interest_accrued: 0,
            interest_paid: 0,
            periods_accrued: 0,
            disbursed_at_ms: 0,
            next: NO_LOAN,
        }
    }

    /// Interest accrued and unpaid at `now_ms`, without changing the loan.
    #[must_use]
    pub fn interest_at(&self, now_ms: u64) -> u64 {
        let due = periods(self.disbursed_at_ms, now_ms).saturating_sub(self.periods_accrued);
        let per_period = period_interest(self.principal_outstanding, self.apr_bps);
        self.interest_accrued.saturating_add(due.saturating_mul(per_period))
    }

    /// Books the periods completed by `now_ms` (at the principal that was
    /// outstanding through them).
    pub fn accrue(&mut self, now_ms: u64) {
        self.interest_accrued = self.interest_at(now_ms);
        self.periods_accrued = self.periods_accrued.max(periods(self.disbursed_at_ms, now_ms));
    }

    /// What clears the loan at `now_ms`: interest, then principal.
    #[must_use]
    pub fn owed_at(&self, now_ms: u64) -> u128 {
        u128::from(self.interest_at(now_ms)) + u128::from(self.principal_outstanding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (principal, apr_bps, one period's interest), hand-computed:
    /// principal × apr / 3,650,000, half-up.
    const PERIODS: [(u64, u32, u64); 8] = [
        // HK$10,000.00 at 10%: 1,000,000 × 1000 / 3,650,000 = 273.97... → 274.
        (1_000_000, 1_000, 274),
        // HK$10,000.00 at 48%: 1,315.07 → 1,315.
        (1_000_000, 4_800, 1_315),
        // HK$100.00 at 36.5%: exactly 10.
        (10_000, 3_650, 10),
        // HK$50.00 at 36.5%: exactly 5.
        (5_000, 3_650, 5),
        // 1,825,000 × 1 / 3,650,000 = 0.5 exactly: half-up → 1.
        (1_825_000, 1, 1),
        // ... one unit less is 0.4999...: → 0.
        (1_824_999, 1, 0),
        // Zero rate, zero principal.
        (1_000_000, 0, 0),
        (0, 4_800, 0),
    ];

    #[test]
    fn one_periods_interest_rounds_half_up() {
        for (principal, apr, want) in PERIODS {
            assert_eq!(period_interest(principal, apr), want, "{principal} at {apr} bps");
        }
    }

    #[test]
    fn interest_over_1_30_and_365_days() {
        let loan = |principal, apr_bps| Loan {
            id: 1,
            account: 1024,
            currency: CurrencyIndex::HKD,
            micro: false,
            state: LOAN_ACTIVE,
            apr_bps,
            ear_bps: ear_bps(apr_bps),
            term_days: 30,
            principal,
            principal_outstanding: principal,
            interest_accrued: 0,
            interest_paid: 0,
            periods_accrued: 0,
            disbursed_at_ms: 1_000,
            next: NO_LOAN,
        };
        // (principal, apr, days, interest): simple interest, each period
        // rounded half-up, then summed.
        let table: [(u64, u32, u64, u64); 9] = [
            (1_000_000, 1_000, 1, 274),
            (1_000_000, 1_000, 30, 30 * 274),
            (1_000_000, 1_000, 365, 365 * 274), // 100,010: rounding per day adds HK$0.10 a year
            (1_000_000, 4_800, 1, 1_315),
            (1_000_000, 4_800, 30, 39_450),
            (1_000_000, 4_800, 365, 479_975),
            (5_000, 3_650, 1, 5),
            (5_000, 3_650, 30, 150),
            (5_000, 3_650, 365, 1_825),
        ];
        for (principal, apr, days, want) in table {
            let l = loan(principal, apr);
            let at = 1_000 + days * PERIOD_MS;
            assert_eq!(l.interest_at(at), want, "{principal} at {apr} bps for {days} days");
            assert_eq!(l.interest_at(at - 1), want - period_interest(principal, apr), "a period is whole 24 hours");
            let mut accrued = l;
            accrued.accrue(at - PERIOD_MS);
            accrued.accrue(at);
            assert_eq!(accrued.interest_accrued, want, "accruing in steps is the same");
        }
    }

    #[test]
    fn ear_with_daily_compounding() {
        // (1 + 0.10/365)^365 − 1 = 10.5155...% → 1052 bps.
        for (apr, ear) in [(1_000, 1_052), (0, 0), (100, 101), (500, 513), (3_650, 4_403), (4_800, 6_156)] {
            assert_eq!(ear_bps(apr), ear, "APR {apr} bps");
        }
    }
}
