"""Pictures that attack a predictor, and the memory they would cost a process."""

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

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


def decode_seconds(png: bytes) -> float:
    """Seconds this machine takes now to decode ``png`` in full and make it grey, as a
    predictor that trusted it would: the baseline a refusal's speed is judged against."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(png)) as picture:
            picture.convert("L")
    return time.perf_counter() - started
