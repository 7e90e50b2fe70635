"""The package layout's two import rules (README, *Development*), read from the source with `ast`.

1. Imports go downward only: commands → runs → backends → the stages (prefetch, map, reduce, name,
   trends, report, aws) → the spine (settings, storage, layout, schemas, quarters, errors, plan, sample). The
   entry points (`ftm/__init__.py`, `cli.py`, `__main__.py`) may import from any layer.
2. A package is used from outside only through the names its `__init__.py` lists in `__all__`
   (`from ftm.prefetch import read_manifest`), never through one of its modules
   (`from ftm.prefetch.transcripts import read_manifest`); a stage uses another stage's names
   only, not a module the other exports (`ftm.map.records` is for runs and backends).
   Within a package, modules import each other by full path, never relatively.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SPINE = "spine"
STAGES = ("prefetch", "map", "reduce", "name", "trends", "measures", "report", "aws")
LEVEL = {SPINE: 0, **dict.fromkeys(STAGES, 1), "backends": 2, "runs": 3, "commands": 4}
# Packages that hold spine data rather than a stage.
SPINE_PACKAGES = {"sample"}
ENTRY_POINTS = {"ftm", "ftm.cli", "ftm.__main__"}
# cli.py registers the command modules themselves; it is the one place that wires them.
WIRES_COMMANDS = "ftm.cli"
# The backends' package opens an implementation only when asked (`open_backend`), and
# `python -m ftm.backends.local` runs one as a script, which would import itself twice if the
# package imported it: so the commands that need a backend's own names import its module.
IMPLEMENTATION_MODULES = {"ftm.backends.local", "ftm.backends.aws_batch"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, "ftm.map.batch"
    line: int
    text: str  # the import as written, for the message
    source: str  # what it imports from: "ftm.map" for `from ftm.map import records`
    name: str | None  # the name taken from `source`; None for `import ftm.map.records`


def read_modules(root: Path = SRC) -> dict[str, ast.Module]:
    """Every module of the ftm package by dotted name, parsed."""
    modules = {}
    for path in sorted((root / "ftm").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return modules


def package_of(module: str) -> str:
    """The layout package a module belongs to: a stage, runs, backends, commands, or the spine."""
    parts = module.split(".")
    if len(parts) > 1 and (SRC / "ftm" / parts[1] / "__init__.py").is_file():
        return SPINE if parts[1] in SPINE_PACKAGES else parts[1]
    return SPINE


def exports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Each layout package's `__all__`, as its `__init__.py` spells it."""
    found: dict[str, set[str]] = {}
    for package in LEVEL:
        tree = modules.get(f"ftm.{package}")
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
            ):
                found[package] = set(ast.literal_eval(node.value))
    return found


def imports(modules: dict[str, ast.Module]) -> list[Import]:
    """Every import of an ftm module, at the top of a module or inside a function alike."""
    found = []
    for module, tree in modules.items():
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Import | ast.ImportFrom) else ""
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ftm":
                        found.append(Import(module, node.lineno, text, alias.name, None))
            elif isinstance(node, ast.ImportFrom):
                source = "." * node.level + (node.module or "")
                if node.level or source.split(".")[0] == "ftm":
                    found.extend(
                        Import(module, node.lineno, text, source, alias.name) for alias in node.names
                    )
    return found


def violations(modules: dict[str, ast.Module]) -> list[str]:
    """What breaks the rules, one line each: the module, the import and the rule."""
    exported = exports(modules)
    problems = []
    for found in imports(modules):
        where = f"{found.module} (line {found.line}): `{found.text}`"
        if found.source.startswith("."):
            problems.append(f"{where}: import by full path (`from ftm.… import …`), never relatively")
            continue
        importer, imported = package_of(found.module), package_of(_target(found, modules))
        if importer == imported or imported == SPINE:
            continue
        if importer not in LEVEL or imported not in LEVEL:
            problems.append(
                f"{where}: give package {importer if importer not in LEVEL else imported} a layer"
            )
            continue
        lateral = importer in STAGES and imported in STAGES
        if found.module not in ENTRY_POINTS and not lateral and LEVEL[imported] >= LEVEL[importer]:
            what = {SPINE: "the spine", **dict.fromkeys(STAGES, f"a stage ({importer})")}.get(
                importer, importer
            )
            problems.append(
                f"{where}: imports upward: {what} (layer {LEVEL[importer]}) imports {imported} (layer "
                f"{LEVEL[imported]}); imports go commands → runs → backends → stages → spine"
            )
            continue
        if found.module == WIRES_COMMANDS and imported == "commands":
            continue
        if found.source in IMPLEMENTATION_MODULES and importer == "commands":
            continue
        problems.extend(
            f"{where}: {problem}" for problem in _public_name_problems(found, importer, exported, modules)
        )
    return problems


def _public_name_problems(
    found: Import, importer: str, exported: dict[str, set[str]], modules: dict[str, ast.Module]
) -> list[str]:
    imported = package_of(_target(found, modules))
    package = f"ftm.{imported}"
    if found.source != package or found.name is None:
        return [
            f"reaches into {imported}'s module {_target(found, modules)}: import the names {imported} "
            f"exports instead, `from {package} import …` (its __all__: {sorted(exported.get(imported, ()))})"
        ]
    if found.name not in exported.get(imported, set()):
        return [
            f"{found.name!r} is not in {package}.__all__: export it there, or leave it private to {imported}"
        ]
    if importer in STAGES and imported in STAGES and f"{package}.{found.name}" in modules:
        return [
            f"a stage ({importer}) takes another stage's module {package}.{found.name}: stages use each "
            f"other's functions and classes only (add the one needed to {package}.__all__)"
        ]
    return []


def _target(found: Import, modules: dict[str, ast.Module]) -> str:
    """The module an import reaches: `from ftm import layout` reaches ftm.layout."""
    if found.name is not None and f"{found.source}.{found.name}" in modules:
        return f"{found.source}.{found.name}"
    return found.source


# --- the tests ---------------------------------------------------------------------------------


def test_every_package_has_a_layer_and_every_stage_exports_names() -> None:
    modules = read_modules()
    packages = {package_of(module) for module in modules}
    assert packages <= set(LEVEL), f"give each new package a layer in LEVEL: {sorted(packages - set(LEVEL))}"
    exported = exports(modules)
    missing = [package for package in (*STAGES, "runs", "backends") if package not in exported]
    assert not missing, f"these packages' __init__.py have no __all__: {missing}"


def test_imports_go_downward_and_only_through_exported_names() -> None:
    problems = violations(read_modules())
    assert not problems, "the layout's import rules are broken:\n" + "\n".join(problems)


def test_stage_inits_hold_only_a_docstring_imports_and_their_names() -> None:
    """Each stage's `__init__.py` says what the stage takes and writes, then exports names other
    packages use: every name in its `__all__` is imported by a module of another package."""
    modules = read_modules()
    exported = exports(modules)
    used = {
        (package_of(_target(found, modules)), found.name)
        for found in imports(modules)
        if package_of(found.module) != package_of(_target(found, modules))
    }
    for package in (*STAGES, "runs"):
        tree = modules[f"ftm.{package}"]
        assert ast.get_docstring(tree), f"ftm/{package}/__init__.py has no docstring"
        other = [
            ast.unparse(node).splitlines()[0]
            for node in tree.body[1:]
            if not isinstance(node, ast.ImportFrom | ast.Import)
            and not (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__")
        ]
        assert not other, f"ftm/{package}/__init__.py holds more than imports and __all__: {other}"
        unused = sorted(name for name in exported[package] if (package, name) not in used)
        assert not unused, f"ftm.{package}.__all__ lists names no other package imports: {unused}"


def test_the_rules_catch_what_they_forbid() -> None:
    """Each rule, broken once in a copy of the real modules, is reported with its module and import."""
    planted = {
        "ftm.layout": "from ftm.map import run_batch",  # the spine imports a stage
        "ftm.reduce.themes": "from ftm.runs import read_run",  # a stage imports a layer above
        "ftm.backends.base": "from ftm.runs import read_run",  # backends import runs
        "ftm.map.batch": "from ftm.prefetch.transcripts import read_manifest",  # another stage's module
        "ftm.name.naming": "from ftm.reduce import cluster_topics",  # a name outside __all__
        "ftm.reduce.__init__": "from ftm.map import records",  # a stage takes another's module
        "ftm.runs.state": "from .record import read_run",  # a relative import
    }
    for module, line in planted.items():
        modules = read_modules()
        name = module.removesuffix(".__init__")
        modules[name] = ast.Module(body=[*modules[name].body, *ast.parse(line).body], type_ignores=[])
        problems = [problem for problem in violations(modules) if problem.startswith(f"{name} ")]
        assert len(problems) == 1 and f"`{line}`" in problems[0], (module, line, problems)
