"""Interpretable units: organs (names, grouping), FCC supervoxels in mm, hybrid, and the common rules."""

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, read_volume
from SegSHAPLib.scoring.roi import bounding_box
from SegSHAPLib.units import (UnitMap, cell_volume_mm3, fcc_units, hybrid_units, load_grouping, organ_class_names,
                              organ_units)

SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
SAMPLE_CT, SAMPLE_ORGANS = SAMPLE / "example_ct_sm.nii.gz", SAMPLE / "example_ct_sm_totalseg.nii.gz"


@pytest.fixture(scope="module")
def sample():
    """The sample CT and organ map, with a support around the spleen: its bbox grown by 10 voxels."""
    ct, organs = read_volume(SAMPLE_CT), read_volume(SAMPLE_ORGANS)
    support = np.zeros(ct.shape_zyx, bool)
    support[tuple(slice(max(a - 10, 0), b + 10) for a, b in bounding_box(organs.array == 1))] = True
    return ct, organs.array, support, organ_class_names(SAMPLE_ORGANS)


@pytest.fixture
def without_totalsegmentator(monkeypatch):
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    monkeypatch.setitem(sys.modules, "totalsegmentator.map_to_binary", None)


# ---------------------------------------------------------------- UnitMap

def test_unit_map_contract():
    labels = np.array([[[0, 1, 1], [2, 0, 2]]], dtype=np.int32)
    units = UnitMap(labels, ["a", "b"])
    assert units.n_units == 2
    np.testing.assert_array_equal(units.voxel_counts(), [2, 2])
    with pytest.raises(ValueError, match="every id"):
        UnitMap(np.where(labels == 2, 3, labels).astype(np.int32), ["a", "b"])     # id 2 missing
    with pytest.raises(ValueError, match="int32"):
        UnitMap(labels.astype(np.int64), ["a", "b"])


# ---------------------------------------------------------------- organ names and organ units

def test_organ_names_come_from_the_files_own_label_table(sample, without_totalsegmentator):
    names = organ_class_names(SAMPLE_ORGANS)
    assert names[1] == "spleen" and names[5] == "liver" and names[117] == "costal_cartilages"
    assert not any(name.startswith("Segment") for name in names.values())


def _write_plain_label_map(tmp_path):
    """A NIfTI label map without any label table (SimpleITK writes none), labels 0, 3 and 250."""
    array = np.zeros((2, 3, 4), np.uint8)
    array[0, 0, 0], array[1, 2, 3] = 3, 250
    path = tmp_path / "plain.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def test_organ_names_fall_back_to_label_ids(tmp_path, without_totalsegmentator):
    assert organ_class_names(_write_plain_label_map(tmp_path)) == {3: "label_3", 250: "label_250"}


def test_organ_names_from_installed_totalsegmentator(tmp_path, monkeypatch):
    package, module = types.ModuleType("totalsegmentator"), types.ModuleType("totalsegmentator.map_to_binary")
    module.class_map = {"total": {1: "spleen", 3: "kidney_left"}}
    monkeypatch.setitem(sys.modules, "totalsegmentator", package)
    monkeypatch.setitem(sys.modules, "totalsegmentator.map_to_binary", module)
    names = organ_class_names(_write_plain_label_map(tmp_path))
    assert names[3] == "kidney_left" and names[250] == "label_250"


def test_organ_units_on_sample(sample):
    ct, organs, support, names = sample
    units = organ_units(organs, support, names)
    # Independently: organ labels with at least 10 voxels inside the support, in label order.
    labels, counts = np.unique(organs[support], return_counts=True)
    expected = [int(label) for label, count in zip(labels, counts) if label > 0 and count >= 10]
    assert [s[0] for s in units.source_labels] == expected
    assert units.names == [names[label] for label in expected]
    assert units.names[0] == "spleen" and "liver" in units.names
    for j, (label,) in enumerate(units.source_labels, start=1):
        np.testing.assert_array_equal(units.labels == j, (organs == label) & support)
    assert not units.labels[~support].any()
    print(f"\nsample, support = spleen bbox + 10 voxels: organs M = {units.n_units}")


def test_organ_fragments_below_min_voxels_are_dropped():
    organs = np.zeros((4, 6, 6), np.uint8)
    organs[1, 1, 1:5] = 3                # 4 voxels
    organs[2:4, 2:5, 1:3] = 4            # 12 voxels
    units = organ_units(organs, np.ones(organs.shape, bool), {3: "small", 4: "big"}, min_voxels=10)
    assert units.names == ["big"] and units.voxel_counts().tolist() == [12]
    assert organ_units(organs, np.ones(organs.shape, bool), {}, min_voxels=1).names == ["label_3", "label_4"]


def test_grouping_reduces_units_and_names_groups(sample, tmp_path):
    ct, organs, support, names = sample
    plain = organ_units(organs, support, names)
    grouped = organ_units(organs, support, names, grouping="default")
    assert grouped.n_units < plain.n_units
    # The group holds every rib and the costal cartilages present in the support, even those too small
    # (< 10 voxels) to be units on their own (rib_left_7 here), since the size rule applies to the unit.
    cage = grouped.source_labels[grouped.names.index("rib cage")]
    present = {names[int(label)] for label in np.unique(organs[support]) if label > 0}
    assert {names[label] for label in cage} == {n for n in present if n.startswith("rib_") or n == "costal_cartilages"}
    assert np.all(grouped.labels[plain.labels > 0] > 0)
    spec = {"bones": ["rib_*", "vertebrae_*", "costal_cartilages"], "gut": ["small_bowel", "colon", "duodenum"]}
    (tmp_path / "groups.json").write_text(json.dumps(spec))
    from_file = organ_units(organs, support, names, grouping=tmp_path / "groups.json")
    assert {"bones", "gut", "spleen"} <= set(from_file.names)
    assert from_file.names == organ_units(organs, support, names, grouping=spec).names
    print(f"\nsample: organs grouped ('default') M = {grouped.n_units}")


def test_systems_grouping_is_coarser_and_a_zoom_separates_its_organs_again(sample):
    """The built-in 'systems' grouping: fewer units than 'default' on the sample, every organ of the support in
    one unit; zooming into 'liver and gallbladder' gives hybrid pieces named after each organ."""
    from SegSHAPLib.units.zoom import refine_units

    ct, organs, support, names = sample
    default = organ_units(organs, support, names, grouping="default")
    systems = organ_units(organs, support, names, grouping="systems")
    assert systems.n_units < default.n_units
    assert np.array_equal(systems.labels > 0, default.labels > 0)            # the same voxels, coarser
    assert {"spleen", "stomach", "liver and gallbladder", "vessels"} <= set(systems.names)
    everywhere = np.ones_like(support)                  # the spleen's support holds too little gallbladder
    systems = organ_units(organs, everywhere, names, grouping="systems")
    hybrid = hybrid_units(fcc_units(ct, everywhere, 60.0, organ_labels_zyx=organs, class_names=names), organs,
                          names)
    zoom = refine_units(systems, hybrid, [systems.names.index("liver and gallbladder") + 1])
    pieces = {name.partition(" @ ")[0] for name in zoom.names if " @ " in name}
    assert pieces == {"liver", "gallbladder"}
    print(f"\nsample: organs grouped ('systems') M = {systems.n_units} ('default' {default.n_units})")


def test_grouping_matches_names_whatever_their_case_and_separators(sample):
    """Renamed or re-cased organ names ("Rib left 1", "SPLEEN", "kidney-left") still group like
    TotalSegmentator's raw names: case ignored, spaces/hyphens/underscores alike."""
    from SegSHAPLib.units.grouping import organ_name_key, pattern_matches

    assert organ_name_key("  Rib  left-1 ") == "rib_left_1"
    assert pattern_matches("Rib left 1", "rib_left_*") and pattern_matches("rib_left_1", "Rib Left *")
    assert not pattern_matches("rib_right_1", "rib_left_*")
    ct, organs, support, names = sample
    renamed = {label: name.replace("_", " ").title() for label, name in names.items()}     # "Rib Left 1"
    raw = organ_units(organs, support, names, grouping="default")
    pretty = organ_units(organs, support, renamed, grouping="default")
    assert "spleen" in raw.names and "Spleen" in pretty.names                          # units keep their names
    assert len(pretty.names) == len(raw.names) and "rib cage" in pretty.names
    assert [list(labels) for labels in pretty.source_labels] == [list(labels) for labels in raw.source_labels]


def test_bad_groupings_are_refused(sample, tmp_path):
    ct, organs, support, names = sample
    with pytest.raises(InputError, match="matches groups"):
        organ_units(organs, support, names, grouping={"a": ["rib_*"], "b": ["rib_left_9"]})
    with pytest.raises(InputError, match="built-in grouping.*default"):
        load_grouping("coarsest")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_grouping(tmp_path / "bad.json")
    with pytest.raises(InputError, match="JSON object"):
        load_grouping({"a": "rib_*"})


def test_no_unit_in_the_support_is_refused(sample):
    ct, organs, support, names = sample
    with pytest.raises(InputError, match="no units inside the receptive-field support"):
        organ_units(np.zeros_like(organs), support, names)
    with pytest.raises(InputError, match="size"):
        organ_units(organs[:, :, :-1], support, names)


# ---------------------------------------------------------------- FCC

SPACING_XYZ = (1.17, 1.17, 5.0)   # i.e. (z, y, x) = (5.0, 1.17, 1.17) mm
SCALE = 30.0


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


GRIDS = {"identity": np.eye(3), "rotated": _rotation([1, 2, 3], 0.7)}


def _grid(direction):
    return Volume(np.zeros((24, 120, 120), np.int16), SPACING_XYZ, (3.3, -7.1, 12.9), direction)


def _positions(volume):
    """LPS mm of every voxel centre, (z, y, x, 3), computed here from the header fields."""
    k, j, i = np.indices(volume.shape_zyx)
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    return np.asarray(volume.origin) + (ijk * np.asarray(volume.spacing)) @ volume.direction.T


def _interior(volume, units, scale):
    """Units whose whole cell lies inside the volume: all 14 vertices of the rhombic dodecahedron around the
    centre h (a, b, c) (h = S / sqrt 2; vertices h (+-1, 0, 0) and permutations, h (+-1/2, +-1/2, +-1/2)) map
    to continuous indices within the voxel-centre box."""
    h = scale / math.sqrt(2)
    vertices = h * np.array([v for axis in np.eye(3) for v in (axis, -axis)]
                            + [[a / 2, b / 2, c / 2] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    to_ijk = np.linalg.inv(volume.ijk_to_lps_matrix())
    upper = np.array(volume.shape_zyx[::-1]) - 1
    keep = []
    for j, centre in enumerate(units.source_labels, start=1):
        ijk = (h * np.asarray(centre) + vertices) @ to_ijk[:3, :3].T + to_ijk[:3, 3]
        if np.all(ijk >= 0) and np.all(ijk <= upper):
            keep.append(j)
    return np.array(keep)


def _relative_tolerance(volume, scale):
    """Voxel-discretisation tolerance on an interior cell's volume, relative to S^3 / sqrt 2.

    The voxelised cell differs from the true cell only through voxels whose centres lie within half a voxel
    width of one of its 12 rhombic faces (area S^2 / (2 sqrt 2) each, normals (+-1, +-1, 0) / sqrt 2 and
    permutations). Along a normal n a voxel is w(n) = sum_c |n . d_c| s_c wide (d_c: direction columns), so
    about A w / v voxels per face are undecided. Counting each as an independent in/out error of standard
    deviation at most 1/2, the count's s.d. is sqrt(N) / 2 voxels; we allow 6 s.d. (For S = 30 mm at
    5 x 1.17 x 1.17 mm this is ~5 %; a lattice laid in voxel indices instead of mm would be ~580 % off.)"""
    normals = [np.roll([s, t, 0.0], r) / math.sqrt(2) for r in range(3) for s in (1, -1) for t in (1, -1)]
    axes = volume.direction * np.asarray(volume.spacing)          # column c = voxel axis c in mm
    face_area = scale ** 2 / (2 * math.sqrt(2))
    undecided = sum(face_area * np.abs(n @ axes).sum() for n in normals) / volume.voxel_volume_mm3()
    return 6 * math.sqrt(undecided) / 2 * volume.voxel_volume_mm3() / cell_volume_mm3(scale)


@pytest.mark.parametrize("grid", GRIDS)
def test_fcc_interior_cells_have_equal_volume_in_mm3(grid):
    volume = _grid(GRIDS[grid])
    units = fcc_units(volume, np.ones(volume.shape_zyx, bool), SCALE, min_voxels=1)
    interior = _interior(volume, units, SCALE)
    assert len(interior) >= 10
    cell_mm3 = units.voxel_counts()[interior - 1] * volume.voxel_volume_mm3()
    tolerance = _relative_tolerance(volume, SCALE)
    assert tolerance < 0.06
    np.testing.assert_allclose(cell_mm3, cell_volume_mm3(SCALE), rtol=tolerance)


@pytest.mark.parametrize("grid", GRIDS)
def test_fcc_cells_are_isotropic_in_mm(grid):
    # The rhombic dodecahedron's second moment about each of L, P, S is V h^2 / 8, so its RMS extent along
    # each physical axis is h / (2 sqrt 2) = S / 4 (7.5 mm here), whatever the voxel spacing.
    volume = _grid(GRIDS[grid])
    units = fcc_units(volume, np.ones(volume.shape_zyx, bool), SCALE, min_voxels=1)
    interior = _interior(volume, units, SCALE)
    labels, positions = units.labels.ravel(), _positions(volume).reshape(-1, 3)
    counts = np.bincount(labels, minlength=units.n_units + 1)[interior]
    mean = np.stack([np.bincount(labels, positions[:, c])[interior] for c in range(3)], 1) / counts[:, None]
    square = np.stack([np.bincount(labels, positions[:, c] ** 2)[interior] for c in range(3)], 1) / counts[:, None]
    rms = np.sqrt(square - mean ** 2)                              # (cells, 3): along L, P, S
    np.testing.assert_allclose(rms, SCALE / 4, rtol=_relative_tolerance(volume, SCALE))


def test_fcc_assigns_each_voxel_to_the_nearest_centre_in_physical_space():
    volume = _grid(GRIDS["rotated"])
    units = fcc_units(volume, np.ones(volume.shape_zyx, bool), SCALE, min_voxels=1)
    positions = _positions(volume).reshape(-1, 3)
    h = SCALE / math.sqrt(2)
    lo, hi = np.floor(positions.min(0) / h) - 2, np.ceil(positions.max(0) / h) + 2
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    centres = grid[grid.sum(1) % 2 == 0]                          # FCC: integer (a, b, c) with a + b + c even
    _, nearest = cKDTree(centres * h).query(positions)
    assigned = np.array(units.source_labels)[units.labels.ravel() - 1]
    np.testing.assert_array_equal(assigned, centres[nearest])


def test_fcc_lattice_is_anchored_in_physical_space():
    # The same physical voxel gets the same cell centre whatever the support.
    volume = _grid(GRIDS["rotated"])
    whole = fcc_units(volume, np.ones(volume.shape_zyx, bool), SCALE, min_voxels=1)
    part_mask = np.zeros(volume.shape_zyx, bool)
    part_mask[5:17, 30:90, 20:70] = True
    part = fcc_units(volume, part_mask, SCALE, min_voxels=1)
    centres_whole = np.array(whole.source_labels)[whole.labels[part_mask] - 1]
    centres_part = np.array(part.source_labels)[part.labels[part_mask] - 1]
    np.testing.assert_array_equal(centres_whole, centres_part)


def test_fcc_fragments_merge_and_cover_the_support():
    volume = _grid(GRIDS["identity"])
    support = np.zeros(volume.shape_zyx, bool)
    support[3:20, 10:100, 15:111] = True
    units = fcc_units(volume, support, SCALE)                      # default: a quarter of a cell
    quarter = math.ceil(cell_volume_mm3(SCALE) / 4 / volume.voxel_volume_mm3())
    assert units.voxel_counts().min() >= quarter
    np.testing.assert_array_equal(units.labels > 0, support)       # fragments merged, none dropped
    assert units.n_units < fcc_units(volume, support, SCALE, min_voxels=1).n_units


def test_fcc_degenerate_scales_are_refused():
    volume = _grid(GRIDS["identity"])
    support = np.ones(volume.shape_zyx, bool)
    for scale in (0.0, -5.0, float("nan")):
        with pytest.raises(InputError, match="positive"):
            fcc_units(volume, support, scale)
    with pytest.raises(InputError, match="coarsest voxel spacing"):
        fcc_units(volume, support, 4.0)                           # below the 5 mm slice spacing
    # A 2 m cell: the support is one fragment of a cell (dropped), or with no size rule a single unit.
    with pytest.raises(InputError, match="no units.*smaller --fcc-scale-mm"):
        fcc_units(volume, support, 2000.0)
    with pytest.raises(InputError, match="single unit.*smaller scale"):
        fcc_units(volume, support, 2000.0, min_voxels=1)


def test_fcc_names_and_sample_counts(sample):
    ct, organs, support, names = sample
    units = fcc_units(ct, support, SCALE, organ_labels_zyx=organs, class_names=names)
    np.testing.assert_array_equal(units.labels > 0, support)
    assert all(name.startswith(f"cell {j}") for j, name in enumerate(units.names, start=1))
    assert any(name.endswith("(spleen)") for name in units.names)
    print(f"\nsample: fcc (S = {SCALE:g} mm) M = {units.n_units}")


# ---------------------------------------------------------------- hybrid

def _check_hybrid(fcc, organs, hybrid, exact_cells):
    for j, (cell, organ) in enumerate(hybrid.source_labels, start=1):
        inside = hybrid.labels == j
        assert np.unique(organs[inside]).tolist() == [organ]            # exactly one organ
        cells = np.unique(fcc.labels[inside])
        if exact_cells:
            assert cells.tolist() == [cell]                             # exactly one FCC cell
        else:
            assert cell in cells                                        # its own cell ...
            foreign = inside & (fcc.labels != cell)                      # ... plus merged fragments only
            for other in cells[cells != cell]:
                assert (foreign & (fcc.labels == other)).sum() < 10


def test_hybrid_units_lie_in_one_cell_and_one_organ(sample):
    ct, organs, support, names = sample
    fcc = fcc_units(ct, support, SCALE)
    exact = hybrid_units(fcc, organs, names, min_voxels=1)
    _check_hybrid(fcc, organs, exact, exact_cells=True)
    np.testing.assert_array_equal(exact.labels > 0, (fcc.labels > 0) & (organs > 0))   # background excluded
    cell, organ = exact.source_labels[0]
    assert exact.names[0] == f"{names[organ]} @ cell {cell}"
    merged = hybrid_units(fcc, organs, names)
    _check_hybrid(fcc, organs, merged, exact_cells=False)
    assert merged.voxel_counts().min() >= 10 and merged.n_units < exact.n_units
    assert any(name.startswith("spleen @ cell") for name in merged.names)
    print(f"\nsample: hybrid (S = {SCALE:g} mm) M = {merged.n_units}")
