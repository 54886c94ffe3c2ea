"""The session handshake (contract §2): CHALLENGE, HELLO and its answer
(``protocol/src/session.rs``).

On connect the switch sends a fresh 16-byte nonce; the channel proves it
holds its key with
``HMAC-SHA256(key, "HKSW-HELLO" || server_nonce || client_nonce || channel_id as u32 LE)``
and learns its roles and the session's limits from the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from .frame import Role

__all__ = [
    "CHALLENGE_SIZE",
    "HELLO_SIZE",
    "HELLO_RESPONSE_SIZE",
    "HELLO_LABEL",
    "Challenge",
    "Hello",
    "HelloResponse",
    "hello_mac",
]

#: CHALLENGE body size.
CHALLENGE_SIZE = 32
#: HELLO body size.
HELLO_SIZE = 56
#: HELLO answer body size.
HELLO_RESPONSE_SIZE = 24
#: The label the MAC starts with.
HELLO_LABEL = b"HKSW-HELLO"

_CHALLENGE = struct.Struct("<16sH14x")
_HELLO = struct.Struct("<I4x16s32s")
_HELLO_RESPONSE = struct.Struct("<HHIIIQ")
_CHANNEL_ID = struct.Struct("<I")


def hello_mac(key: bytes, server_nonce: bytes, client_nonce: bytes, channel_id: int) -> bytes:
    """``HMAC-SHA256(key, "HKSW-HELLO" || server_nonce || client_nonce || channel_id LE)``."""
    if len(server_nonce) != 16 or len(client_nonce) != 16:
        raise ValueError("nonces are 16 bytes")
    message = HELLO_LABEL + bytes(server_nonce) + bytes(client_nonce) + _CHANNEL_ID.pack(channel_id)
    return hmac.new(bytes(key), message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Challenge:
    """CHALLENGE (kind 0x0100, 32 bytes): the switch's nonce and version."""

    server_nonce: bytes
    server_version: int

    def encode(self) -> bytes:
        return _CHALLENGE.pack(self.server_nonce, self.server_version)

    @classmethod
    def decode(cls, body: bytes) -> Challenge:
        if len(body) != CHALLENGE_SIZE:
            raise ValueError(f"CHALLENGE is {CHALLENGE_SIZE} bytes, not {len(body)}")
        nonce, version = _CHALLENGE.unpack(body)
        return cls(nonce, version)


@dataclass(frozen=True)
class Hello:
    """HELLO (kind 0x0101, 56 bytes): which channel, and the proof."""

    channel_id: int
    client_nonce: bytes
    mac: bytes

    @classmethod
    def new(cls, channel_id: int, key: bytes, server_nonce: bytes, client_nonce: bytes) -> Hello:
        """A HELLO answering ``server_nonce`` with ``key``."""
        return cls(channel_id, bytes(client_nonce), hello_mac(key, server_nonce, client_nonce, channel_id))

    def encode(self) -> bytes:
        return _HELLO.pack(self.channel_id, self.client_nonce, self.mac)

    @classmethod
    def decode(cls, body: bytes) -> Hello:
        if len(body) != HELLO_SIZE:
            raise ValueError(f"HELLO is {HELLO_SIZE} bytes, not {len(body)}")
        return cls(*_HELLO.unpack(body))

    def verify(self, key: bytes, server_nonce: bytes) -> bool:
        """Whether the MAC proves ``key`` for this challenge (constant time)."""
        expected = hello_mac(key, server_nonce, self.client_nonce, self.channel_id)
        return hmac.compare_digest(expected, self.mac)


@dataclass(frozen=True)
class HelloResponse:
    """The HELLO answer (kind 0x8101, 24 bytes): the channel's roles and the
    session's limits."""

    #: 0: the session is open.
    code: int
    roles: Role
    #: Records per request, at most.
    max_batch: int
    #: Unanswered requests per connection, at most.
    max_in_flight: int
    #: Bytes of a request's body, at most.
    max_body: int
    #: The switch's clock (the manual clock's time in tests).
    server_time_ms: int

    def encode(self) -> bytes:
        return _HELLO_RESPONSE.pack(
            self.code, int(self.roles), self.max_batch, self.max_in_flight, self.max_body, self.server_time_ms
        )

    @classmethod
    def decode(cls, body: bytes) -> HelloResponse:
        if len(body) != HELLO_RESPONSE_SIZE:
            raise ValueError(f"the HELLO answer is {HELLO_RESPONSE_SIZE} bytes, not {len(body)}")
        code, roles, max_batch, max_in_flight, max_body, server_time_ms = _HELLO_RESPONSE.unpack(body)
        return cls(code, Role(roles), max_batch, max_in_flight, max_body, server_time_ms)
