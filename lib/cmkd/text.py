"""Text from the user's files and bad input in messages to the user.

:func:`quote` is how every error message of the package shows a value or a line it refuses: its
repr, cut at :data:`QUOTE_LIMIT` characters (a 50 MB one-line CSV must not become a 50 MB
message).  :func:`read_utf8` reads a text file (a params file, a dataset's list file) as UTF-8 and
names the file, the line and the column of a byte that is not UTF-8 text or of a NUL byte (a
binary file), instead of a bare UnicodeDecodeError.

Nothing here imports more than the standard library: params, the data loaders and the command
line all use it.
"""

from __future__ import annotations

from pathlib import Path

#: Longest quote of bad input in a message, in characters (before the ellipsis and the length).
QUOTE_LIMIT = 200


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` itself when it has at most ``limit`` characters, else its first ``limit``
    characters, an ellipsis and its length."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters and followed by
    an ellipsis and the length when cut.  A string (or bytes) is cut before its repr is made, so
    a huge one costs nothing; its length is counted in characters (bytes)."""
    if isinstance(value, (str, bytes)):
        shown = repr(value[:limit])
        if len(value) <= limit and len(shown) <= limit:
            return shown
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{shown[:limit]}... ({len(value):,} {unit} in all)"
    return shorten(repr(value), limit)


class TextError(ValueError):
    """A file that is not UTF-8 text.  ``name`` is the file as the message shows it, ``line`` and
    ``column`` (from 1) where the first bad byte is, ``reason`` what is wrong with it; the
    message is '<name> line <line>, column <column>: <reason>'."""

    def __init__(self, name: str, line: int, column: int, reason: str):
        self.name, self.line, self.column, self.reason = name, line, column, reason
        super().__init__(f"{name} line {line}, column {column}: {reason}")

    def __reduce__(self):  # pickled with its fields (it travels back from a worker process)
        return type(self), (self.name, self.line, self.column, self.reason), self.__dict__


def _where(data: bytes, pos: int) -> tuple[int, int]:
    """(line, column) from 1 of byte ``pos`` of ``data``; the column counts characters."""
    start = data.rfind(b"\n", 0, pos) + 1
    column = len(data[start:pos].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, pos) + 1, column


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` decoded as UTF-8 (a leading byte-order mark dropped).

    Raises :class:`TextError` naming ``name``, the line and the column of the first NUL byte (a
    binary file, or UTF-16 text) or of the first byte that is not UTF-8.
    """
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if not 0 <= nul < err.start:  # a NUL before the bad byte is reported below
            raise TextError(name, *_where(data, err.start),
                            f"byte 0x{data[err.start]:02x} is not UTF-8 text (a binary file, or "
                            "text saved in another encoding such as Latin-1; save it as UTF-8)"
                            ) from None
    if nul >= 0:
        raise TextError(name, *_where(data, nul), "a NUL byte: a binary file (or UTF-16 text), "
                                                  "not UTF-8 text")
    return text.removeprefix("\ufeff")


def read_utf8(path, name: str | None = None) -> str:
    """The text of the file ``path``, read as UTF-8 (:func:`decode_utf8`); ``name`` is how an
    error shows the file (default: the path as given)."""
    return decode_utf8(Path(path).read_bytes(), str(path) if name is None else name)
