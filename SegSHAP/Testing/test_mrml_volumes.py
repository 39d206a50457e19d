"""Volume <-> MRML volume nodes (geometry, dtypes), segmentations -> label volumes, markups -> RAS points."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from SegSHAPLib.errors import InputError  # noqa: E402
from SegSHAPLib.io.image_io import Volume, read_volume, write_volume  # noqa: E402
from SegSHAPMRML import scene_io, volumes  # noqa: E402
from SegSHAPMRML.testing import rotated_direction  # noqa: E402


def _volume(shape=(5, 7, 9), dtype=np.int16, spacing=(0.7, 1.3, 2.9), origin=(-40.5, 12.25, 88.0), seed=1):
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1000, 1000, shape).astype(dtype), spacing, origin, rotated_direction(35.0))


@pytest.fixture
def scene():
    return scene_io.new_scene()


def test_round_trip_keeps_voxels_and_geometry(scene):
    volume = _volume()
    node = volumes.volume_to_node(scene, volume, "ct")
    # the node's IJKToRAS is exactly the Volume's (Slicer convention), dims are (x, y, z)
    np.testing.assert_allclose(volumes.node_ijk_to_ras(node), volume.ijk_to_ras_matrix(), atol=1e-9)
    assert node.GetImageData().GetDimensions() == (9, 7, 5)
    assert node.GetImageData().GetOrigin() == (0.0, 0.0, 0.0)
    back = volumes.node_to_volume(node)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-9)
    assert back.same_grid(volume, tol=1e-9)


def test_voxel_index_maps_to_the_same_ras_point(scene):
    """Voxel (i, j, k) = array[k, j, i] sits at the same RAS point in Slicer and in SegSHAPLib."""
    volume = _volume()
    node = volumes.volume_to_node(scene, volume, "ct")
    i, j, k = 6, 2, 3
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras_slicer = matrix.MultiplyPoint((i, j, k, 1.0))[:3]
    np.testing.assert_allclose(ras_slicer, volume.ijk_to_ras(np.array([i, j, k], float)), atol=1e-9)
    assert node.GetImageData().GetScalarComponentAsDouble(i, j, k, 0) == volume.array[k, j, i]


def test_round_trip_matches_itk_reader(scene, tmp_path):
    """A file read by SimpleITK -> node -> Volume keeps the geometry ITK reports."""
    path = write_volume(_volume(spacing=(0.6, 0.6, 3.0)), tmp_path / "ct.nii.gz")
    volume = read_volume(path)
    back = volumes.node_to_volume(volumes.volume_to_node(scene, volume, "ct"))
    assert back.same_grid(volume, tol=1e-6)


@pytest.mark.parametrize("dtype,expected", [(np.float32, np.float32), (np.uint8, np.uint8), (np.int32, np.int32),
                                            (np.bool_, np.uint8), (np.int64, np.int32), (np.float64, np.float64)])
def test_dtypes(scene, dtype, expected):
    volume = _volume(dtype=np.int16)
    volume = volume.with_array((volume.array > 0).astype(dtype) if dtype is np.bool_ else volume.array.astype(dtype))
    back = volumes.node_to_volume(volumes.volume_to_node(scene, volume, "v", labelmap=dtype is not np.float32))
    assert back.array.dtype == expected
    np.testing.assert_array_equal(back.array, volume.array.astype(expected))


def test_labelmap_node_class_and_unique_names(scene):
    volume = _volume(dtype=np.int32)
    a = volumes.volume_to_node(scene, volume, "units", labelmap=True)
    b = volumes.volume_to_node(scene, volume, "units", labelmap=True)
    assert a.IsA("vtkMRMLLabelMapVolumeNode") and b.IsA("vtkMRMLLabelMapVolumeNode")
    assert a.GetName() != b.GetName()


def test_linear_parent_transform(scene):
    volume = _volume()
    node = volumes.volume_to_node(scene, volume, "ct")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert volumes.node_to_volume(node).same_grid(volume)                  # own frame by default
    world = volumes.node_to_volume(node, world=True)
    np.testing.assert_allclose(np.array(world.ijk_to_ras_matrix())[0, 3], volume.ijk_to_ras_matrix()[0, 3] + 10.0)
    # a point placed in world RAS maps back into the CT's own frame
    p_world = volume.ijk_to_ras(np.array([1.0, 2.0, 3.0])) + np.array([10.0, 0.0, 0.0])
    np.testing.assert_allclose(volumes.point_in_node_frame(node, p_world), volume.ijk_to_ras(np.array([1.0, 2.0, 3.0])),
                               atol=1e-9)


def test_same_voxel_grid(scene):
    volume = _volume()
    a = volumes.volume_to_node(scene, volume, "a")
    b = volumes.volume_to_node(scene, volume.with_array(volume.array * 0), "b")
    moved = Volume(volume.array, volume.spacing, (volume.origin[0] + 1.0, *volume.origin[1:]), volume.direction)
    c = volumes.volume_to_node(scene, moved, "c")
    assert volumes.same_voxel_grid(a, b)
    assert not volumes.same_voxel_grid(a, c)


def test_node_without_voxels_is_an_input_error(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxel data"):
        volumes.node_to_volume(node)


def _segmentation_from_labels(scene, reference_node, labels: np.ndarray, names: dict[int, str]):
    """A segmentation node made the way Slicer imports a label map: one segment per label, named by a colour
    table (the test's way to get a segmentation without Slicer's GUI)."""
    from SegSHAPMRML import display

    label_node = volumes.volume_to_node(scene, volumes.node_to_volume(reference_node).with_array(labels), "lab",
                                        labelmap=True)
    display.show_label_map(scene, label_node, display.named_label_color_table(scene, names, "names"))
    return volumes.label_volume_to_segmentation(scene, label_node, "seg", reference_node)


def test_segmentation_to_label_volume_keeps_names_and_model_values(scene):
    volume = _volume()
    ct = volumes.volume_to_node(scene, volume, "ct")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[1:3, 1:4, 1:4] = 5            # TotalSegmentator's liver id
    labels[3:5, 3:6, 4:8] = 1            # spleen
    seg = _segmentation_from_labels(scene, ct, labels, {1: "spleen", 5: "liver"})
    names = volumes.segment_names(seg)
    assert sorted(names.values()) == ["liver", "spleen"]
    assert not any(n.startswith("Segment_") for n in names.values())

    nodes_before = scene.GetNumberOfNodes()
    label_volume, label_names = volumes.segmentation_to_label_volume(seg, ct, label_values={"Spleen": 1, "liver": 7})
    assert scene.GetNumberOfNodes() == nodes_before            # the temporary export nodes are gone
    assert label_volume.same_grid(volume)
    assert label_names == {1: "spleen", 7: "liver"}
    np.testing.assert_array_equal(label_volume.array == 1, labels == 1)
    np.testing.assert_array_equal(label_volume.array == 7, labels == 5)

    # without model label values: sequential values, names kept; order of the segment ids decides the values
    ids = list(names)[::-1]
    label_volume, label_names = volumes.segmentation_to_label_volume(seg, ct, segment_ids=ids)
    assert sorted(label_names.values()) == ["liver", "spleen"]
    for value, name in label_names.items():
        original = {"spleen": 1, "liver": 5}[name]
        np.testing.assert_array_equal(label_volume.array == value, labels == original)


def test_terminology_named_segments_keep_their_class_names(scene):
    """The TotalSegmentator extension keeps the class name as segment ID; with terminology names on, the segment
    name is e.g. "Left kidney": the organ name is then the ID. Segment Editor IDs never replace names."""
    assert volumes.organ_segment_name("kidney_left", "Left kidney") == "kidney_left"
    assert volumes.organ_segment_name("kidney_left", "Kidney left") == "Kidney left"       # same name, kept
    for generated in ("Segment_1", "segment_2", "label_3", "4"):
        assert volumes.organ_segment_name(generated, "tumour") == "tumour"
    volume = _volume()
    ct = volumes.volume_to_node(scene, volume, "ct")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[3:5, 3:6, 4:8] = 1
    seg = _segmentation_from_labels(scene, ct, labels, {1: "kidney_left"})
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)      # generated ("S_..."; slicer-core cannot add a
    seg.GetSegmentation().GetSegment(segment_id).SetName("Left kidney")   # segment under a chosen ID)
    _, names = volumes.segmentation_to_label_volume(seg, ct)
    assert names == {1: "Left kidney"}                          # a generated ID never replaces the name



def test_segment_to_mask_volume(scene):
    volume = _volume()
    ct = volumes.volume_to_node(scene, volume, "ct")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[2:4, 2:5, 3:7] = 3
    seg = _segmentation_from_labels(scene, ct, labels, {3: "tumour"})
    segment_id = next(iter(volumes.segment_names(seg)))
    mask = volumes.segment_to_mask_volume(seg, segment_id, ct)
    assert mask.array.dtype == np.uint8 and mask.same_grid(volume)
    np.testing.assert_array_equal(mask.array, (labels > 0).astype(np.uint8))
    with pytest.raises(InputError, match="no segment"):
        volumes.segment_to_mask_volume(seg, "nope", ct)


def test_label_names_of_labelmap_node(scene):
    from SegSHAPMRML import display

    volume = _volume()
    labels = np.zeros(volume.array.shape, np.int32)
    labels[0, 0, :3] = [1, 2, 4]
    node = volumes.volume_to_node(scene, volume.with_array(labels), "organs", labelmap=True)
    display.show_label_map(scene, node, display.named_label_color_table(scene, {1: "spleen", 2: "kidney_right"}, "t"))
    assert volumes.label_names_of_node(node) == {1: "spleen", 2: "kidney_right", 4: "label_4"}


def test_markups_point(scene):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    with pytest.raises(InputError, match="no point"):
        volumes.markups_point_ras(node)
    node.AddControlPoint(vtk.vtkVector3d(-111.9, 122.3, 148.3))
    assert volumes.markups_point_ras(node) == pytest.approx((-111.9, 122.3, 148.3))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(2, 3, -5.0)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert volumes.markups_point_ras(node) == pytest.approx((-111.9, 122.3, 143.3))   # world coordinates
    with pytest.raises(InputError, match="no ROI point"):
        volumes.markups_point_ras(None)
