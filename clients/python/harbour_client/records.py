"""Fixed-size records of contract §4, little-endian (``protocol/src/records.rs``).

Each record is a dataclass whose ``LAYOUT`` lists its wire fields in order,
reserved bytes included, as the contract's tables do; the byte offsets and
the ``struct`` format follow from it, and the record's ``SIZE`` is checked
against them when the class is made (a layout that does not add up fails
at import). ``encode`` refuses a value that does not fit its field, naming
the field; ``decode`` ignores reserved bytes and turns enum fields into
their IntEnum (a number the client does not know stays a bare int).

Field names are the Rust structs', except ``from`` and ``to`` of FxRate and
QuoteRequest, which are ``from_currency`` and ``to_currency`` (``from`` is
a Python keyword). Defaults are the Rust ``Default`` (zero), except
``Account.kind``, which is CUSTOMER, the one kind a channel creates.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

from .codes import ResultCode, result_code

__all__ = [
    "Record",
    "AccountKind",
    "TransferFlags",
    "TransferState",
    "Holds",
    "Method",
    "Outcome",
    "FinalizeAction",
    "QuoteFlags",
    "CreditLineFlags",
    "LoanState",
    "StrFormat",
    "StrPageFlags",
    "ClusterOp",
    "Currency",
    "MINOR_UNITS",
    "Account",
    "RecordResult",
    "Transfer",
    "TransferResult",
    "StepUp",
    "Id",
    "Finalize",
    "BalanceKey",
    "Balance",
    "SetTime",
    "FxRate",
    "QuoteRequest",
    "Quote",
    "CreditLine",
    "Disburse",
    "Repay",
    "LoanResult",
    "StrRequest",
    "StrHeader",
    "StrPageRequest",
    "StrPageHeader",
    "STR_PAGE_LIMIT_MAX",
    "ClusterChange",
    "CLUSTER_ADDR_MAX",
    "encode_all",
    "decode_all",
    "RECORDS",
]

# ---------------------------------------------------------------------------
# Enumerations and flags of the records' fields.


class AccountKind(enum.IntEnum):
    """Account.kind."""

    CUSTOMER = 1


class TransferFlags(enum.IntFlag):
    """Transfer.flags."""

    #: ``amount`` is in the credit currency.
    AMOUNT_IN_CREDIT_CURRENCY = 1
    #: Draw a micro-loan for a shortfall (``docs/credit.md``).
    AUTO_CREDIT = 2
    #: Hold the transfer for the client (FINALIZE_PENDING posts or voids it).
    PENDING = 4


class TransferState(enum.IntEnum):
    """TransferResult.state."""

    #: Rejected: nothing stored.
    NONE = 0
    POSTED = 1
    #: Held: ``holds`` says for what.
    PENDING = 2
    VOIDED = 3


class Holds(enum.IntFlag):
    """TransferResult.holds: what a PENDING transfer waits for."""

    #: Facial re-verification (AML level 1).
    FACE_REVIEW = 1
    #: A second SMS verification (AML level 2).
    SMS_OTP = 2
    #: A cooling-off period (AML level 3): released, not voided, at its end.
    COOLING_OFF = 4
    #: An operator's review (RESOLVE_REVIEW).
    MANUAL_REVIEW = 8
    #: The client's own hold (transfer flag PENDING).
    CLIENT = 16
    #: Harbour addition: the credit is being applied on another shard.
    IN_FLIGHT = 32
    #: Harbour addition: money from several unrelated senders passing
    #: through the account (AML mule rule); an operator's review
    #: (RESOLVE_REVIEW, method MANUAL_REVIEW).
    MULE_REVIEW = 64


class Method(enum.IntEnum):
    """StepUp.method."""

    FACE = 1
    SMS_OTP = 2
    #: RESOLVE_REVIEW only.
    MANUAL_REVIEW = 3


class Outcome(enum.IntEnum):
    """StepUp.outcome."""

    PASS = 1
    FAIL = 2


class FinalizeAction(enum.IntEnum):
    """Finalize.action."""

    #: Release the CLIENT hold (the transfer posts once no hold remains).
    POST = 1
    #: Void the transfer.
    VOID = 2


class QuoteFlags(enum.IntFlag):
    """QuoteRequest.flags."""

    AMOUNT_IN_CREDIT_CURRENCY = 1


class CreditLineFlags(enum.IntFlag):
    """CreditLine.flags."""

    #: Draw micro-loans automatically on a shortfall (transfer flag AUTO_CREDIT).
    AUTO_MICRO_CREDIT = 1


class LoanState(enum.IntEnum):
    """LoanResult.state."""

    NONE = 0
    ACTIVE = 1
    REPAID = 2


class StrFormat(enum.IntEnum):
    """StrRequest.format and StrHeader.format."""

    XML = 1
    CSV = 2


class StrPageFlags(enum.IntFlag):
    """StrPageHeader.flags."""

    #: This page ends the report.
    LAST = 1


class ClusterOp(enum.IntEnum):
    """ClusterChange.op."""

    #: Add a node (a learner, then a voter once it caught up).
    ADD = 1
    #: Remove a voter.
    REMOVE = 2


class Currency(enum.IntEnum):
    """The currencies of contract §4.1 (ISO 4217 numeric); any other is UNKNOWN_CURRENCY."""

    AUD = 36
    CAD = 124
    CNY = 156
    JPY = 392
    KRW = 410
    KWD = 414
    HKD = 344
    MOP = 446
    SGD = 702
    CHF = 756
    GBP = 826
    USD = 840
    TWD = 901
    EUR = 978


#: Digits after the decimal point of each currency's minor unit.
MINOR_UNITS: Dict[Currency, int] = {c: 2 for c in Currency}
MINOR_UNITS.update({Currency.JPY: 0, Currency.KRW: 0, Currency.KWD: 3})

# ---------------------------------------------------------------------------
# The record machinery: a layout table per record, read once per class.

# Wire types: struct code and bounds of the value.
_SCALARS: Dict[str, Tuple[str, int, int]] = {
    "u8": ("B", 0, (1 << 8) - 1),
    "u16": ("H", 0, (1 << 16) - 1),
    "u32": ("I", 0, (1 << 32) - 1),
    "u64": ("Q", 0, (1 << 64) - 1),
    "i64": ("q", -(1 << 63), (1 << 63) - 1),
}
_U128_MAX = (1 << 128) - 1
_U64_MASK = (1 << 64) - 1
_SIZED = re.compile(r"^(reserved|text)(\d+)$")

R = TypeVar("R", bound="Record")


class Record:
    """A fixed-size wire record (contract §4).

    Subclasses are dataclasses that set ``SIZE`` and ``LAYOUT``: a tuple of
    ``(field, wire type)`` or ``(field, wire type, enum)`` in wire order.
    Wire types: ``u8 u16 u32 u64 i64 u128`` (u128 low half first),
    ``reservedN`` (N zero bytes, field ``None``) and ``textN`` (UTF-8
    padded with zeros to N bytes).
    """

    SIZE: int = 0
    LAYOUT: Tuple[Tuple[Any, ...], ...] = ()
    _struct: struct.Struct
    # (field, wire type, decoder) per field that is not reserved bytes.
    _fields_wire: Tuple[Tuple[str, str, Optional[Callable[[Any], Any]]], ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.LAYOUT:
            return
        fmt = ["<"]
        fields = []
        for entry in cls.LAYOUT:
            name, wire = entry[0], entry[1]
            enum_of = entry[2] if len(entry) > 2 else None
            sized = _SIZED.match(wire)
            if wire in _SCALARS:
                fmt.append(_SCALARS[wire][0])
            elif wire == "u128":
                fmt.append("QQ")
            elif sized and sized.group(1) == "reserved":
                if name is not None:
                    raise TypeError(f"{cls.__name__}.{name}: reserved bytes have no field")
                fmt.append(f"{sized.group(2)}x")
                continue
            elif sized:
                fmt.append(f"{sized.group(2)}s")
            else:
                raise TypeError(f"{cls.__name__}.{name}: unknown wire type {wire!r}")
            fields.append((name, wire, _decoder(enum_of)))
        cls._struct = struct.Struct("".join(fmt))
        cls._fields_wire = tuple(fields)
        # The layout adds up to the record's size, and names exactly its fields.
        if cls._struct.size != cls.SIZE:
            raise TypeError(f"{cls.__name__}: its layout is {cls._struct.size} bytes, not {cls.SIZE}")
        annotated = list(cls.__dict__.get("__annotations__", {}))
        if annotated != [f[0] for f in fields]:
            raise TypeError(f"{cls.__name__}: fields {annotated} differ from its layout")

    def encode(self) -> bytes:
        """The record's ``SIZE`` bytes; ValueError if a field's value does not fit."""
        values: List[Any] = []
        for name, wire, _ in self._fields_wire:
            value = getattr(self, name)
            if wire == "u128":
                value = _checked_int(self, name, value, 0, _U128_MAX, wire)
                values.append(value & _U64_MASK)
                values.append(value >> 64)
            elif wire in _SCALARS:
                _, low, high = _SCALARS[wire]
                values.append(_checked_int(self, name, value, low, high, wire))
            else:
                raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                width = int(_SIZED.match(wire).group(2))  # type: ignore[union-attr]
                if len(raw) > width or b"\0" in raw:
                    raise ValueError(f"{type(self).__name__}.{name}: {value!r} does not fit {width} bytes")
                values.append(raw)
        return self._struct.pack(*values)

    @classmethod
    def decode(cls: Type[R], data: bytes) -> R:
        """A record from exactly ``SIZE`` bytes."""
        if len(data) != cls.SIZE:
            raise ValueError(f"{cls.__name__} is {cls.SIZE} bytes, not {len(data)}")
        raw = iter(cls._struct.unpack(data))
        kwargs = {}
        for name, wire, decoder in cls._fields_wire:
            value = next(raw)
            if wire == "u128":
                value |= next(raw) << 64
            elif wire.startswith("text"):
                value = value.rstrip(b"\0").decode("utf-8", "replace")
            kwargs[name] = decoder(value) if decoder else value
        return cls(**kwargs)

    @classmethod
    def offsets(cls) -> Dict[str, int]:
        """Each field's byte offset in the record (for tests and readers of the spec)."""
        out, at = {}, 0
        for entry in cls.LAYOUT:
            name, wire = entry[0], entry[1]
            size = struct.calcsize("<" + cls._format_of(wire))
            if name is not None:
                out[name] = at
            at += size
        return out

    @staticmethod
    def _format_of(wire: str) -> str:
        if wire in _SCALARS:
            return _SCALARS[wire][0]
        if wire == "u128":
            return "QQ"
        return f"{_SIZED.match(wire).group(2)}x"  # type: ignore[union-attr]


def _decoder(enum_of: Optional[Type[enum.IntEnum]]) -> Optional[Callable[[Any], Any]]:
    """How a decoded int becomes its enum: IntFlag takes any bits; an
    IntEnum value the client does not know stays an int."""
    if enum_of is None:
        return None
    if enum_of is ResultCode:
        return result_code
    if issubclass(enum_of, enum.IntFlag):
        return enum_of

    def known(value: int) -> Any:
        try:
            return enum_of(value)
        except ValueError:
            return value

    return known


def _checked_int(record: Record, name: str, value: Any, low: int, high: int, wire: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{type(record).__name__}.{name}: {value!r} is not an int")
    if not low <= value <= high:
        raise ValueError(f"{type(record).__name__}.{name}: {value} does not fit {wire}")
    return int(value)


def encode_all(records: Iterable[Record]) -> bytes:
    """The body of a request: every record encoded, in order."""
    return b"".join(r.encode() for r in records)


def decode_all(cls: Type[R], body: bytes) -> List[R]:
    """Every record of a body that is a whole number of ``cls`` records."""
    size = cls.SIZE
    if len(body) % size:
        raise ValueError(f"{len(body)} bytes is not a whole number of {cls.__name__} ({size})")
    view = memoryview(body)
    return [cls.decode(bytes(view[i : i + size])) for i in range(0, len(body), size)]


# ---------------------------------------------------------------------------
# The records, in the contract's order.


@dataclass
class Account(Record):
    """Account (32): a customer account to create (CREATE_ACCOUNTS)."""

    #: At least 1024 (1..1023 are system accounts).
    account_id: int = 0
    kind: int = AccountKind.CUSTOMER
    #: 0 (no flag is defined).
    flags: int = 0
    #: ISO 3166-1 numeric, HK = 344.
    home_country: int = 0
    customer_ref: int = 0

    SIZE = 32
    LAYOUT = (
        ("account_id", "u64"),
        ("kind", "u16", AccountKind),
        ("flags", "u16"),
        ("home_country", "u16"),
        (None, "reserved2"),
        ("customer_ref", "u64"),
        (None, "reserved8"),
    )


@dataclass
class RecordResult(Record):
    """Result (32): the answer to one record of a kind without its own result."""

    #: The account id, or the record's index for kinds without an id.
    key: int = 0
    code: int = ResultCode.OK

    SIZE = 32
    LAYOUT = (("key", "u64"), ("code", "u16", ResultCode), (None, "reserved22"))


@dataclass
class Transfer(Record):
    """Transfer (64): a movement of money to submit (SUBMIT_TRANSFERS)."""

    #: Non-zero; the idempotency key.
    transfer_id: int = 0
    debit_account: int = 0
    credit_account: int = 0
    #: Minor units of the debit currency, or of the credit currency with
    #: AMOUNT_IN_CREDIT_CURRENCY.
    amount: int = 0
    debit_currency: int = 0
    #: Equal to ``debit_currency`` for a same-currency transfer.
    credit_currency: int = 0
    #: ISO 3166-1 numeric; 0 or 344 is domestic.
    destination_country: int = 0
    #: :class:`TransferFlags`.
    flags: int = 0
    #: 0 means the current rate.
    fx_quote_id: int = 0
    #: Echoed and stored.
    user_data: int = 0

    SIZE = 64
    LAYOUT = (
        ("transfer_id", "u128"),
        ("debit_account", "u64"),
        ("credit_account", "u64"),
        ("amount", "u64"),
        ("debit_currency", "u16"),
        ("credit_currency", "u16"),
        ("destination_country", "u16"),
        ("flags", "u16", TransferFlags),
        ("fx_quote_id", "u64"),
        ("user_data", "u64"),
    )


@dataclass
class TransferResult(Record):
    """TransferResult (64): the state of one transfer."""

    transfer_id: int = 0
    code: int = ResultCode.OK
    #: :class:`TransferState`.
    state: int = TransferState.NONE
    #: :class:`Holds` a PENDING transfer waits for.
    holds: int = 0
    #: Minor units of the debit currency.
    debit_amount: int = 0
    #: Minor units of the credit currency.
    credit_amount: int = 0
    #: Credit units per debit unit (major units) x 10^9, rounded down; 10^9 for one currency.
    rate_e9: int = 0
    #: The micro-loan drawn for this transfer (AUTO_CREDIT), minor units.
    auto_credit_amount: int = 0
    #: PENDING: the earliest time the transfer changes state by itself; else 0.
    hold_until_ms: int = 0

    SIZE = 64
    LAYOUT = (
        ("transfer_id", "u128"),
        ("code", "u16", ResultCode),
        ("state", "u8", TransferState),
        ("holds", "u8", Holds),
        (None, "reserved4"),
        ("debit_amount", "u64"),
        ("credit_amount", "u64"),
        ("rate_e9", "u64"),
        ("auto_credit_amount", "u64"),
        ("hold_until_ms", "u64"),
    )


@dataclass
class StepUp(Record):
    """StepUp (24): the outcome of a verification a held transfer waits for
    (CONFIRM_STEP_UP; RESOLVE_REVIEW with method MANUAL_REVIEW)."""

    transfer_id: int = 0
    #: :class:`Method`.
    method: int = 0
    #: :class:`Outcome`.
    outcome: int = 0

    SIZE = 24
    LAYOUT = (
        ("transfer_id", "u128"),
        ("method", "u8", Method),
        ("outcome", "u8", Outcome),
        (None, "reserved6"),
    )


@dataclass
class Id(Record):
    """Id (16): a transfer or loan id (CANCEL_TRANSFERS, LOOKUP_TRANSFERS, LOOKUP_LOANS)."""

    id: int = 0

    SIZE = 16
    LAYOUT = (("id", "u128"),)


@dataclass
class Finalize(Record):
    """Finalize (32): the client's decision on its own PENDING transfer."""

    transfer_id: int = 0
    #: :class:`FinalizeAction`.
    action: int = 0

    SIZE = 32
    LAYOUT = (("transfer_id", "u128"), ("action", "u8", FinalizeAction), (None, "reserved15"))


@dataclass
class BalanceKey(Record):
    """BalanceKey (16): one account's balance in one currency."""

    account_id: int = 0
    currency: int = 0

    SIZE = 16
    LAYOUT = (("account_id", "u64"), ("currency", "u16"), (None, "reserved6"))


@dataclass
class Balance(Record):
    """Balance (48): one account's position in one currency."""

    account_id: int = 0
    currency: int = 0
    code: int = ResultCode.OK
    #: Posted balance (system accounts may be negative).
    balance: int = 0
    #: Reserved by PENDING debits.
    held: int = 0
    #: Unused credit line.
    credit_available: int = 0
    #: Loan principal plus accrued interest.
    loans_outstanding: int = 0

    SIZE = 48
    LAYOUT = (
        ("account_id", "u64"),
        ("currency", "u16"),
        ("code", "u16", ResultCode),
        (None, "reserved4"),
        ("balance", "i64"),
        ("held", "u64"),
        ("credit_available", "u64"),
        ("loans_outstanding", "u64"),
    )


@dataclass
class SetTime(Record):
    """SetTime (16): move a manual clock forward (SET_TIME)."""

    unix_ms: int = 0

    SIZE = 16
    LAYOUT = (("unix_ms", "u64"), (None, "reserved8"))


@dataclass
class FxRate(Record):
    """FxRate (16): a customer rate TREASURY sets (SET_FX_RATES)."""

    from_currency: int = 0
    to_currency: int = 0
    #: ``to`` per ``from`` x 10^9, spread included.
    rate_e9: int = 0

    SIZE = 16
    LAYOUT = (("from_currency", "u16"), ("to_currency", "u16"), (None, "reserved4"), ("rate_e9", "u64"))


@dataclass
class QuoteRequest(Record):
    """QuoteRequest (16): ask for a locked rate (FX_QUOTE)."""

    from_currency: int = 0
    to_currency: int = 0
    #: :class:`QuoteFlags`.
    flags: int = 0
    amount: int = 0

    SIZE = 16
    LAYOUT = (
        ("from_currency", "u16"),
        ("to_currency", "u16"),
        ("flags", "u16", QuoteFlags),
        (None, "reserved2"),
        ("amount", "u64"),
    )


@dataclass
class Quote(Record):
    """Quote (48): a locked rate, good for one transfer until ``expires_at_ms``."""

    quote_id: int = 0
    code: int = ResultCode.OK
    rate_e9: int = 0
    debit_amount: int = 0
    credit_amount: int = 0
    expires_at_ms: int = 0

    SIZE = 48
    LAYOUT = (
        ("quote_id", "u64"),
        ("code", "u16", ResultCode),
        (None, "reserved6"),
        ("rate_e9", "u64"),
        ("debit_amount", "u64"),
        ("credit_amount", "u64"),
        ("expires_at_ms", "u64"),
    )


@dataclass
class CreditLine(Record):
    """CreditLine (32): an account's credit line in one currency (SET_CREDIT_LINES)."""

    account_id: int = 0
    currency: int = 0
    #: :class:`CreditLineFlags`.
    flags: int = 0
    #: At most 4800 (48%).
    apr_bps: int = 0
    #: Bounds the principal outstanding across the account's loans in the currency.
    limit: int = 0
    #: Largest automatic micro-loan, per draw.
    micro_credit_max: int = 0

    SIZE = 32
    LAYOUT = (
        ("account_id", "u64"),
        ("currency", "u16"),
        ("flags", "u16", CreditLineFlags),
        ("apr_bps", "u32"),
        ("limit", "u64"),
        ("micro_credit_max", "u64"),
    )


@dataclass
class Disburse(Record):
    """Disburse (48): a loan to pay out (DISBURSE_LOANS)."""

    #: Shares one space with transfer ids.
    loan_id: int = 0
    account_id: int = 0
    currency: int = 0
    #: Sets the due date only (0: none).
    term_days: int = 0
    principal: int = 0

    SIZE = 48
    LAYOUT = (
        ("loan_id", "u128"),
        ("account_id", "u64"),
        ("currency", "u16"),
        (None, "reserved2"),
        ("term_days", "u32"),
        ("principal", "u64"),
        (None, "reserved8"),
    )


@dataclass
class Repay(Record):
    """Repay (48): a repayment of a loan from its account (REPAY_LOANS)."""

    #: Idempotency key (its own space).
    repayment_id: int = 0
    loan_id: int = 0
    amount: int = 0

    SIZE = 48
    LAYOUT = (("repayment_id", "u128"), ("loan_id", "u128"), ("amount", "u64"), (None, "reserved8"))


@dataclass
class LoanResult(Record):
    """LoanResult (64): the state of one loan."""

    loan_id: int = 0
    code: int = ResultCode.OK
    #: :class:`LoanState`.
    state: int = LoanState.NONE
    apr_bps: int = 0
    account_id: int = 0
    currency: int = 0
    #: Effective annual rate, daily compounding, basis points.
    ear_bps: int = 0
    principal_outstanding: int = 0
    interest_accrued: int = 0
    disbursed_at_ms: int = 0

    SIZE = 64
    LAYOUT = (
        ("loan_id", "u128"),
        ("code", "u16", ResultCode),
        ("state", "u8", LoanState),
        (None, "reserved1"),
        ("apr_bps", "u32"),
        ("account_id", "u64"),
        ("currency", "u16"),
        (None, "reserved2"),
        ("ear_bps", "u32"),
        ("principal_outstanding", "u64"),
        ("interest_accrued", "u64"),
        ("disbursed_at_ms", "u64"),
    )


@dataclass
class StrRequest(Record):
    """StrRequest (16): which month's Suspicious Transaction Report (EXPORT_STR)."""

    year: int = 0
    #: 1..12 (the Hong Kong calendar month).
    month: int = 0
    #: :class:`StrFormat`.
    format: int = StrFormat.XML

    SIZE = 16
    LAYOUT = (("year", "u16"), ("month", "u8"), ("format", "u8", StrFormat), (None, "reserved12"))


@dataclass
class StrHeader(Record):
    """StrHeader (8): precedes the report's bytes in EXPORT_STR's answer."""

    code: int = ResultCode.OK
    format: int = StrFormat.XML
    report_len: int = 0

    SIZE = 8
    LAYOUT = (("code", "u16", ResultCode), ("format", "u8", StrFormat), (None, "reserved1"), ("report_len", "u32"))


#: Cases a page of EXPORT_STR_PAGE may ask for at most (StrPageRequest.limit).
STR_PAGE_LIMIT_MAX = 100_000


@dataclass
class StrPageRequest(Record):
    """StrPageRequest (48): one page of a month's Suspicious Transaction Report
    (EXPORT_STR_PAGE, a Harbour addition). The first page has ``as_of_ms``,
    ``after_ms`` and ``after_id`` 0; each next page sends back the
    ``as_of_ms`` and the cursor the previous page answered (:meth:`after`)."""

    year: int = 0
    #: 1..12 (the Hong Kong calendar month).
    month: int = 0
    #: :class:`StrFormat`.
    format: int = StrFormat.XML
    #: Cases in this page at most, 1..=:data:`STR_PAGE_LIMIT_MAX`.
    limit: int = 0
    #: The report covers the cases submitted at or before this time; 0 on
    #: the first page (the switch's time now).
    as_of_ms: int = 0
    #: The cursor: the page starts after the case (``after_ms``, ``after_id``)
    #: (submission time, transfer id); both 0 on the first page.
    after_ms: int = 0
    after_id: int = 0

    SIZE = 48
    LAYOUT = (
        ("year", "u16"),
        ("month", "u8"),
        ("format", "u8", StrFormat),
        ("limit", "u32"),
        ("as_of_ms", "u64"),
        ("after_ms", "u64"),
        (None, "reserved8"),
        ("after_id", "u128"),
    )

    @property
    def first(self) -> bool:
        """Whether this asks for the first page (the cursor is 0)."""
        return self.after_ms == 0 and self.after_id == 0

    def after(self, header: "StrPageHeader") -> "StrPageRequest":
        """The request for the page after the one ``header`` answered: the
        same month, format and limit, its ``as_of_ms`` and its cursor."""
        return StrPageRequest(
            self.year,
            self.month,
            self.format,
            self.limit,
            header.as_of_ms,
            header.next_after_ms,
            header.next_after_id,
        )


@dataclass
class StrPageHeader(Record):
    """StrPageHeader (48): precedes a page's bytes in EXPORT_STR_PAGE's
    answer. The pages' bytes, in order, are the report EXPORT_STR would
    give at ``as_of_ms``."""

    code: int = ResultCode.OK
    format: int = StrFormat.XML
    #: :class:`StrPageFlags`: LAST on the page that ends the report.
    flags: int = 0
    #: Bytes of the page after this header.
    report_len: int = 0
    #: Cases in the whole report (the month's, submitted by ``as_of_ms``).
    cases: int = 0
    #: Cases in this page.
    rows: int = 0
    #: The time the report is as of (the switch's now on the first page).
    as_of_ms: int = 0
    #: The cursor of the next page: its request's ``after_ms``, ``after_id``.
    next_after_ms: int = 0
    next_after_id: int = 0

    SIZE = 48
    LAYOUT = (
        ("code", "u16", ResultCode),
        ("format", "u8", StrFormat),
        ("flags", "u8", StrPageFlags),
        ("report_len", "u32"),
        ("cases", "u32"),
        ("rows", "u32"),
        ("as_of_ms", "u64"),
        ("next_after_ms", "u64"),
        ("next_after_id", "u128"),
    )

    @property
    def last(self) -> bool:
        """Whether this page ends the report."""
        return bool(self.flags & StrPageFlags.LAST)


#: Longest address a ClusterChange carries, in bytes.
CLUSTER_ADDR_MAX = 64


@dataclass
class ClusterChange(Record):
    """ClusterChange (144): a cluster membership change (CLUSTER_CHANGE;
    ``docs/protocol.md``, "Additions")."""

    #: Not 0.
    node_id: int = 0
    #: :class:`ClusterOp`.
    op: int = 0
    #: The node's channel address ``host:port`` (empty for a removal).
    channel: str = ""
    #: The node's peer address ``host:port`` (empty for a removal).
    peer: str = ""

    SIZE = 144
    LAYOUT = (
        ("node_id", "u64"),
        ("op", "u8", ClusterOp),
        (None, "reserved7"),
        ("channel", f"text{CLUSTER_ADDR_MAX}"),
        ("peer", f"text{CLUSTER_ADDR_MAX}"),
    )


#: Every record type, for tests and tools.
RECORDS: Sequence[Type[Record]] = (
    Account,
    RecordResult,
    Transfer,
    TransferResult,
    StepUp,
    Id,
    Finalize,
    BalanceKey,
    Balance,
    SetTime,
    FxRate,
    QuoteRequest,
    Quote,
    CreditLine,
    Disburse,
    Repay,
    LoanResult,
    StrRequest,
    StrHeader,
    StrPageRequest,
    StrPageHeader,
    ClusterChange,
)
