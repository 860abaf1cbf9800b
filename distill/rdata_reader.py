"""A reader for R lazy-load databases (``Rdata.rdx`` / ``Rdata.rdb``).

Used by :mod:`distill.assets` to extract the Austen novels from the Debian
``r-cran-janeaustenr`` package; needs the optional ``rdata`` package.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from pathlib import Path

from distill.errors import AssetFetchError


def read_r_lazyload_db(rdx: Path, rdb: Path) -> dict[str, list[str]]:
    """Read the character vectors of an R lazy-load database (``Rdata.rdx/.rdb``).

    The index (``.rdx``) is a gzip-compressed serialized R list whose ``variables``
    entry maps each name to (offset, length) in ``.rdb``; each ``.rdb`` chunk is a
    4-byte big-endian length followed by a compressed serialized R object.
    """
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AssetFetchError("reading R data needs the `rdata` package: "
                              "pip install 'efficientbert[data]' (or pip install rdata)") from exc
    import warnings

    def parse(raw: bytes) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = parse(rdx.read_bytes())
    blob = rdb.read_bytes()
    out: dict[str, list[str]] = {}
    for name, (offset, length) in index["variables"].items():  # type: ignore[index]
        chunk = blob[int(offset): int(offset) + int(length)]
        (size,) = struct.unpack(">I", chunk[:4])
        body = chunk[4:]
        if body[:1] == b"Z":
            raw = lzma.decompress(body[1:])
        elif body[:1] == b"2":
            raw = bz2.decompress(body[1:])
        elif body[:1] == b"0":
            raw = body[1:]
        else:
            raw = zlib.decompress(body)
        if len(raw) != size:
            raise AssetFetchError(f"{rdb}: chunk {name!r} has {len(raw)} bytes, expected {size}")
        out[str(name)] = ["" if s is None else str(s) for s in parse(raw)]  # type: ignore[union-attr]
    return out
