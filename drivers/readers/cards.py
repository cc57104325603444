"""Card data as a reader reports it (raw bits + format) -> the credential id the directory knows.

Pure functions, no I/O. A 26-bit Wiegand read is decoded as the open H10301
format (even parity, 8-bit facility, 16-bit card number, odd parity) and its
parity is checked: a bad parity is a misread, never a credential. Any other
bit length is passed on as ``raw<bits>:<hex>`` so the directory can still name
it; ASCII reads (keypad-less QR and magstripe readers) are passed as text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    """One decoded read: ``credential`` is None when the read is not usable (``problem`` says why)."""

    format: str  # h10301 | raw | ascii
    bits: int
    credential: str | None
    problem: str | None = None


def _bits_of(data: bytes, length: int) -> list[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(length)]


def _value(bits: list[int]) -> int:
    out = 0
    for b in bits:
        out = (out << 1) | b
    return out


def h10301(data: bytes, length: int = 26) -> Card:
    """Decode a 26-bit H10301 read (MSB first, as OSDP carries Wiegand bits)."""
    if length != 26 or len(data) < 4:
        return Card("h10301", length, None, f"H10301 needs 26 bits, got {length}")
    bits = _bits_of(data, 26)
    even_ok = sum(bits[0:13]) % 2 == 0
    odd_ok = sum(bits[13:26]) % 2 == 1
    if not (even_ok and odd_ok):
        return Card("h10301", 26, None, "parity error (misread or a forged bit pattern)")
    facility, number = _value(bits[1:9]), _value(bits[9:25])
    return Card("h10301", 26, f"{facility}:{number}")


def encode_h10301(facility: int, number: int) -> bytes:
    """The 26 bits (padded to 4 bytes) a reader sends for ``facility``:``number`` (for tests, simulators)."""
    if not (0 <= facility < 256 and 0 <= number < 65536):
        raise ValueError("H10301: facility 0..255, number 0..65535")
    body = [(facility >> (7 - i)) & 1 for i in range(8)] + [(number >> (15 - i)) & 1 for i in range(16)]
    even = sum(body[:12]) % 2
    odd = 1 - sum(body[12:]) % 2
    bits = [even, *body, odd] + [0] * 6
    return bytes(_value(bits[i:i + 8]) for i in range(0, 32, 8))


def decode(fmt: str, data: bytes, length: int | None, *, raw_as_text: bool = False) -> Card:
    """``fmt``: wiegand | raw | ascii (the OSDP card format), ``length`` in bits for the raw ones.

    ``raw_as_text``: the reader is a QR/barcode reader that sends a code's characters as
    unspecified-format raw bytes; they are taken as text.
    """
    if fmt == "raw" and raw_as_text and length and length % 8 == 0:
        fmt, data = "ascii", data[: length // 8]
    if fmt == "ascii":
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            return Card("ascii", len(data) * 8, None, "not ASCII text")
        if not text.isprintable():
            return Card("ascii", len(data) * 8, None, "control characters in the text")
        return Card("ascii", len(data) * 8, text or None, None if text else "empty read")
    bits = int(length or 0)
    if bits <= 0 or (bits + 7) // 8 > len(data):
        return Card("raw", bits, None, f"{bits} bits announced, {len(data)} bytes received")
    if bits == 26:
        return h10301(data, bits)
    mask_bytes = data[: (bits + 7) // 8]
    return Card("raw", bits, f"raw{bits}:{mask_bytes.hex()}")
