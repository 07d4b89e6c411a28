"""Read back the PDFs the renderer writes: text, images and the cross-reference table."""

from __future__ import annotations

import re
import zlib

_STREAM = re.compile(rb"<<(.*?)>>\nstream\n(.*?)\nendstream", re.S)
_SHOWN_TEXT = re.compile(rb"\(((?:\\.|[^\\)])*)\) Tj")


def streams(pdf: bytes) -> list[tuple[bytes, bytes]]:
    """Return (dictionary, decompressed data) for every stream object."""
    return [(dictionary, zlib.decompress(data)) for dictionary, data in _STREAM.findall(pdf)]


def pdf_text(pdf: bytes) -> str:
    """Return every shown text string, one per line, decoded as Windows-1252, no-break spaces as spaces."""
    strings = []
    for dictionary, data in streams(pdf):
        if b"/Subtype /Image" in dictionary:
            continue
        for match in _SHOWN_TEXT.finditer(data):
            raw = re.sub(rb"\\(.)", rb"\1", match.group(1))
            strings.append(raw.decode("cp1252").replace("\u00a0", " "))
    return "\n".join(strings)


def image_count(pdf: bytes) -> int:
    return sum(1 for dictionary, _ in streams(pdf) if b"/Subtype /Image" in dictionary)


def xref_offsets_valid(pdf: bytes) -> bool:
    """Return whether every xref entry and startxref point at the object or table they name."""
    start = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", pdf).group(1))
    if not pdf[start:].startswith(b"xref\n"):
        return False
    entries = re.findall(rb"(\d{10}) 00000 n \n", pdf[start:])
    return all(pdf[int(offset):].startswith(b"%d 0 obj\n" % number) for number, offset in enumerate(entries, 1))
