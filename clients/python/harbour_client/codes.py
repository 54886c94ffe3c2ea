"""Result codes: the per-record codes of contract §5 (``protocol/src/codes.rs``).

Every answer record carries one: OK, or why that record (and only that
record) failed. The numbers are the contract's and never change; 64 and up
are Harbour's additions. An ERROR frame's codes, which refuse a whole
request, are :class:`harbour_client.frame.ErrorCode`, not these.
"""

import enum
from typing import Union

__all__ = ["ResultCode", "result_code"]


class ResultCode(enum.IntEnum):
    """A per-record result code. ``OK`` is 0; ``name`` is the contract's name."""

    OK = 0
    #: Same id, same fields: the record shows the stored object's current state.
    ALREADY_EXISTS = 1
    #: Same id, different fields (or a transfer id that names a loan, and back).
    ID_CONFLICT = 2
    INVALID_ID = 3
    DEBIT_ACCOUNT_NOT_FOUND = 4
    CREDIT_ACCOUNT_NOT_FOUND = 5
    SAME_ACCOUNT = 6
    INVALID_AMOUNT = 7
    UNKNOWN_CURRENCY = 8
    UNKNOWN_COUNTRY = 9
    INSUFFICIENT_FUNDS = 10
    NO_FX_RATE = 11
    #: The quote is unknown, spent, expired, or for another pair, amount or side.
    QUOTE_INVALID = 12
    NOT_PENDING = 13
    TRANSFER_NOT_FOUND = 14
    WRONG_METHOD = 15
    CREDIT_LIMIT_EXCEEDED = 16
    NO_CREDIT_LINE = 17
    LOAN_NOT_FOUND = 18
    OVERPAYMENT = 19
    FORBIDDEN = 20
    OVERFLOW = 21
    #: A defined field with a value the rules refuse.
    INVALID_FIELD = 22
    #: Same account id, different fields.
    ACCOUNT_EXISTS = 23
    CLOCK_NOT_MANUAL = 24
    TIME_BACKWARDS = 25
    NOTHING_TO_REPORT = 26
    #: LOOKUP_BALANCES, SET_CREDIT_LINES, DISBURSE_LOANS.
    ACCOUNT_NOT_FOUND = 27
    #: Harbour addition, reserved: no longer sent.
    CROSS_SHARD = 64
    #: Harbour addition, reserved: the kind's feature is not in this build (no longer sent).
    NOT_SUPPORTED = 65
    #: Harbour addition: the shard already holds 2^20 live FX quotes.
    QUOTES_FULL = 66
    #: Harbour addition: the transfer's credit is being applied on another
    #: shard; nothing changed, it posts (or is voided) within milliseconds.
    IN_FLIGHT = 67

    @property
    def ok(self) -> bool:
        """Whether the record was applied or already was (OK or ALREADY_EXISTS)."""
        return self in (ResultCode.OK, ResultCode.ALREADY_EXISTS)


def result_code(value: int) -> Union[ResultCode, int]:
    """The :class:`ResultCode` of a wire value, or the bare int for a number
    this client does not know (a newer switch's addition)."""
    try:
        return ResultCode(value)
    except ValueError:
        return value
