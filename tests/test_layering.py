"""The import layering of docs/ARCHITECTURE.md, read from the source with `ast`: no cycle between
sentry's modules (imports inside functions count: a lazy import is still a dependency), and no
subpackage importing one of a layer above it. The layer table is parsed from ARCHITECTURE.md, so
the document and the code cannot drift apart."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sentry")


def _modules():
    """{dotted module name: path} of every module under sentry/."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join(rel)] = os.path.join(root, f)
    return found


def _imports(name, path, modules):
    """The sentry modules that module `name` imports, anywhere in its source."""
    is_package = path.endswith("__init__.py")
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from pkg import name`: name is a submodule or an attribute of pkg.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import sentry.x.y` of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layers():
    """{top-level name under sentry: layer number} from the table in docs/ARCHITECTURE.md."""
    text = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()
    table = text.split("<!-- layers -->")[1]
    layers = {}
    for number, names in re.findall(r"^\|\s*(\d+)\s*\|([^|]+)\|", table, re.M):
        for n in re.findall(r"`([a-z_]+)`", names):
            layers[n] = int(number)
    return layers


def _part(module):
    """sentry.oms.loader -> 'oms'; sentry.errors -> 'errors'; sentry -> None (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_graph_is_read():
    graph = _graph()
    # A few edges that must be seen (module-level, lazy, relative and `from . import`).
    assert "sentry.formats.model_files" in graph["sentry.oms.loader"]
    assert "sentry.signatures.trust" in graph["sentry.oms.loader"]  # inside a function
    assert "sentry.errors" in graph["sentry.io.fileio"]
    assert "sentry.pipeline.demo" in graph["sentry.tools.cli"]  # inside a function
    assert "sentry.formats.bundle" in graph["sentry.oms.signing"]  # from ..formats import bundle


def test_no_import_cycle():
    graph = _graph()
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_subpackage_has_a_layer():
    layers = _layers()
    parts = {_part(m) for m in _graph()} - {None, "_moved", "__main__"}
    assert parts <= set(layers), f"not in the ARCHITECTURE.md table: {sorted(parts - set(layers))}"


def test_no_import_of_a_layer_above():
    layers = _layers()
    wrong = []
    for module, imported in _graph().items():
        part = _part(module)
        if part is None or part == "_moved" or module == "sentry.__main__":
            continue  # the facade and the entry points sit above every layer
        for target in imported:
            other = _part(target)
            if other is None:
                # `from .. import __version__` is the facade's constant, not a dependency on
                # its imports.
                continue
            if other != part and layers[other] >= layers[part]:
                wrong.append(f"{module} (layer {layers[part]}) imports {target} "
                             f"(layer {layers[other]})")
    assert not wrong, "\n".join(wrong)
