"""The client: connect (TCP or mutual TLS) and authenticate, then typed
calls for every kind a channel sends, pipelined on one connection
(``protocol/src/client.rs`` is the model).

Threads: one I/O thread per connection owns the socket. Callers' threads
encode their frames, queue them and wait on a future; the I/O thread
writes what is queued, reads answers and completes each request's future
by its ``request_id``, so many requests may be in flight at once and
answers may arrive in any order. (One thread owns the socket because an
``ssl`` socket must not be read and written from two threads at once.)

Backpressure: at most ``max_in_flight`` requests (the HELLO answer's) are
unanswered at once. A request's place is freed when its answer arrives or
the connection closes, not when its caller stops waiting, so the client
never has more out than the switch counts; one more send waits for a
place, up to its timeout, rather than being refused TOO_MANY_IN_FLIGHT.

Timeouts: ``connect_timeout`` bounds the TCP connect, the TLS handshake,
CHALLENGE and HELLO together; ``timeout`` bounds each request, counted
from when it is sent (waiting for an in-flight place included). A
request that timed out may still be applied: resend it with the same ids.

Shutdown: :meth:`Client.close` (or leaving a ``with`` block) closes the
socket; every call still waiting fails with ConnectionClosedError, as it
does when the switch closes the connection.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from .codes import ResultCode
from .errors import (
    ConnectionClosedError,
    HarbourError,
    ProtocolError,
    RequestTimeoutError,
    StrReportError,
    refused,
)
from .frame import (
    ERROR_KIND,
    RESPONSE_BIT,
    FrameDecoder,
    FrameError,
    Header,
    Role,
    encode_frame,
    parse_error_body,
)
from .kinds import AnswerBody, CountRule, Kind, KindSpec, spec
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
    StrFormat,
    StrHeader,
    StrPageHeader,
    StrPageRequest,
    StrRequest,
    Transfer,
    TransferResult,
    decode_all,
    encode_all,
)
from .session import Challenge, Hello, HelloResponse

__all__ = [
    "Client",
    "TlsConfig",
    "Response",
    "Pending",
    "StrReport",
    "StrPage",
    "StrWritten",
    "STR_PAGE_LIMIT_DEFAULT",
    "RESPONSE_BODY_MAX",
    "TIMEOUT_DEFAULT",
    "CONNECT_TIMEOUT_DEFAULT",
    "DEV_CHANNEL_ID",
    "DEV_KEY",
    "parse_address",
]

#: Largest answer body the client accepts (EXPORT_STR's and BACKUP's may be 256 MiB).
RESPONSE_BODY_MAX = (256 << 20) + 8
#: Default time a request waits for its answer, in seconds.
TIMEOUT_DEFAULT = 30.0
#: Default time for the connect, the TLS handshake and HELLO together, in seconds.
CONNECT_TIMEOUT_DEFAULT = 10.0
#: Cases a page asks for by default in the paged STR export (the CLI's
#: ``harbour str --page-cases`` default; at most ``STR_PAGE_LIMIT_MAX``).
STR_PAGE_LIMIT_DEFAULT = 20_000
#: The development channel a switch without a configuration file has (all roles, loopback only).
DEV_CHANNEL_ID = 1
#: Its key.
DEV_KEY = b"hksw-dev-key"

# Bytes read from the socket at a time.
_RECV_CHUNK = 256 * 1024
# Bytes handed to one send() (a TLS write retried after WANT_WRITE must be
# the same bytes, which a fixed cap of one queued frame keeps true).
_SEND_CHUNK = 256 * 1024


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS 1.3 to the switch (``docs/security.md``): the CA that signs
    the switch's certificate, the channel's certificate (it must name
    ``channel-<id>.harbour`` for the channel that says HELLO) and key, and
    the name the switch's certificate must carry (default: the host
    connected to). ``ssl_context``, if given, is used as it is instead."""

    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    server_name: Optional[str] = None
    ssl_context: Optional[ssl.SSLContext] = None

    def context(self) -> ssl.SSLContext:
        """The ``ssl`` context: TLS 1.3 only, the switch's certificate checked
        against ``ca_file`` and its name, the channel's certificate shown."""
        if self.ssl_context is not None:
            return self.ssl_context
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        else:
            ctx.load_default_certs()
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True)
class Response:
    """An answer frame (not an ERROR)."""

    kind: int
    count: int
    body: bytes
    request_id: int
    #: ``time.monotonic()`` when the I/O thread took it off the socket.
    received: float


class StrReport(NamedTuple):
    """EXPORT_STR's answer: the StrHeader and the report's bytes (UTF-8 XML or CSV)."""

    header: StrHeader
    report: bytes

    @property
    def text(self) -> str:
        return self.report.decode("utf-8")


class StrPage(NamedTuple):
    """EXPORT_STR_PAGE's answer: the StrPageHeader and the page's bytes
    (UTF-8 XML or CSV, whole cases: the first page also carries the
    report's head, the last its foot)."""

    header: StrPageHeader
    page: bytes

    @property
    def last(self) -> bool:
        """Whether this page ends the report."""
        return self.header.last

    @property
    def text(self) -> str:
        return self.page.decode("utf-8")


class StrWritten(NamedTuple):
    """What :meth:`Client.write_str_report` wrote: the report's cases (the
    month's, by the first page's ``as_of_ms``) and its bytes."""

    cases: int
    bytes: int


def parse_address(address: Union[str, Tuple[str, int]]) -> Tuple[str, int]:
    """``"host:port"``, ``"[::1]:7400"`` or ``(host, port)`` as ``(host, port)``."""
    if isinstance(address, tuple):
        return address[0], int(address[1])
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


class Pending:
    """A request sent and not yet answered (or answered and not yet read).

    :meth:`result` waits for the answer and decodes it by the kind's row of
    the table; :meth:`response` gives the raw frame. ``future`` is a
    ``concurrent.futures.Future`` of the :class:`Response`, for
    ``concurrent.futures.wait`` or ``as_completed``.
    """

    def __init__(self, request_id: int, kind: int, future: concurrent.futures.Future[Response], deadline: float):
        self.request_id = request_id
        self.kind = kind
        self.future = future
        #: ``time.monotonic()`` after which :meth:`result` stops waiting.
        self.deadline = deadline

    def done(self) -> bool:
        """Whether the answer (or the failure) is in."""
        return self.future.done()

    def response(self, timeout: Optional[float] = None) -> Response:
        """The answer frame; an ERROR answer raises its :class:`RefusedError`.
        ``timeout`` overrides what is left of the request's own."""
        wait = self.deadline - time.monotonic() if timeout is None else timeout
        try:
            answer = self.future.result(max(0.0, wait))
        except concurrent.futures.TimeoutError:
            raise RequestTimeoutError(f"no answer to request {self.request_id} in time") from None
        if answer.kind != self.kind | RESPONSE_BIT:
            raise ProtocolError(f"answer kind {answer.kind:#06x} to kind {self.kind:#06x}")
        return answer

    def result(self, timeout: Optional[float] = None) -> Any:
        """The decoded answer: a list of records, None (PING), a StrReport
        (EXPORT_STR), a StrPage (EXPORT_STR_PAGE), a dict (JSON answers),
        bytes (BACKUP), or the raw :class:`Response` for a kind the table
        does not know."""
        return _decode_answer(spec(self.kind), self.response(timeout))


def _decode_answer(row: Optional[KindSpec], answer: Response) -> Any:
    if row is None:
        return answer
    body = answer.body
    if row.answer is AnswerBody.RECORDS:
        if row.response is None:
            return None
        if len(body) != answer.count * row.response.SIZE:
            raise ProtocolError(f"{row.name} answer of {len(body)} bytes is not {answer.count} records")
        return decode_all(row.response, body)
    if row.answer is AnswerBody.STR_REPORT or row.answer is AnswerBody.STR_PAGE:
        head = row.response
        assert head is not None
        if len(body) < head.SIZE:
            raise ProtocolError(f"{row.name} answer shorter than its header")
        header = head.decode(body[: head.SIZE])
        report = body[head.SIZE :]
        if len(report) != header.report_len:
            raise ProtocolError(f"{row.name} report_len does not match the body")
        if row.answer is AnswerBody.STR_PAGE:
            return StrPage(header, report)  # type: ignore[arg-type]
        return StrReport(header, report)  # type: ignore[arg-type]
    if row.answer is AnswerBody.JSON:
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise ProtocolError(f"{row.name} answer is not JSON: {e}") from None
    return body


class Client:
    """One authenticated connection to the switch. Thread-safe: any number
    of threads may call it at once.

    Make one with :meth:`connect`; use it as a context manager, or call
    :meth:`close`. Typed calls take a list of records, split it into
    requests of at most ``max_batch`` records, send them all (up to
    ``max_in_flight`` at once) and return every answer record in order;
    a per-record failure is that record's ``code``, an ERROR answer raises
    a :class:`RefusedError`.
    """

    def __init__(
        self, sock: socket.socket, limits: HelloResponse, decoder: FrameDecoder, timeout: float = TIMEOUT_DEFAULT
    ) -> None:
        """Takes over a socket that has said HELLO; use :meth:`connect`."""
        self.limits = limits
        #: Default time each request waits for its answer, in seconds.
        self.timeout = timeout
        self._sock = sock
        self._decoder = decoder
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max(1, limits.max_in_flight))
        self._next_id = 1
        # request_id -> the future its answer completes.
        self._waiters: Dict[int, concurrent.futures.Future[Response]] = {}
        # Frames queued by callers, not yet taken by the I/O thread.
        self._outbox: List[bytes] = []
        self._closing = False
        self._closed = False
        self._close_reason: Optional[BaseException] = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="harbour-client-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------
    # Connecting.

    @classmethod
    def connect(
        cls,
        address: Union[str, Tuple[str, int]],
        channel_id: int,
        key: Union[bytes, str],
        *,
        tls: Optional[TlsConfig] = None,
        connect_timeout: float = CONNECT_TIMEOUT_DEFAULT,
        timeout: float = TIMEOUT_DEFAULT,
    ) -> Client:
        """Connects (over TLS if ``tls``), answers the CHALLENGE with HELLO,
        and reads the session's roles and limits. Raises AuthFailedError for
        a wrong key, BusyError when the switch has no room, RequestTimeoutError
        past ``connect_timeout``, ConnectionClosedError if the switch is not
        reachable."""
        host, port = parse_address(address)
        key_bytes = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        deadline = time.monotonic() + connect_timeout
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.timeout:
            raise RequestTimeoutError(f"no connection to {host}:{port} in {connect_timeout} s") from None
        except OSError as e:
            raise ConnectionClosedError(f"cannot connect to {host}:{port}: {e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock.settimeout(_remaining(deadline, "the TLS handshake"))
                sock = tls.context().wrap_socket(sock, server_hostname=tls.server_name or host)
            limits, decoder = _handshake(sock, channel_id, key_bytes, deadline)
        except BaseException as e:
            sock.close()
            if isinstance(e, HarbourError):
                raise
            if isinstance(e, socket.timeout):
                raise RequestTimeoutError(f"no HELLO answer from {host}:{port} in {connect_timeout} s") from None
            if isinstance(e, OSError):
                raise ConnectionClosedError(f"{host}:{port}: {e}") from e
            raise
        return cls(sock, limits, decoder, timeout)

    def close(self) -> None:
        """Closes the connection; calls still waiting fail with ConnectionClosedError."""
        with self._lock:
            self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------
    # The session.

    @property
    def roles(self) -> Role:
        """The channel's roles."""
        return self.limits.roles

    @property
    def max_batch(self) -> int:
        return self.limits.max_batch

    @property
    def max_in_flight(self) -> int:
        return self.limits.max_in_flight

    @property
    def server_time_ms(self) -> int:
        """The switch's clock when it answered HELLO."""
        return self.limits.server_time_ms

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        with self._lock:
            return len(self._waiters)

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (closed by either side)."""
        with self._lock:
            return self._closed or self._closing

    # ------------------------------------------------------------------
    # Sending.

    def send_raw(self, kind: int, count: int, body: bytes = b"", timeout: Optional[float] = None) -> Pending:
        """Sends one frame as given (nothing checked: the switch judges it) and
        returns at once; waits only for an in-flight place."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RequestTimeoutError(f"no in-flight place (max_in_flight {self.max_in_flight}) in time")
        with self._lock:
            if self._closed or self._closing:
                # Pass the place on, so every waiting sender wakes and fails.
                self._slots.release()
                raise ConnectionClosedError("the connection is closed") from self._close_reason
            request_id = self._next_id
            self._next_id += 1
        frame = encode_frame(kind, count, request_id, body)
        future: concurrent.futures.Future[Response] = concurrent.futures.Future()
        with self._lock:
            if self._closed or self._closing:
                self._slots.release()
                raise ConnectionClosedError("the connection is closed") from self._close_reason
            self._waiters[request_id] = future
            self._outbox.append(frame)
        self._wake()
        return Pending(request_id, kind, future, deadline)

    def send(self, kind: int, records: Iterable[Record] = (), timeout: Optional[float] = None) -> Pending:
        """Sends one request of ``kind`` with ``records`` (at most
        ``max_batch``; none for PING and the operators' zero-count kinds) and
        returns at once; ``Pending.result()`` decodes the answer. This is the
        way to pipeline by hand."""
        row = spec(kind)
        if row is None:
            raise ValueError(f"kind {kind:#06x} is not one a channel sends")
        items = list(records)
        if row.request is None:
            if items:
                raise ValueError(f"{row.name} carries no records")
        else:
            for r in items:
                if not isinstance(r, row.request):
                    raise TypeError(f"{row.name} takes {row.request.__name__} records, not {type(r).__name__}")
        if row.count is CountRule.ONE and len(items) != 1:
            raise ValueError(f"{row.name} carries exactly one record")
        if len(items) > self.limits.max_batch:
            raise ValueError(f"{len(items)} records: max_batch is {self.limits.max_batch}")
        body = encode_all(items)
        if len(body) > self.limits.max_body:
            raise ValueError(f"a body of {len(body)} bytes: max_body is {self.limits.max_body}")
        return self.send_raw(row.kind, len(items), body, timeout)

    def request_raw(self, kind: int, count: int, body: bytes = b"", timeout: Optional[float] = None) -> Response:
        """Sends one frame as given and waits for its answer frame."""
        return self.send_raw(kind, count, body, timeout).response()

    def request(self, kind: int, records: Iterable[Record] = (), timeout: Optional[float] = None) -> Any:
        """Sends one request and waits for its decoded answer."""
        return self.send(kind, records, timeout).result()

    def batch(self, kind: int, records: Iterable[Record], timeout: Optional[float] = None) -> List[Any]:
        """Sends ``records`` as requests of at most ``max_batch`` records, all
        in flight at once (up to ``max_in_flight``), and returns every answer
        record in order. An empty list is one request of count 0."""
        items = list(records)
        size = max(1, self.limits.max_batch)
        chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
        pending = [self.send(kind, chunk, timeout) for chunk in chunks]
        out: List[Any] = []
        for p in pending:
            out.extend(p.result())
        return out

    # ------------------------------------------------------------------
    # Typed calls, one per kind a channel sends (the table's order).

    def ping(self, timeout: Optional[float] = None) -> None:
        """PING: the switch is there and this session is good."""
        self.request(Kind.PING, (), timeout)

    def create_accounts(self, accounts: Sequence[Account], timeout: Optional[float] = None) -> List[RecordResult]:
        """CREATE_ACCOUNTS (role ACCOUNTS)."""
        return self.batch(Kind.CREATE_ACCOUNTS, accounts, timeout)

    def submit_transfers(self, transfers: Sequence[Transfer], timeout: Optional[float] = None) -> List[TransferResult]:
        """SUBMIT_TRANSFERS (role PAYMENTS)."""
        return self.batch(Kind.SUBMIT_TRANSFERS, transfers, timeout)

    def confirm_step_up(self, items: Sequence[StepUp], timeout: Optional[float] = None) -> List[TransferResult]:
        """CONFIRM_STEP_UP (role PAYMENTS): FACE or SMS_OTP outcomes."""
        return self.batch(Kind.CONFIRM_STEP_UP, items, timeout)

    def cancel_transfers(self, ids: Sequence[Union[int, Id]], timeout: Optional[float] = None) -> List[TransferResult]:
        """CANCEL_TRANSFERS (role PAYMENTS): void PENDING transfers at the customer's request."""
        return self.batch(Kind.CANCEL_TRANSFERS, _ids(ids), timeout)

    def finalize_pending(self, items: Sequence[Finalize], timeout: Optional[float] = None) -> List[TransferResult]:
        """FINALIZE_PENDING (role PAYMENTS): post or void the CLIENT hold."""
        return self.batch(Kind.FINALIZE_PENDING, items, timeout)

    def lookup_transfers(self, ids: Sequence[Union[int, Id]], timeout: Optional[float] = None) -> List[TransferResult]:
        """LOOKUP_TRANSFERS (any role)."""
        return self.batch(Kind.LOOKUP_TRANSFERS, _ids(ids), timeout)

    def lookup_balances(self, keys: Sequence[BalanceKey], timeout: Optional[float] = None) -> List[Balance]:
        """LOOKUP_BALANCES (any role)."""
        return self.batch(Kind.LOOKUP_BALANCES, keys, timeout)

    def set_fx_rates(self, rates: Sequence[FxRate], timeout: Optional[float] = None) -> List[RecordResult]:
        """SET_FX_RATES (role TREASURY); each answer's key is the record's index."""
        return self.batch(Kind.SET_FX_RATES, rates, timeout)

    def fx_quote(self, requests: Sequence[QuoteRequest], timeout: Optional[float] = None) -> List[Quote]:
        """FX_QUOTE (role PAYMENTS): lock a rate for one transfer."""
        return self.batch(Kind.FX_QUOTE, requests, timeout)

    def set_credit_lines(self, lines: Sequence[CreditLine], timeout: Optional[float] = None) -> List[RecordResult]:
        """SET_CREDIT_LINES (role LENDING)."""
        return self.batch(Kind.SET_CREDIT_LINES, lines, timeout)

    def disburse_loans(self, loans: Sequence[Disburse], timeout: Optional[float] = None) -> List[LoanResult]:
        """DISBURSE_LOANS (role LENDING)."""
        return self.batch(Kind.DISBURSE_LOANS, loans, timeout)

    def repay_loans(self, repayments: Sequence[Repay], timeout: Optional[float] = None) -> List[LoanResult]:
        """REPAY_LOANS (role PAYMENTS or LENDING): each answer is the loan's LoanResult."""
        return self.batch(Kind.REPAY_LOANS, repayments, timeout)

    def lookup_loans(self, ids: Sequence[Union[int, Id]], timeout: Optional[float] = None) -> List[LoanResult]:
        """LOOKUP_LOANS (any role)."""
        return self.batch(Kind.LOOKUP_LOANS, _ids(ids), timeout)

    def resolve_review(self, items: Sequence[StepUp], timeout: Optional[float] = None) -> List[TransferResult]:
        """RESOLVE_REVIEW (role OPERATOR): MANUAL_REVIEW and MULE_REVIEW outcomes (method 3)."""
        return self.batch(Kind.RESOLVE_REVIEW, items, timeout)

    def set_time(self, unix_ms: int, timeout: Optional[float] = None) -> RecordResult:
        """SET_TIME (role OPERATOR; a switch on ``--clock manual`` only)."""
        answer: RecordResult
        (answer,) = self.batch(Kind.SET_TIME, [SetTime(unix_ms)], timeout)
        return answer

    def export_str(
        self, year: int, month: int, format: int = StrFormat.CSV, timeout: Optional[float] = None
    ) -> StrReport:
        """EXPORT_STR (role REPORTING): the Hong Kong month's Suspicious
        Transaction Report. A month without cases is NOTHING_TO_REPORT in
        ``header.code`` with an empty report."""
        result: StrReport = self.request(Kind.EXPORT_STR, [StrRequest(year, month, format)], timeout)
        return result

    def export_str_page(self, request: StrPageRequest, timeout: Optional[float] = None) -> StrPage:
        """EXPORT_STR_PAGE (role REPORTING; not for a scoped channel): one
        page of the month's Suspicious Transaction Report, as its
        StrPageHeader and bytes. Ask the first page with ``as_of_ms`` and the
        cursor 0, then each next one with ``request.after(header)`` (the
        ``as_of_ms`` and cursor the last page answered) until a page is
        ``header.last``; the pages' bytes in order are the report EXPORT_STR
        gives at ``as_of_ms``. Like :meth:`export_str`, a result code is
        ``header.code``, not an exception: NOTHING_TO_REPORT (no case in the
        month by ``as_of_ms``, empty page), INVALID_FIELD (month outside
        1..12, limit outside 1..100,000), OVERFLOW. An unknown format is
        refused MALFORMED (:class:`MalformedError`), a scoped channel
        FORBIDDEN. :meth:`export_str_pages` and :meth:`write_str_report`
        run the loop."""
        result: StrPage = self.request(Kind.EXPORT_STR_PAGE, [request], timeout)
        return result

    def export_str_pages(
        self,
        year: int,
        month: int,
        format: int = StrFormat.CSV,
        limit: int = STR_PAGE_LIMIT_DEFAULT,
        timeout: Optional[float] = None,
    ) -> Iterator[StrPage]:
        """The month's Suspicious Transaction Report a page of at most
        ``limit`` cases at a time (EXPORT_STR_PAGE), without holding it whole:
        yields each page, the first opening the report and the one flagged
        ``last`` closing it, as of the first page's ``as_of_ms``. A month
        without cases (NOTHING_TO_REPORT) yields no page at all. Any other
        code but OK raises :class:`StrReportError` (INVALID_FIELD for a month
        outside 1..12 or ``limit`` outside 1..100,000); an ERROR answer
        raises its :class:`RefusedError`. ``timeout`` bounds each page's
        request. A generator: nothing is asked until it is iterated."""
        request = StrPageRequest(year, month, format, limit)
        while True:
            answer = self.export_str_page(request, timeout)
            header = answer.header
            if header.code == ResultCode.NOTHING_TO_REPORT and request.first:
                return
            if header.code != ResultCode.OK:
                where = "" if request.first else "after the first page"
                raise StrReportError(header.code, header, where)
            yield answer
            if header.last:
                return
            following = request.after(header)
            if (following.after_ms, following.after_id) == (request.after_ms, request.after_id):
                raise ProtocolError("EXPORT_STR_PAGE answered a page that is not the last without moving its cursor")
            request = following

    def write_str_report(
        self,
        out: IO[bytes],
        year: int,
        month: int,
        format: int = StrFormat.CSV,
        limit: int = STR_PAGE_LIMIT_DEFAULT,
        timeout: Optional[float] = None,
    ) -> Optional[StrWritten]:
        """Writes the month's Suspicious Transaction Report to ``out`` (a
        binary file-like object: ``write(bytes)``) page by page
        (:meth:`export_str_pages`), so neither side holds more than a page,
        and flushes it. Returns :class:`StrWritten` (the report's cases and
        bytes written), or ``None`` if the month has no case
        (NOTHING_TO_REPORT; nothing is written). Raises as
        :meth:`export_str_pages` does; on an error what was written is only
        part of a report, so write to a temporary file and rename it once
        this returns."""
        cases = written = 0
        pages = 0
        for answer in self.export_str_pages(year, month, format, limit, timeout):
            _write_all(out, answer.page)
            cases = answer.header.cases
            written += len(answer.page)
            pages += 1
        if not pages:
            return None
        flush = getattr(out, "flush", None)
        if flush is not None:
            flush()
        return StrWritten(cases, written)

    def cluster_status(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """CLUSTER_STATUS (role OPERATOR): this node's view of its cluster.
        A single node refuses it UNKNOWN_KIND ("not a cluster node")."""
        result: Dict[str, Any] = self.request(Kind.CLUSTER_STATUS, (), timeout)
        return result

    def cluster_change(self, change: ClusterChange, timeout: Optional[float] = None) -> Dict[str, Any]:
        """CLUSTER_CHANGE (role OPERATOR, the leader): the cluster's status
        after the change, or ``{"error": ...}`` if raft refused it."""
        result: Dict[str, Any] = self.request(Kind.CLUSTER_CHANGE, [change], timeout)
        return result

    def backup(self, timeout: Optional[float] = None) -> bytes:
        """BACKUP (role OPERATOR): a cluster node's books as a ``raft.snap`` file's bytes."""
        result: bytes = self.request(Kind.BACKUP, (), timeout)
        return result

    def reload_channels(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """RELOAD_CHANNELS (role OPERATOR): ``{"reloaded": true, "channels": N}``
        or ``{"reloaded": false, "error": ...}``."""
        result: Dict[str, Any] = self.request(Kind.RELOAD_CHANNELS, (), timeout)
        return result

    # ------------------------------------------------------------------
    # The I/O thread.

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # Full (a wake-up is already pending) or closed (so is the loop).

    def _run(self) -> None:
        """Owns the socket: writes queued frames, reads answers, completes
        futures, until the connection ends or ``close`` is called."""
        sock = self._sock
        sel = selectors.DefaultSelector()
        sending: Deque[memoryview] = collections.deque()
        registered = selectors.EVENT_READ
        reason: Optional[BaseException] = None
        try:
            sel.register(sock, registered)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                with self._lock:
                    if self._closing:
                        break
                    for frame in self._outbox:
                        sending.append(memoryview(frame))
                    self._outbox.clear()
                write_blocked = self._write(sock, sending)
                if not self._read(sock):
                    reason = ConnectionClosedError("the switch closed the connection")
                    break
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if write_blocked else 0)
                if wanted != registered:
                    sel.modify(sock, wanted)
                    registered = wanted
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
        except (FrameError, ProtocolError) as e:
            reason = ProtocolError(f"bad frame from the switch: {e}")
        except OSError as e:
            reason = ConnectionClosedError(f"connection lost: {e}")
        except BaseException as e:  # A bug here must not leave callers waiting forever.
            reason = e
        finally:
            sel.close()
            self._shut(reason)

    def _write(self, sock: socket.socket, sending: Deque[memoryview]) -> bool:
        """Writes what it can; True if the socket is full (wait until writable)."""
        while sending:
            head = sending[0]
            try:
                n = sock.send(head[:_SEND_CHUNK])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return True
            if n < len(head):
                sending[0] = head[n:]
            else:
                sending.popleft()
        return False

    def _read(self, sock: socket.socket) -> bool:
        """Reads what has arrived and completes its requests; False at end of stream."""
        while True:
            try:
                data = sock.recv(_RECV_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False
            if not data:
                return False
            received = time.monotonic()
            self._decoder.feed(data)
            while True:
                frame = self._decoder.next_frame()
                if frame is None:
                    break
                self._dispatch(frame[0], frame[1], received)

    def _dispatch(self, header: Header, body: bytes, received: float) -> None:
        """Completes the request an answer names (an ERROR for request 0, which
        is about no request in particular, fails every one)."""
        if header.kind == ERROR_KIND:
            parsed = parse_error_body(body)
            if parsed is None:
                raise ProtocolError("unreadable ERROR frame")
            error = refused(parsed[0], parsed[1], header.request_id)
            if header.request_id == 0:
                self._fail_all(error)
                return
            self._complete(header.request_id, error=error)
        else:
            answer = Response(header.kind, header.count, body, header.request_id, received)
            self._complete(header.request_id, answer=answer)

    def _complete(
        self, request_id: int, answer: Optional[Response] = None, error: Optional[BaseException] = None
    ) -> None:
        with self._lock:
            future = self._waiters.pop(request_id, None)
        if future is None:
            return  # Not ours (or already failed): nothing waits for it.
        # The place is free before anyone sees the answer.
        self._slots.release()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(answer)  # type: ignore[arg-type]

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            self._slots.release()
            future.set_exception(error)

    def _shut(self, reason: Optional[BaseException]) -> None:
        with self._lock:
            self._closed = True
            self._close_reason = reason
            self._outbox.clear()
        try:
            self._sock.close()
        except OSError:
            pass
        for s in (self._wake_r, self._wake_w):
            s.close()
        closed = ConnectionClosedError("the connection closed before the answer came")
        if reason is not None:
            closed.__cause__ = reason
        self._fail_all(closed)


def _write_all(out: IO[bytes], data: bytes) -> None:
    """Writes all of ``data`` (a raw file may take part of it at a time)."""
    view = memoryview(data)
    while view:
        n = out.write(view)  # type: ignore[arg-type]
        if n is None or n >= len(view):
            return
        if n <= 0:
            raise OSError("the file took none of the page")
        view = view[n:]


def _ids(ids: Sequence[Union[int, Id]]) -> List[Id]:
    return [i if isinstance(i, Id) else Id(i) for i in ids]


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RequestTimeoutError(f"{what}: the connect timeout passed")
    return left


def _read_frame(sock: socket.socket, decoder: FrameDecoder, deadline: float, what: str) -> Tuple[Header, bytes]:
    """One frame, blocking until ``deadline`` (the handshake only)."""
    while True:
        try:
            frame = decoder.next_frame()
        except FrameError as e:
            raise ProtocolError(f"bad frame from the switch during the handshake: {e}") from None
        if frame is not None:
            header, body = frame
            if header.kind == ERROR_KIND:
                parsed = parse_error_body(body)
                if parsed is None:
                    raise ProtocolError("unreadable ERROR frame")
                raise refused(parsed[0], parsed[1], header.request_id)
            return header, body
        sock.settimeout(_remaining(deadline, what))
        data = sock.recv(_RECV_CHUNK)
        if not data:
            raise ConnectionClosedError(f"the switch closed the connection before {what}")
        decoder.feed(data)


def _handshake(sock: socket.socket, channel_id: int, key: bytes, deadline: float) -> Tuple[HelloResponse, FrameDecoder]:
    """CHALLENGE, HELLO and the session's limits (contract §2)."""
    decoder = FrameDecoder(RESPONSE_BODY_MAX)
    header, body = _read_frame(sock, decoder, deadline, "CHALLENGE")
    if header.kind != Kind.CHALLENGE:
        raise ProtocolError(f"expected CHALLENGE, got kind {header.kind:#06x}")
    try:
        challenge = Challenge.decode(body)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    hello = Hello.new(channel_id, key, challenge.server_nonce, os.urandom(16))
    sock.settimeout(_remaining(deadline, "HELLO"))
    sock.sendall(encode_frame(Kind.HELLO, 1, 0, hello.encode()))
    header, body = _read_frame(sock, decoder, deadline, "the HELLO answer")
    if header.kind != Kind.HELLO | RESPONSE_BIT:
        raise ProtocolError(f"expected the HELLO answer, got kind {header.kind:#06x}")
    try:
        limits = HelloResponse.decode(body)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    if limits.code != 0:
        raise ProtocolError(f"HELLO answered with code {limits.code}")
    return limits, decoder
