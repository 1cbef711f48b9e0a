"""The station's modules form no import cycle, each imports alone, and none reaches test code."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` (packages by their __init__)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _never_an_edge(node: ast.AST, is_package: bool) -> bool:
    """`if TYPE_CHECKING:` blocks never run. A package's module `__getattr__` (PEP 562) imports
    on first attribute use, after the package has finished loading: `agent.config` re-exports
    `Config` from `agent.config.load` that way, while the sections `load` gathers import
    `agent.config.machinery`; the facade can never be half-loaded, so it is not an edge."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return True
    return is_package and isinstance(node, ast.FunctionDef) and node.name == "__getattr__"


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import in this file asks for at run time, in function bodies too
    (a lazy import still ties the two modules together)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _never_an_edge(node, is_package):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it makes Python run (their parent packages included,
    except the importer's own parents, which are already running)."""
    known = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in imported_names(path, name):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name and prefix not in own_parents:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_agent_has_no_import_cycle():
    cycle = find_cycle(import_graph("agent"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_runtime_code_never_imports_test_code():
    # the demo's cloud starter is cloud.process; cloud.testing is gone and tests/ is not shipped
    for package in ("agent", "cloud"):
        for name, path in modules(package).items():
            bad = {
                n
                for n in imported_names(path, name)
                if n.split(".")[0] == "tests" or "testing" in n
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_every_agent_module_imports_on_its_own():
    # one fresh fork per module from an interpreter that has imported nothing of ours
    names = sorted(n for n in modules("agent") if not n.endswith("__main__"))
    script = textwrap.dedent(
        """
        import importlib, os, sys, traceback
        failed = []
        for name in sys.argv[1:]:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                failed.append(name)
        print(" ".join(failed))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"failed alone: {r.stdout.strip()}\n{r.stderr[-3000:]}"
