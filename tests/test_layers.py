"""The layers of docs/DESIGN.md hold: a module imports only from its own layer or the layers below, no modules import
each other in a cycle, and no private (underscore) name is imported from another module.

Every import counts, those inside functions too (a lazy import is still a dependency). The checker reads the source
with `ast` and imports nothing, so it runs in a second. Names given as strings (the CLI's command table,
a config's `_target_`) are not imports and are not checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "plmbench"

# Bottom to top. A module belongs to the layer of its longest matching prefix (relative to plmbench).
LAYERS = [
    ("foundation", ["", "errors", "paths", "configuration", "hydra_app", "impl", "optim", "lamb", "safety", "lineage",
                    "numbers", "termination"]),
    ("data", ["data", "metrics"]),
    ("models", ["models"]),
    ("objectives", ["objectives"]),
    ("lit", ["lit"]),
    ("units", ["units", "fewshot", "distill", "elmo"]),
    ("sweep", ["sweep", "grid"]),
    ("tables", ["tables"]),
    ("bench", ["bench"]),
    ("commands", ["commands", "cli", "__main__"]),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
PREFIXES = sorted(((prefix, name) for name, prefixes in LAYERS for prefix in prefixes), key=lambda p: -len(p[0]))


def layer_of(module: str) -> str | None:
    """plmbench.lit.finetuning -> 'lit'; None for a module no layer claims."""
    relative = module.removeprefix("plmbench").removeprefix(".")
    for prefix, name in PREFIXES:
        if relative == prefix or (prefix and relative.startswith(prefix + ".")) or (not prefix and not relative):
            return name
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_sources(root: Path = SRC) -> dict[str, tuple[str, bool]]:
    """{dotted module name: (source, is a package __init__)} for every .py under src/plmbench."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path.read_text(), package)
    return out


def imports(module: str, source: str, package: bool, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported plmbench module, name taken from it or None, line) for each import in `source`, at any depth, and
    each attribute read off an imported plmbench module (`finetune_module._x` -> name '_x')."""
    found, aliases = [], {}
    tree = ast.parse(source)
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "plmbench":
                    found.append((alias.name, None, node.lineno))
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            if base.split(".")[0] != "plmbench":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:  # `from plmbench.lit import finetune_module`: the module itself
                    found.append((submodule, None, node.lineno))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    found.append((base, alias.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and is_private(node.attr):
            found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """One line per broken rule: an unplaced module, an upward import, a private name across modules, a cycle."""
    known = set(sources)
    problems, graph = [], {module: set() for module in sources}
    for module, (source, package) in sorted(sources.items()):
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: in no layer (add it to LAYERS in tests/test_layers.py)")
            continue
        for target, name, line in imports(module, source, package, known):
            if target not in known:
                problems.append(f"{module}:{line}: imports {target}, which does not exist")
                continue
            if target != module:
                graph[module].add(target)
            target_layer = layer_of(target)
            if target_layer is not None and RANK[target_layer] > RANK[layer]:
                problems.append(f"{module}:{line}: {layer} imports {target} from {target_layer}, a layer above it")
            if name is not None and is_private(name) and target != module:
                problems.append(f"{module}:{line}: imports the private name {name} from {target}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return list(dict.fromkeys(problems))  # `from m import a, b` above: one line, not one per name


# ------------------------------------------------------------------------------------------ tests


def test_every_import_goes_down_with_no_cycle_and_no_private_name():
    sources = module_sources()
    assert len(sources) > 100  # the checker read the package
    assert violations(sources) == []


def test_each_layer_holds_modules():
    placed = {layer_of(module) for module in module_sources()}
    assert placed == set(RANK), set(RANK) - placed  # a layer no module is in is a typo in LAYERS


def with_change(module: str, line: str, sources=None) -> dict[str, tuple[str, bool]]:
    sources = dict(sources or module_sources())
    source, package = sources[module]
    sources[module] = (source + "\n" + line + "\n", package)
    return sources


def test_an_upward_import_is_caught_at_the_top_or_inside_a_function():
    top = violations(with_change("plmbench.lit.loggers", "from plmbench.sweep.store import drop_secrets"))
    assert len(top) == 1 and top[0].startswith("plmbench.lit.loggers:") and \
        "lit imports plmbench.sweep.store from sweep, a layer above it" in top[0], top
    lazy = violations(with_change("plmbench.models.heads", "def f():\n    from plmbench.lit import finetuning"))
    assert lazy and "models imports plmbench.lit.finetuning from lit" in lazy[0], lazy
    relative = violations(with_change("plmbench.tables.render", "from ..commands.table import parse_overrides"))
    assert relative and "tables imports plmbench.commands.table from commands" in relative[0], relative


def test_a_cycle_is_caught():
    found = violations(with_change("plmbench.data.collate", "from plmbench.data.features import FeatureCollator"))
    assert found == ["import cycle: plmbench.data.collate -> plmbench.data.features"], found


def test_a_private_name_from_another_module_is_caught():
    found = violations(with_change("plmbench.sweep.runner", "from plmbench.sweep.store import _reason"))
    assert any("imports the private name _reason from plmbench.sweep.store" in p for p in found), found
    attribute = violations(with_change("plmbench.fewshot.units",
                                       "from plmbench.lit import finetuning\nfinetuning._count"))
    assert any("private name _count from plmbench.lit.finetuning" in p for p in attribute), attribute
    assert violations(with_change("plmbench.sweep.runner", "from plmbench import __version__")) == []


def test_a_module_outside_every_layer_is_caught():
    sources = {**module_sources(), "plmbench.newthing": ("", False)}
    assert violations(sources) == ["plmbench.newthing: in no layer (add it to LAYERS in tests/test_layers.py)"]
