"""CRC-32C (Castagnoli), the checksum of every frame's header and body.

Pure Python, table driven: the standard library's ``zlib.crc32`` is the
IEEE polynomial, not Castagnoli, so it cannot be used. ``crc32c`` reads
eight bytes per step ("slicing by 8", eight 256-entry tables); ``crc32c_bytewise``
is the textbook one-table loop, kept as the reference the fast one is
tested against. Both take a previous value to continue a running CRC:
``crc32c(b, crc32c(a)) == crc32c(a + b)``.

Speed: about 15 MB/s on CPython (1.4 times the bytewise loop), so a full
1 MiB frame costs some 70 ms on each side of the wire; only a very large
EXPORT_STR or BACKUP answer (up to 256 MiB) makes it noticeable.
"""

import struct
from typing import List, Union

__all__ = ["POLYNOMIAL", "crc32c", "crc32c_bytewise"]

#: The Castagnoli polynomial, bit-reflected (0x1EDC6F41 reversed).
POLYNOMIAL = 0x82F63B78


def _tables() -> List[List[int]]:
    """T[0] is the byte table; T[k][b] is the CRC of byte b followed by k zero bytes."""
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ POLYNOMIAL if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


_T = _tables()
_T0 = _T[0]
_EIGHT = struct.Struct("<II")


def crc32c_bytewise(data: Union[bytes, bytearray, memoryview], crc: int = 0) -> int:
    """CRC-32C of ``data``, one byte at a time (the reference implementation)."""
    c = crc ^ 0xFFFFFFFF
    t0 = _T0
    for b in bytes(data):
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data: Union[bytes, bytearray, memoryview], crc: int = 0) -> int:
    """CRC-32C of ``data`` (bytes-like), continuing from ``crc`` (0 to start)."""
    view = memoryview(data).cast("B")
    n = len(view)
    whole = n - n % 8
    c = crc ^ 0xFFFFFFFF
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    for lo, hi in _EIGHT.iter_unpack(view[:whole]):
        lo ^= c
        c = (
            t7[lo & 0xFF]
            ^ t6[(lo >> 8) & 0xFF]
            ^ t5[(lo >> 16) & 0xFF]
            ^ t4[lo >> 24]
            ^ t3[hi & 0xFF]
            ^ t2[(hi >> 8) & 0xFF]
            ^ t1[(hi >> 16) & 0xFF]
            ^ t0[hi >> 24]
        )
    for b in view[whole:]:
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
