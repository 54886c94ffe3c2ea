//! Result codes: the per-record codes of contract §5.
//!
//! The numbers are the contract's and never change. A record's first failure
//! is reported in the contract's order of precedence; see `engine` for where
//! each check sits.

/// A per-record result code (contract §5). `OK` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum ResultCode {
    Ok = 0,
    AlreadyExists = 1,
    IdConflict = 2,
    InvalidId = 3,
    DebitAccountNotFound = 4,
    CreditAccountNotFound = 5,
    SameAccount = 6,
    InvalidAmount = 7,
    UnknownCurrency = 8,
    UnknownCountry = 9,
    InsufficientFunds = 10,
    NoFxRate = 11,
    QuoteInvalid = 12,
    NotPending = 13,
    TransferNotFound = 14,
    WrongMethod = 15,
    CreditLimitExceeded = 16,
    NoCreditLine = 17,
    LoanNotFound = 18,
    Overpayment = 19,
    Forbidden = 20,
    Overflow = 21,
    InvalidField = 22,
    AccountExists = 23,
    ClockNotManual = 24,
    TimeBackwards = 25,
    NothingToReport = 26,
    AccountNotFound = 27,
    /// Harbour addition, reserved: was the answer to a transfer between two
    /// shards' customers before cross-shard transfers existed; no longer
    /// sent.
    CrossShard = 64,
    /// Harbour addition: the feature behind this kind is not in this build
    /// yet. Nothing was applied.
    NotSupported = 65,
    /// Harbour addition: the shard holds the most live FX quotes it keeps
    /// (2^20); a new one is refused until some expire or are spent.
    QuotesFull = 66,
    /// Harbour addition: the transfer is being credited on another shard
    /// (state PENDING, hold IN_FLIGHT) and can't be cancelled, finalized or
    /// stepped up any more; it posts (or, rarely, is voided) within
    /// milliseconds. Nothing was applied.
    InFlight = 67,
}

impl ResultCode {
    /// Every code, in numeric order (for metrics and docs tables).
    pub const ALL: [ResultCode; 32] = [
        Self::Ok,
        Self::AlreadyExists,
        Self::IdConflict,
        Self::InvalidId,
        Self::DebitAccountNotFound,
        Self::CreditAccountNotFound,
        Self::SameAccount,
        Self::InvalidAmount,
        Self::UnknownCurrency,
        Self::UnknownCountry,
        Self::InsufficientFunds,
        Self::NoFxRate,
        Self::QuoteInvalid,
        Self::NotPending,
        Self::TransferNotFound,
        Self::WrongMethod,
        Self::CreditLimitExceeded,
        Self::NoCreditLine,
        Self::LoanNotFound,
        Self::Overpayment,
        Self::Forbidden,
        Self::Overflow,
        Self::InvalidField,
        Self::AccountExists,
        Self::ClockNotManual,
        Self::TimeBackwards,
        Self::NothingToReport,
        Self::AccountNotFound,
        Self::CrossShard,
        Self::NotSupported,
        Self::QuotesFull,
        Self::InFlight,
    ];

    /// The wire value.
    #[must_use]
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// Parses a wire value; `None` for a number the contract does not define.
    #[must_use]
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_u16() == value)
    }

    /// The contract's name, e.g. `INSUFFICIENT_FUNDS`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::IdConflict => "ID_CONFLICT",
            Self::InvalidId => "INVALID_ID",
            Self::DebitAccountNotFound => "DEBIT_ACCOUNT_NOT_FOUND",
            Self::CreditAccountNotFound => "CREDIT_ACCOUNT_NOT_FOUND",
            Self::SameAccount => "SAME_ACCOUNT",
            Self::InvalidAmount => "INVALID_AMOUNT",
            Self::UnknownCurrency => "UNKNOWN_CURRENCY",
            Self::UnknownCountry => "UNKNOWN_COUNTRY",
            Self::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Self::NoFxRate => "NO_FX_RATE",
            Self::QuoteInvalid => "QUOTE_INVALID",
            Self::NotPending => "NOT_PENDING",
            Self::TransferNotFound => "TRANSFER_NOT_FOUND",
            Self::WrongMethod => "WRONG_METHOD",
            Self::CreditLimitExceeded => "CREDIT_LIMIT_EXCEEDED",
            Self::NoCreditLine => "NO_CREDIT_LINE",
            Self::LoanNotFound => "LOAN_NOT_FOUND",
            Self::Overpayment => "OVERPAYMENT",
            Self::Forbidden => "FORBIDDEN",
            Self::Overflow => "OVERFLOW",
            Self::InvalidField => "INVALID_FIELD",
            Self::AccountExists => "ACCOUNT_EXISTS",
            Self::ClockNotManual => "CLOCK_NOT_MANUAL",
            Self::TimeBackwards => "TIME_BACKWARDS",
            Self::NothingToReport => "NOTHING_TO_REPORT",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::CrossShard => "CROSS_SHARD",
            Self::NotSupported => "NOT_SUPPORTED",
            Self::QuotesFull => "QUOTES_FULL",
            Self::InFlight => "IN_FLIGHT",
        }
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ResultCode;

    #[test]
    fn codes_round_trip_and_are_ordered() {
        for pair in ResultCode::ALL.windows(2) {
            assert!(pair[0].as_u16() < pair[1].as_u16());
        }
        for code in ResultCode::ALL {
            assert_eq!(ResultCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ResultCode::from_u16(28), None);
        assert_eq!(ResultCode::InsufficientFunds.as_u16(), 10);
        assert_eq!(ResultCode::AccountNotFound.as_u16(), 27);
    }
}
