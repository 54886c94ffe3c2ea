"""The handshake: HELLO's MAC against vectors computed apart from this
code, and the layouts of CHALLENGE, HELLO and its answer."""

import unittest

from harbour_client.frame import Role
from harbour_client.session import Challenge, Hello, HelloResponse, hello_mac

DEV_KEY = b"hksw-dev-key"

# HMAC-SHA256(key, "HKSW-HELLO" || server_nonce || client_nonce || channel_id
# as u32 LE), computed with openssl, not with this package:
#   printf 'HKSW-HELLO<server nonce><client nonce><channel id LE>' \
#     | openssl dgst -sha256 -hmac KEY
# The first is also protocol::session::tests's KNOWN_MAC, so the Rust and the
# Python client agree on it.
VECTORS = [
    # key, server nonce, client nonce, channel id, MAC
    (DEV_KEY, b"\x01" * 16, b"\x02" * 16, 1, "1dbc8179f5c4fe18c879e1ed3b5e6559085c7e0520f22d6261990ae002c6b70e"),
    (
        b"a-key-of-at-least-32-bytes-long-ok",
        bytes(range(16)),
        bytes(range(16, 32)),
        0x01020304,
        "91e47d50af85eae9b0980669a399ed5a688d621b77b297eecb5a2a4cf602ba68",
    ),
]


class MacTest(unittest.TestCase):
    def test_known_vectors(self) -> None:
        for key, server_nonce, client_nonce, channel_id, mac in VECTORS:
            with self.subTest(channel_id=channel_id):
                self.assertEqual(hello_mac(key, server_nonce, client_nonce, channel_id).hex(), mac)

    def test_hello_verifies_only_its_own_challenge_key_and_channel(self) -> None:
        nonce = b"\x01" * 16
        hello = Hello.new(1, DEV_KEY, nonce, b"\x02" * 16)
        self.assertTrue(hello.verify(DEV_KEY, nonce))
        self.assertFalse(hello.verify(b"hksw-dev-kez", nonce), "wrong key")
        self.assertFalse(hello.verify(DEV_KEY, b"\x09" * 16), "another challenge (a replayed HELLO)")
        other = Hello(2, hello.client_nonce, hello.mac)
        self.assertFalse(other.verify(DEV_KEY, nonce), "the MAC covers the channel id")

    def test_nonces_are_16_bytes(self) -> None:
        with self.assertRaises(ValueError):
            hello_mac(DEV_KEY, bytes(15), bytes(16), 1)


class LayoutTest(unittest.TestCase):
    def test_hello_body(self) -> None:
        hello = Hello.new(0x01020304, DEV_KEY, b"\x01" * 16, bytes(range(16)))
        body = hello.encode()
        self.assertEqual(len(body), 56)
        self.assertEqual(body[0:4], b"\x04\x03\x02\x01", "channel_id LE")
        self.assertEqual(body[4:8], bytes(4), "reserved")
        self.assertEqual(body[8:24], bytes(range(16)), "client nonce")
        self.assertEqual(body[24:56], hello.mac)
        self.assertEqual(Hello.decode(body), hello)

    def test_challenge_body(self) -> None:
        body = bytes(range(16)) + b"\x01\x00" + bytes(14)
        c = Challenge.decode(body)
        self.assertEqual(c, Challenge(bytes(range(16)), 1))
        self.assertEqual(c.encode(), body)
        with self.assertRaises(ValueError):
            Challenge.decode(body[:31])

    def test_hello_answer_body(self) -> None:
        body = (
            (0).to_bytes(2, "little")
            + (63).to_bytes(2, "little")
            + (8189).to_bytes(4, "little")
            + (128).to_bytes(4, "little")
            + (1 << 20).to_bytes(4, "little")
            + (1_767_225_600_000).to_bytes(8, "little")
        )
        r = HelloResponse.decode(body)
        self.assertEqual(r.code, 0)
        self.assertEqual(
            r.roles, Role.ACCOUNTS | Role.PAYMENTS | Role.LENDING | Role.TREASURY | Role.OPERATOR | Role.REPORTING
        )
        self.assertEqual((r.max_batch, r.max_in_flight, r.max_body), (8189, 128, 1 << 20))
        self.assertEqual(r.server_time_ms, 1_767_225_600_000)
        self.assertEqual(r.encode(), body)


if __name__ == "__main__":
    unittest.main()
