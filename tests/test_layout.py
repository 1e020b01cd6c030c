"""The package's layout rules (docs/architecture.md), read off the source: which folder may import which, no
import cycle, no ``gpunit`` import hidden in a function, no file named after another method."""
import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpunit"
METHODS = ("gp_unit", "deepi2i", "biggan")
SHARED = ("engine", "data", "metrics", "nn", "losses", "inference", "translate_folder")  # import no method
ALLOWED = {"deepi2i": {"biggan"}}  # DeepI2I builds on BigGAN's networks, downwards only
EVERY_METHOD = ("translators",)  # the one module that knows every method's files


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported gpunit module, line, inside a function) for every import, skipping ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("gpunit"):
                targets = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
                found.extend((t, child.lineno, in_function) for t in targets)
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("gpunit"))
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def group(module: str) -> str:
    return module.split(".")[1] if "." in module else "gpunit"


def test_shared_code_imports_no_method_and_methods_import_only_what_they_build_on():
    bad = []
    for name, path in MODULES.items():
        here = group(name)
        for target, line, _ in imports(path):
            if target not in MODULES:
                continue  # a name imported from a module, not a module
            there = group(target)
            if there == here or there not in METHODS + EVERY_METHOD:
                continue
            if here in SHARED or (here in METHODS and there not in ALLOWED.get(here, set())):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = defaultdict(set)
    for name, path in MODULES.items():
        for target, _, in_function in imports(path):
            if target in MODULES and target != name and not in_function:
                graph[name].add(target)
    state, cycles = {}, []

    def walk(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for name in MODULES:
        if name not in state:
            walk(name, [name])
    assert not cycles, "\n".join(cycles)


def test_gpunit_imports_inside_functions_only_to_stay_lazy():
    """Allowed only with a comment that says which heavy optional dependency (or what) it keeps unloaded."""
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, line, in_function in imports(path):
            if in_function and "lazy" not in lines[line - 1] and "lazy" not in lines[line - 2]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_file_is_named_after_another_method():
    names = {"gp_unit": ("gpunit", "gp_unit", "stage"), "deepi2i": ("deepi2i",), "biggan": ("biggan",)}
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        home = rel.parts[0] if len(rel.parts) > 1 else None
        for method, words in names.items():
            if method != home and any(w in path.stem for w in words) and home in METHODS + ("engine", "data",
                                                                                           "metrics", None):
                if not (home == "gp_unit" and method == "biggan" and rel.parts[1] == "prior"):  # BigGAN pairs
                    bad.append(str(rel))
    assert not bad, bad


def test_the_rules_can_fail(tmp_path):
    """The checks see imports at module level and inside functions."""
    bad = tmp_path / "bad.py"
    bad.write_text("from gpunit.gp_unit.translator import Translator\n\ndef f():\n    from gpunit.deepi2i import models\n")
    found = imports(bad)
    assert ("gpunit.gp_unit.translator", 1, False) in found and ("gpunit.deepi2i", 4, True) in found
