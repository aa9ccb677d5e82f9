"""``wsgi.file_wrapper`` (PEP 3333, optional platform-specific file handling)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class FileWrapper:
    """``wsgi.file_wrapper``: marks a file so the handler can hand it to ``sendfile``; still a
    plain iterable (read in ``blksize`` blocks) for middleware that unwraps the response, and
    for what is no regular file (a pipe, a BytesIO, or any iterable of bytes)."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = getattr(self.filelike, "read", None)
        if read is None:
            yield from self.filelike
            return
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data
