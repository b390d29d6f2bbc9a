"""Load a user's object named ``package.module:Name``: the only code a scenario can name.

Importing a module runs its top-level code, so a reference is first checked without
importing anything: the module must be found on ``sys.path`` (no parent package is
imported to look), its source must parse, and ``Name`` must be bound at its top level by
something that can be what the key needs (a class for ``model.name``; a function taking
``(candidates, battery, fraction, rng)`` for ``selection.policy``; a class or an object for
``compression.codec``; a class for ``aggregation.edge_optimizer`` and
``aggregation.cloud_optimizer``). ``selection.policy = "this:s"`` is refused without
printing the Zen of Python. Only then is the module imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from typing import Any

from hierfl.errors import ScenarioError

CODE_KEYS = (
    "model.name", "selection.policy", "compression.codec",
    "aggregation.edge_optimizer", "aggregation.cloud_optimizer",
)
"""Scenario keys whose ``package.module:Name`` value is code hierfl imports and runs."""
POLICY_ARGS = ("candidates", "battery", "fraction", "rng")
FLEET_ARG = "fleet"  # a policy with this parameter also gets the FleetView, by keyword
_WANTS = {
    "model.name": "an nn.Module class",
    "compression.codec": "a codec class or object",
    "aggregation.edge_optimizer": "a server-optimiser class",
    "aggregation.cloud_optimizer": "a server-optimiser class",
}
_LITERALS = (
    ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Set, ast.Dict,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.BinOp, ast.Compare,
)


def custom_references(scenario: Any) -> dict[str, str]:
    """The ``package.module:Name`` values of a scenario, by key (built-in names left out)."""
    values = {
        "model.name": scenario.model.name,
        "selection.policy": scenario.selection.policy,
        "compression.codec": scenario.compression.codec,
        "aggregation.edge_optimizer": scenario.aggregation.edge_optimizer,
        "aggregation.cloud_optimizer": scenario.aggregation.cloud_optimizer,
    }
    return {key: value for key, value in values.items() if value and ":" in value}


def check_references(scenario: Any) -> None:
    """Check every custom reference of ``scenario`` without importing (see the module doc)."""
    for key, reference in custom_references(scenario).items():
        check_reference(reference, key)


def load_object(reference: str, key: str) -> Any:
    """Check ``package.module:Name``, import the module and return ``Name``; errors name ``key``."""
    check_reference(reference, key)
    module_name, _, attr = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ScenarioError(f"{key}: cannot load {reference!r}: {error}") from None
    if key == "selection.policy":
        _check_call(found, reference)
    return found


def check_reference(reference: str, key: str) -> None:
    """Refuse what cannot work, reading ``package.module``'s source without running it."""
    module_name, _, attr = reference.partition(":")
    if module_name in sys.modules:  # already imported: importing again runs nothing
        if not hasattr(sys.modules[module_name], attr):
            raise ScenarioError(f"{key}: {reference!r}: {module_name} has no {attr!r}")
        if key == "selection.policy":
            _check_call(getattr(sys.modules[module_name], attr), reference)
        return
    spec = find_module(module_name)
    if spec is None:
        raise ScenarioError(
            f"{key}: cannot load {reference!r}: no module named {module_name!r} on the "
            "Python path (set PYTHONPATH to its folder)"
        )
    tree = _source_tree(spec, reference, key)
    if tree is not None:
        _check_binding(tree, attr, reference, key)


def find_module(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of module ``a.b.c``, found without importing ``a`` or ``a.b``."""
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name is found, not imported
        for depth in range(1, len(parts)):
            if spec is None or spec.submodule_search_locations is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(
                ".".join(parts[: depth + 1]), spec.submodule_search_locations
            )
    except (ImportError, ValueError):
        return None
    return spec


def _source_tree(
    spec: importlib.machinery.ModuleSpec, reference: str, key: str
) -> ast.Module | None:
    """The parsed source of the module, or None where there is none to read (compiled)."""
    origin = spec.origin
    if spec.submodule_search_locations is not None and origin in (None, "namespace"):
        raise ScenarioError(f"{key}: {reference!r}: {spec.name} is a folder without code")
    if not origin or not origin.endswith(".py"):
        return None
    try:
        with open(origin, "rb") as file:
            return ast.parse(file.read(), filename=origin)
    except (OSError, SyntaxError, ValueError) as error:
        raise ScenarioError(f"{key}: cannot load {reference!r}: {error}") from None


def _check_binding(tree: ast.Module, attr: str, reference: str, key: str) -> None:
    """``attr`` is bound at the top level of ``tree`` by something that can fit ``key``."""
    bindings = list(_top_level_bindings(tree.body, attr))
    if not bindings:
        if not _dynamic(tree):
            module = reference.partition(":")[0]
            raise ScenarioError(f"{key}: {reference!r}: {module} defines no top-level {attr!r}")
        return
    if all(isinstance(node, _LITERALS) for node in bindings):
        raise ScenarioError(f"{key}: {reference!r} is a value, not {_wanted(key)}")
    functions = [n for n in bindings if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if key in _WANTS and len(functions) == len(bindings):
        raise ScenarioError(f"{key}: {reference!r} is a function, not {_wanted(key)}")
    if key == "selection.policy" and len(bindings) == 1:
        node = bindings[0]
        if isinstance(node, ast.FunctionDef | ast.Lambda) and not _takes_four(node.args):
            raise ScenarioError(_call_error(reference, _shown(node.args)))


def _top_level_bindings(body: list[ast.stmt], attr: str) -> list[ast.AST]:
    """What binds ``attr`` at module level (walking into top-level if/try/with blocks)."""
    found: list[ast.AST] = []
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if statement.name == attr:
                found.append(statement)
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                found.append(statement.value or statement)
            elif any(_binds_inside(n, attr) for t in targets for n in ast.walk(t)):
                found.append(statement)
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            if any((alias.asname or alias.name.split(".")[0]) == attr for alias in statement.names):
                found.append(statement)
        elif isinstance(statement, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for part in getattr(statement, block, []):
                    inner = part.body if isinstance(part, ast.ExceptHandler) else [part]
                    found.extend(_top_level_bindings(inner, attr))
        elif any(_binds_inside(node, attr) for node in ast.walk(statement)):
            found.append(statement)
    return found


def _binds_inside(node: ast.AST, attr: str) -> bool:
    return isinstance(node, ast.Name) and node.id == attr and isinstance(node.ctx, ast.Store)


def _dynamic(tree: ast.Module) -> bool:
    """The module may bind names the source does not show (star import, ``__getattr__``)."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return True
    return any(isinstance(n, ast.Name) and n.id in ("globals", "setattr") for n in ast.walk(tree))


def _takes_four(args: ast.arguments) -> bool:
    """A call with four positional arguments binds to these parameters."""
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    kw_required = any(
        default is None and arg.arg != FLEET_ARG
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    return (len(positional) >= 4 or args.vararg is not None) and required <= 4 and not kw_required


def _shown(args: ast.arguments) -> str:
    names = [a.arg for a in [*args.posonlyargs, *args.args]]
    if args.vararg is not None:
        names.append(f"*{args.vararg.arg}")
    names.extend(a.arg for a in args.kwonlyargs)
    return f"({', '.join(names)})"


def _check_call(found: Any, reference: str) -> None:
    """A selection policy must be callable with ``(candidates, battery, fraction, rng)``."""
    if not callable(found):
        raise ScenarioError(f"selection.policy: {reference!r} is not callable")
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    extra = {FLEET_ARG: None} if FLEET_ARG in signature.parameters else {}
    try:
        signature.bind(*POLICY_ARGS, **extra)
    except TypeError:
        raise ScenarioError(_call_error(reference, str(signature))) from None


def _call_error(reference: str, shown: str) -> str:
    return (
        f"selection.policy: {reference!r} takes {shown}; a policy takes "
        f"({', '.join(POLICY_ARGS)})"
    )


def _wanted(key: str) -> str:
    return _WANTS.get(key, "a function")
