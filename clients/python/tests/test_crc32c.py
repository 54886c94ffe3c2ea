"""CRC-32C: known vectors, and the fast loop against the reference one."""

import os
import unittest

from harbour_client.crc32c import crc32c, crc32c_bytewise


class Crc32cTest(unittest.TestCase):
    def check(self, data: bytes, expected: int) -> None:
        self.assertEqual(crc32c(data), expected, data[:16])
        self.assertEqual(crc32c_bytewise(data), expected, data[:16])

    def test_known_vectors(self) -> None:
        # The check value of CRC-32C, and RFC 3720 (iSCSI) appendix B.4.
        cases = [
            (b"", 0x00000000),
            (b"123456789", 0xE3069283),
            (bytes(32), 0x8A9136AA),
            (b"\xff" * 32, 0x62A8AB43),
            (bytes(range(32)), 0x46DD794E),
            (bytes(range(31, -1, -1)), 0x113FDB5C),
        ]
        for data, expected in cases:
            with self.subTest(data=data[:12]):
                self.check(data, expected)

    def test_the_fast_loop_agrees_with_the_reference_at_every_length(self) -> None:
        for n in list(range(0, 40)) + [255, 256, 1023, 4097]:
            data = os.urandom(n)
            self.assertEqual(crc32c(data), crc32c_bytewise(data), n)

    def test_continues_a_running_crc(self) -> None:
        data = os.urandom(1000)
        for cut in (0, 1, 7, 8, 9, 500, 1000):
            self.assertEqual(crc32c(data[cut:], crc32c(data[:cut])), crc32c(data), cut)

    def test_takes_any_bytes_like(self) -> None:
        self.assertEqual(crc32c(bytearray(b"123456789")), 0xE3069283)
        self.assertEqual(crc32c(memoryview(b"xx123456789")[2:]), 0xE3069283)


if __name__ == "__main__":
    unittest.main()
