"""SHA-256 of a file and of a list of files: the checksums that run folders record of their data
and that downloads are verified against. Standard library only, so that any layer may import it
without the cost of the data readers."""

from __future__ import annotations

import hashlib
import os
from typing import Iterable


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def listing_digest(entries: Iterable[tuple[str, str]], head: bytes = b"") -> str:
    """Hex SHA-256 of ``head`` followed by one line ``name\\0digest\\n`` per (name, digest): the
    checksum of a list of files (a folder's, or those an index names), which a rename changes as
    an edit does. The byte layout is what run folders have recorded: keep it."""
    h = hashlib.sha256(head)
    for name, digest in entries:
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()
