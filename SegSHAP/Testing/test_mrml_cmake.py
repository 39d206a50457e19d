"""SegSHAP/CMakeLists.txt lists every script and resource of the module (explicit lists are Slicer's convention;
a file missing here would be missing from the built extension)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.mrml

MODULE_DIR = Path(__file__).resolve().parents[1]
CMAKE = MODULE_DIR / "CMakeLists.txt"


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set in {CMAKE}"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [i.replace("${MODULE_NAME}", "SegSHAP") for i in items if i]


def _on_disk(patterns: list[str]) -> set[str]:
    files = set()
    for pattern in patterns:
        files |= {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.glob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    return files


def test_scripts_match_the_files_on_disk():
    listed = _cmake_list(CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "a script is listed twice"
    disk = _on_disk(["SegSHAP.py", "SegSHAPLib/**/*.py", "SegSHAPMRML/**/*.py"])
    assert not disk - set(listed), f"add to MODULE_PYTHON_SCRIPTS: {sorted(disk - set(listed))}"
    assert not set(listed) - disk, f"listed but not on disk: {sorted(set(listed) - disk)}"


def test_resources_match_the_files_on_disk():
    listed = _cmake_list(CMAKE.read_text(), "MODULE_PYTHON_RESOURCES")
    disk = _on_disk(["Resources/**/*"])
    assert not disk - set(listed), f"add to MODULE_PYTHON_RESOURCES: {sorted(disk - set(listed))}"
    assert not set(listed) - disk, f"listed but not on disk: {sorted(set(listed) - disk)}"
    for needed in ("Resources/Icons/SegSHAP.png", "Resources/UI/SegSHAP.ui"):
        assert needed in listed


def test_module_build_and_self_test_registration():
    text = CMAKE.read_text()
    assert re.search(r"set\(MODULE_NAME SegSHAP\)", text)
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1)
    for token in ("NAME ${MODULE_NAME}", "SCRIPTS ${MODULE_PYTHON_SCRIPTS}", "RESOURCES ${MODULE_PYTHON_RESOURCES}",
                  "WITH_GENERIC_TESTS"):
        assert token in build
    testing = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", text, re.S)
    assert testing and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in testing.group(1)


def test_extension_adds_the_module():
    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert "add_subdirectory(SegSHAP)" in top
