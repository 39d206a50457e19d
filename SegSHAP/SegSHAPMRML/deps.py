"""What SegSHAP needs in Slicer's Python, and how each piece gets installed (Qt-free; SegSHAP.py's install logic
runs the plan).

Nothing is installed at import time. Like SlicerTotalSegmentator (``TotalSegmentatorLogic.setupPythonRequirements``)
and SlicerNNUNet (``SlicerNNUNetLib.InstallLogic``), each requirement has one installer (``Requirement.source``):

- ``torch``: the PyTorch extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``), which picks the CUDA build;
  never pip from PyPI.
- ``nnunetv2``: the NNUNet extension (``SlicerNNUNetLib.InstallLogic(...).setupPythonRequirements``), which keeps
  Slicer's own SimpleITK and requests and torch out of pip's hands.
- ``Slicer``: shipped with Slicer (numpy, SimpleITK); reported, never installed (Slicer's SimpleITK has its own IO).
- ``pip``: the rest, listed in ``Resources/requirements.txt`` (``slicer.packaging.pip_ensure`` on Slicer >= 5.12,
  ``slicer.util.pip_install`` with an argument list on 5.10), optionally from a local wheel folder.

The user confirms once (``confirmation_text``); after the install, ``replaced_imported`` says whether a package
whose modules were already imported changed version, i.e. whether Slicer must restart.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"

TORCH = "PyTorch extension"
NNUNET = "NNUNet extension"
SLICER = "Slicer"
PIP = "pip"

# distribution name, minimum version, installer; the pip ones come from REQUIREMENTS_FILE
EXTENSION_REQUIREMENTS = (("torch", "2.1", TORCH), ("nnunetv2", "2.5", NNUNET))
SLICER_REQUIREMENTS = (("numpy", "1.26", SLICER), ("SimpleITK", "2.3", SLICER))
_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9.]*)$")


@dataclass
class Requirement:
    name: str
    minimum: str
    installed: str | None
    source: str = PIP

    @property
    def satisfied(self) -> bool:
        return self.installed is not None and _version_tuple(self.installed) >= _version_tuple(self.minimum)

    @property
    def spec(self) -> str:
        return f"{self.name}>={self.minimum}"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.replace("+", ".").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def pip_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[tuple[str, str, str]]:
    """(name, minimum, "pip") per line of a requirements file of ``name>=version`` lines (# comments allowed)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: expected 'name>=version', got {line!r}")
        rows.append((match.group(1), match.group(2), PIP))
    return rows


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution from its metadata (the package is not imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def requirement_status(requirements_file: str | Path = REQUIREMENTS_FILE) -> list[Requirement]:
    rows = (*EXTENSION_REQUIREMENTS, *SLICER_REQUIREMENTS, *pip_requirements(requirements_file))
    return [Requirement(name, minimum, installed_version(name), source) for name, minimum, source in rows]


def missing_requirements(requirements_file: str | Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """Requirements not installed or too old."""
    return [r for r in requirement_status(requirements_file) if not r.satisfied]


def status_text() -> str:
    """'torch 2.3.1 - nnunetv2 missing - scipy 1.9 (needs >=1.11) - ...' for the panel's dependency line."""
    parts = []
    for r in requirement_status():
        if r.satisfied:
            parts.append(f"{r.name} {r.installed}")
        elif r.installed:
            parts.append(f"{r.name} {r.installed} (needs >={r.minimum})")
        else:
            parts.append(f"{r.name} missing")
    return " - ".join(parts)


def by_source(missing: list[Requirement]) -> dict[str, list[Requirement]]:
    """The missing requirements grouped by installer, in install order: torch, nnunetv2, pip, Slicer."""
    order = (TORCH, NNUNET, PIP, SLICER)
    return {source: [r for r in missing if r.source == source] for source in order
            if any(r.source == source for r in missing)}


def confirmation_text(missing: list[Requirement]) -> str:
    """The one question asked before installing: what, and through which installer."""
    how = {TORCH: "through the PyTorch extension", NNUNET: "through the NNUNet extension", PIP: "with pip"}
    lines = [f"{', '.join(r.spec for r in group)} {how[source]}"
             for source, group in by_source(missing).items() if source in how]
    return ("SegSHAP needs Python packages that are not installed yet:\n- " + "\n- ".join(lines) +
            "\n\nInstall them now? This needs a network connection (or a local wheel folder) and can take several "
            "minutes (PyTorch is several hundred MB).")


def pip_arguments(requirements: list[str], wheel_folder: str | Path | None = None,
                  offline: bool = False) -> list[str]:
    """pip install arguments (a list: each item is one argument, so folders with spaces stay whole) for the
    requirement specs, optionally from a local folder of wheels (``--find-links``; offline adds ``--no-index``)."""
    args = []
    if wheel_folder:
        folder = Path(wheel_folder)
        if not folder.is_dir():
            raise ValueError(f"wheel folder {folder} does not exist")
        args += ["--find-links", str(folder)]
        if offline:
            args.append("--no-index")
    return args + list(requirements)


def installed_versions() -> dict[str, str]:
    """Every installed distribution (lower-case name) -> version: the snapshot ``replaced_imported`` compares."""
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name.lower()] = dist.version
    return versions


def replaced_imported(before: dict[str, str], after: dict[str, str], modules=None) -> list[tuple[str, str | None, str]]:
    """Distributions whose version changed (or that were newly installed) while one of their top-level modules was
    already imported -> [(name, old version or None, new version)]: Slicer must restart to use the new code."""
    modules = sys.modules if modules is None else modules
    imports_of: dict[str, set[str]] = {}
    for top_level, names in metadata.packages_distributions().items():
        for name in names:
            imports_of.setdefault(name.lower(), set()).add(top_level)
    return [(name, before.get(name), version) for name, version in sorted(after.items())
            if before.get(name) != version and any(module in modules for module in imports_of.get(name, ()))]


__all__ = ["REQUIREMENTS_FILE", "TORCH", "NNUNET", "SLICER", "PIP", "Requirement", "pip_requirements",
           "installed_version", "requirement_status", "missing_requirements", "status_text", "by_source",
           "confirmation_text", "pip_arguments", "installed_versions", "replaced_imported"]
