"""`calculator`: exact arithmetic over an `ast` walk (never `eval`).

Supports + - * / // % **, parentheses, unary minus / plus, integers and decimals. Bounded: the
expression length, the exponent of **, and the magnitude of every intermediate result. Errors
(bad syntax, division by zero, a bound) are returned to the model as `Error: ...` text.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Dict, Tuple, Union

from agent_rl.tool_runtime.base import BaseTool, ToolResponse

Number = Union[int, float]


class CalcError(ValueError):
    pass


_BIN = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_UNSUPPORTED_HINTS = {
    ast.BitXor: "'^' is not a power operator here; use ** (2**3)",
    ast.Tuple: "commas are not allowed in numbers or expressions; write 1000 instead of 1,000",
    ast.Name: "variables and constants are not supported; use numbers only",
    ast.Call: "functions are not supported; use + - * / // % ** and parentheses",
}


def _check(value: Number, max_abs: float) -> Number:
    if isinstance(value, complex):
        raise CalcError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is too large")
    if abs(value) > max_abs:
        raise CalcError(f"the result exceeds the limit of {max_abs:g} in magnitude")
    return value


def evaluate(expression: str, max_length: int = 200, max_exponent: float = 100, max_abs: float = 1e18) -> Number:
    """Evaluate an arithmetic expression; raises CalcError with a message for the model."""
    if not isinstance(expression, str):
        raise CalcError("the expression must be a string")
    expr = expression.strip()
    if not expr:
        raise CalcError("the expression is empty")
    if len(expr) > max_length:
        raise CalcError(f"the expression is longer than {max_length} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CalcError(f"invalid syntax at column {e.offset}" if e.offset else "invalid syntax") from None
    except ValueError as e:   # e.g. null bytes
        raise CalcError(f"invalid expression ({e})") from None

    def walk(node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CalcError(f"unsupported literal {v!r}; only numbers are allowed")
            return _check(v, max_abs)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            left, right = walk(node.left), walk(node.right)
            op = type(node.op)
            if op in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
                raise CalcError("division by zero")
            if op is ast.Pow:
                if abs(right) > max_exponent:
                    raise CalcError(f"the exponent {right:g} exceeds the limit of {max_exponent:g}")
                if left == 0 and right < 0:
                    raise CalcError("division by zero (0 raised to a negative power)")
                if left < 0 and not float(right).is_integer():
                    raise CalcError("a negative number raised to a fractional power is not a real number")
            try:
                result = _BIN[op](left, right)
            except OverflowError:
                raise CalcError("the result is too large") from None
            return _check(result, max_abs)
        hint = _UNSUPPORTED_HINTS.get(type(node)) or (_UNSUPPORTED_HINTS.get(type(node.op)) if hasattr(node, "op") else None)
        raise CalcError(hint or f"unsupported syntax ({type(node).__name__}); use numbers, + - * / // % ** and parentheses")

    return walk(tree)


def format_result(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


class CalculatorTool(BaseTool):
    """config: max_length (200), max_exponent (100), max_abs (1e18)."""

    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        super().__init__(config, tool_schema)
        self.max_length = int(self.config.get("max_length", 200))
        self.max_exponent = float(self.config.get("max_exponent", 100))
        self.max_abs = float(self.config.get("max_abs", 1e18))

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        expression = arguments.get("expression", "")
        try:
            value = evaluate(expression, self.max_length, self.max_exponent, self.max_abs)
        except CalcError as e:
            return ToolResponse(text=f"Error: {e}"), 0.0, {"success": False}
        return ToolResponse(text=format_result(value)), 0.0, {"success": True}
