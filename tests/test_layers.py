"""The package's layers, read from the code's own imports (every ``import``, also inside functions).

Each subpackage of ``gan_cli`` is a layer; a module may import modules of its own layer and of the
layers below it, never above, and the module graph has no cycles. DESIGN.md section 1 and
docs/development.md describe what each layer holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gan_cli"
# bottom to top
LAYERS = ("core", "fast", "losses", "config", "data", "models", "metrics", "training", "run", "callbacks", "report",
          "job", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: the gan_cli modules it imports}`` for every module of the package."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "gan_cli")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "gan_cli":
                for alias in node.names:  # `from gan_cli.x import y`: y may be a module or a name in x
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[name] = {d for d in deps if d != name}
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_every_module_lives_in_a_layer():
    graph = import_graph()
    stray = sorted(m for m in graph if m != "gan_cli" and layer_of(m) not in LAYERS)
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"
    assert not graph["gan_cli"], "gan_cli/__init__.py must stay free of imports"


def test_layers_import_only_downwards():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m in sorted(graph) for d in sorted(graph[m])
              if m != "gan_cli" and LAYERS.index(layer_of(d)) > LAYERS.index(layer_of(m))]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_imports_inside_functions(tmp_path):
    """The graph counts function-level imports (the ones that hid cycles before) and finds cycles."""
    assert "gan_cli.job.train" in import_graph()["gan_cli.cli.main"]  # imported inside cmd_* functions
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
