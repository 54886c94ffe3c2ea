"""EXPORT_STR_PAGE against a stand-in switch (``fakeswitch``): the request
on the wire, the page decoded, the loop that passes back ``as_of_ms`` and
the cursor and stops on LAST, NOTHING_TO_REPORT, the codes that end a
report, and the frame errors. No real switch is needed."""

import io
import threading
import unittest
from typing import List, Optional, Tuple

from harbour_client import (
    STR_PAGE_LIMIT_DEFAULT,
    Client,
    ForbiddenError,
    Kind,
    MalformedError,
    ProtocolError,
    ResultCode,
    StrFormat,
    StrPage,
    StrPageFlags,
    StrPageHeader,
    StrPageRequest,
    StrReportError,
    StrWritten,
)
from harbour_client.frame import ErrorCode, Header

from .fakeswitch import DEV_KEY, Conn, FakeSwitch

HEAD = b"transfer_id,submitted_at\r\n"


def line(ms: int, transfer_id: int) -> bytes:
    return f"{transfer_id},{ms}\r\n".encode()


class PagingSwitch:
    """EXPORT_STR_PAGE as the switch answers it (``engine/src/suspicious.rs``,
    ``str_page_answer``), over a list of cases ``(submitted_ms, transfer_id)``:
    the report is the CSV head, then a line a case in (ms, id) order. The
    first page (as_of_ms 0) is as of ``now_ms``. Records every request."""

    def __init__(self, cases: List[Tuple[int, int]], now_ms: int) -> None:
        self.cases = list(cases)
        self.now_ms = now_ms
        self.requests: List[StrPageRequest] = []
        self.frames: List[Tuple[Header, bytes]] = []
        self.lock = threading.Lock()

    def report(self, as_of_ms: int) -> bytes:
        """The whole report EXPORT_STR would give at ``as_of_ms``."""
        rows = sorted(c for c in self.cases if c[0] <= as_of_ms)
        return HEAD + b"".join(line(ms, i) for ms, i in rows) if rows else b""

    def on_frame(self, conn: Conn, header: Header, body: bytes) -> None:
        if header.kind != Kind.EXPORT_STR_PAGE:
            conn.answer(header)
            return
        with self.lock:
            self.frames.append((header, body))
            r = StrPageRequest.decode(body)
            self.requests.append(r)
            answer = self.page(r)
        if answer is None:
            conn.error(header.request_id, ErrorCode.MALFORMED, "bad format")
            return
        head, page = answer
        conn.answer(header, 1, head.encode() + page)

    def page(self, r: StrPageRequest) -> Optional[Tuple[StrPageHeader, bytes]]:
        if r.format not in (StrFormat.XML, StrFormat.CSV):
            return None  # The switch's well-formedness check: MALFORMED.
        as_of = self.now_ms if r.as_of_ms == 0 else min(r.as_of_ms, self.now_ms)
        h = StrPageHeader(format=r.format, as_of_ms=as_of, next_after_ms=r.after_ms, next_after_id=r.after_id)
        if not 1 <= r.month <= 12 or not 1 <= r.limit <= 100_000:
            h.code = ResultCode.INVALID_FIELD
            return h, b""
        month = sorted(c for c in self.cases if c[0] <= as_of)
        if not month:
            h.code = ResultCode.NOTHING_TO_REPORT
            return h, b""
        after = [c for c in month if c > (r.after_ms, r.after_id)]
        rows, more = after[: r.limit], len(after) > r.limit
        page = HEAD if r.first else b""
        page += b"".join(line(ms, i) for ms, i in rows)
        if not more:
            h.flags = StrPageFlags.LAST
        if rows:
            h.next_after_ms, h.next_after_id = rows[-1]
        h.cases, h.rows, h.report_len = len(month), len(rows), len(page)
        return h, page


# Five cases; two share a millisecond (the cursor is (ms, id), not ms alone).
CASES = [(1_000, 7), (1_000, 3), (1_500, 1 << 100), (1_700, 12), (1_900, 2)]
NOW = 2_000


class ExportStrPageTest(unittest.TestCase):
    def test_the_request_goes_as_48_bytes_and_the_page_comes_back_typed(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            request = StrPageRequest(2026, 1, StrFormat.CSV, limit=2)
            got = c.export_str_page(request)
        [(header, body)] = fake.frames
        self.assertEqual((header.kind, header.count, len(body)), (0x0043, 1, 48))
        self.assertEqual(body, request.encode())
        self.assertEqual(body[4:8], (2).to_bytes(4, "little"), "limit at offset 4")
        self.assertIsInstance(got, StrPage)
        self.assertIsInstance(got.header, StrPageHeader)
        h = got.header
        self.assertEqual((h.code, h.format, h.cases, h.rows, h.as_of_ms), (ResultCode.OK, StrFormat.CSV, 5, 2, NOW))
        self.assertEqual((h.next_after_ms, h.next_after_id), (1_000, 7))
        self.assertFalse(got.last)
        self.assertEqual(got.page, HEAD + line(1_000, 3) + line(1_000, 7))
        self.assertEqual(h.report_len, len(got.page))
        self.assertTrue(got.text.startswith("transfer_id,"))

    def test_result_codes_are_the_headers_not_exceptions(self) -> None:
        # As export_str: the code is header.code.
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            zero = c.export_str_page(StrPageRequest(2026, 1, StrFormat.CSV, limit=0))
            self.assertEqual((zero.header.code, zero.page), (ResultCode.INVALID_FIELD, b""))
            too_many = c.export_str_page(StrPageRequest(2026, 1, StrFormat.CSV, limit=100_001))
            self.assertEqual(too_many.header.code, ResultCode.INVALID_FIELD)
            month = c.export_str_page(StrPageRequest(2026, 13, StrFormat.CSV, limit=1))
            self.assertEqual(month.header.code, ResultCode.INVALID_FIELD)
            fake.now_ms = 10  # before every case
            nothing = c.export_str_page(StrPageRequest(2026, 1, StrFormat.CSV, limit=1))
            self.assertEqual((nothing.header.code, nothing.page), (ResultCode.NOTHING_TO_REPORT, b""))

    def test_a_page_shorter_than_its_header_says_is_a_protocol_error(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            if header.kind == Kind.EXPORT_STR_PAGE:
                conn.answer(header, 1, StrPageHeader(report_len=10).encode() + b"short")

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                c.export_str_page(StrPageRequest(2026, 1, StrFormat.CSV, limit=1))
            with self.assertRaises(ProtocolError):
                list(c.export_str_pages(2026, 1))

    def test_a_header_cut_short_is_a_protocol_error(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.answer(header, 1, bytes(47))

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                c.export_str_page(StrPageRequest(2026, 1, StrFormat.CSV, limit=1))


class PageLoopTest(unittest.TestCase):
    def test_the_loop_passes_back_as_of_and_the_cursor_and_stops_on_last(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            pages = []
            for page in c.export_str_pages(2026, 1, StrFormat.CSV, limit=2):
                pages.append(page)
                # A case submitted (and the clock moved) after the first
                # page: not in this report, which is as of the first page.
                fake.cases.append((NOW + 1, 5))
                fake.now_ms = NOW + 10
        self.assertEqual([p.header.rows for p in pages], [2, 2, 1])
        self.assertEqual([p.last for p in pages], [False, False, True])
        self.assertEqual({p.header.cases for p in pages}, {5})
        self.assertEqual(b"".join(p.page for p in pages), fake.report(NOW))
        # Three requests, no more after LAST: the first with as_of_ms and the
        # cursor 0, each next with the first's as_of_ms and the last cursor.
        self.assertEqual(
            [(r.year, r.month, r.format, r.limit) for r in fake.requests], [(2026, 1, StrFormat.CSV, 2)] * 3
        )
        self.assertEqual(
            [(r.as_of_ms, r.after_ms, r.after_id) for r in fake.requests],
            [(0, 0, 0), (NOW, 1_000, 7), (NOW, 1_700, 12)],
        )
        for r, (header, body) in zip(fake.requests, fake.frames):
            self.assertEqual(body, r.encode())
            self.assertEqual(body[24:32], bytes(8), "reserved")

    def test_pages_of_one_case_and_one_page_of_all_are_the_same_report(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            ones = list(c.export_str_pages(2026, 1, StrFormat.CSV, limit=1))
            (whole,) = c.export_str_pages(2026, 1, StrFormat.CSV, limit=100_000)
        self.assertEqual(len(ones), 5)
        self.assertEqual(b"".join(p.page for p in ones), whole.page)
        self.assertEqual(whole.page, fake.report(NOW))
        self.assertTrue(whole.last)
        self.assertEqual(fake.requests[-1].limit, 100_000)

    def test_the_default_limit(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            list(c.export_str_pages(2026, 1))
        (r,) = fake.requests
        self.assertEqual((r.limit, r.format), (STR_PAGE_LIMIT_DEFAULT, StrFormat.CSV))
        self.assertEqual(STR_PAGE_LIMIT_DEFAULT, 20_000)

    def test_write_str_report_writes_the_pages_and_counts(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        out = io.BytesIO()
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            written = c.write_str_report(out, 2026, 1, StrFormat.CSV, limit=2)
        self.assertEqual(written, StrWritten(cases=5, bytes=len(fake.report(NOW))))
        self.assertEqual(out.getvalue(), fake.report(NOW))
        self.assertEqual(len(fake.requests), 3)

    def test_write_str_report_to_a_raw_file_that_takes_a_little_at_a_time(self) -> None:
        class Trickle(io.RawIOBase):
            def __init__(self) -> None:
                self.got = bytearray()

            def writable(self) -> bool:
                return True

            def write(self, b) -> int:  # type: ignore[no-untyped-def,override]
                part = bytes(b[:3])
                self.got += part
                return len(part)

        fake = PagingSwitch(CASES, NOW)
        out = Trickle()
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            written = c.write_str_report(out, 2026, 1, limit=3)
        self.assertEqual(bytes(out.got), fake.report(NOW))
        self.assertEqual(written, StrWritten(5, len(fake.report(NOW))))

    def test_nothing_to_report_is_no_page_and_none(self) -> None:
        fake = PagingSwitch([], NOW)
        out = io.BytesIO()
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            self.assertEqual(list(c.export_str_pages(2026, 1)), [])
            self.assertIsNone(c.write_str_report(out, 2026, 1))
        self.assertEqual(out.getvalue(), b"", "nothing written")
        self.assertEqual(len(fake.requests), 2, "one request each")

    def test_invalid_field_raises_str_report_error(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        out = io.BytesIO()
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            for month, limit in ((1, 0), (1, 100_001), (13, 10), (0, 10)):
                with self.subTest(month=month, limit=limit):
                    with self.assertRaises(StrReportError) as e:
                        list(c.export_str_pages(2026, month, limit=limit))
                    self.assertEqual((e.exception.code, e.exception.name), (ResultCode.INVALID_FIELD, "INVALID_FIELD"))
                    self.assertEqual(e.exception.header.code, ResultCode.INVALID_FIELD)
                    self.assertIn("INVALID_FIELD", str(e.exception))
            with self.assertRaises(StrReportError):
                c.write_str_report(out, 2026, 1, limit=0)
        self.assertEqual(out.getvalue(), b"")

    def test_a_code_after_the_first_page_raises_even_nothing_to_report(self) -> None:
        for code in (ResultCode.OVERFLOW, ResultCode.NOTHING_TO_REPORT, 99):
            fake = PagingSwitch(CASES, NOW)
            inner = fake.page

            def page(r: StrPageRequest, code: int = code) -> Optional[Tuple[StrPageHeader, bytes]]:
                answer = inner(r)
                if answer is not None and not r.first:
                    return StrPageHeader(code=code, as_of_ms=NOW), b""
                return answer

            fake.page = page  # type: ignore[method-assign]
            out = io.BytesIO()
            with self.subTest(code=code):
                with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
                    with self.assertRaises(StrReportError) as e:
                        c.write_str_report(out, 2026, 1, limit=2)
                self.assertEqual(e.exception.code, code)
                self.assertEqual(len(fake.requests), 2)
                self.assertEqual(out.getvalue(), HEAD + line(1_000, 3) + line(1_000, 7), "the first page only")

    def test_a_page_that_is_not_last_and_does_not_move_the_cursor_stops_the_loop(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            r = StrPageRequest.decode(body)
            h = StrPageHeader(
                cases=1, rows=0, as_of_ms=NOW, next_after_ms=r.after_ms, next_after_id=r.after_id, report_len=0
            )
            conn.answer(header, 1, h.encode())

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                list(c.export_str_pages(2026, 1))

    def test_frame_errors_are_their_refused_errors(self) -> None:
        fake = PagingSwitch(CASES, NOW)

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            if header.kind == Kind.EXPORT_STR_PAGE and StrPageRequest.decode(body).year == 1999:
                conn.error(header.request_id, ErrorCode.FORBIDDEN, "a scoped channel reads no report")
            else:
                fake.on_frame(conn, header, body)

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(MalformedError):
                c.export_str_page(StrPageRequest(2026, 1, 3, limit=1))
            with self.assertRaises(MalformedError):
                list(c.export_str_pages(2026, 1, format=3))
            with self.assertRaises(ForbiddenError):
                c.export_str_page(StrPageRequest(1999, 1, StrFormat.CSV, limit=1))
            with self.assertRaises(ForbiddenError):
                c.write_str_report(io.BytesIO(), 1999, 1)
            c.ping()

    def test_the_generator_asks_nothing_until_iterated(self) -> None:
        fake = PagingSwitch(CASES, NOW)
        with FakeSwitch(fake.on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            pages = c.export_str_pages(2026, 1, limit=1)
            c.ping()
            self.assertEqual(fake.requests, [])
            first = next(pages)
            self.assertEqual(len(fake.requests), 1)
            self.assertEqual(first.header.rows, 1)
            pages.close()


if __name__ == "__main__":
    unittest.main()
