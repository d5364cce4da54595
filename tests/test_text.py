"""bulk._text: one way to cut text for a message, and its variants."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulk._text import ELLIPSIS, cut, excerpt, preview, short_repr
from bulk.errors import BackendError


@given(st.text(), st.integers(min_value=1, max_value=400))
def test_a_cut_is_at_most_limit_and_marks_itself(text: str, limit: int) -> None:
    """Short text is kept whole; longer text keeps its start and ends in the one ellipsis."""
    shown = cut(text, limit)

    assert len(shown) <= limit
    if len(text) <= limit:
        assert text == shown
    else:
        assert text[: limit - 1] + ELLIPSIS == shown


def test_every_variant_cuts_the_same_way() -> None:
    """preview, excerpt and the BackendError cap end a cut in "…" at exactly their limit."""
    long = "x" * 5000
    shown = [cut(long, 30), preview({"a": long}), excerpt(long), str(BackendError(long))]

    assert [30, 120, 300, 1000] == [len(text) for text in shown]
    assert all(text.endswith("x" + ELLIPSIS) for text in shown)
    assert f"{'x' * 60!r}…" == short_repr(long)  # a repr keeps its quotes: … after them


def test_an_excerpt_is_one_line_of_what_was_sent() -> None:
    """Whitespace runs become one space; nothing is "(empty)"; bytes that are not UTF-8 show."""
    assert "a b c" == excerpt(b"a\n\n b\t\r\nc")
    assert "(empty)" == excerpt(b"  \n")
    assert "bad \ufffd byte" == excerpt(b"bad \xff byte")
    assert '{"k":[1,2]}' == excerpt({"k": [1, 2]})
