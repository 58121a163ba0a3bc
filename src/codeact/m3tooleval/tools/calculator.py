"""A safe arithmetic evaluator standing in for the original tool's `eval(expression)`.

Tools run on the host, so the expression is never given to `eval`: only number literals, list and
tuple literals, arithmetic operators, comparisons and a few numeric functions are evaluated, in the
same order and with the same float arithmetic Python uses, so results match `eval` exactly.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sum": sum,
    "len": len,
    "int": int,
    "float": float,
    "pow": pow,
    "sqrt": math.sqrt,
}
_NAMES: dict[str, Any] = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 10_000
_MAX_INT_BITS = 100_000
_MAX_LENGTH = 10_000


class CalculatorError(ValueError):
    """The expression uses something the calculator does not evaluate."""


def evaluate(expression: str) -> Any:
    """The value of an arithmetic expression such as `"2 + (3 * 4)"`; raise on anything else."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > _MAX_LENGTH:
        raise CalculatorError("expression too long")
    tree = ast.parse(expression.strip(), mode="eval")
    return _eval(tree.body)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex, str)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise CalculatorError("exponent too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise CalculatorError("result too large")
        if isinstance(result, (str, list, tuple)) and len(result) > _MAX_LENGTH:
            raise CalculatorError("result too large")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=False):
            right = _eval(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(element) for element in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*[_eval(arg) for arg in node.args])
    raise CalculatorError(f"unsupported syntax: {ast.dump(node)[:80]}")


def calculator(expression: str) -> Any:
    """Evaluates the given expression and returns the result, or a failure message."""
    try:
        return evaluate(expression)
    except Exception:
        return f"Failed to evaluate expression: {expression}"
