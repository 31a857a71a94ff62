"""Safe lr-multiplier expressions in `epoch` (alias `step`), for LambdaLR and MultiplicativeLR."""

from __future__ import annotations

import ast
import math

from simpleeval import DEFAULT_OPERATORS, SimpleEval

from lrsched_cli.config import ConfigError

MAX_LENGTH = 200
# Values kept per expression: a run asks for the same counter in check(), in the scheduler's
# construction and at every step; the cap bounds the memory of a run of millions of steps.
MAX_CACHED = 100_000
MAX_ROUND_DIGITS = 308  # round(epoch, -10**20) would build 10**(10**20) to round an int


def _power(base: float, exponent: float) -> float:
    """`**` in floats: one machine operation whatever the numbers, where Python's integer
    power builds every digit (9**3999999 took 1.65 s); too large a result raises."""
    try:
        return float(base) ** float(exponent)
    except OverflowError:
        raise OverflowError(f"{base:.6g} ** {exponent:.6g} is too large") from None


def _round(number: float, digits: int | None = None) -> float:
    if digits is not None and abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round() takes at most {MAX_ROUND_DIGITS} digits either way")
    return round(number, digits)


FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "cos": math.cos,
    "sin": math.sin,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
# Arithmetic and comparisons only: no bit shifts (1 << 10**9 is a bomb) and no membership tests.
OPERATORS = {
    op: fn
    for op, fn in DEFAULT_OPERATORS.items()
    if op not in (ast.LShift, ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor, ast.In, ast.NotIn)
} | {ast.Pow: _power}
ALLOWED_NODES = (
    ast.Expression,
    ast.Expr,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)


class LrExpression:
    """A callable `counter -> multiplier` built from arithmetic text, never run through eval().

    Example:
        >>> LrExpression("min(1, (epoch + 1) / 5)")(2)
        0.6
    """

    def __init__(self, text: str, key: str = "scheduler.lr_lambda"):
        self.text, self.key = text, key
        if not isinstance(text, str | int | float) or isinstance(text, bool):
            raise ConfigError(f"{key}: expected an arithmetic expression in epoch", key)
        self.text = str(text)
        if len(self.text) > MAX_LENGTH:
            raise ConfigError(f"{key}: expression longer than {MAX_LENGTH} characters", key)
        self._evaluator = SimpleEval(operators=OPERATORS, functions=FUNCTIONS)
        try:
            self._tree = self._evaluator.parse(self.text)
        except SyntaxError as exc:
            raise ConfigError(
                f"{key}: {self.text!r} is not an expression: {exc.msg}", key
            ) from None
        self._check_nodes()
        self._values: dict[int, float] = {}

    def __call__(self, counter: int) -> float:
        value = self._values.get(counter)
        if value is None:
            value = self._evaluate(counter)
            if len(self._values) < MAX_CACHED:
                self._values[counter] = value
        return value

    def _evaluate(self, counter: int) -> float:
        self._evaluator.names = {"epoch": counter, "step": counter, **CONSTANTS}
        value = self._evaluator.eval(self.text, previously_parsed=self._tree)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{self.text!r} gave {value!r}, not a number")
        return float(value)

    def check(self, counters: range) -> None:
        """Evaluate at every counter the run will use, so bad arithmetic fails before training."""
        for counter in counters:
            try:
                value = self(counter)
            except Exception as exc:  # simpleeval raises its own classes as well as ArithmeticError
                raise ConfigError(
                    f"{self.key}: {self.text!r} fails at epoch={counter}: {exc}", self.key
                ) from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"{self.key}: {self.text!r} gives {value} at epoch={counter}; "
                    "a multiplier must be finite and not negative",
                    self.key,
                )

    def _check_nodes(self) -> None:
        for node in ast.walk(self._tree):
            allowed = isinstance(node, ALLOWED_NODES)
            if isinstance(node, ast.operator | ast.unaryop | ast.cmpop):
                allowed = type(node) in OPERATORS
            if isinstance(node, ast.Constant):
                allowed = isinstance(node.value, int | float) and not isinstance(node.value, bool)
            if isinstance(node, ast.Name):
                allowed = node.id in {"epoch", "step", *FUNCTIONS, *CONSTANTS}
            if isinstance(node, ast.Call):
                allowed = isinstance(node.func, ast.Name) and not node.keywords
            if not allowed:
                raise ConfigError(
                    f"{self.key}: {self.text!r} may use only numbers, epoch (or step),"
                    f" + - * / ** %, comparisons and {', '.join(FUNCTIONS)}; found {_show(node)}",
                    self.key,
                )

    def __repr__(self) -> str:
        return f"LrExpression({self.text!r})"


def _show(node: ast.AST) -> str:
    try:
        return repr(ast.unparse(node))
    except Exception:
        return type(node).__name__
