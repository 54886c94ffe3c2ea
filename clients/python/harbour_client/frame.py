"""Frames: the 32-byte header, its checks in the contract's order, ERROR
bodies, and the codes and roles the header's world needs
(``protocol/src/frame.rs``).

Decoding is incremental (check, parse, advance): :class:`FrameDecoder` is
fed the bytes as they arrive and hands out whole frames, or raises
:class:`FrameError` for the first failed check. It never reads past what
arrived and refuses a ``body_len`` above its ``max_body`` before waiting
for the body, so a broken or hostile peer costs only its own buffer.
"""

import enum
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .crc32c import crc32c

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "VERSION",
    "RESPONSE_BIT",
    "ERROR_KIND",
    "ERROR_DETAIL_MAX",
    "ErrorCode",
    "Role",
    "Header",
    "FrameError",
    "FrameDecoder",
    "encode_frame",
    "error_body",
    "parse_error_body",
]

#: Bytes of a frame header.
HEADER_SIZE = 32
#: ``HKSW``.
MAGIC = b"HKSW"
#: Protocol version.
VERSION = 1
#: A response's kind is the request's with this bit set.
RESPONSE_BIT = 0x8000
#: Kind of an ERROR frame.
ERROR_KIND = 0xFFFF
#: Longest ERROR detail the switch sends, in bytes of UTF-8.
ERROR_DETAIL_MAX = 1024

# magic, version, kind, body_len, count, request_id, body CRC (header CRC follows).
_HEAD = struct.Struct("<4sHHIIQI")
_U32 = struct.Struct("<I")
_ERROR_HEAD = struct.Struct("<HH")


class ErrorCode(enum.IntEnum):
    """An ERROR frame's code (contract §1, §7): the whole request was refused."""

    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_CHECKSUM = 3
    FRAME_TOO_LARGE = 4
    #: ``body_len`` is not ``count`` records, or a count the kind forbids.
    BAD_LENGTH = 5
    UNKNOWN_KIND = 6
    #: ``count`` above the session's ``max_batch``.
    BATCH_TOO_LARGE = 7
    NOT_AUTHENTICATED = 8
    AUTH_FAILED = 9
    #: The channel's roles do not allow the kind.
    FORBIDDEN = 10
    #: More than ``max_in_flight`` unanswered requests on the connection.
    TOO_MANY_IN_FLIGHT = 11
    #: The switch is overloaded (or a channel limit is reached): nothing applied, resend later.
    BUSY = 12
    #: Reserved bytes or undefined flag bits set, a bad enum value, a second HELLO.
    MALFORMED = 13
    #: A cluster node that is not the leader: nothing applied; the detail is
    #: the leader's channel address ``host:port``, or empty.
    NOT_LEADER = 14

    @property
    def closes(self) -> bool:
        """Whether the switch closes the connection after this error."""
        return self in _CLOSING


_CLOSING = frozenset(
    {
        ErrorCode.BAD_MAGIC,
        ErrorCode.BAD_VERSION,
        ErrorCode.BAD_CHECKSUM,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.NOT_AUTHENTICATED,
        ErrorCode.AUTH_FAILED,
    }
)


class Role(enum.IntFlag):
    """A channel's roles (bit mask), as the HELLO answer gives them."""

    ACCOUNTS = 1
    PAYMENTS = 2
    LENDING = 4
    TREASURY = 8
    OPERATOR = 16
    REPORTING = 32


@dataclass(frozen=True)
class Header:
    """The fields of a header a receiver acts on."""

    kind: int
    body_len: int
    count: int
    request_id: int


class FrameError(Exception):
    """A frame that failed a check before its body could be trusted."""

    def __init__(self, code: ErrorCode, request_id: int) -> None:
        super().__init__(f"{code.name} (request {request_id})")
        self.code = code
        #: The frame's request id if its header could be read, else 0.
        self.request_id = request_id


def encode_frame(kind: int, count: int, request_id: int, body: bytes = b"") -> bytes:
    """A whole frame: the header (with both CRCs) and ``body``."""
    body_crc = crc32c(body) if body else 0
    head = _HEAD.pack(MAGIC, VERSION, kind, len(body), count, request_id, body_crc)
    return head + _U32.pack(crc32c(head)) + bytes(body)


def error_body(code: int, detail: str) -> bytes:
    """An ERROR frame's body: code, detail length, detail (cut to 1,024 bytes
    on a character boundary)."""
    raw = detail.encode("utf-8")[:ERROR_DETAIL_MAX].decode("utf-8", "ignore").encode("utf-8")
    return _ERROR_HEAD.pack(int(code), len(raw)) + raw


def parse_error_body(body: bytes) -> Optional[Tuple[Union[ErrorCode, int], str]]:
    """An ERROR frame's code (an :class:`ErrorCode` when known) and detail;
    ``None`` if the body is too short for what it claims."""
    if len(body) < _ERROR_HEAD.size:
        return None
    code, length = _ERROR_HEAD.unpack_from(body)
    if len(body) < _ERROR_HEAD.size + length:
        return None
    detail = bytes(body[4 : 4 + length]).decode("utf-8", "replace")
    try:
        return ErrorCode(code), detail
    except ValueError:
        return code, detail


class FrameDecoder:
    """Takes whole frames off a growing buffer of received bytes.

    ``feed`` appends what arrived; ``next_frame`` returns one
    ``(Header, body)`` once it has arrived whole, ``None`` to wait for more,
    or raises :class:`FrameError`. Checks, in the contract's order: magic
    (as soon as 4 bytes are in), version, header CRC, ``body_len`` against
    ``max_body`` (before the body arrives), body CRC. After a FrameError
    the stream cannot be trusted: drop the connection.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        # Where the next frame starts in ``_buf``: frames are taken off by
        # moving it, and the consumed front is dropped in ``feed`` (one copy
        # per read, not one per frame).
        self._pos = 0
        self._header: Optional[Header] = None
        self._body_crc = 0

    def feed(self, data: bytes) -> None:
        """Appends received bytes."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken off as frames."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Optional[Tuple[Header, bytes]]:
        """One whole frame off the front of the buffer, or ``None``."""
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if self._header is None:
            if have >= 4 and buf[pos : pos + 4] != MAGIC:
                raise FrameError(ErrorCode.BAD_MAGIC, 0)
            if have < HEADER_SIZE:
                return None
            _, version, kind, body_len, count, request_id, body_crc = _HEAD.unpack_from(buf, pos)
            if version != VERSION:
                raise FrameError(ErrorCode.BAD_VERSION, request_id)
            (header_crc,) = _U32.unpack_from(buf, pos + 28)
            if crc32c(bytes(buf[pos : pos + 28])) != header_crc:
                raise FrameError(ErrorCode.BAD_CHECKSUM, request_id)
            if body_len > self.max_body:
                raise FrameError(ErrorCode.FRAME_TOO_LARGE, request_id)
            # The header is good: keep it, so a body that arrives in pieces
            # does not have its header checked again on every read.
            self._header = Header(kind, body_len, count, request_id)
            self._body_crc = body_crc
        header = self._header
        if have < HEADER_SIZE + header.body_len:
            return None
        start = pos + HEADER_SIZE
        body = bytes(buf[start : start + header.body_len])
        ok = self._body_crc == 0 if not body else crc32c(body) == self._body_crc
        if not ok:
            raise FrameError(ErrorCode.BAD_CHECKSUM, header.request_id)
        self._pos = start + header.body_len
        self._header = None
        return header, body
