"""Arithmetic tools for `codeact run --tools examples/math_tools.py "What is 17 plus 25?"`.

`--tools FILE.py` offers every public function defined in the file (or its `TOOLS` list, if it has
one); the docstrings and type hints are what the model sees.
"""

from __future__ import annotations

import math


def add(a: float, b: float) -> float:
    """Return a + b."""
    return a + b


def subtract(a: float, b: float) -> float:
    """Return a - b."""
    return a - b


def multiply(a: float, b: float) -> float:
    """Return a * b."""
    return a * b


def divide(a: float, b: float) -> float:
    """Return a / b; raises ZeroDivisionError when b is 0."""
    return a / b


def sqrt(x: float) -> float:
    """Return the square root of x (x must not be negative)."""
    return math.sqrt(x)
