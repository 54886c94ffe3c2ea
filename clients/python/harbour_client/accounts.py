"""The system accounts every switch has (contract §6) and where customer
account ids begin (``protocol/src/accounts.rs``)."""

__all__ = [
    "FX_POSITION",
    "LOAN_FUNDING",
    "REMITTANCE_OUT",
    "SETTLEMENT_IN",
    "INTEREST_INCOME",
    "INTERSHARD",
    "SYSTEM_ACCOUNTS",
    "CUSTOMER_ID_MIN",
]

#: System account 1: the bank's FX position.
FX_POSITION = 1
#: System account 2: where loan principal comes from.
LOAN_FUNDING = 2
#: System account 3: payments leaving the bank (credit only).
REMITTANCE_OUT = 3
#: System account 4: money entering the switch (a deposit debits it).
SETTLEMENT_IN = 4
#: System account 5: interest earned.
INTEREST_INCOME = 5
#: System account 6 (Harbour addition): money between shards; a transfer may not name it.
INTERSHARD = 6
#: The system accounts, in id order.
SYSTEM_ACCOUNTS = (FX_POSITION, LOAN_FUNDING, REMITTANCE_OUT, SETTLEMENT_IN, INTEREST_INCOME, INTERSHARD)
#: Customer account ids start here; 1..=1023 are reserved for the system.
CUSTOMER_ID_MIN = 1024
