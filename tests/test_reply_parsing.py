"""Reply parsing: the code models really write comes out intact, and no reply makes the parser fail."""

from __future__ import annotations

import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from codeact.prompt import cut, parse_json_object, parse_reply

# --- examples of what models write -----------------------------------------------------------


def test_python_fence_with_prose_around() -> None:
    reply = "I will add the numbers.\n\n```python\nx = add(1, 2)\nprint(x)\n```\n\nThen I check."
    parsed = parse_reply(reply)
    assert parsed.code == "x = add(1, 2)\nprint(x)"
    assert parsed.reasoning == "I will add the numbers.\nThen I check."


def test_py_and_bare_fences_and_tildes() -> None:
    assert parse_reply("```py\nprint(1)\n```").code == "print(1)"
    assert parse_reply("```\nprint(2)\n```").code == "print(2)"
    assert parse_reply("~~~python\nprint(3)\n~~~").code == "print(3)"
    assert parse_reply("``` Python\nprint(4)\n```").code == "print(4)"


def test_missing_closing_fence_runs_to_the_end() -> None:
    parsed = parse_reply("Compute it:\n```python\ntotal = sum(range(10))\nprint(total)\n")
    assert parsed.code == "total = sum(range(10))\nprint(total)"
    assert parsed.reasoning == "Compute it:"


def test_several_blocks_are_joined_in_order() -> None:
    reply = "First:\n```python\na = 1\n```\nThen:\n```python\nprint(a + 1)\n```"
    parsed = parse_reply(reply)
    assert parsed.code == "a = 1\n\nprint(a + 1)"
    assert parsed.blocks == ["a = 1", "print(a + 1)"]
    assert parsed.reasoning == "First:\nThen:"


def test_non_python_blocks_are_prose() -> None:
    reply = 'The data:\n```json\n{"a": 1}\n```\n```python\nprint(1)\n```'
    parsed = parse_reply(reply)
    assert parsed.code == "print(1)"
    assert '{"a": 1}' in parsed.reasoning


def test_code_and_execute_tags() -> None:
    assert parse_reply("Let me run <code>print(1)</code> now").code == "print(1)"
    assert parse_reply("<execute>\nx = 2\nprint(x)\n</execute>").code == "x = 2\nprint(x)"
    assert parse_reply("<code>\nprint('open')\n").code == "print('open')"


def test_smolagents_end_code_marker_is_dropped() -> None:
    assert parse_reply("Code:\n```py\nprint(1)\n```<end_code>").code == "print(1)"


def test_indented_block_is_dedented() -> None:
    reply = "1. Do this:\n   ```python\n   for i in range(2):\n       print(i)\n   ```"
    assert parse_reply(reply).code == "for i in range(2):\n    print(i)"


def test_one_line_fence() -> None:
    assert parse_reply("```python print('hi')```").code == "print('hi')"


def test_reply_without_code() -> None:
    parsed = parse_reply("I think the answer is 42.")
    assert parsed.code is None
    assert parsed.reasoning == "I think the answer is 42."


def test_bare_code_without_fences_is_taken_as_code() -> None:
    assert parse_reply("x = add(1, 2)\nsubmit(x)").code == "x = add(1, 2)\nsubmit(x)"
    assert parse_reply("Done").code is None
    assert parse_reply("").code is None


def test_crlf_line_endings() -> None:
    assert parse_reply("```python\r\nprint(1)\r\n```\r\n").code == "print(1)"


def test_code_containing_backticks_in_strings() -> None:
    reply = "```python\ns = 'use `x` here'\nprint(s)\n```"
    assert parse_reply(reply).code == "s = 'use `x` here'\nprint(s)"


# --- properties ------------------------------------------------------------------------------

_identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_expr = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.text(st.characters(codec="ascii", exclude_characters="\\'\n`\r"), max_size=20).map(repr),
    _identifier,
)
_statement = st.one_of(
    st.builds(lambda n, e: f"{n} = {e}", _identifier, _expr),
    st.builds(lambda e: f"print({e})", _expr),
    st.builds(lambda n, e: f"for {n} in range(3):\n    print({n}, {e})", _identifier, _expr),
    st.builds(lambda n, e: f"def {n}():\n    return {e}", _identifier, _expr),
)
_code = st.lists(_statement, min_size=1, max_size=6).map("\n".join)
_prose_line = st.text(
    st.characters(codec="utf-8", categories=["L", "Zs"], include_characters=".,:;!?()"),
    max_size=60,
).map(str.strip)
_prose = st.lists(_prose_line, max_size=3).map("\n".join)
_lang = st.sampled_from(["python", "py", "", "Python", "python3"])
_fence = st.sampled_from(["```", "````", "~~~"])


@settings(max_examples=300, deadline=None)
@given(code=_code, before=_prose, after=_prose, lang=_lang, fence=_fence, closed=st.booleans())
def test_fenced_code_comes_back_exactly(
    code: str, before: str, after: str, lang: str, fence: str, closed: bool
) -> None:
    reply = f"{before}\n{fence}{lang}\n{code}\n"
    if closed:
        reply += f"{fence}\n{after}"
    parsed = parse_reply(reply)
    assert parsed.code == code
    assert before.strip() in parsed.reasoning
    if closed:
        assert after.strip() in parsed.reasoning


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(_code, min_size=1, max_size=4),
    sep=_prose,
    indent=st.sampled_from(["", "  ", "\t"]),
)
def test_all_blocks_run_in_order(blocks: list[str], sep: str, indent: str) -> None:
    parts = [textwrap.indent(f"```python\n{b}\n```", indent) for b in blocks]
    reply = f"\n{sep}\n".join(parts)
    assert parse_reply(reply).code == "\n\n".join(blocks)


@settings(max_examples=200, deadline=None)
@given(code=_code, tag=st.sampled_from(["code", "execute", "CODE"]), before=_prose)
def test_tagged_code_comes_back_exactly(code: str, tag: str, before: str) -> None:
    parsed = parse_reply(f"{before}\n<{tag}>\n{code}\n</{tag}>")
    assert parsed.code == code


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_parser_never_raises(text: str) -> None:
    parsed = parse_reply(text)
    assert parsed.code is None or isinstance(parsed.code, str)
    assert isinstance(parsed.reasoning, str)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["```", "```python", "~~~", "<code>", "</code>", "x = 1", "text", "", " ```py"]),
        max_size=12,
    ).map("\n".join)
)
def test_parser_never_raises_on_fence_soup(text: str) -> None:
    parse_reply(text)


_word = st.sampled_from(["the", "answer", "seems", "to", "be", "42", "I", "will", "check", "sum", "list"])
_sentence = st.lists(_word, min_size=2, max_size=8).map(lambda ws: " ".join(ws) + ".")


@settings(max_examples=200, deadline=None)
@given(st.lists(_sentence, min_size=1, max_size=4).map("\n".join))
def test_plain_prose_has_no_code(text: str) -> None:
    parsed = parse_reply(text)
    assert parsed.code is None
    assert parsed.reasoning == text


# --- cutting long output, JSON extraction ---------------------------------------------------------


@given(st.text(max_size=3000), st.integers(10, 1000))
def test_cut_keeps_short_text_and_marks_cuts(text: str, limit: int) -> None:
    out = cut(text, limit)
    if len(text) <= limit:
        assert out == text
    else:
        assert "characters cut" in out
        assert len(out) < len(text) + 100
        assert text.startswith(out.split("\n[...")[0])


def test_cut_keeps_head_and_tail() -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    out = cut(text, 1000)
    assert out.startswith("line 0\n")
    assert out.rstrip().endswith("line 9999")
    assert "characters cut" in out


def test_parse_json_object() -> None:
    assert parse_json_object('Sure: {"a": 1} done') == {"a": 1}
    assert parse_json_object('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert parse_json_object("no json {here") is None
    assert parse_json_object('{"a": {"b": 1}}') == {"a": {"b": 1}}


def test_bare_fence_after_a_python_block_is_imagined_output_not_code():
    reply = "Let me add.\n```python\nx = add(17, 25)\nprint(x)\n```\nOutput:\n```\nAnswer: 42\n```"
    assert parse_reply(reply).code == "x = add(17, 25)\nprint(x)"


# --- reasoning models and stray fence text ------------------------------------------------------------
def test_code_drafted_inside_think_tags_never_runs():
    reply = "<think>Maybe\n```python\ndelete_everything()\n```\nNo, too risky.</think>\nSafer:\n```python\nx = 2\n```"
    parsed = parse_reply(reply)
    assert parsed.code == "x = 2"
    assert "delete_everything()" in parsed.reasoning and "Safer:" in parsed.reasoning


def test_reasoning_without_its_opening_tag_ends_at_the_closing_one():
    parsed = parse_reply("Let me draft: ```python\nboom()\n```\n</think>\n```python\ny = 3\n```")
    assert parsed.code == "y = 3" and "boom()" in parsed.reasoning


def test_thinking_tag_spelling_and_an_unclosed_think_are_reasoning():
    assert parse_reply("<thinking>```python\nbad()\n```</thinking>```python\ngood()\n```").code == "good()"
    assert parse_reply("<think>```python\nbad()\n```").code is None


def test_a_closing_fence_followed_by_other_text_still_closes():
    for tail in ("<|im_end|>", ".", " <|endoftext|>"):
        assert parse_reply(f"Go.\n```python\nx = 1\n```{tail}").code == "x = 1"


def test_a_file_name_after_the_language_is_not_code():
    assert parse_reply("```python analysis.py\nx = 1\n```").code == "x = 1"
    assert parse_reply("```python x = 1```").code == "x = 1"
