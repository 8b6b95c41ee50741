"""Byte-order marks: which encoding a file or stream announces, and when it is not the one it is
read in. Standard library only, so that the command line can check stdin without loading numpy."""

from __future__ import annotations

import codecs


def bom_encoding(raw: bytes) -> str | None:
    """The encoding a byte-order mark announces (UTF-32 before UTF-16: its LE mark starts with UTF-16's)."""
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF8, "utf-8")):
        if raw.startswith(bom):
            return name
    return None


def foreign_bom(raw: bytes, encoding: str) -> str | None:
    """"utf-16" or "utf-32" when ``raw`` starts with that byte-order mark and ``encoding`` is another
    codec (reading it so would garble every line), else None; an unknown ``encoding`` is None too
    (the caller names it where it opens the data)."""
    bom = bom_encoding(raw)
    if bom not in ("utf-16", "utf-32"):
        return None
    try:
        codec = codecs.lookup(encoding).name.replace("_", "-")
    except LookupError:
        return None
    return None if codec.startswith(bom) else bom
