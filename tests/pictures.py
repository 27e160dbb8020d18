"""Pictures that attack a predictor, and the memory they would cost a process."""

import struct
import zlib
from pathlib import Path

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The eight bytes every PNG file starts with."""


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed row by row (never whole in memory here): a
    12000x12000 one is 18 KB on the wire and 144 MB decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    return PNG_SIGNATURE + chunks


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident memory (VmHWM): freed memory cannot hide a balloon."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc here to read the API's memory from")
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1])
