"""The client against a stand-in switch (``fakeswitch``): the handshake,
answers matched by request id in any order, the in-flight limit, batches
split at max_batch, typed errors, timeouts and closed connections.
No real switch is needed."""

import json
import socket
import threading
import time
import unittest
from typing import List, Tuple

from harbour_client import (
    Account,
    AuthFailedError,
    BusyError,
    Client,
    ConnectionClosedError,
    ForbiddenError,
    Id,
    Kind,
    NotLeaderError,
    ProtocolError,
    RecordResult,
    RefusedError,
    RequestTimeoutError,
    ResultCode,
    Role,
    StrFormat,
    StrHeader,
    Transfer,
    TransferResult,
    TransferState,
    decode_all,
    encode_all,
    encode_frame,
)
from harbour_client.frame import ErrorCode, Header
from harbour_client.records import ClusterChange, ClusterOp

from .fakeswitch import DEV_KEY, Conn, FakeSwitch


def lookups_answered_with_their_ids(conn: Conn, header: Header, body: bytes) -> None:
    """LOOKUP_TRANSFERS: each id answered POSTED; anything else answered empty."""
    if header.kind == Kind.LOOKUP_TRANSFERS:
        results = [TransferResult(transfer_id=i.id, state=TransferState.POSTED) for i in decode_all(Id, body)]
        conn.answer(header, len(results), encode_all(results))
    else:
        conn.answer(header)


class HandshakeTest(unittest.TestCase):
    def test_hello_proves_the_key_and_the_limits_are_read(self) -> None:
        with FakeSwitch(max_batch=3, max_in_flight=4, roles=Role.PAYMENTS | Role.REPORTING, server_time_ms=123) as sw:
            with Client.connect(sw.address, 1, DEV_KEY) as c:
                self.assertEqual(len(sw.hellos), 1)
                self.assertEqual(sw.hellos[0].channel_id, 1)
                self.assertEqual((c.max_batch, c.max_in_flight, c.server_time_ms), (3, 4, 123))
                self.assertEqual(c.roles, Role.PAYMENTS | Role.REPORTING)
                c.ping()

    def test_a_wrong_key_is_auth_failed(self) -> None:
        with FakeSwitch() as sw:
            with self.assertRaises(AuthFailedError) as e:
                Client.connect(sw.address, 1, b"not-the-key")
            self.assertEqual(e.exception.name, "AUTH_FAILED")
            self.assertTrue(e.exception.closes)

    def test_a_key_given_as_text_is_its_utf8_bytes(self) -> None:
        with FakeSwitch() as sw:
            Client.connect(sw.address, 1, "hksw-dev-key").close()

    def test_a_switch_that_says_nothing_times_out(self) -> None:
        with FakeSwitch(silent=True) as sw:
            started = time.monotonic()
            with self.assertRaises(RequestTimeoutError):
                Client.connect(sw.address, 1, DEV_KEY, connect_timeout=0.3)
            self.assertLess(time.monotonic() - started, 2.0)

    def test_nobody_listening_is_connection_closed(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(ConnectionClosedError):
            Client.connect(("127.0.0.1", port), 1, DEV_KEY, connect_timeout=1.0)


class PipeliningTest(unittest.TestCase):
    def test_answers_in_reverse_order_are_matched_by_request_id(self) -> None:
        held: List[Tuple[Header, bytes]] = []

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            held.append((header, body))
            if len(held) == 10:
                for h, b in reversed(held):
                    lookups_answered_with_their_ids(conn, h, b)

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=5) as c:
            pending = [c.send(Kind.LOOKUP_TRANSFERS, [Id(1000 + i)]) for i in range(10)]
            self.assertEqual(len({p.request_id for p in pending}), 10)
            for i, p in enumerate(pending):
                (r,) = p.result()
                self.assertEqual(r.transfer_id, 1000 + i)
            self.assertEqual(c.in_flight, 0)

    def test_never_more_than_max_in_flight_unanswered(self) -> None:
        lock = threading.Lock()
        seen = {"now": 0, "most": 0}

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            with lock:
                seen["now"] += 1
                seen["most"] = max(seen["most"], seen["now"])

            def later() -> None:
                with lock:
                    seen["now"] -= 1
                conn.answer(header)

            threading.Timer(0.05, later).start()

        with FakeSwitch(on_frame, max_in_flight=4) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=10) as c:
            pending = [c.send(Kind.PING) for _ in range(40)]
            for p in pending:
                self.assertIsNone(p.result())
        self.assertEqual(seen["most"], 4, "four at once: pipelined, and never more")

    def test_many_threads_share_one_connection(self) -> None:
        with FakeSwitch(lookups_answered_with_their_ids, max_in_flight=8) as sw:
            with Client.connect(sw.address, 1, DEV_KEY, timeout=10) as c:
                errors: List[BaseException] = []

                def work(base: int) -> None:
                    try:
                        for i in range(50):
                            (r,) = c.lookup_transfers([base + i])
                            assert r.transfer_id == base + i, (r.transfer_id, base + i)
                    except BaseException as e:  # noqa: B902 - reported below
                        errors.append(e)

                threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])

    def test_typed_calls_split_at_max_batch_and_keep_the_order(self) -> None:
        counts: List[int] = []

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            counts.append(header.count)
            accounts = decode_all(Account, body)
            results = [RecordResult(key=a.account_id, code=ResultCode.OK) for a in accounts]
            conn.answer(header, len(results), encode_all(results))

        with FakeSwitch(on_frame, max_batch=3) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            results = c.create_accounts([Account(account_id=2000 + i, home_country=344) for i in range(10)])
            self.assertEqual([r.key for r in results], list(range(2000, 2010)))
            self.assertEqual(sorted(counts), [1, 3, 3, 3])
            counts.clear()
            self.assertEqual(c.create_accounts([]), [])
            self.assertEqual(counts, [0], "an empty list is one request of count 0")

    def test_answers_that_arrive_a_byte_at_a_time(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            (i,) = decode_all(Id, body)
            frame = encode_frame(header.kind | 0x8000, 1, header.request_id, TransferResult(transfer_id=i.id).encode())
            for b in frame:
                conn.send(bytes([b]))

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=5) as c:
            (r,) = c.lookup_transfers([77])
            self.assertEqual(r.transfer_id, 77)


class ErrorTest(unittest.TestCase):
    def test_error_frames_are_typed_exceptions(self) -> None:
        refusals = {
            Kind.SUBMIT_TRANSFERS: (ErrorCode.BUSY, "shard queue full; nothing applied"),
            Kind.LOOKUP_BALANCES: (ErrorCode.NOT_LEADER, "10.0.0.2:7400"),
            Kind.CREATE_ACCOUNTS: (ErrorCode.NOT_LEADER, ""),
            Kind.FX_QUOTE: (ErrorCode.FORBIDDEN, "FX_QUOTE needs role mask 0x2"),
            Kind.LOOKUP_LOANS: (99, "a code from a newer switch"),
        }

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            code, detail = refusals[Kind(header.kind)]
            conn.error(header.request_id, code, detail)

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(BusyError) as busy:
                c.submit_transfers([Transfer(transfer_id=1)])
            self.assertEqual((busy.exception.name, busy.exception.code), ("BUSY", ErrorCode.BUSY))
            self.assertEqual(busy.exception.detail, "shard queue full; nothing applied")
            self.assertFalse(busy.exception.closes)
            with self.assertRaises(NotLeaderError) as leader:
                c.lookup_balances([])
            self.assertEqual(leader.exception.leader, "10.0.0.2:7400")
            with self.assertRaises(NotLeaderError) as unknown:
                c.create_accounts([])
            self.assertIsNone(unknown.exception.leader, "an election is under way")
            with self.assertRaises(ForbiddenError):
                c.fx_quote([])
            with self.assertRaises(RefusedError) as other:
                c.lookup_loans([])
            self.assertEqual((other.exception.code, other.exception.name), (99, "?"))
            self.assertFalse(c.closed, "the connection stays open after each")

    def test_an_error_about_no_request_fails_every_request(self) -> None:
        held: List[Header] = []

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            held.append(header)
            if len(held) == 3:
                conn.error(0, ErrorCode.BUSY, "connection limit reached")
                conn.close()

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=5) as c:
            pending = [c.send(Kind.PING) for _ in range(3)]
            for p in pending:
                with self.assertRaises(BusyError):
                    p.result()

    def test_a_timeout_keeps_the_place_until_the_answer_comes(self) -> None:
        held: List[Tuple[Conn, Header]] = []

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            held.append((conn, header))
            if len(held) > 1:
                conn.answer(header)  # Only the first is late.

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            started = time.monotonic()
            with self.assertRaises(RequestTimeoutError):
                c.ping(timeout=0.2)
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertIsInstance(RequestTimeoutError("x"), TimeoutError)
            self.assertEqual(c.in_flight, 1, "the switch still counts it")
            conn, header = held[0]
            conn.answer(header)
            deadline = time.monotonic() + 2
            while c.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(c.in_flight, 0)
            # An answer for a request nobody waits for is dropped quietly.
            conn.answer(header)
            c.ping(timeout=2)

    def test_a_closed_connection_fails_what_waits_and_what_comes(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.close()

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=5) as c:
            with self.assertRaises(ConnectionClosedError):
                c.ping()
            with self.assertRaises(ConnectionClosedError):
                c.ping()
            self.assertTrue(c.closed)

    def test_close_fails_what_waits(self) -> None:
        with FakeSwitch(lambda conn, header, body: None) as sw:
            c = Client.connect(sw.address, 1, DEV_KEY, timeout=5)
            p = c.send(Kind.PING)
            c.close()
            with self.assertRaises(ConnectionClosedError):
                p.result()
            with self.assertRaises(ConnectionClosedError):
                c.send(Kind.PING)

    def test_garbage_from_the_switch_ends_the_connection(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY, timeout=5) as c:
            with self.assertRaises(ConnectionClosedError) as e:
                c.ping()
            self.assertIsInstance(e.exception.__cause__, ProtocolError)

    def test_an_answer_of_another_kind_is_a_protocol_error(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.answer(header, kind=Kind.LOOKUP_LOANS | 0x8000)

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                c.ping()

    def test_an_answer_that_is_not_whole_records_is_a_protocol_error(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.answer(header, 2, bytes(64))

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                c.lookup_transfers([1, 2])

    def test_requests_are_checked_before_they_leave(self) -> None:
        with FakeSwitch(max_batch=2) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(TypeError):
                c.send(Kind.SUBMIT_TRANSFERS, [Account()])
            with self.assertRaises(ValueError):
                c.send(Kind.LOOKUP_TRANSFERS, [Id(1), Id(2), Id(3)])
            with self.assertRaises(ValueError):
                c.send(Kind.PING, [Id(1)])
            with self.assertRaises(ValueError):
                c.send(0x7777)
            with self.assertRaises(ValueError):
                c.submit_transfers([Transfer(transfer_id=-1)])


class AnswerShapesTest(unittest.TestCase):
    def test_str_json_and_backup_answers(self) -> None:
        report = b"transfer_id,submitted_at\r\n7,2026-01-01T00:00:00.000Z\r\n"

        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            if header.kind == Kind.EXPORT_STR:
                head = StrHeader(code=ResultCode.OK, format=StrFormat.CSV, report_len=len(report))
                conn.answer(header, 1, head.encode() + report)
            elif header.kind == Kind.CLUSTER_STATUS:
                conn.answer(header, 1, json.dumps({"node": 1, "role": "Leader"}).encode())
            elif header.kind == Kind.CLUSTER_CHANGE:
                change = ClusterChange.decode(body)
                conn.answer(header, 1, json.dumps({"added": change.node_id, "channel": change.channel}).encode())
            elif header.kind == Kind.BACKUP:
                conn.answer(header, 1, b"\x00snapshot\xff")
            elif header.kind == Kind.RELOAD_CHANNELS:
                conn.answer(header, 1, b'{"reloaded": true, "channels": 3}')

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            got = c.export_str(2026, 1, StrFormat.CSV)
            self.assertEqual(got.header.code, ResultCode.OK)
            self.assertEqual(got.report, report)
            self.assertTrue(got.text.startswith("transfer_id,"))
            self.assertEqual(c.cluster_status(), {"node": 1, "role": "Leader"})
            change = ClusterChange(node_id=4, op=ClusterOp.ADD, channel="127.0.0.1:7404", peer="127.0.0.1:7504")
            self.assertEqual(c.cluster_change(change), {"added": 4, "channel": "127.0.0.1:7404"})
            self.assertEqual(c.backup(), b"\x00snapshot\xff")
            self.assertEqual(c.reload_channels(), {"reloaded": True, "channels": 3})

    def test_a_report_shorter_than_its_header_says_is_a_protocol_error(self) -> None:
        def on_frame(conn: Conn, header: Header, body: bytes) -> None:
            conn.answer(header, 1, StrHeader(report_len=10).encode() + b"short")

        with FakeSwitch(on_frame) as sw, Client.connect(sw.address, 1, DEV_KEY) as c:
            with self.assertRaises(ProtocolError):
                c.export_str(2026, 1)


if __name__ == "__main__":
    unittest.main()
