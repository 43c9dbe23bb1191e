"""The package's shape: its modules import each other without a cycle, and every
module says in its docstring what it owns.

The import graph is read from the source with ast (no module is executed), counting
every import statement wherever it stands: at module level, inside a function (a lazy
import is still a dependency) and under `if TYPE_CHECKING:` (a cycle that only the
type checker sees is still a cycle in the design)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import jobengine

PACKAGE = "jobengine"
ROOT = Path(jobengine.__file__).parent


def _modules() -> dict[str, Path]:
    """Every Python module of the package: dotted name -> source file."""
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    for path in ROOT.rglob("*.so"):  # compiled modules: leaves of the graph
        rel = path.relative_to(ROOT.parent)
        out.setdefault(".".join([*rel.parts[:-1], rel.name.split(".")[0]]), path)
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (before its imported names)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (explicitly; a parent package's
    __init__ that Python runs on the way to a submodule is not an edge)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        if path.suffix != ".py":
            continue
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # `from . import x` imports the submodule x when there is one,
                    # else the name x from the package itself.
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if color[n] == GREY:
                return [*stack[stack.index(n) :], n]
            if color[n] == WHITE and (found := visit(n)):
                return found
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(graph):
        if color[m] == WHITE and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    # The test below can only be trusted if this one can fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_resolve_relative_imports():
    tree = ast.parse("from ..errors import X\nfrom . import _core\nfrom .pool import pool\n")
    froms = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert _resolve("jobengine.pool.worker", False, froms[0]) == "jobengine.errors"
    assert _resolve("jobengine.job", False, froms[1]) == "jobengine"
    assert _resolve("jobengine.stores", True, froms[2]) == "jobengine.stores.pool"


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert graph.get("jobengine.manager"), "graph not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_on_its_own():
    # Each module imported first in a fresh interpreter would need the full package;
    # here: every module imports, and none fails when its siblings are already loaded.
    for info in pkgutil.walk_packages(jobengine.__path__, PACKAGE + "."):
        importlib.import_module(info.name)


def test_every_module_says_what_it_owns_and_never_does():
    for name, path in _modules().items():
        if path.suffix != ".py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert "Owns:" in doc, f"{name}'s docstring does not say what it owns"
        assert "Never" in doc, f"{name}'s docstring does not say what it must never do"


def test_the_engine_docstring_draws_the_data_path():
    from jobengine import engine

    doc = engine.__doc__
    for stage in ("schedule", "inbox", "core", "dispatcher", "rings", "worker", "recorder",
                  "store", "supervisor"):  # fmt: skip
        assert stage in doc, f"the engine's data path does not mention {stage}"


def test_importing_jobengine_leaves_the_http_server_and_the_cli_unloaded():
    # a program that embeds the engine pays for the control API only with control=
    code = "import sys, jobengine; print(sorted(m for m in ('http.server', "
    code += "'jobengine.control_api', 'jobengine.cli') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
