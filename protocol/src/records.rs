//! Fixed-size records of contract §4, encoded little-endian.
//!
//! Each record is a plain struct with a `SIZE` checked at compile time, an
//! `encode` into a slice of exactly `SIZE` bytes and a `decode` from one. No
//! record allocates. `well_formed` is the MALFORMED check of contract §1:
//! reserved bytes zero, no undefined flag bits, enum values in range.
//! Nothing outside `protocol` knows byte offsets.

/// A fixed-size wire record.
pub trait Record: Sized + Copy {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Writes the record into `out`, which is exactly `SIZE` bytes.
    fn encode(&self, out: &mut [u8]);
    /// Reads a record from `bytes`, which is exactly `SIZE` bytes.
    fn decode(bytes: &[u8]) -> Self;
    /// Whether the encoded record has zero reserved bytes, only defined flag
    /// bits and valid enum values (else the frame is MALFORMED).
    #[inline]
    fn well_formed(_bytes: &[u8]) -> bool {
        true
    }
}

#[inline]
fn get_u8(b: &[u8], off: usize) -> u8 {
    b[off]
}
#[inline]
fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
#[inline]
fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
#[inline]
fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
#[inline]
fn get_u128(b: &[u8], off: usize) -> u128 {
    u128::from_le_bytes(b[off..off + 16].try_into().expect("16 bytes"))
}
#[inline]
fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u128(b: &mut [u8], off: usize, v: u128) {
    b[off..off + 16].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Account kind 1: a customer's account (the only kind a channel creates).
pub const ACCOUNT_KIND_CUSTOMER: u16 = 1;

/// Account (32): a customer account to create.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub account_id: u64,
    pub kind: u16,
    pub flags: u16,
    pub home_country: u16,
    pub customer_ref: u64,
}

impl Record for Account {
    const SIZE: usize = 32;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.account_id);
        put_u16(b, 8, self.kind);
        put_u16(b, 10, self.flags);
        put_u16(b, 12, self.home_country);
        put_u64(b, 16, self.customer_ref);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            account_id: get_u64(b, 0),
            kind: get_u16(b, 8),
            flags: get_u16(b, 10),
            home_country: get_u16(b, 12),
            customer_ref: get_u64(b, 16),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        get_u16(b, 8) == ACCOUNT_KIND_CUSTOMER && get_u16(b, 10) == 0 && zero(&b[14..16]) && zero(&b[24..32])
    }
}

/// Result (32): the answer to one record of a kind without its own result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordResult {
    /// The account id, or the record's index for kinds without an id.
    pub key: u64,
    pub code: u16,
}

impl Record for RecordResult {
    const SIZE: usize = 32;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.key);
        put_u16(b, 8, self.code);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { key: get_u64(b, 0), code: get_u16(b, 8) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[10..32])
    }
}

/// Transfer flag: `amount` is in the credit currency.
pub const TRANSFER_AMOUNT_IN_CREDIT_CURRENCY: u16 = 1;
/// Transfer flag: draw a micro-loan for a shortfall.
pub const TRANSFER_AUTO_CREDIT: u16 = 2;
/// Transfer flag: hold the transfer for the client (FINALIZE_PENDING).
pub const TRANSFER_PENDING: u16 = 4;
/// Every defined transfer flag bit.
pub const TRANSFER_FLAGS_DEFINED: u16 = TRANSFER_AMOUNT_IN_CREDIT_CURRENCY | TRANSFER_AUTO_CREDIT | TRANSFER_PENDING;

/// Transfer (64): a movement of money to submit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Non-zero idempotency key.
    pub transfer_id: u128,
    pub debit_account: u64,
    pub credit_account: u64,
    /// Minor units of the debit currency, or of the credit currency with
    /// `TRANSFER_AMOUNT_IN_CREDIT_CURRENCY`.
    pub amount: u64,
    pub debit_currency: u16,
    pub credit_currency: u16,
    /// ISO 3166-1 numeric; 0 or 344 is domestic.
    pub destination_country: u16,
    pub flags: u16,
    /// 0 means the current rate.
    pub fx_quote_id: u64,
    pub user_data: u64,
}

impl Record for Transfer {
    const SIZE: usize = 64;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        put_u128(b, 0, self.transfer_id);
        put_u64(b, 16, self.debit_account);
        put_u64(b, 24, self.credit_account);
        put_u64(b, 32, self.amount);
        put_u16(b, 40, self.debit_currency);
        put_u16(b, 42, self.credit_currency);
        put_u16(b, 44, self.destination_country);
        put_u16(b, 46, self.flags);
        put_u64(b, 48, self.fx_quote_id);
        put_u64(b, 56, self.user_data);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            transfer_id: get_u128(b, 0),
            debit_account: get_u64(b, 16),
            credit_account: get_u64(b, 24),
            amount: get_u64(b, 32),
            debit_currency: get_u16(b, 40),
            credit_currency: get_u16(b, 42),
            destination_country: get_u16(b, 44),
            flags: get_u16(b, 46),
            fx_quote_id: get_u64(b, 48),
            user_data: get_u64(b, 56),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        get_u16(b, 46) & !TRANSFER_FLAGS_DEFINED == 0
    }
}

/// TransferResult state 0: rejected, nothing stored.
pub const STATE_NONE: u8 = 0;
/// TransferResult state 1: posted.
pub const STATE_POSTED: u8 = 1;
/// TransferResult state 2: pending (held).
pub const STATE_PENDING: u8 = 2;
/// TransferResult state 3: voided.
pub const STATE_VOIDED: u8 = 3;

/// TransferResult (64): the state of one transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferResult {
    pub transfer_id: u128,
    pub code: u16,
    /// `STATE_*`.
    pub state: u8,
    /// `Holds` bits a pending transfer waits for.
    pub holds: u8,
    pub debit_amount: u64,
    pub credit_amount: u64,
    pub rate_e9: u64,
    pub auto_credit_amount: u64,
    pub hold_until_ms: u64,
}

impl Record for TransferResult {
    const SIZE: usize = 64;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        put_u128(b, 0, self.transfer_id);
        put_u16(b, 16, self.code);
        b[18] = self.state;
        b[19] = self.holds;
        put_u32(b, 20, 0);
        put_u64(b, 24, self.debit_amount);
        put_u64(b, 32, self.credit_amount);
        put_u64(b, 40, self.rate_e9);
        put_u64(b, 48, self.auto_credit_amount);
        put_u64(b, 56, self.hold_until_ms);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            transfer_id: get_u128(b, 0),
            code: get_u16(b, 16),
            state: get_u8(b, 18),
            holds: get_u8(b, 19),
            debit_amount: get_u64(b, 24),
            credit_amount: get_u64(b, 32),
            rate_e9: get_u64(b, 40),
            auto_credit_amount: get_u64(b, 48),
            hold_until_ms: get_u64(b, 56),
        }
    }
    /// Holds as the wire defines them: the contract's five and Harbour's
    /// IN_FLIGHT (bit 32, `docs/protocol.md` additions).
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        get_u8(b, 18) <= STATE_VOIDED && Holds::from_bits(get_u8(b, 19)).is_some() && zero(&b[20..24])
    }
}

/// StepUp method 1: facial re-verification.
pub const METHOD_FACE: u8 = 1;
/// StepUp method 2: SMS one-time password.
pub const METHOD_SMS_OTP: u8 = 2;
/// StepUp method 3: an operator's manual review (RESOLVE_REVIEW only).
pub const METHOD_MANUAL_REVIEW: u8 = 3;
/// StepUp outcome 1.
pub const OUTCOME_PASS: u8 = 1;
/// StepUp outcome 2.
pub const OUTCOME_FAIL: u8 = 2;

/// StepUp (24): the outcome of a verification a held transfer waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepUp {
    pub transfer_id: u128,
    /// `METHOD_*`.
    pub method: u8,
    /// `OUTCOME_*`.
    pub outcome: u8,
}

impl Record for StepUp {
    const SIZE: usize = 24;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u128(b, 0, self.transfer_id);
        b[16] = self.method;
        b[17] = self.outcome;
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { transfer_id: get_u128(b, 0), method: b[16], outcome: b[17] }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        (METHOD_FACE..=METHOD_MANUAL_REVIEW).contains(&b[16])
            && (OUTCOME_PASS..=OUTCOME_FAIL).contains(&b[17])
            && zero(&b[18..24])
    }
}

/// Id (16): a transfer or loan id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Id {
    pub id: u128,
}

impl Record for Id {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        put_u128(b, 0, self.id);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { id: get_u128(b, 0) }
    }
}

/// Finalize action 1: release the CLIENT hold.
pub const FINALIZE_POST: u8 = 1;
/// Finalize action 2: void the transfer.
pub const FINALIZE_VOID: u8 = 2;

/// Finalize (32): the client's decision on its own PENDING transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finalize {
    pub transfer_id: u128,
    /// `FINALIZE_POST` or `FINALIZE_VOID`.
    pub action: u8,
}

impl Record for Finalize {
    const SIZE: usize = 32;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u128(b, 0, self.transfer_id);
        b[16] = self.action;
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { transfer_id: get_u128(b, 0), action: b[16] }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        (FINALIZE_POST..=FINALIZE_VOID).contains(&b[16]) && zero(&b[17..32])
    }
}

/// BalanceKey (16): one account's balance in one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceKey {
    pub account_id: u64,
    pub currency: u16,
}

impl Record for BalanceKey {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.account_id);
        put_u16(b, 8, self.currency);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { account_id: get_u64(b, 0), currency: get_u16(b, 8) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[10..16])
    }
}

/// Balance (48): one account's position in one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub account_id: u64,
    pub currency: u16,
    pub code: u16,
    /// Posted balance (system accounts may be negative).
    pub balance: i64,
    /// Reserved by PENDING debits.
    pub held: u64,
    /// Unused credit line.
    pub credit_available: u64,
    /// Loan principal plus accrued interest.
    pub loans_outstanding: u64,
}

impl Record for Balance {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.account_id);
        put_u16(b, 8, self.currency);
        put_u16(b, 10, self.code);
        put_u64(b, 16, self.balance as u64);
        put_u64(b, 24, self.held);
        put_u64(b, 32, self.credit_available);
        put_u64(b, 40, self.loans_outstanding);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            account_id: get_u64(b, 0),
            currency: get_u16(b, 8),
            code: get_u16(b, 10),
            balance: get_u64(b, 16) as i64,
            held: get_u64(b, 24),
            credit_available: get_u64(b, 32),
            loans_outstanding: get_u64(b, 40),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[12..16])
    }
}

/// SetTime (16): move a manual clock forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetTime {
    pub unix_ms: u64,
}

impl Record for SetTime {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.unix_ms);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { unix_ms: get_u64(b, 0) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[8..16])
    }
}

/// Quote / FxRate flag: the amount is on the credit side.
pub const QUOTE_AMOUNT_IN_CREDIT_CURRENCY: u16 = 1;

/// FxRate (16): a rate TREASURY sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FxRate {
    pub from: u16,
    pub to: u16,
    /// `to` per `from` × 10^9, spread included.
    pub rate_e9: u64,
}

impl Record for FxRate {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.from);
        put_u16(b, 2, self.to);
        put_u64(b, 8, self.rate_e9);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { from: get_u16(b, 0), to: get_u16(b, 2), rate_e9: get_u64(b, 8) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[4..8])
    }
}

/// QuoteRequest (16): ask for a locked rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuoteRequest {
    pub from: u16,
    pub to: u16,
    pub flags: u16,
    pub amount: u64,
}

impl Record for QuoteRequest {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.from);
        put_u16(b, 2, self.to);
        put_u16(b, 4, self.flags);
        put_u64(b, 8, self.amount);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { from: get_u16(b, 0), to: get_u16(b, 2), flags: get_u16(b, 4), amount: get_u64(b, 8) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        get_u16(b, 4) & !QUOTE_AMOUNT_IN_CREDIT_CURRENCY == 0 && zero(&b[6..8])
    }
}

/// Quote (48): a locked rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quote {
    pub quote_id: u64,
    pub code: u16,
    pub rate_e9: u64,
    pub debit_amount: u64,
    pub credit_amount: u64,
    pub expires_at_ms: u64,
}

impl Record for Quote {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.quote_id);
        put_u16(b, 8, self.code);
        put_u64(b, 16, self.rate_e9);
        put_u64(b, 24, self.debit_amount);
        put_u64(b, 32, self.credit_amount);
        put_u64(b, 40, self.expires_at_ms);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            quote_id: get_u64(b, 0),
            code: get_u16(b, 8),
            rate_e9: get_u64(b, 16),
            debit_amount: get_u64(b, 24),
            credit_amount: get_u64(b, 32),
            expires_at_ms: get_u64(b, 40),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[10..16])
    }
}

/// CreditLine flag: draw micro-loans automatically on shortfall.
pub const CREDIT_AUTO_MICRO_CREDIT: u16 = 1;

/// CreditLine (32): an account's credit line in one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreditLine {
    pub account_id: u64,
    pub currency: u16,
    pub flags: u16,
    pub apr_bps: u32,
    pub limit: u64,
    pub micro_credit_max: u64,
}

impl Record for CreditLine {
    const SIZE: usize = 32;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.account_id);
        put_u16(b, 8, self.currency);
        put_u16(b, 10, self.flags);
        put_u32(b, 12, self.apr_bps);
        put_u64(b, 16, self.limit);
        put_u64(b, 24, self.micro_credit_max);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            account_id: get_u64(b, 0),
            currency: get_u16(b, 8),
            flags: get_u16(b, 10),
            apr_bps: get_u32(b, 12),
            limit: get_u64(b, 16),
            micro_credit_max: get_u64(b, 24),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        get_u16(b, 10) & !CREDIT_AUTO_MICRO_CREDIT == 0
    }
}

/// Disburse (48): a loan to pay out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disburse {
    pub loan_id: u128,
    pub account_id: u64,
    pub currency: u16,
    pub term_days: u32,
    pub principal: u64,
}

impl Record for Disburse {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u128(b, 0, self.loan_id);
        put_u64(b, 16, self.account_id);
        put_u16(b, 24, self.currency);
        put_u32(b, 28, self.term_days);
        put_u64(b, 32, self.principal);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            loan_id: get_u128(b, 0),
            account_id: get_u64(b, 16),
            currency: get_u16(b, 24),
            term_days: get_u32(b, 28),
            principal: get_u64(b, 32),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[26..28]) && zero(&b[40..48])
    }
}

/// Repay (48): a repayment of a loan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repay {
    pub repayment_id: u128,
    pub loan_id: u128,
    pub amount: u64,
}

impl Record for Repay {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u128(b, 0, self.repayment_id);
        put_u128(b, 16, self.loan_id);
        put_u64(b, 32, self.amount);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { repayment_id: get_u128(b, 0), loan_id: get_u128(b, 16), amount: get_u64(b, 32) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        zero(&b[40..48])
    }
}

/// LoanResult (64): the state of one loan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoanResult {
    pub loan_id: u128,
    pub code: u16,
    /// 0 NONE, 1 ACTIVE, 2 REPAID.
    pub state: u8,
    pub apr_bps: u32,
    pub account_id: u64,
    pub currency: u16,
    pub ear_bps: u32,
    pub principal_outstanding: u64,
    pub interest_accrued: u64,
    pub disbursed_at_ms: u64,
}

impl Record for LoanResult {
    const SIZE: usize = 64;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u128(b, 0, self.loan_id);
        put_u16(b, 16, self.code);
        b[18] = self.state;
        put_u32(b, 20, self.apr_bps);
        put_u64(b, 24, self.account_id);
        put_u16(b, 32, self.currency);
        put_u32(b, 36, self.ear_bps);
        put_u64(b, 40, self.principal_outstanding);
        put_u64(b, 48, self.interest_accrued);
        put_u64(b, 56, self.disbursed_at_ms);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            loan_id: get_u128(b, 0),
            code: get_u16(b, 16),
            state: b[18],
            apr_bps: get_u32(b, 20),
            account_id: get_u64(b, 24),
            currency: get_u16(b, 32),
            ear_bps: get_u32(b, 36),
            principal_outstanding: get_u64(b, 40),
            interest_accrued: get_u64(b, 48),
            disbursed_at_ms: get_u64(b, 56),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        b[18] <= 2 && b[19] == 0 && zero(&b[34..36])
    }
}

/// STR format 1: XML.
pub const STR_FORMAT_XML: u8 = 1;
/// STR format 2: CSV.
pub const STR_FORMAT_CSV: u8 = 2;

/// StrRequest (16): which month's Suspicious Transaction Report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRequest {
    pub year: u16,
    pub month: u8,
    pub format: u8,
}

impl Record for StrRequest {
    const SIZE: usize = 16;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.year);
        b[2] = self.month;
        b[3] = self.format;
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { year: get_u16(b, 0), month: b[2], format: b[3] }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        (STR_FORMAT_XML..=STR_FORMAT_CSV).contains(&b[3]) && zero(&b[4..16])
    }
}

/// StrHeader (8): precedes the report bytes in EXPORT_STR's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrHeader {
    pub code: u16,
    pub format: u8,
    pub report_len: u32,
}

impl Record for StrHeader {
    const SIZE: usize = 8;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.code);
        b[2] = self.format;
        put_u32(b, 4, self.report_len);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self { code: get_u16(b, 0), format: b[2], report_len: get_u32(b, 4) }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        b[3] == 0
    }
}

/// Rows a page of EXPORT_STR_PAGE may ask for at most (a page of XML then
/// stays well inside the 256 MiB a body may have).
pub const STR_PAGE_LIMIT_MAX: u32 = 100_000;

/// StrPageRequest (48): one page of a month's Suspicious Transaction Report
/// (EXPORT_STR_PAGE, a Harbour addition). The first page has `after_ms` and
/// `after_id` 0 and `as_of_ms` 0 (the switch's time now); each next page
/// sends back the `as_of_ms` and the cursor the previous page answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrPageRequest {
    pub year: u16,
    pub month: u8,
    pub format: u8,
    /// Rows in this page at most, 1..=[`STR_PAGE_LIMIT_MAX`].
    pub limit: u32,
    /// The report covers the cases submitted at or before this time.
    pub as_of_ms: u64,
    /// The cursor: the page starts after the case (submitted_at, transfer_id).
    pub after_ms: u64,
    pub after_id: u128,
}

impl StrPageRequest {
    /// Whether this asks for the first page.
    #[must_use]
    pub fn first(&self) -> bool {
        self.after_ms == 0 && self.after_id == 0
    }
}

impl Record for StrPageRequest {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.year);
        b[2] = self.month;
        b[3] = self.format;
        put_u32(b, 4, self.limit);
        put_u64(b, 8, self.as_of_ms);
        put_u64(b, 16, self.after_ms);
        put_u128(b, 32, self.after_id);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            year: get_u16(b, 0),
            month: b[2],
            format: b[3],
            limit: get_u32(b, 4),
            as_of_ms: get_u64(b, 8),
            after_ms: get_u64(b, 16),
            after_id: get_u128(b, 32),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        (STR_FORMAT_XML..=STR_FORMAT_CSV).contains(&b[3]) && zero(&b[24..32])
    }
}

/// StrPageHeader flag: this page ends the report.
pub const STR_PAGE_LAST: u8 = 1;

/// StrPageHeader (48): precedes a page's report bytes in EXPORT_STR_PAGE's
/// answer. The pages' bytes, in order, are the report EXPORT_STR would
/// give at `as_of_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrPageHeader {
    pub code: u16,
    pub format: u8,
    /// [`STR_PAGE_LAST`] on the page that ends the report.
    pub flags: u8,
    pub report_len: u32,
    /// Cases in the whole report (the month's, submitted by `as_of_ms`).
    pub cases: u32,
    /// Cases in this page.
    pub rows: u32,
    pub as_of_ms: u64,
    /// The cursor of the next page: its request's `after_ms`, `after_id`.
    pub next_after_ms: u64,
    pub next_after_id: u128,
}

impl StrPageHeader {
    /// Whether this page ends the report.
    #[must_use]
    pub fn last(&self) -> bool {
        self.flags & STR_PAGE_LAST != 0
    }
}

impl Record for StrPageHeader {
    const SIZE: usize = 48;
    #[inline]
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u16(b, 0, self.code);
        b[2] = self.format;
        b[3] = self.flags;
        put_u32(b, 4, self.report_len);
        put_u32(b, 8, self.cases);
        put_u32(b, 12, self.rows);
        put_u64(b, 16, self.as_of_ms);
        put_u64(b, 24, self.next_after_ms);
        put_u128(b, 32, self.next_after_id);
    }
    #[inline]
    fn decode(b: &[u8]) -> Self {
        Self {
            code: get_u16(b, 0),
            format: b[2],
            flags: b[3],
            report_len: get_u32(b, 4),
            cases: get_u32(b, 8),
            rows: get_u32(b, 12),
            as_of_ms: get_u64(b, 16),
            next_after_ms: get_u64(b, 24),
            next_after_id: get_u128(b, 32),
        }
    }
    #[inline]
    fn well_formed(b: &[u8]) -> bool {
        b[3] & !STR_PAGE_LAST == 0
    }
}

/// Decodes every record of a body that is a whole number of records.
pub fn decode_all<'a, R: Record + 'a>(body: &'a [u8]) -> impl Iterator<Item = R> + 'a {
    debug_assert_eq!(body.len() % R::SIZE, 0);
    body.chunks_exact(R::SIZE).map(R::decode)
}

/// Appends one encoded record to `out`.
pub fn push<R: Record>(out: &mut Vec<u8>, record: &R) {
    let start = out.len();
    out.resize(start + R::SIZE, 0);
    record.encode(&mut out[start..]);
}

/// Encodes a slice of records into a new body.
#[must_use]
pub fn encode_all<R: Record>(records: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * R::SIZE);
    for r in records {
        push(&mut out, r);
    }
    out
}

// The contract's sizes; a change to a struct that breaks them fails the build.
const _: () = assert!(<Account as Record>::SIZE == 32);
const _: () = assert!(<RecordResult as Record>::SIZE == 32);
const _: () = assert!(<Transfer as Record>::SIZE == 64);
const _: () = assert!(<TransferResult as Record>::SIZE == 64);
const _: () = assert!(<StepUp as Record>::SIZE == 24);
const _: () = assert!(<Id as Record>::SIZE == 16);
const _: () = assert!(<Finalize as Record>::SIZE == 32);
const _: () = assert!(<BalanceKey as Record>::SIZE == 16);
const _: () = assert!(<Balance as Record>::SIZE == 48);
const _: () = assert!(<SetTime as Record>::SIZE == 16);
const _: () = assert!(<FxRate as Record>::SIZE == 16);
const _: () = assert!(<QuoteRequest as Record>::SIZE == 16);
const _: () = assert!(<Quote as Record>::SIZE == 48);
const _: () = assert!(<CreditLine as Record>::SIZE == 32);
const _: () = assert!(<Disburse as Record>::SIZE == 48);
const _: () = assert!(<Repay as Record>::SIZE == 48);
const _: () = assert!(<LoanResult as Record>::SIZE == 64);
const _: () = assert!(<StrRequest as Record>::SIZE == 16);
const _: () = assert!(<StrHeader as Record>::SIZE == 8);
const _: () = assert!(<StrPageRequest as Record>::SIZE == 48);
const _: () = assert!(<StrPageHeader as Record>::SIZE == 48);

/// A set of hold reasons (the wire's `holds` bit mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Holds(u8);

impl Holds {
    /// No holds.
    pub const NONE: Holds = Holds(0);
    /// Facial re-verification (AML level 1).
    pub const FACE_REVIEW: Holds = Holds(1);
    /// Second SMS verification (AML level 2).
    pub const SMS_OTP: Holds = Holds(2);
    /// Cooling-off period (AML level 3): released, not voided, at its end.
    pub const COOLING_OFF: Holds = Holds(4);
    /// An operator's review (AML budget fallback or missing HKD rate).
    pub const MANUAL_REVIEW: Holds = Holds(8);
    /// The client's own hold (transfer flag PENDING).
    pub const CLIENT: Holds = Holds(16);
    /// Harbour addition: the credit is being applied on another shard
    /// (the engine's links); no window, no timer.
    pub const IN_FLIGHT: Holds = Holds(32);
    /// Harbour addition: the account looks like a money mule (money from
    /// several unrelated senders passing through); an operator's review,
    /// resolved by RESOLVE_REVIEW like MANUAL_REVIEW, with its window.
    pub const MULE_REVIEW: Holds = Holds(64);
    /// The holds only an OPERATOR resolves (RESOLVE_REVIEW).
    pub const OPERATOR_REVIEW: Holds = Holds(8 | 64);
    /// Every defined hold with a window, in bit order.
    pub const ALL: [Holds; 6] =
        [Self::FACE_REVIEW, Self::SMS_OTP, Self::COOLING_OFF, Self::MANUAL_REVIEW, Self::CLIENT, Self::MULE_REVIEW];
    /// Every hold the wire shows (IN_FLIGHT too), with its name, in bit order.
    pub const NAMED: [(Holds, &'static str); 7] = [
        (Self::FACE_REVIEW, "FACE_REVIEW"),
        (Self::SMS_OTP, "SMS_OTP"),
        (Self::COOLING_OFF, "COOLING_OFF"),
        (Self::MANUAL_REVIEW, "MANUAL_REVIEW"),
        (Self::CLIENT, "CLIENT"),
        (Self::IN_FLIGHT, "IN_FLIGHT"),
        (Self::MULE_REVIEW, "MULE_REVIEW"),
    ];

    /// The names of the holds in this set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMED.into_iter().filter(move |(h, _)| self.contains(*h)).map(|(_, name)| name)
    }

    /// The bit mask.
    #[must_use]
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// A set from a bit mask; `None` if an undefined bit is set.
    #[must_use]
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Holds> {
        if bits & !0x7F == 0 { Some(Holds(bits)) } else { None }
    }
    /// Whether every hold of `other` is in this set.
    #[must_use]
    #[inline]
    pub const fn contains(self, other: Holds) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether the set is empty.
    #[must_use]
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// This set plus `other`.
    #[must_use]
    #[inline]
    pub const fn with(self, other: Holds) -> Holds {
        Holds(self.0 | other.0)
    }
    /// This set less `other`.
    #[must_use]
    #[inline]
    pub const fn without(self, other: Holds) -> Holds {
        Holds(self.0 & !other.0)
    }
    /// The holds in both sets.
    #[must_use]
    #[inline]
    pub const fn intersect(self, other: Holds) -> Holds {
        Holds(self.0 & other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(r: R) {
        let mut buf = vec![0xAA; R::SIZE];
        r.encode(&mut buf);
        assert!(R::well_formed(&buf), "{r:?} encodes well formed");
        assert_eq!(R::decode(&buf), r);
    }

    #[test]
    fn records_round_trip() {
        round_trip(Account { account_id: 1024, kind: 1, flags: 0, home_country: 344, customer_ref: 7 });
        round_trip(RecordResult { key: 9, code: 23 });
        round_trip(Transfer {
            transfer_id: u128::MAX - 1,
            debit_account: 4,
            credit_account: 2048,
            amount: u64::MAX,
            debit_currency: 344,
            credit_currency: 840,
            destination_country: 156,
            flags: TRANSFER_PENDING,
            fx_quote_id: 3,
            user_data: 42,
        });
        round_trip(TransferResult {
            transfer_id: 1,
            code: 0,
            state: STATE_PENDING,
            holds: 0x11,
            debit_amount: 5,
            credit_amount: 6,
            rate_e9: 1_000_000_000,
            auto_credit_amount: 0,
            hold_until_ms: 99,
        });
        round_trip(StepUp { transfer_id: 5, method: METHOD_SMS_OTP, outcome: OUTCOME_FAIL });
        round_trip(Id { id: 77 });
        round_trip(Finalize { transfer_id: 8, action: FINALIZE_VOID });
        round_trip(BalanceKey { account_id: 1, currency: 392 });
        round_trip(Balance {
            account_id: 4,
            currency: 344,
            code: 0,
            balance: -5,
            held: 1,
            credit_available: 2,
            loans_outstanding: 3,
        });
        round_trip(SetTime { unix_ms: 1_767_225_600_000 });
        round_trip(FxRate { from: 344, to: 840, rate_e9: 128_000_000 });
        round_trip(QuoteRequest { from: 344, to: 840, flags: 1, amount: 5 });
        round_trip(Quote { quote_id: 1, code: 0, rate_e9: 2, debit_amount: 3, credit_amount: 4, expires_at_ms: 5 });
        round_trip(CreditLine {
            account_id: 1024,
            currency: 344,
            flags: 1,
            apr_bps: 4800,
            limit: 9,
            micro_credit_max: 3,
        });
        round_trip(Disburse { loan_id: 7, account_id: 1024, currency: 344, term_days: 30, principal: 100 });
        round_trip(Repay { repayment_id: 8, loan_id: 7, amount: 5 });
        round_trip(LoanResult {
            loan_id: 7,
            code: 0,
            state: 1,
            apr_bps: 1000,
            account_id: 1024,
            currency: 344,
            ear_bps: 1052,
            principal_outstanding: 1,
            interest_accrued: 2,
            disbursed_at_ms: 3,
        });
        round_trip(StrRequest { year: 2026, month: 11, format: STR_FORMAT_CSV });
        round_trip(StrHeader { code: 26, format: 1, report_len: 0 });
        round_trip(StrPageRequest {
            year: 2026,
            month: 11,
            format: STR_FORMAT_XML,
            limit: 3,
            as_of_ms: 4,
            after_ms: 5,
            after_id: u128::MAX - 6,
        });
        round_trip(StrPageHeader {
            code: 0,
            format: 2,
            flags: STR_PAGE_LAST,
            report_len: 7,
            cases: 8,
            rows: 9,
            as_of_ms: 10,
            next_after_ms: 11,
            next_after_id: u128::MAX - 12,
        });
    }

    #[test]
    fn transfer_layout_matches_contract_offsets() {
        let t = Transfer {
            transfer_id: 0x0102,
            debit_account: 0x0304,
            credit_account: 0x0506,
            amount: 0x0708,
            debit_currency: 0x090A,
            credit_currency: 0x0B0C,
            destination_country: 0x0D0E,
            flags: 0x0001,
            fx_quote_id: 0x1112,
            user_data: 0x1314,
        };
        let mut b = [0u8; 64];
        t.encode(&mut b);
        assert_eq!(&b[0..2], &[0x02, 0x01]);
        assert_eq!(&b[16..18], &[0x04, 0x03]);
        assert_eq!(&b[24..26], &[0x06, 0x05]);
        assert_eq!(&b[32..34], &[0x08, 0x07]);
        assert_eq!(&b[40..46], &[0x0A, 0x09, 0x0C, 0x0B, 0x0E, 0x0D]);
        assert_eq!(&b[46..48], &[0x01, 0x00]);
        assert_eq!(&b[48..50], &[0x12, 0x11]);
        assert_eq!(&b[56..58], &[0x14, 0x13]);
    }

    #[test]
    fn malformed_records_are_detected() {
        let mut b = [0u8; 64];
        Transfer { flags: 8, ..Transfer::default() }.encode(&mut b);
        assert!(!Transfer::well_formed(&b), "undefined flag bit 8");
        let mut a = [0u8; 32];
        Account { account_id: 2000, kind: 2, ..Account::default() }.encode(&mut a);
        assert!(!Account::well_formed(&a), "kind 2 is not defined");
        Account { account_id: 2000, kind: 1, ..Account::default() }.encode(&mut a);
        a[30] = 1;
        assert!(!Account::well_formed(&a), "reserved byte set");
        let mut s = [0u8; 24];
        StepUp { transfer_id: 1, method: 4, outcome: 1 }.encode(&mut s);
        assert!(!StepUp::well_formed(&s), "method 4");
        let mut f = [0u8; 32];
        Finalize { transfer_id: 1, action: 0 }.encode(&mut f);
        assert!(!Finalize::well_formed(&f), "action 0");
    }
}

/// CLUSTER_CHANGE's op: add a node (as a learner, then a voter once it
/// caught up).
pub const CLUSTER_ADD: u8 = 1;
/// CLUSTER_CHANGE's op: remove a voter.
pub const CLUSTER_REMOVE: u8 = 2;
/// Longest address a ClusterChange carries.
pub const CLUSTER_ADDR_MAX: usize = 64;

/// ClusterChange (144): a membership change. `channel` and `peer` are
/// `host:port` in UTF-8, padded with zeros (empty for a removal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterChange {
    pub node_id: u64,
    pub op: u8,
    pub channel: [u8; CLUSTER_ADDR_MAX],
    pub peer: [u8; CLUSTER_ADDR_MAX],
}

impl Default for ClusterChange {
    fn default() -> Self {
        Self { node_id: 0, op: 0, channel: [0; CLUSTER_ADDR_MAX], peer: [0; CLUSTER_ADDR_MAX] }
    }
}

fn padded(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    if !zero(&b[end..]) {
        return None;
    }
    std::str::from_utf8(&b[..end]).ok()
}

impl ClusterChange {
    /// A change of `op` for `node_id`; None if an address is longer than
    /// `CLUSTER_ADDR_MAX` bytes.
    #[must_use]
    pub fn new(node_id: u64, op: u8, channel: &str, peer: &str) -> Option<Self> {
        let mut c = Self { node_id, op, ..Self::default() };
        for (to, text) in [(&mut c.channel, channel), (&mut c.peer, peer)] {
            to.get_mut(..text.len())?.copy_from_slice(text.as_bytes());
        }
        Some(c)
    }

    /// The channel address (empty if not UTF-8).
    #[must_use]
    pub fn channel_addr(&self) -> &str {
        padded(&self.channel).unwrap_or_default()
    }

    /// The peer address (empty if not UTF-8).
    #[must_use]
    pub fn peer_addr(&self) -> &str {
        padded(&self.peer).unwrap_or_default()
    }
}

impl Record for ClusterChange {
    const SIZE: usize = 16 + 2 * CLUSTER_ADDR_MAX;
    fn encode(&self, b: &mut [u8]) {
        b.fill(0);
        put_u64(b, 0, self.node_id);
        b[8] = self.op;
        b[16..16 + CLUSTER_ADDR_MAX].copy_from_slice(&self.channel);
        b[16 + CLUSTER_ADDR_MAX..].copy_from_slice(&self.peer);
    }
    fn decode(b: &[u8]) -> Self {
        let mut c = Self { node_id: get_u64(b, 0), op: b[8], ..Self::default() };
        c.channel.copy_from_slice(&b[16..16 + CLUSTER_ADDR_MAX]);
        c.peer.copy_from_slice(&b[16 + CLUSTER_ADDR_MAX..]);
        c
    }
    fn well_formed(b: &[u8]) -> bool {
        let addrs = [padded(&b[16..16 + CLUSTER_ADDR_MAX]), padded(&b[16 + CLUSTER_ADDR_MAX..])];
        let host_port = |a: Option<&str>| {
            a.and_then(|a| a.rsplit_once(':')).is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        };
        get_u64(b, 0) != 0
            && zero(&b[9..16])
            && match b[8] {
                CLUSTER_ADD => addrs.iter().all(|a| host_port(*a)),
                CLUSTER_REMOVE => addrs.iter().all(|a| *a == Some("")),
                _ => false,
            }
    }
}
