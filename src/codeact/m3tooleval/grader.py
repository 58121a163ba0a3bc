"""The original M3ToolEval answer check, rule for rule."""

from __future__ import annotations

import ast
from typing import Any


def _coerce(value: Any) -> Any:
    """int, else float, else the value itself; like the original, `int(3.9)` is 3."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def is_correct(answer: Any, expected: Any) -> bool:
    """Whether a proposed answer (usually the text after `Answer:`) matches the expected output.

    The original rule: correct when the answer equals the expected value, or both coerce to equal
    numbers (int first, then float, so an expected 380.42 coerces to 380 and a proposed "380" passes),
    or their `str()` forms are equal after the answer is read as a Python literal when it is one.
    Coercion of a list, dict or tuple raises in the original and skips straight to comparing the
    raw answer's text with `str(expected)`: so `('A', 3)` matches where `['A', 3]` does not, dict key
    order matters, and `380.42` does not match `380.41999999999996`.
    """
    try:
        if answer == expected or _coerce(answer) == _coerce(expected):
            return True
        answer = ast.literal_eval(answer)
        # The original's next comparison has a typo (a missing `or`) that always raises, so the
        # string comparison below decides, with the answer read as a literal.
    except Exception:
        pass
    return str(answer) == str(expected)
