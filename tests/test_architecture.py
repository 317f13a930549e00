"""The package's shape, checked: the layer contract (.importlinter), no import cycle at any depth, and one
place that starts programs. Imports inside functions and under TYPE_CHECKING count like any other."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

PACKAGE = Path(__file__).resolve().parent.parent / "envbuild"


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


@pytest.mark.unit
def test_no_import_cycle_at_any_depth() -> None:
    graph = grimp.build_graph("envbuild")
    assert _cycles(graph) == []


@pytest.mark.unit
def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [{"p.a", "p.b", "p.c"}]


@pytest.mark.unit
def test_layer_contract_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PACKAGE.parent)
    # import-linter configures logging with dictConfig, which disables every logger that exists (httpx's
    # too, so a later test in this process would see no request logged): put them back as they were.
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = [lg.disabled for lg in loggers]
    try:
        assert lint_imports(config_filename=".importlinter", no_cache=True) == 0
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was


@pytest.mark.unit
def test_only_the_runner_starts_programs() -> None:
    starters = {"run", "Popen", "call", "check_call", "check_output", "system", "execv", "execvp", "spawnv"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "core" / "runner.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in {"subprocess", "os"}
                    and node.func.attr in starters):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []


@pytest.mark.unit
def test_every_uv_variable_is_named_in_the_uv_layer() -> None:
    """A `UV_*` name spelled elsewhere is a second copy of uv knowledge (envbuild/uv/names.py holds them)."""
    import re

    spelled = re.compile(r"""["']UV_(?!IMAGE\b)[A-Z_]+["']""")  # UV_IMAGE: the Containerfile's own build argument
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}"
                 for path in sorted(PACKAGE.rglob("*.py")) if "uv" not in path.relative_to(PACKAGE).parts[:1]
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if spelled.search(line)]
    assert offenders == []


@pytest.mark.unit
def test_one_rule_says_what_a_custom_nodes_entry_is(tmp_path: Path) -> None:
    """comfy/layout.classify: the one rule inputs, images, `node list` and `init` follow (ComfyUI's loader's)."""
    from envbuild.comfy.layout import BROKEN_LINK, DISABLED, HIDDEN, NODE, NOT_A_NODE, node_entries

    folder = tmp_path / "custom_nodes"
    for name in ("node_a", "old.disabled", ".hidden", "__pycache__"):
        (folder / name).mkdir(parents=True)
    (folder / "single.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (folder / "README.md").write_text("not a node\n")
    (folder / "gone").symlink_to(tmp_path / "nowhere")
    kinds = {entry.name: entry.kind for entry in node_entries(folder)}
    assert kinds == {"node_a": NODE, "old.disabled": DISABLED, ".hidden": HIDDEN, "__pycache__": HIDDEN,
                     "single.py": NODE, "README.md": NOT_A_NODE, "gone": BROKEN_LINK}
    assert list(node_entries(tmp_path / "missing")) == []
    source = "".join(p.read_text() for p in (PACKAGE / "comfy").glob("*.py") if p.name != "layout.py")
    source += "".join((PACKAGE / f).read_text() for f in ("image/context.py", "env/init.py"))
    assert 'startswith((".", "__"))' not in source  # the rule is written once
