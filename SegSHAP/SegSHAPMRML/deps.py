"""Dependency check and the pip command of the explicit install step (Qt-free; the Slicer logic runs it).

Nothing is installed at import time. The panel shows ``missing_requirements()``; the user clicks Install; the
logic installs PyTorch through the PyTorch extension (``PyTorchUtils``) when that is present, and the rest with
``slicer.packaging.pip_ensure`` (or ``slicer.util.pip_install`` on older Slicer), optionally from a local wheel
folder (``--find-links``; with ``offline`` also ``--no-index``), showing pip's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# distribution name, minimum version, import name; torch is handled separately (PyTorch extension first)
REQUIREMENTS = (
    ("torch", "2.1", "torch"),
    ("nnunetv2", "2.5", "nnunetv2"),
    ("scipy", "1.11", "scipy"),
    ("SimpleITK", "2.3", "SimpleITK"),
    ("numpy", "1.26", "numpy"),
)


@dataclass
class Requirement:
    name: str
    minimum: str
    import_name: str
    installed: str | None

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


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution from its metadata (the package is not imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def requirement_status() -> list[Requirement]:
    return [Requirement(name, minimum, module, installed_version(name)) for name, minimum, module in REQUIREMENTS]


def missing_requirements() -> list[Requirement]:
    """Requirements not installed or too old."""
    return [r for r in requirement_status() if not r.satisfied]


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


def pip_arguments(requirements: list[str], wheel_folder: str | Path | None = None, offline: bool = False) -> list[str]:
    """pip install arguments for the requirement specs, optionally from a local folder of wheels."""
    args = ["install"]
    if wheel_folder:
        folder = Path(wheel_folder)
        if not folder.is_dir():
            raise ValueError(f"wheel folder {folder} does not exist")
        args += ["--find-links", str(folder)]
        if offline:
            args.append("--no-index")
    return args + list(requirements)


__all__ = ["REQUIREMENTS", "Requirement", "installed_version", "requirement_status", "missing_requirements",
           "status_text", "pip_arguments"]
