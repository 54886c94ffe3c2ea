"""Why a call failed (``protocol/src/client.rs``'s ``ClientError``).

:class:`RefusedError` is an ERROR frame from the switch: it carries the
code (an :class:`~harbour_client.frame.ErrorCode`, ``name`` its name) and
the detail, and has one subclass per code so a caller can catch just
``BusyError`` or ``NotLeaderError`` (whose ``leader`` is the address in
the detail). Nothing in a refused request was applied.

A per-record failure is not an exception: it is the record's ``code``.
The one exception to that is :class:`StrReportError`, raised by the paged
STR export's loop (``Client.export_str_pages``, ``Client.write_str_report``)
when a page is answered with a code that ends the report.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type, Union

from .codes import ResultCode
from .frame import ErrorCode

__all__ = [
    "HarbourError",
    "ConnectionClosedError",
    "RequestTimeoutError",
    "ProtocolError",
    "RefusedError",
    "BadMagicError",
    "BadVersionError",
    "BadChecksumError",
    "FrameTooLargeError",
    "BadLengthError",
    "UnknownKindError",
    "BatchTooLargeError",
    "NotAuthenticatedError",
    "AuthFailedError",
    "ForbiddenError",
    "TooManyInFlightError",
    "BusyError",
    "MalformedError",
    "NotLeaderError",
    "StrReportError",
    "refused",
]


class HarbourError(Exception):
    """Base of every error this client raises."""


class ConnectionClosedError(HarbourError, ConnectionError):
    """The connection closed (or could not be made) before the answer came.
    The request may or may not have been applied: resend it with the same ids."""


class RequestTimeoutError(HarbourError, TimeoutError):
    """No answer within the call's timeout (or no in-flight place free in
    time). The request may still be applied; resend it with the same ids."""


class ProtocolError(HarbourError):
    """The switch said something the protocol does not allow (a bad frame,
    an answer of the wrong kind or size)."""


class RefusedError(HarbourError):
    """The switch answered with an ERROR frame: the whole request was refused."""

    def __init__(self, code: Union[ErrorCode, int], detail: str = "", request_id: int = 0) -> None:
        self.code = code
        self.detail = detail
        #: The request id the ERROR frame echoed (0: about no request in particular).
        self.request_id = request_id
        super().__init__(f"refused: {self.name} ({int(code)}): {detail}")

    @property
    def name(self) -> str:
        """The code's contract name, e.g. ``BUSY`` (``"?"`` for an unknown code)."""
        return self.code.name if isinstance(self.code, ErrorCode) else "?"

    @property
    def closes(self) -> bool:
        """Whether the switch closes the connection after this error."""
        return isinstance(self.code, ErrorCode) and self.code.closes


class BadMagicError(RefusedError):
    """BAD_MAGIC (1): the frame did not start with ``HKSW``; the connection is closed."""


class BadVersionError(RefusedError):
    """BAD_VERSION (2); the connection is closed."""


class BadChecksumError(RefusedError):
    """BAD_CHECKSUM (3): a header or body CRC-32C was wrong; the connection is closed."""


class FrameTooLargeError(RefusedError):
    """FRAME_TOO_LARGE (4): ``body_len`` above ``max_body``; the connection is closed."""


class BadLengthError(RefusedError):
    """BAD_LENGTH (5): ``body_len`` is not ``count`` records, or a count the kind forbids."""


class UnknownKindError(RefusedError):
    """UNKNOWN_KIND (6), also a cluster kind sent to a single node."""


class BatchTooLargeError(RefusedError):
    """BATCH_TOO_LARGE (7): ``count`` above ``max_batch``."""


class NotAuthenticatedError(RefusedError):
    """NOT_AUTHENTICATED (8): a frame before HELLO; the connection is closed."""


class AuthFailedError(RefusedError):
    """AUTH_FAILED (9): unknown channel, wrong MAC, or another channel's TLS
    certificate; the connection is closed."""


class ForbiddenError(RefusedError):
    """FORBIDDEN (10): the channel's roles do not allow the kind."""


class TooManyInFlightError(RefusedError):
    """TOO_MANY_IN_FLIGHT (11): more than ``max_in_flight`` unanswered requests."""


class BusyError(RefusedError):
    """BUSY (12): the switch (or this channel's limit) is full; nothing
    applied, resend later."""


class MalformedError(RefusedError):
    """MALFORMED (13): reserved bytes, undefined flags or a bad enum value in
    some record (nothing in the frame applied), or a second HELLO."""


class NotLeaderError(RefusedError):
    """NOT_LEADER (14): a cluster node that does not lead; nothing applied.
    Send the same request to :attr:`leader`."""

    @property
    def leader(self) -> Optional[str]:
        """The leader's channel address ``host:port``, or None when no leader is known."""
        return self.detail or None


class StrReportError(HarbourError):
    """A page of a paged STR export (EXPORT_STR_PAGE) was answered with a
    result code that ends the report: INVALID_FIELD (month outside 1..12,
    ``limit`` outside 1..100,000), OVERFLOW (a page past 256 MiB), or any
    code but OK after the first page. NOTHING_TO_REPORT on the first page
    is not an error (the export gives ``None`` or no pages), and an unknown
    format is the frame error MALFORMED (:class:`MalformedError`). Not a
    :class:`RefusedError`: the request was read and answered.
    """

    def __init__(self, code: Union[ResultCode, int], header: Any = None, detail: str = "") -> None:
        #: The page's :class:`~harbour_client.codes.ResultCode` (a bare int if unknown).
        self.code = code
        #: The page's :class:`~harbour_client.records.StrPageHeader`.
        self.header = header
        name = code.name if isinstance(code, ResultCode) else "?"
        super().__init__(f"STR page answered {name} ({int(code)})" + (f": {detail}" if detail else ""))

    @property
    def name(self) -> str:
        """The code's contract name, e.g. ``INVALID_FIELD`` (``"?"`` for an unknown code)."""
        return self.code.name if isinstance(self.code, ResultCode) else "?"


_BY_CODE: Dict[ErrorCode, Type[RefusedError]] = {
    ErrorCode.BAD_MAGIC: BadMagicError,
    ErrorCode.BAD_VERSION: BadVersionError,
    ErrorCode.BAD_CHECKSUM: BadChecksumError,
    ErrorCode.FRAME_TOO_LARGE: FrameTooLargeError,
    ErrorCode.BAD_LENGTH: BadLengthError,
    ErrorCode.UNKNOWN_KIND: UnknownKindError,
    ErrorCode.BATCH_TOO_LARGE: BatchTooLargeError,
    ErrorCode.NOT_AUTHENTICATED: NotAuthenticatedError,
    ErrorCode.AUTH_FAILED: AuthFailedError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.TOO_MANY_IN_FLIGHT: TooManyInFlightError,
    ErrorCode.BUSY: BusyError,
    ErrorCode.MALFORMED: MalformedError,
    ErrorCode.NOT_LEADER: NotLeaderError,
}
assert set(_BY_CODE) == set(ErrorCode), "every ERROR code has its exception"


def refused(code: Union[ErrorCode, int], detail: str, request_id: int = 0) -> RefusedError:
    """The exception for an ERROR frame's code: its own subclass, or
    :class:`RefusedError` for a code this client does not know."""
    cls = _BY_CODE.get(code, RefusedError) if isinstance(code, ErrorCode) else RefusedError
    return cls(code, detail, request_id)
