"""The package's import structure: no cycles among ``nas`` modules, and the torch-free layer
(``nas.spec``, ``nas.config``, the experiment loader) imports without torch."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "nas"
BLOCK_TORCH = (  # the start of a program run where torch cannot be imported
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is not importable here')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The ``nas`` modules a file imports anywhere in it (module level and inside functions): for
    ``from a.b import c`` the module ``a.b.c`` when it is one, else ``a.b``. Relative imports are
    resolved against the file's package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import nas.spec.arch`` -> nas.spec.arch
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = 1, [node]
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_the_package_graph_is_complete():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph()
    assert "nas.experiment" in graph["nas.search.study"]  # module-level import
    assert "nas.latency.catalog" in graph["nas.experiment"]  # function-level import


def test_no_import_cycles_among_nas_modules():
    """Every import counts, also those inside functions: a cycle hidden in a function is still a
    cycle for the reader (and an import-order bug waiting for the import to move up). A package's
    ``__init__`` counts as a module importing what it re-exports."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_experiment_loader_imports_nothing_from_search_netadapt_or_export():
    graph = import_graph()
    reached = {m for m in graph["nas.experiment"] if m.startswith(("nas.search", "nas.netadapt", "nas.export"))}
    assert not reached


def test_spec_imports_without_torch():
    """``nas.spec`` (and the settings and experiment loader) with torch made unimportable."""
    code = (
        BLOCK_TORCH +
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('the finder did not block torch')\n"
        "import nas.spec, nas.config, nas.experiment\n"
        "from nas.spec import load_space, named_spec, count_madds\n"
        "spec = named_spec('mobilenetv3-small')\n"
        "assert count_madds(spec) > 0\n"
        "print('ok', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "False"]


def test_spec_package_reaches_no_torch_module():
    """No module of ``nas.spec`` imports (even inside a function) a ``nas`` module outside the
    torch-free layer."""
    graph = import_graph()
    torch_free = ("nas.spec", "nas.errors", "nas.io", "nas.config")
    for name, targets in graph.items():
        if name.startswith("nas.spec"):
            assert all(t.startswith(torch_free) for t in targets), (name, targets)


def test_the_command_line_starts_without_torch():
    """Building the parser and showing a spec import no torch (every command starts in well under a
    second; torch is imported by the commands that train, export or measure)."""
    code = (
        BLOCK_TORCH +
        "from nas.cli import main\n"
        "raise SystemExit(main(['arch', 'show', 'mobilenetv3-small', '--json']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"hash"' in result.stdout
