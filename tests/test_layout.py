"""The library's module graph: no import cycle (imports inside functions count too), and one definition of shared lists."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "animerec"


def module_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("animerec", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("animerec"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("animerec"))
        graph[name] = found
    return graph


def test_no_import_cycle():
    graph = module_imports()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_shared_lists_are_defined_once():
    text = {p: p.read_text(encoding="utf-8") for p in ROOT.rglob("*.py")}
    for definition in ("AnimeType = Literal[", "Activation = Literal[", "class WatchStatus", "class RecommenderError"):
        where = [str(p.relative_to(ROOT)) for p, t in text.items() if definition in t]
        assert len(where) == 1, (definition, where)
