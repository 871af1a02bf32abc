"""Audit of a .pt2 program's JSON before torch.export.load sees it.

Refusing pickles is not enough. torch 2.13's deserializer:
- passes every SymExpr `expr_str` to sympy.sympify, which evaluates Python;
- resolves node targets and `as_operator` arguments by getattr from the torch, operator and
  math modules, so "torch.serialization.os.system" is a callable target;
- turns parameter/buffer FQNs into FX code with `getattr(self, "<name>")` without escaping,
  so a quote in a name injects code into the generated forward.
Every string that reaches one of those is therefore held to a strict grammar here."""

from __future__ import annotations

import re
from typing import Any

import torch

_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_DOTTED = re.compile(rf"^{_NAME_PART}(\.{_NAME_PART})*$")
# torch.ops.<namespace>.<op>[.<overload>]; dunders would reach Python internals.
_OP_TARGET = re.compile(r"^torch\.ops\.(?!__)\w+\.(?!__)\w+(\.(?!__)\w+)?$")
_OPERATOR_NAMES = (
    "getitem add sub mul truediv floordiv mod pow neg pos eq ne le ge lt gt and_ or_ not_ "
    "lshift rshift"
).split()
_TORCH_NAMES = (
    "sym_int sym_float sym_ite sym_max sym_min sym_not sym_sqrt _sym_sqrt _C._set_grad_enabled "
    "autograd.grad_mode.set_grad_enabled"
).split()
_BUILTIN_TARGETS = frozenset(
    [f"_operator.{name}" for name in _OPERATOR_NAMES]
    + ["math.trunc", "math.floor", "math.ceil", "math.sqrt"]
    + [f"torch.{name}" for name in _TORCH_NAMES]
)
# Keys whose string values become Python identifiers or attribute paths in generated code.
_NAME_KEYS = frozenset(
    [
        "name",
        "as_name",
        "parameter_name",
        "buffer_name",
        "tensor_constant_name",
        "custom_obj_name",
        "user_input_name",
        "fqn",
    ]
)
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_ +\-*/%(),.<>=!&|~]*$")
# torch writes symbols as Symbol('s77', positive=True, integer=True): quoted names allowed.
_QUOTED = re.compile(r"'([^']*)'")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Shape symbols as torch names them (s0, s77, u3, zuf0, ...): letters then digits.
_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")
_SYMPY_NAMES = frozenset(
    (
        # torch.utils._sympy.functions, as the deserializer names them
        "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv "
        "LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv "
        "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal "
        "ToFloat Identity BitwiseFn_bitwise_and BitwiseFn_bitwise_or "
        # sympy's own
        "Max Min Abs floor ceiling Eq Ne Lt Le Gt Ge And Or Not True False oo Integer Rational "
        "Float Mul Add Pow Symbol "
        # assumptions passed to Symbol(...)
        "positive negative nonnegative nonpositive integer real finite zero nonzero even odd "
        "rational commutative"
    ).split()
)
MAX_DEPTH = 200


class UnsafeProgram(ValueError):
    """The program's JSON holds something the deserializer would turn into code."""


def check_name(value: str, what: str, allow_empty: bool = False) -> None:
    if (allow_empty and value == "") or _DOTTED.match(value):
        return
    raise UnsafeProgram(f"{what} {value[:80]!r} is not a plain dotted name")


def check_target(value: str) -> None:
    if _OP_TARGET.match(value) or value in _BUILTIN_TARGETS:
        return
    raise UnsafeProgram(f"the program calls {value[:80]!r}, which is not a PyTorch operator")


def check_expression(value: str) -> None:
    """A shape expression: symbols, integers, arithmetic and sympy's shape functions only."""
    for quoted in _QUOTED.findall(value):
        if not _SYMBOL.match(quoted):
            raise UnsafeProgram(f"the shape expression {value[:80]!r} quotes {quoted[:40]!r}")
    bare = _QUOTED.sub("0", value)
    if len(value) > 2000 or not _EXPR_CHARS.match(bare):
        raise UnsafeProgram(f"the shape expression {value[:80]!r} has unexpected characters")
    for ident in _IDENT.findall(bare):
        if not (_SYMBOL.match(ident) or ident in _SYMPY_NAMES):
            raise UnsafeProgram(
                f"the shape expression {value[:80]!r} uses {ident!r}, which is not a shape "
                "symbol or function"
            )


def audit_program(doc: Any) -> None:
    """Raise UnsafeProgram if a models/<name>.json document could run code when loaded."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafeProgram("the program's JSON is nested implausibly deep")
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        is_node = "target" in node and "inputs" in node
        for key, value in node.items():
            if key == "metadata":
                continue  # free text (stack traces); FX emits it only in verbose code
            if isinstance(value, str):
                if key == "expr_str":
                    check_expression(value)
                elif key == "as_operator" or (key == "target" and is_node):
                    check_target(value)
                elif key in _NAME_KEYS:
                    check_name(value, f"the name in {key!r}", allow_empty=key == "fqn")
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))


_SAFE_BUILTINS: frozenset[Any] = frozenset()


def _safe_callables() -> frozenset[Any]:
    import math
    import operator

    global _SAFE_BUILTINS
    if not _SAFE_BUILTINS:
        found: set[Any] = set()
        for target in _BUILTIN_TARGETS:
            module_name, _, rest = target.partition(".")
            obj: Any = {"_operator": operator, "math": math, "torch": torch}[module_name]
            for part in rest.split("."):
                obj = getattr(obj, part, None)
            if obj is not None:
                found.add(obj)
        _SAFE_BUILTINS = frozenset(found)
    return _SAFE_BUILTINS


def audit_module(module: torch.nn.Module) -> None:
    """After loading, before the first call: every graph calls only operators and reads only
    plainly named attributes (a second line of defence behind audit_program)."""
    allowed = _safe_callables()
    for sub in module.modules():
        graph = getattr(sub, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op == "call_function":
                target = node.target
                if not (
                    isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))
                    or target in allowed
                ):
                    raise UnsafeProgram(f"the program calls {target!r}, not a PyTorch operator")
            elif node.op in ("get_attr", "call_module"):
                check_name(str(node.target), "the attribute")
            elif node.op == "call_method":
                raise UnsafeProgram(f"the program calls a method {node.target!r}")
