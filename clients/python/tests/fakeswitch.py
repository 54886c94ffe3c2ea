"""A stand-in for the switch on loopback, for the client's unit tests.

It says CHALLENGE, checks HELLO's MAC with the key it was given (AUTH_FAILED
and a close otherwise), answers with the limits it was given, then hands
every later frame to ``on_frame(conn, header, body)``, which may answer at
once or keep the header and answer later from any thread. It implements
none of the switch's rules: each test says what the switch would do.
"""

import os
import socket
import threading
from typing import Callable, List, Optional

from harbour_client.frame import ERROR_KIND, RESPONSE_BIT, FrameDecoder, Header, encode_frame, error_body
from harbour_client.kinds import Kind
from harbour_client.session import Challenge, Hello, HelloResponse

DEV_KEY = b"hksw-dev-key"


class Conn:
    """One accepted connection: writes are whole frames, safe from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def answer(self, header: Header, count: int = 0, body: bytes = b"", kind: Optional[int] = None) -> None:
        """Answers ``header``'s request (its kind | 0x8000 unless ``kind``)."""
        kind = header.kind | RESPONSE_BIT if kind is None else kind
        self.send(encode_frame(kind, count, header.request_id, body))

    def error(self, request_id: int, code: int, detail: str = "") -> None:
        self.send(encode_frame(ERROR_KIND, 0, request_id, error_body(code, detail)))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


OnFrame = Callable[[Conn, Header, bytes], None]


class FakeSwitch:
    """Listens on 127.0.0.1 (a free port); ``address`` is ``host:port``."""

    def __init__(
        self,
        on_frame: Optional[OnFrame] = None,
        *,
        key: bytes = DEV_KEY,
        channel_id: int = 1,
        roles: int = 63,
        max_batch: int = 8189,
        max_in_flight: int = 128,
        max_body: int = 1 << 20,
        server_time_ms: int = 1_767_225_600_000,
        silent: bool = False,
    ) -> None:
        self.on_frame = on_frame or (lambda conn, header, body: conn.answer(header))
        self.key = key
        self.channel_id = channel_id
        self.limits = HelloResponse(0, roles, max_batch, max_in_flight, max_body, server_time_ms)  # type: ignore[arg-type]
        #: Accept and say nothing (no CHALLENGE): a switch that hangs.
        self.silent = silent
        #: Every HELLO that verified.
        self.hellos: List[Hello] = []
        self.conns: List[Conn] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "FakeSwitch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for c in self.conns:
            c.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Conn(sock)
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Conn) -> None:
        if self.silent:
            return
        nonce = os.urandom(16)
        conn.send(encode_frame(Kind.CHALLENGE, 1, 0, Challenge(nonce, 1).encode()))
        decoder = FrameDecoder(1 << 30)
        session = False
        while True:
            try:
                data = conn.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            decoder.feed(data)
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    break
                header, body = frame
                if not session:
                    hello = Hello.decode(body)
                    if (
                        header.kind != Kind.HELLO
                        or hello.channel_id != self.channel_id
                        or not hello.verify(self.key, nonce)
                    ):
                        conn.error(header.request_id, 9, "unknown channel or wrong mac")
                        conn.close()
                        return
                    self.hellos.append(hello)
                    session = True
                    conn.answer(header, 1, self.limits.encode())
                    continue
                self.on_frame(conn, header, body)
