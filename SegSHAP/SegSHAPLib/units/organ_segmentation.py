"""An organ label map of a CT from TotalSegmentator's ``total`` task, in the form ``segshap explain --organs`` reads.

The steps (``segshap organs`` runs them in this order, so bad input and a missing package or missing weights are
reported before anything is written or downloaded):
- ``check_output_path``: --out is a new .nii/.nii.gz file.
- ``import_totalsegmentator``: the installed package, else an error naming the install command.
- ``check_roi_subset``: the requested class names exist in TotalSegmentator's ``total`` task.
- ``weights_needed`` + ``check_weights``: the weight folders the run needs, looked up in TotalSegmentator's own task
  tables and weights folder; an error saying where they go and how to import them when they are missing and
  TotalSegmentator's download server cannot be reached.
- ``run_totalsegmentator``: the model itself, written to a scratch folder.
- ``to_ct_grid`` + ``write_named_label_map``: TotalSegmentator's output put on the CT's voxel grid and written as a
  NIfTI whose CaretExtension label table carries the organ names (the table ``units.organs`` reads).
Arrays are (z, y, x) as in ``image_io.Volume``; the NIfTI file stores them in index order (i, j, k) = (x, y, z).
"""

from __future__ import annotations

import logging
import os
import socket
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, read_volume, write_volume
from SegSHAPLib.units.organs import organ_class_names

log = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install -e '.[totalseg]'"
TASK = "total"
# TotalSegmentator (libs.download_pretrained_weights) downloads its weights from its GitHub releases.
WEIGHTS_SERVER = ("github.com", 443)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_output_path(out: Path) -> None:
    """InputError unless ``out`` names a NIfTI file (.nii/.nii.gz) that does not exist yet."""
    if not str(out).lower().endswith(NIFTI_SUFFIXES):
        raise InputError(f"--out {out}: give a .nii.gz or .nii file name (the organ names are stored in the NIfTI "
                         "header)")
    if out.exists():
        raise InputError(f"--out {out} already exists; remove it or give another file name")


def import_totalsegmentator():
    """TotalSegmentator's Python API module (``totalsegmentator.python_api``); InputError naming the install command
    when it cannot be imported."""
    try:
        from totalsegmentator import python_api
    except ImportError as err:
        raise InputError(f"TotalSegmentator cannot be imported ({err}); install it into this environment with "
                         f"{INSTALL_COMMAND} in the SegSHAP source folder (not next to the slicer extra: "
                         "TotalSegmentator's fury needs vtk<9.4, slicer-core pins vtk 9.6.2)") from None
    return python_api


def total_class_names() -> list[str]:
    """The class names of TotalSegmentator's ``total`` task (the package must be installed)."""
    from totalsegmentator.map_to_binary import class_map

    return [str(name) for name in class_map[TASK].values()]


def check_roi_subset(roi_subset: list[str] | None, known_names: list[str]) -> None:
    """InputError when a requested class name is not one of ``known_names`` (``total_class_names()``)."""
    unknown = [name for name in roi_subset or [] if name not in known_names]
    if unknown:
        raise InputError(f"--roi-subset: {', '.join(unknown)} not in TotalSegmentator's {TASK} task; use its class "
                         f"names, e.g. {', '.join(known_names[:5])} (all of them: "
                         f"totalseg_info --classes --task {TASK})")


@dataclass(frozen=True)
class WeightsNeeded:
    """The weight folders one TotalSegmentator run needs.

    weights_dir:   where TotalSegmentator looks for them (its ``config.get_weights_dir()``: $TOTALSEG_WEIGHTS_PATH,
                   else $TOTALSEG_HOME_DIR/nnunet/results, else ~/.totalsegmentator/nnunet/results).
    folders:       folder names relative to ``weights_dir``, one per nnU-Net model of the run.
    download_task: the ``totalseg_download_weights -t`` task that fetches all of them.
    """

    weights_dir: Path
    folders: tuple[str, ...]
    download_task: str

    def missing(self) -> list[str]:
        """The folders TotalSegmentator would download (it downloads a folder whose path does not exist)."""
        return [folder for folder in self.folders if not (self.weights_dir / folder).exists()]


def weights_needed(fast: bool, roi_subset: bool) -> WeightsNeeded:
    """The weight folders of the ``total`` task from TotalSegmentator's own tables (the package must be installed).

    The task's models (the 1.5 mm five-part model, or the 3 mm one with ``fast``), plus, with a ROI subset, the 6 mm
    ("fastest") model TotalSegmentator first runs to crop around the requested classes.
    """
    from totalsegmentator.config import get_weights_dir
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.python_api import get_task_config

    task_ids = np.atleast_1d(get_task_config(TASK, fast=fast, quiet=True)["task_id"]).tolist()
    if roi_subset:
        task_ids.append(get_task_config(TASK, fastest=True, quiet=True)["task_id"])
    configs = [TASK_ID_WEIGHTS_CONFIGS[task_id] for task_id in task_ids]
    folders = tuple(str(Path(c.get("rel_path") or "") / c["foldername"]) for c in configs)
    return WeightsNeeded(Path(get_weights_dir()), folders, f"{TASK}_fast" if fast else TASK)


def server_reachable(host: str = WEIGHTS_SERVER[0], port: int = WEIGHTS_SERVER[1], timeout_s: float = 5.0) -> bool:
    """True when a TCP connection to host:port opens within ``timeout_s`` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def check_weights(needed: WeightsNeeded, reachable: Callable[[], bool]) -> None:
    """Return when every weight folder is present, or when some are missing and TotalSegmentator can download them
    (``reachable()``, asked only then); otherwise InputError saying where the weights go and how to import them."""
    missing = needed.missing()
    if not missing:
        return
    if reachable():
        log.warning("TotalSegmentator will download %s into %s", ", ".join(missing), needed.weights_dir)
        return
    raise InputError(
        f"TotalSegmentator's weights are not in {needed.weights_dir} (missing {', '.join(missing)}) and "
        f"{WEIGHTS_SERVER[0]} cannot be reached to download them. On a machine with internet access run "
        f"`totalseg_download_weights -t {needed.download_task}` and copy its weights folder "
        f"(~/.totalsegmentator/nnunet/results) to {needed.weights_dir}, or set TOTALSEG_HOME_DIR (the folder holding "
        "nnunet/results) or TOTALSEG_WEIGHTS_PATH to a copy; a weights zip from TotalSegmentator's GitHub releases "
        "is unpacked there by `totalseg_import_weights -i FILE.zip`")


def run_totalsegmentator(python_api, ct: Volume, workdir: Path, fast: bool, device: str,
                         roi_subset: list[str] | None, quiet: bool) -> Path:
    """TotalSegmentator's ``total`` task on ``ct``; returns its multilabel NIfTI (with label table) in ``workdir``.

    The CT goes to TotalSegmentator as a NIfTI written from ``ct`` (so NRRD and DICOM inputs work too).
    device: "cpu" or "gpu" (TotalSegmentator falls back to the CPU when there is no GPU).
    """
    ct_path = write_volume(ct, workdir / "ct.nii.gz")
    seg_path = workdir / "totalseg.nii.gz"
    python_api.totalsegmentator(ct_path, seg_path, ml=True, task=TASK, fast=fast, device=device,
                                roi_subset=roi_subset, quiet=quiet)
    return seg_path


def to_ct_grid(totalseg_path: str | os.PathLike, ct: Volume) -> tuple[Volume, dict[int, str]]:
    """TotalSegmentator's multilabel output -> (label map on the CT's grid, label id -> organ name).

    The labels are resampled (nearest neighbour, 0 outside) from the file's grid onto the CT's: the identity when
    the file already lies on it, whatever orientation it was stored in otherwise. The returned Volume has the CT's
    shape (z, y, x), spacing, origin and direction and the file's integer voxel type. Names come from the file's
    label table (``units.organs.organ_class_names``).
    """
    seg = read_volume(totalseg_path)
    on_ct_grid = sitk.Resample(seg.to_sitk(), ct.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return ct.with_array(sitk.GetArrayFromImage(on_ct_grid)), organ_class_names(totalseg_path)


def label_table_xml(names: dict[int, str]) -> str:
    """A CaretExtension XML label table (the one TotalSegmentator writes and ``units.organs`` reads)."""
    root = ElementTree.Element("CaretExtension")
    table = ElementTree.SubElement(ElementTree.SubElement(root, "VolumeInformation", Index="0"), "LabelTable")
    for key in sorted(names):
        ElementTree.SubElement(table, "Label", Key=str(int(key))).text = names[key]
    return ElementTree.tostring(root, encoding="unicode")


def write_named_label_map(labels: Volume, names: dict[int, str], path: str | os.PathLike) -> Path:
    """Write an integer label map (array (z, y, x)) as NIfTI with its geometry and a CaretExtension label table.

    The NIfTI data are in index order (i, j, k) = (x, y, z); qform and sform both hold the volume's IJK-to-RAS
    matrix, so ``image_io.read_volume`` returns the same grid.
    """
    import nibabel

    path = Path(path)
    affine = labels.ijk_to_ras_matrix()
    image = nibabel.Nifti1Image(np.ascontiguousarray(labels.array.transpose(2, 1, 0)), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    # Extension code 0 as TotalSegmentator writes it: nibabel cannot read back the content of code 30 ("caret").
    image.header.extensions.append(nibabel.nifti1.Nifti1Extension(0, label_table_xml(names).encode("utf-8")))
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path
