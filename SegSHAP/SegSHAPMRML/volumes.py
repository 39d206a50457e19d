"""SegSHAPLib ``Volume`` <-> MRML volume nodes, segmentations -> label volumes, markups -> RAS points.

Axis conventions at this boundary:
- ``Volume.array`` is (z, y, x); VTK image data stores x fastest, so the same C-ordered buffer is VTK's
  (k, j, i) and no transpose is needed, only ``SetDimensions(nx, ny, nz)``.
- ``Volume`` geometry is ITK LPS; MRML volume nodes carry Slicer's IJKToRAS. ``Volume.ijk_to_ras_matrix()``
  is exactly the node's IJKToRAS, and the inverse conversion splits IJKToRAS back into spacing (column norms),
  direction (normalised columns, LPS) and origin (LPS).
- The VTK image data of a node keeps origin (0, 0, 0) and spacing 1; geometry lives in the node (Slicer's rule).

Only MRML/VTK classes from the ``slicer-core`` wheel are used here (no Qt, no ``slicer.util``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import LPS_TO_RAS, Volume
from SegSHAPLib.units.grouping import organ_name_key

LABELMAP_CLASS = "vtkMRMLLabelMapVolumeNode"
SCALAR_CLASS = "vtkMRMLScalarVolumeNode"


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """4x4 numpy array -> vtkMatrix4x4."""
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """vtkMatrix4x4 -> 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ijk_to_ras(node, world: bool = True) -> np.ndarray:
    """The node's IJKToRAS as a 4x4 array; with ``world`` a linear parent transform is applied too.

    A non-linear parent transform cannot be expressed as a voxel grid: InputError asks to harden it."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = numpy_matrix(matrix)
    parent = node.GetParentTransformNode() if world else None
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise InputError(f"volume '{node.GetName()}' is under a non-linear transform; harden the transform "
                             "(Data module, right-click, 'Harden transform') and try again")
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = numpy_matrix(to_world) @ ijk_to_ras
    return ijk_to_ras


def geometry_from_ijk_to_ras(ijk_to_ras: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
    """Slicer IJKToRAS (4x4) -> (spacing (x, y, z), origin LPS, direction LPS 3x3 with unit columns)."""
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ijk_to_ras, dtype=float)
    scaled = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(scaled, axis=0)
    if np.any(spacing <= 0):
        raise InputError("the volume's IJKToRAS matrix has a zero column (degenerate geometry)")
    direction = scaled / spacing
    return tuple(float(s) for s in spacing), tuple(float(o) for o in ijk_to_lps[:3, 3]), direction


def _vtk_ready(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy in a dtype VTK and Slicer's writers handle (bool -> uint8, float16 -> float32,
    int64/uint64 -> int32 when the values fit)."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype in (np.int64, np.uint64):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            array = array.astype(np.int32)
    return np.ascontiguousarray(array)


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """(z, y, x) numpy array -> vtkImageData with dims (nx, ny, nz), origin 0, spacing 1 (deep copy)."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array, got shape {array.shape}")
    array = _vtk_ready(array)
    image = vtk.vtkImageData()
    image.SetDimensions(int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
    scalars = numpy_support.numpy_to_vtk(array.ravel(order="C"), deep=True,
                                         array_type=numpy_support.get_vtk_array_type(array.dtype))
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def array_from_node(node) -> np.ndarray:
    """A copy of the node's voxels as a (z, y, x) numpy array."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        name = node.GetName() if node is not None else "None"
        raise InputError(f"volume '{name}' has no voxel data")
    scalars = image.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"volume '{node.GetName()}' has {scalars.GetNumberOfComponents()} components per voxel; "
                         "a scalar volume is needed")
    nx, ny, nz = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx).copy()


def node_to_volume(node, world: bool = False) -> Volume:
    """A scalar or label map volume node -> ``Volume`` (array (z, y, x), LPS geometry).

    By default the geometry is the node's own IJKToRAS (its local frame): the explanation runs in the CT's
    frame and ``results_to_scene`` puts the result nodes under the CT's parent transform, so they follow it.
    ``world=True`` applies a linear parent transform instead (InputError for a non-linear one)."""
    array = array_from_node(node)
    spacing, origin, direction = geometry_from_ijk_to_ras(node_ijk_to_ras(node, world=world))
    return Volume(array, spacing, origin, direction)


def update_node_from_volume(node, volume: Volume):
    """Replace the node's voxels and geometry with the volume's."""
    node.SetAndObserveImageData(image_data_from_array(volume.array))
    node.SetIJKToRASMatrix(vtk_matrix(volume.ijk_to_ras_matrix()))
    node.Modified()
    return node


def volume_to_node(scene, volume: Volume, name: str, *, labelmap: bool = False, node=None, unique_name: bool = True):
    """Add a ``vtkMRMLScalarVolumeNode`` (or ``vtkMRMLLabelMapVolumeNode``) holding ``volume`` to ``scene``.

    The node gets no display node here (``display`` adds one with an explicit colour table, so no default
    colour node is looked up). ``node`` updates an existing node instead. Returns the node."""
    if node is None:
        cls = LABELMAP_CLASS if labelmap else SCALAR_CLASS
        node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name) if unique_name else name)
    return update_node_from_volume(node, volume)


def same_voxel_grid(node_a, node_b, tol: float = 1e-4) -> bool:
    """True when two volume nodes share dimensions and IJKToRAS (their voxels overlay one to one)."""
    a, b = node_a.GetImageData(), node_b.GetImageData()
    if a is None or b is None or a.GetDimensions() != b.GetDimensions():
        return False
    return bool(np.allclose(node_ijk_to_ras(node_a, False), node_ijk_to_ras(node_b, False), atol=tol))


def label_names_of_node(label_node, *, file_fallback: bool = True) -> dict[int, str]:
    """Label value -> name for a label map node (values present in the volume only).

    Names come from the node's colour table when it is the user's own (e.g. made by TotalSegmentator or loaded
    with the file); a Slicer default table (not saved with scenes, e.g. 'Labels' or 'GenericAnatomyColors') says
    nothing about this file's labels, so then the names come from the file the node was loaded from (its NIfTI
    label table, else TotalSegmentator's class map - ``SegSHAPLib.units.organs.organ_class_names``); unnamed
    values get 'label_<value>'."""
    display = label_node.GetDisplayNode()
    color = display.GetColorNode() if display is not None else None
    present = [int(v) for v in np.unique(array_from_node(label_node)) if v > 0]
    names: dict[int, str] = {}
    if color is not None and color.GetSaveWithScene():
        for value in present:
            name = color.GetColorName(value) if value < color.GetNumberOfColors() else ""
            if name and name != "(none)":
                names[value] = name
    elif file_fallback:
        storage = label_node.GetStorageNode()
        path = storage.GetFileName() if storage is not None else None
        if path and os.path.isfile(path):
            from SegSHAPLib.units.organs import organ_class_names

            names = {v: n for v, n in organ_class_names(path).items() if v in present}
    return {value: names.get(value, f"label_{value}") for value in present}


# ---------------------------------------------------------------------------------------------- segmentations
def _segment_ids(segmentation_node, segment_ids: Sequence[str] | None) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    all_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if segment_ids is None:
        return all_ids
    missing = [s for s in segment_ids if s not in all_ids]
    if missing:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segment {missing[0]!r}")
    return list(segment_ids)


def _export_labelmap(segmentation_node, segment_ids: list[str], reference_node) -> np.ndarray:
    """Segments exported on the reference grid: voxel = 1 + index of its segment in ``segment_ids`` (0 = none;
    where segments overlap the later one wins)."""
    scene = segmentation_node.GetScene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    temporary = scene.AddNewNodeByClass(LABELMAP_CLASS, "__SegSHAP_export__")
    try:
        ids = vtk.vtkStringArray()
        for segment_id in segment_ids:
            ids.InsertNextValue(segment_id)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, temporary, reference_node)
        if not ok:
            raise InputError(f"segmentation '{segmentation_node.GetName()}' could not be exported on the grid of "
                             f"'{reference_node.GetName()}'")
        if not same_voxel_grid(temporary, reference_node):
            raise InputError(f"segmentation '{segmentation_node.GetName()}' did not export onto the grid of "
                             f"'{reference_node.GetName()}'")
        return array_from_node(temporary)
    finally:
        # the export adds the label map's display node and a colour table; remove everything it added
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in before:
                scene.RemoveNode(node)


_CLASS_NAME_ID = re.compile(r"^(?!(segment|label)_\d+$)(?=[a-z0-9_]*[a-z])[a-z0-9]+(_[a-z0-9]+)*$")


def organ_segment_name(segment_id: str, segment_name: str) -> str:
    """The organ name of a segment: its name, unless its ID is a lower-case class name (``kidney_left``) that the
    name does not match, e.g. the TotalSegmentator extension's segments renamed to terminology names ("Left
    kidney") when its ``useStandardSegmentNames`` is on: it keeps the class name as segment ID, and the organ
    groupings are written in class names. Generated IDs ("Segment_1", "label_3", "2") never qualify."""
    if _CLASS_NAME_ID.match(segment_id) and organ_name_key(segment_id) != organ_name_key(segment_name or ""):
        return segment_id
    return segment_name or segment_id


def segmentation_to_label_volume(segmentation_node, reference_node, *, segment_ids: Sequence[str] | None = None,
                                 label_values: Mapping[str, int] | None = None) -> tuple[Volume, dict[int, str]]:
    """A segmentation node -> (label ``Volume`` on the reference volume's grid, {label value: segment name}).

    Each segment's label value: ``label_values[name]`` when its name is there (case-insensitive; e.g. the
    model's dataset.json labels, so a segment named 'spleen' becomes the model's spleen class), else its name if
    it is an integer, else the next free value from 1. Names are ``organ_segment_name``: the segments' own names,
    except that a TotalSegmentator class name kept as segment ID wins over a terminology display name."""
    segmentation = segmentation_node.GetSegmentation()
    ids = _segment_ids(segmentation_node, segment_ids)
    if not ids:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segments")
    lookup = {k.lower(): int(v) for k, v in (label_values or {}).items()}
    values: list[int | None] = []
    names: list[str] = []
    for segment_id in ids:
        name = organ_segment_name(segment_id, segmentation.GetSegment(segment_id).GetName())
        names.append(name)
        if name.lower() in lookup:
            values.append(lookup[name.lower()])
        elif name.strip().isdigit():
            values.append(int(name.strip()))
        else:
            values.append(None)
    used = {v for v in values if v is not None}
    next_value = 1
    for index, value in enumerate(values):
        if value is None:
            while next_value in used:
                next_value += 1
            values[index] = next_value
            used.add(next_value)
    exported = _export_labelmap(segmentation_node, ids, reference_node)
    table = np.zeros(len(ids) + 1, dtype=np.int64)
    table[1:] = values
    labels = table[exported.astype(np.int64)]
    dtype = np.uint8 if labels.max(initial=0) < 256 else (np.uint16 if labels.max() < 65536 else np.int32)
    reference = node_to_volume(reference_node)
    volume = Volume(labels.astype(dtype), reference.spacing, reference.origin, reference.direction)
    return volume, {int(v): n for v, n in zip(values, names)}


def segment_to_mask_volume(segmentation_node, segment_id: str, reference_node) -> Volume:
    """One segment -> uint8 mask ``Volume`` (1 inside) on the reference volume's grid."""
    exported = _export_labelmap(segmentation_node, _segment_ids(segmentation_node, [segment_id]), reference_node)
    if not exported.any():
        raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' is empty on the CT grid")
    reference = node_to_volume(reference_node)
    return Volume((exported > 0).astype(np.uint8), reference.spacing, reference.origin, reference.direction)


def segment_names(segmentation_node) -> dict[str, str]:
    """Segment id -> segment name, in the segmentation's order."""
    segmentation = segmentation_node.GetSegmentation()
    return {segmentation.GetNthSegmentID(i): segmentation.GetNthSegment(i).GetName()
            for i in range(segmentation.GetNumberOfSegments())}


def label_volume_to_segmentation(scene, label_node, name: str, reference_node=None):
    """A label map node (with a colour table naming its labels) -> a new segmentation node whose segments carry
    the colour table's names (e.g. unit names)."""
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    if reference_node is not None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node):
        scene.RemoveNode(segmentation_node)
        raise RuntimeError(f"could not convert '{label_node.GetName()}' to a segmentation")
    return segmentation_node


# ---------------------------------------------------------------------------------------------------- markups
def markups_point_ras(markups_node, index: int = 0) -> tuple[float, float, float]:
    """The ``index``-th control point of a markups node in world RAS (parent transforms applied)."""
    if markups_node is None:
        raise InputError("no ROI point: place a point on the structure to explain")
    count = markups_node.GetNumberOfControlPoints()
    if count == 0:
        raise InputError(f"'{markups_node.GetName()}' has no point; place a point on the structure to explain")
    if not 0 <= index < count:
        raise InputError(f"'{markups_node.GetName()}' has {count} point(s); point {index + 1} does not exist")
    position = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(index, position)
    return tuple(float(v) for v in position)


def point_in_node_frame(node, ras_world) -> tuple[float, float, float]:
    """A world RAS point in the node's own frame (through the inverse of its parent transform, linear or not);
    unchanged when the node is not transformed. Use it to give ``run_explain`` a point on the CT's grid."""
    parent = node.GetParentTransformNode() if node is not None else None
    point = [float(v) for v in ras_world]
    if parent is None:
        return tuple(point)
    from_world = vtk.vtkGeneralTransform()
    parent.GetTransformFromWorld(from_world)
    return tuple(float(v) for v in from_world.TransformPoint(point))


def add_point_node(scene, ras: Sequence[float], name: str, label: str = "ROI"):
    """A markups fiducial node with one point at ``ras`` (locked, so a reviewer does not move it by accident)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    node.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in ras]), label)
    node.SetLocked(True)
    return node


__all__ = ["vtk_matrix", "numpy_matrix", "node_ijk_to_ras", "geometry_from_ijk_to_ras", "image_data_from_array",
           "array_from_node", "node_to_volume", "update_node_from_volume", "volume_to_node", "same_voxel_grid",
           "label_names_of_node", "organ_segment_name", "segmentation_to_label_volume", "segment_to_mask_volume", "segment_names",
           "label_volume_to_segmentation", "markups_point_ras", "point_in_node_frame", "add_point_node", "LPS_TO_RAS"]
