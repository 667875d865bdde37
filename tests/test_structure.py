"""The house stays one a newcomer can extend (issue 21): no import circles, no import running back up
between the packages' rooms, few imports hidden inside functions, no module past 500 lines, and a
loss's name compared nowhere but in the losses package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("softlabels", "trainer")
CLIS = {"softlabels/cli.py", "trainer/cli.py"}  # lazy imports there keep --help fast
MAX_LINES = 500
MAX_FUNCTION_IMPORTS = 5


def modules() -> dict[str, ast.Module]:
    """Dotted module name -> its parsed source, for every module of the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def path_of(module: str) -> str:
    base = ROOT / module.replace(".", "/")
    return str((base / "__init__.py" if base.is_dir() else base.with_suffix(".py")).relative_to(ROOT))


def imports(tree: ast.Module, module: str, known: set[str], top_level_only: bool) -> set[str]:
    """The project modules `module` imports (a `from pkg import sub` names the submodule)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative imports
                base = ".".join(module.split(".")[: -node.level] + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    return found - {module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def is_face(module: str, tree: ast.Module) -> bool:
    """A package's `__init__` that only hands names on (its imports are its members', not its own)."""
    return path_of(module).endswith("__init__.py") and not any(
        isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in tree.body
    )


def room(module: str) -> str:
    """The room a module stands in: a sub-package of softlabels/trainer, else the module itself."""
    parts = module.split(".")
    package_dir = ROOT / parts[0] / parts[1] if len(parts) > 1 else None
    return ".".join(parts[:2]) if package_dir is not None and package_dir.is_dir() else module


def test_no_import_circles_between_modules():
    found = modules()
    known = set(found)
    graph = {
        name: imports(tree, name, known, top_level_only=False)
        for name, tree in found.items()
        if not is_face(name, tree)
    }
    graph = {name: {d for d in deps if d in graph} for name, deps in graph.items()}
    assert cycles(graph) == []


def test_no_import_runs_back_up_between_rooms():
    """Rooms (sub-packages and top modules) form layers: no two rooms import each other, even through others."""
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, tree in found.items():
        if is_face(name, tree) and room(name) == name and name not in PACKAGES:
            continue
        deps = {room(d) for d in imports(tree, name, known, top_level_only=False)}
        graph.setdefault(room(name), set()).update(deps - {room(name)} - set(PACKAGES))
    assert cycles(graph) == []


def test_few_imports_hide_inside_functions():
    hidden = []
    for name, tree in modules().items():
        if path_of(name) in CLIS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [
                    f"{path_of(name)}:{sub.lineno}"
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").split(".")[0] in PACKAGES
                ]
    assert len(set(hidden)) <= MAX_FUNCTION_IMPORTS, sorted(set(hidden))


def test_no_module_is_past_500_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_loss_names_are_compared_only_in_the_losses_package():
    from trainer.losses import LOSSES

    offenders = []
    for name, tree in modules().items():
        if name.startswith("trainer.losses"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                for operand in operands:
                    values = [operand] + (
                        list(operand.elts) if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else []
                    )
                    if any(isinstance(v, ast.Constant) and v.value in LOSSES for v in values):
                        offenders.append(f"{path_of(name)}:{node.lineno}")
    assert offenders == []
