"""The one table of message kinds a channel deals with: for each, its
request and answer records, who may send it and how many records it
carries (``protocol/src/kinds.rs``, ``protocol/src/lib.rs``'s ``kind``).

The client reads this table to encode requests and decode answers; it
lists no kinds of its own. The switch's internal kinds (``0xF0xx``) never
reach the wire and are not here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Optional, Type

from .frame import Role
from .records import (
    Account,
    Balance,
    BalanceKey,
    ClusterChange,
    CreditLine,
    Disburse,
    Finalize,
    FxRate,
    Id,
    LoanResult,
    Quote,
    QuoteRequest,
    Record,
    RecordResult,
    Repay,
    SetTime,
    StepUp,
    StrHeader,
    StrPageHeader,
    StrPageRequest,
    StrRequest,
    Transfer,
    TransferResult,
)

__all__ = ["Kind", "CountRule", "AnswerBody", "KindSpec", "KINDS", "spec"]


class Kind(enum.IntEnum):
    """Message kinds on the wire. A response is ``kind | 0x8000``."""

    PING = 0x0001
    CREATE_ACCOUNTS = 0x0010
    SUBMIT_TRANSFERS = 0x0011
    CONFIRM_STEP_UP = 0x0012
    CANCEL_TRANSFERS = 0x0013
    FINALIZE_PENDING = 0x0014
    LOOKUP_TRANSFERS = 0x0015
    LOOKUP_BALANCES = 0x0016
    SET_FX_RATES = 0x0020
    FX_QUOTE = 0x0021
    SET_CREDIT_LINES = 0x0030
    DISBURSE_LOANS = 0x0031
    REPAY_LOANS = 0x0032
    LOOKUP_LOANS = 0x0033
    RESOLVE_REVIEW = 0x0040
    SET_TIME = 0x0041
    EXPORT_STR = 0x0042
    #: Harbour addition: one bounded page of EXPORT_STR's report.
    EXPORT_STR_PAGE = 0x0043
    #: Harbour addition: a cluster node's view of its cluster, as JSON.
    CLUSTER_STATUS = 0x0050
    #: Harbour addition: add or remove a cluster node (the leader).
    CLUSTER_CHANGE = 0x0051
    #: Harbour addition: a consistent copy of a cluster node's books.
    BACKUP = 0x0052
    #: Harbour addition: read the configuration file's channels again.
    RELOAD_CHANNELS = 0x0053
    #: The switch's first frame on a connection.
    CHALLENGE = 0x0100
    HELLO = 0x0101


class CountRule(enum.Enum):
    """How many records a kind's request may carry."""

    #: 0..=max_batch.
    BATCH = "batch"
    #: Exactly 0 (PING, CLUSTER_STATUS, BACKUP, RELOAD_CHANNELS).
    ZERO = "zero"
    #: Exactly 1 (HELLO, EXPORT_STR, EXPORT_STR_PAGE, CLUSTER_CHANGE).
    ONE = "one"


class AnswerBody(enum.Enum):
    """What an answer's body holds."""

    #: ``count`` records of the kind's response record (none for PING).
    RECORDS = "records"
    #: A StrHeader, then ``report_len`` bytes of report (EXPORT_STR).
    STR_REPORT = "str_report"
    #: A StrPageHeader, then ``report_len`` bytes of a page (EXPORT_STR_PAGE).
    STR_PAGE = "str_page"
    #: One UTF-8 JSON document (count 1).
    JSON = "json"
    #: Opaque bytes (count 1): BACKUP's ``raft.snap``.
    BYTES = "bytes"


@dataclass(frozen=True)
class KindSpec:
    """What the contract and the switch say of a kind a channel sends."""

    kind: Kind
    #: The request's record; ``None`` for kinds whose requests carry none.
    request: Optional[Type[Record]]
    #: The answer's record (EXPORT_STR: the StrHeader; EXPORT_STR_PAGE: the
    #: StrPageHeader); ``None`` for PING
    #: and the JSON or bytes answers.
    response: Optional[Type[Record]]
    #: Roles any one of which may send it; 0 = any channel.
    roles: Role
    count: CountRule
    answer: AnswerBody = AnswerBody.RECORDS

    @property
    def name(self) -> str:
        return self.kind.name


_NONE = Role(0)
_B, _Z, _O = CountRule.BATCH, CountRule.ZERO, CountRule.ONE

#: Every kind a channel sends, in kind order. Columns: kind, request record,
#: answer record, roles, count rule, answer body.
KINDS: Dict[Kind, KindSpec] = {
    s.kind: s
    for s in (
        KindSpec(Kind.PING, None, None, _NONE, _Z),
        KindSpec(Kind.CREATE_ACCOUNTS, Account, RecordResult, Role.ACCOUNTS, _B),
        KindSpec(Kind.SUBMIT_TRANSFERS, Transfer, TransferResult, Role.PAYMENTS, _B),
        KindSpec(Kind.CONFIRM_STEP_UP, StepUp, TransferResult, Role.PAYMENTS, _B),
        KindSpec(Kind.CANCEL_TRANSFERS, Id, TransferResult, Role.PAYMENTS, _B),
        KindSpec(Kind.FINALIZE_PENDING, Finalize, TransferResult, Role.PAYMENTS, _B),
        KindSpec(Kind.LOOKUP_TRANSFERS, Id, TransferResult, _NONE, _B),
        KindSpec(Kind.LOOKUP_BALANCES, BalanceKey, Balance, _NONE, _B),
        KindSpec(Kind.SET_FX_RATES, FxRate, RecordResult, Role.TREASURY, _B),
        KindSpec(Kind.FX_QUOTE, QuoteRequest, Quote, Role.PAYMENTS, _B),
        KindSpec(Kind.SET_CREDIT_LINES, CreditLine, RecordResult, Role.LENDING, _B),
        KindSpec(Kind.DISBURSE_LOANS, Disburse, LoanResult, Role.LENDING, _B),
        KindSpec(Kind.REPAY_LOANS, Repay, LoanResult, Role.PAYMENTS | Role.LENDING, _B),
        KindSpec(Kind.LOOKUP_LOANS, Id, LoanResult, _NONE, _B),
        KindSpec(Kind.RESOLVE_REVIEW, StepUp, TransferResult, Role.OPERATOR, _B),
        KindSpec(Kind.SET_TIME, SetTime, RecordResult, Role.OPERATOR, _B),
        KindSpec(Kind.EXPORT_STR, StrRequest, StrHeader, Role.REPORTING, _O, AnswerBody.STR_REPORT),
        KindSpec(Kind.EXPORT_STR_PAGE, StrPageRequest, StrPageHeader, Role.REPORTING, _O, AnswerBody.STR_PAGE),
        KindSpec(Kind.CLUSTER_STATUS, None, None, Role.OPERATOR, _Z, AnswerBody.JSON),
        KindSpec(Kind.CLUSTER_CHANGE, ClusterChange, None, Role.OPERATOR, _O, AnswerBody.JSON),
        KindSpec(Kind.BACKUP, None, None, Role.OPERATOR, _Z, AnswerBody.BYTES),
        KindSpec(Kind.RELOAD_CHANNELS, None, None, Role.OPERATOR, _Z, AnswerBody.JSON),
    )
}


def spec(kind: int) -> Optional[KindSpec]:
    """The row of a kind a channel may send, if it is one."""
    try:
        return KINDS.get(Kind(kind))
    except ValueError:
        return None
