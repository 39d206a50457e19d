"""The core's packages form layers, and no module imports upward (every file, every import, lazy ones too).

A newcomer reads the tree bottom-up: ``errors`` / ``options`` / ``progress`` (no imports) -> ``io`` / ``shapley``
-> ``scoring`` / ``inference`` / ``report`` -> ``units`` -> ``explain`` -> ``cohort`` -> the MRML adapters
(``SegSHAPMRML``) -> ``cli`` -> the Slicer module.
A module may import its own package and any lower layer, never a higher one. The CLI sits above the MRML adapters
because ``segshap explain --scene`` writes an MRML scene; nothing else in the core reaches them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1]

LAYERS = {
    "SegSHAPLib": 0,  # the package's own __init__ (version only)
    "SegSHAPLib.errors": 0,
    "SegSHAPLib.box": 0,
    "SegSHAPLib.options": 0,
    "SegSHAPLib.progress": 0,
    "SegSHAPLib.io": 1,
    "SegSHAPLib.shapley": 1,
    "SegSHAPLib.scoring": 2,
    "SegSHAPLib.inference": 2,
    "SegSHAPLib.report": 2,
    "SegSHAPLib.units": 3,
    "SegSHAPLib.explain": 4,
    "SegSHAPLib.cohort": 5,
    "SegSHAPMRML": 6,
    "SegSHAPLib.cli": 7,
    "SegSHAP": 8,
}


def _layer_of(module: str) -> tuple[str, int] | None:
    """The longest LAYERS key that is ``module`` or a dotted prefix of it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key, LAYERS[key]
    return None


def _module_name(path: Path, root: Path = MODULE_DIR) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, root: Path = MODULE_DIR) -> set[str]:
    """Every module named by an import statement anywhere in the file (relative imports resolved)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _project_files() -> list[Path]:
    files = sorted((MODULE_DIR / "SegSHAPLib").rglob("*.py")) + sorted((MODULE_DIR / "SegSHAPMRML").rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def _upward_imports(path: Path, root: Path = MODULE_DIR) -> set[str]:
    own_key, own_layer = _layer_of(_module_name(path, root))
    upward = set()
    for name in _imported_modules(path, root):
        hit = _layer_of(name)
        if hit and hit[1] > own_layer:
            upward.add(f"{own_key} (layer {own_layer}) -> {name} (layer {hit[1]} '{hit[0]}')")
    return upward


@pytest.mark.parametrize("path", _project_files(), ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_no_module_imports_a_higher_layer(path):
    upward = _upward_imports(path)
    assert not upward, f"imports upward: {sorted(upward)}"


def test_every_package_of_the_core_has_a_layer():
    packages = {p.parent for p in (MODULE_DIR / "SegSHAPLib").rglob("*.py") if "__pycache__" not in p.parts}
    for package in packages:
        name = _module_name(package / "__init__.py")
        assert (package / "__init__.py").exists(), f"{name} has no __init__.py"
        if name != "SegSHAPLib":
            assert name in LAYERS, f"{name} is a package without a layer: add it to LAYERS"
    modules = {_module_name(p) for p in (MODULE_DIR / "SegSHAPLib").glob("*.py")} - {"SegSHAPLib"}
    assert modules <= set(LAYERS), f"top-level modules without a layer: {sorted(modules - set(LAYERS))}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checker itself: a file in ``shapley`` that imports ``explain`` lazily, absolutely and relatively, is caught."""
    probe = tmp_path / "SegSHAPLib" / "shapley" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import numpy\n\ndef f():\n    from SegSHAPLib.explain.run import run_explain\n"
                     "    from ..cohort import state\n    from .plan import CoalitionPlan\n")
    upward = _upward_imports(probe, tmp_path)
    assert {u.split(" -> ")[1].split(" ")[0] for u in upward} == {
        "SegSHAPLib.explain.run", "SegSHAPLib.explain.run.run_explain", "SegSHAPLib.cohort", "SegSHAPLib.cohort.state"}
