//! The system accounts every switch has (contract §4) and where customer
//! account ids begin.

/// System account 1: the bank's FX position.
pub const FX_POSITION: u64 = 1;
/// System account 2: where loan principal comes from.
pub const LOAN_FUNDING: u64 = 2;
/// System account 3: payments leaving the bank.
pub const REMITTANCE_OUT: u64 = 3;
/// System account 4: money entering the switch.
pub const SETTLEMENT_IN: u64 = 4;
/// System account 5: interest earned.
pub const INTEREST_INCOME: u64 = 5;
/// System account 6 (Harbour addition): money between shards. A shard's
/// part is credited when it posts a transfer to another shard's customer
/// and debited when it credits one from another shard; the parts sum to
/// what is in flight (the engine's links).
pub const INTERSHARD: u64 = 6;
/// The system accounts created at first start, in id order.
pub const SYSTEM_ACCOUNTS: [u64; 6] =
    [FX_POSITION, LOAN_FUNDING, REMITTANCE_OUT, SETTLEMENT_IN, INTEREST_INCOME, INTERSHARD];
/// Customer account ids start here; 1..=1023 are reserved for the system.
pub const CUSTOMER_ID_MIN: u64 = 1024;
