"""Frames: the worked example of docs/protocol.md byte for byte, the
decoder's checks in the contract's order, and ERROR bodies."""

import os
import unittest
from typing import List, Optional, Tuple, Union

from harbour_client.crc32c import crc32c
from harbour_client.frame import (
    ERROR_KIND,
    HEADER_SIZE,
    RESPONSE_BIT,
    ErrorCode,
    FrameDecoder,
    FrameError,
    Header,
    encode_frame,
    error_body,
    parse_error_body,
)
from harbour_client.kinds import Kind
from harbour_client.records import Transfer, TransferResult, TransferState, encode_all

# docs/protocol.md, "Worked example": a deposit of HK$1,000.00 from
# SETTLEMENT_IN (4) into account 1024, transfer id 1, request id 7.
WORKED_REQUEST = """
48 4b 53 57 01 00 11 00 40 00 00 00 01 00 00 00
07 00 00 00 00 00 00 00 3b d8 a7 46 79 53 de da
01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
04 00 00 00 00 00 00 00 00 04 00 00 00 00 00 00
a0 86 01 00 00 00 00 00 58 01 58 01 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
"""

WORKED_ANSWER = """
48 4b 53 57 01 00 11 80 40 00 00 00 01 00 00 00
07 00 00 00 00 00 00 00 13 c5 44 a5 11 bd 5c ae
01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 01 00 00 00 00 00 a0 86 01 00 00 00 00 00
a0 86 01 00 00 00 00 00 00 ca 9a 3b 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
"""

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "protocol.md")


def unhex(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


def hex_lines(data: bytes) -> str:
    """The doc's layout: 16 bytes a line, lower-case, space-separated."""
    return "\n".join(data[i : i + 16].hex(" ") for i in range(0, len(data), 16))


def worked_frames() -> Tuple[bytes, bytes]:
    transfer = Transfer(
        transfer_id=1, debit_account=4, credit_account=1024, amount=100_000, debit_currency=344, credit_currency=344
    )
    request = encode_frame(Kind.SUBMIT_TRANSFERS, 1, 7, encode_all([transfer]))
    result = TransferResult(
        transfer_id=1,
        code=0,
        state=TransferState.POSTED,
        holds=0,
        debit_amount=100_000,
        credit_amount=100_000,
        rate_e9=1_000_000_000,
    )
    answer = encode_frame(Kind.SUBMIT_TRANSFERS | RESPONSE_BIT, 1, 7, encode_all([result]))
    return request, answer


def frame(kind: int, count: int, request_id: int, body: bytes = b"") -> bytes:
    return encode_frame(kind, count, request_id, body)


def decode(data: bytes, max_body: int = 1024) -> Union[Optional[int], Tuple[ErrorCode, int]]:
    """What the decoder makes of ``data``: the kind of a whole frame, None
    (wait for more), or (code, request id) of the failed check."""
    d = FrameDecoder(max_body)
    d.feed(data)
    try:
        f = d.next_frame()
    except FrameError as e:
        return e.code, e.request_id
    return None if f is None else f[0].kind


class WorkedExampleTest(unittest.TestCase):
    def test_request_and_answer_are_the_docs_bytes(self) -> None:
        request, answer = worked_frames()
        self.assertEqual(request.hex(), unhex(WORKED_REQUEST).hex())
        self.assertEqual(answer.hex(), unhex(WORKED_ANSWER).hex())

    def test_the_header_fields_the_doc_names(self) -> None:
        request, answer = worked_frames()
        self.assertEqual(int.from_bytes(request[24:28], "little"), 0x46A7D83B, "body CRC")
        self.assertEqual(int.from_bytes(request[28:32], "little"), 0xDADE5379, "header CRC")
        self.assertEqual(crc32c(request[32:]), 0x46A7D83B)
        self.assertEqual(crc32c(request[:28]), 0xDADE5379)
        self.assertEqual(len(request), HEADER_SIZE + 64)
        self.assertEqual(answer[6:8], b"\x11\x80")

    def test_the_doc_still_shows_them(self) -> None:
        # As protocol::frame::worked_example does: the page cannot drift.
        if not os.path.exists(DOC):
            self.skipTest("docs/protocol.md is not beside this copy of the client")
        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        request, answer = worked_frames()
        self.assertIn(hex_lines(request), doc)
        self.assertIn(hex_lines(answer), doc)

    def test_decoding_the_answer_gives_the_result(self) -> None:
        _, answer = worked_frames()
        d = FrameDecoder(1 << 20)
        d.feed(answer)
        header, body = d.next_frame()  # type: ignore[misc]
        self.assertEqual(header, Header(kind=0x8011, body_len=64, count=1, request_id=7))
        result = TransferResult.decode(body)
        self.assertEqual(result.state, TransferState.POSTED)
        self.assertEqual(result.rate_e9, 1_000_000_000)


class DecoderTest(unittest.TestCase):
    def test_checks_in_the_contracts_order(self) -> None:
        good = frame(Kind.PING, 0, 9)
        self.assertEqual(decode(good), Kind.PING)
        # Partial frames wait.
        self.assertIsNone(decode(good[:31]))
        self.assertIsNone(decode(good[:3]))
        # Garbage is refused as soon as four bytes show it, with request id 0.
        self.assertEqual(decode(b"GET / HTTP/1.1"), (ErrorCode.BAD_MAGIC, 0))
        self.assertEqual(decode(b"GET "), (ErrorCode.BAD_MAGIC, 0))
        # Magic before version.
        v = bytearray(good)
        v[4] = 2
        v[0] = ord("X")
        self.assertEqual(decode(bytes(v)), (ErrorCode.BAD_MAGIC, 0))
        v[0] = ord("H")
        self.assertEqual(decode(bytes(v)), (ErrorCode.BAD_VERSION, 9))
        # A header CRC failure reports the request id as received.
        c = bytearray(good)
        c[20] ^= 1
        self.assertEqual(decode(bytes(c)), (ErrorCode.BAD_CHECKSUM, 9 ^ (1 << 32)))
        # body_len against max_body before the body has arrived.
        big = frame(Kind.SUBMIT_TRANSFERS, 1, 3, bytes([1]) * 64)
        self.assertEqual(decode(big[:32], max_body=63), (ErrorCode.FRAME_TOO_LARGE, 3))
        self.assertIsNone(decode(big[:40], max_body=64))
        bad_body = bytearray(big)
        bad_body[40] ^= 1
        self.assertEqual(decode(bytes(bad_body), max_body=64), (ErrorCode.BAD_CHECKSUM, 3))
        # An empty body must claim CRC 0.
        e = bytearray(good)
        e[24] = 1
        e[28:32] = crc32c(bytes(e[:28])).to_bytes(4, "little")
        self.assertEqual(decode(bytes(e)), (ErrorCode.BAD_CHECKSUM, 9))

    def test_takes_frames_off_one_at_a_time_however_bytes_arrive(self) -> None:
        stream = frame(Kind.PING, 0, 1) + frame(Kind.LOOKUP_TRANSFERS, 1, 2, bytes([7]) * 16) + frame(Kind.PING, 0, 3)
        for step in (1, 5, 31, 32, 33, 1000):
            d = FrameDecoder(1024)
            got: List[Tuple[int, int, bytes]] = []
            for i in range(0, len(stream), step):
                d.feed(stream[i : i + step])
                while True:
                    f = d.next_frame()
                    if f is None:
                        break
                    got.append((f[0].request_id, f[0].count, f[1]))
            self.assertEqual(got, [(1, 0, b""), (2, 1, bytes([7]) * 16), (3, 0, b"")], step)
            self.assertEqual(d.buffered, 0)

    def test_a_partial_frame_waits_and_keeps_its_bytes(self) -> None:
        d = FrameDecoder(1024)
        d.feed(frame(Kind.PING, 0, 1) + frame(Kind.PING, 0, 2)[:10])
        self.assertIsNotNone(d.next_frame())
        self.assertIsNone(d.next_frame())
        self.assertEqual(d.buffered, 10)

    def test_header_layout(self) -> None:
        f = frame(0x1234, 0x05060708, 0x1122334455667788, b"abc")
        self.assertEqual(f[0:4], b"HKSW")
        self.assertEqual(f[4:6], b"\x01\x00")
        self.assertEqual(f[6:8], b"\x34\x12")
        self.assertEqual(f[8:12], b"\x03\x00\x00\x00")
        self.assertEqual(f[12:16], b"\x08\x07\x06\x05")
        self.assertEqual(f[16:24], bytes.fromhex("8877665544332211"))
        self.assertEqual(f[24:28], crc32c(b"abc").to_bytes(4, "little"))
        self.assertEqual(f[28:32], crc32c(f[:28]).to_bytes(4, "little"))
        self.assertEqual(frame(Kind.PING, 0, 1)[24:28], bytes(4), "an empty body's CRC is 0")


class ErrorBodyTest(unittest.TestCase):
    def test_round_trips(self) -> None:
        body = error_body(ErrorCode.FORBIDDEN, "role PAYMENTS needed")
        self.assertEqual(body[:4], b"\x0a\x00\x14\x00")
        self.assertEqual(parse_error_body(body), (ErrorCode.FORBIDDEN, "role PAYMENTS needed"))
        self.assertEqual(parse_error_body(error_body(14, "10.0.0.2:7400")), (ErrorCode.NOT_LEADER, "10.0.0.2:7400"))
        self.assertEqual(parse_error_body(error_body(99, "")), (99, ""), "an unknown code stays a number")
        self.assertIsNone(parse_error_body(b"\x01"))
        self.assertIsNone(parse_error_body(b"\x01\x00\x05\x00abc"), "shorter than it claims")

    def test_detail_is_cut_to_1024_bytes_on_a_character_boundary(self) -> None:
        body = error_body(ErrorCode.BUSY, "é" * 600)
        code, detail = parse_error_body(body)  # type: ignore[misc]
        self.assertEqual(code, ErrorCode.BUSY)
        self.assertEqual(detail, "é" * 512)

    def test_codes_and_which_close(self) -> None:
        self.assertEqual([int(c) for c in ErrorCode], list(range(1, 15)))
        closing = {c.name for c in ErrorCode if c.closes}
        self.assertEqual(
            closing,
            {"BAD_MAGIC", "BAD_VERSION", "BAD_CHECKSUM", "FRAME_TOO_LARGE", "NOT_AUTHENTICATED", "AUTH_FAILED"},
        )
        self.assertEqual(ERROR_KIND, 0xFFFF)


if __name__ == "__main__":
    unittest.main()
