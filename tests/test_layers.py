"""The package's import structure: layers point one way (cli -> runner -> stages -> library -> bottom), no import
cycles, and no stage module imports another. Imports are read with `ast`, including those inside functions (a lazy
import is still a dependency); imports under `if TYPE_CHECKING:` are type hints only and are left out."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

# Lower numbers are lower layers; a module may import only from its own layer or below. The `workbench.stages`
# package itself is the catalog of built-in kinds: it imports every stage module, so it sits above them.
BOTTOM = {
    "workbench",
    "workbench.api",
    "workbench.errors",
    "workbench.fsio",
    "workbench.hashing",
    "workbench.tracking",
    "workbench.tracking_outbox",
}
LAYERS = {"cli": 5, "runner": 4, "stages": 2}
STAGES_PACKAGE = "workbench.stages"
# The recipe layer is given its catalog (stage kinds, namespaces, URI schemes), so it needs nothing but these.
RECIPE_MAY_IMPORT = ("workbench.api", "workbench.errors", "workbench.recipe")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if any(module == b or module.startswith(b + ".") for b in BOTTOM - {"workbench"}) or module == "workbench":
        return 0
    if module == STAGES_PACKAGE:
        return 3
    top = module.split(".")[1]
    return LAYERS.get(top, 1)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str], package: str = "") -> set[str]:
    """The package modules `path` imports: every name of a `from package import a, b` that is a submodule counts,
    else the package itself; relative imports resolve against `package` (the module's own package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hints = _type_checking_lines(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in hints:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or ({base} & modules))
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imports_of(path, modules, package) - {name}
    return graph


def _packages_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_no_import_cycles():
    graph = import_graph()
    # a package's __init__ importing its own modules is not a cycle through the package
    edges = {m: {d for d in deps if d not in _packages_of(m)} for m, deps in graph.items()}
    try:
        list(TopologicalSorter(edges).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_layers_point_down():
    wrong = [
        f"{module} ({layer(module)}) imports {dep} ({layer(dep)})"
        for module, deps in import_graph().items()
        for dep in deps
        if layer(dep) > layer(module) and dep not in _packages_of(module)
    ]
    assert not wrong, "imports that point up a layer:\n" + "\n".join(sorted(wrong))


def test_no_stage_imports_another_stage():
    stage_modules = {m for m in import_graph() if m.startswith("workbench.stages.")}
    wrong = [
        f"{module} imports {dep}"
        for module, deps in import_graph().items()
        if module in stage_modules
        for dep in deps
        if dep in stage_modules or dep == STAGES_PACKAGE
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_recipe_layer_is_given_its_catalog():
    wrong = [
        f"{module} imports {dep}"
        for module, deps in import_graph().items()
        if module.startswith("workbench.recipe")
        for dep in deps
        if not dep.startswith(RECIPE_MAY_IMPORT)
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_a_cycle(tmp_path):
    """The walk must find imports inside functions and `from x import y` forms, or it could pass on anything."""
    (tmp_path / "a.py").write_text("def f():\n    from workbench.b import thing\n")
    assert imports_of(tmp_path / "a.py", {"workbench.b"}) == {"workbench.b"}
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import workbench.b\n")
    assert imports_of(tmp_path / "c.py", {"workbench.b"}) == set()
    (tmp_path / "d.py").write_text("from workbench import api, runner\nfrom . import sibling\n")
    found = imports_of(tmp_path / "d.py", {"workbench.api", "workbench.runner", "workbench.x.sibling"}, "workbench.x")
    assert found == {"workbench.api", "workbench.runner", "workbench.x.sibling"}
