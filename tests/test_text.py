"""cmkd.text: quotes of bad input are capped; text files are read as UTF-8 with the bad byte
located."""
import pytest

from cmkd.text import QUOTE_LIMIT, TextError, decode_utf8, quote, read_utf8, shorten


def test_short_values_are_quoted_whole():
    assert quote("abc") == "'abc'" and quote(1.5) == "1.5" and quote([1, "x"]) == "[1, 'x']"
    assert shorten("abc") == "abc"


@pytest.mark.parametrize("value, unit", [("x" * 5_000_000, "characters"),
                                         (b"\xff" * 300, "bytes")])
def test_long_strings_are_cut_before_their_repr(value, unit):
    text = quote(value)
    assert len(text) < QUOTE_LIMIT + 100
    assert text.endswith(f"... ({len(value):,} {unit} in all)")
    assert text.startswith(repr(value[:10])[:-1])


def test_long_reprs_are_cut():
    text = quote(list(range(10_000)))
    assert text.startswith("[0, 1, 2") and "..." in text and len(text) < QUOTE_LIMIT + 100
    assert len(shorten("y" * 1000, 20)) < 60


def test_utf8_with_a_bom_reads(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffcafé,1\r\n".encode())
    assert read_utf8(path) == "café,1\r\n"


@pytest.mark.parametrize("data, line, column, words", [
    (b"seed: 0\n# caf\xe9\nn: 1\n", 2, 6, "byte 0xe9 is not UTF-8"),
    (b"a,b\nc,\xc3\xa9\xff\n", 2, 4, "byte 0xff is not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", 1, 1, "byte 0x89 is not UTF-8"),
    (b"ok\nab\x00cd\xff", 2, 3, "a NUL byte: a binary file"),
])
def test_bad_bytes_are_located(tmp_path, data, line, column, words):
    path = tmp_path / "train.csv"
    path.write_bytes(data)
    with pytest.raises(TextError) as err:
        read_utf8(path, "train.csv")
    assert (err.value.line, err.value.column) == (line, column)
    assert str(err.value).startswith(f"train.csv line {line}, column {column}: ")
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(TextError, match=str(path)):
        read_utf8(path)
    with pytest.raises(TextError, match="^x line"):
        decode_utf8(data, "x")
