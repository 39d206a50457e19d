"""Render the interpretable units around an ROI as PNGs: one per unit type, docs/images/units_<type>.png.

Each figure shows an axial slice through the ROI's centre and a coronal slice, CT in grey (abdomen window),
units in random categorical colours with their boundaries in black, the ROI outlined in yellow and the support
(the ROI's bounding box grown by --support-margin voxels, a stand-in for the receptive-field support B_RF) in
dashed cyan. Slices are shown in radiological convention (patient's right on the left, anterior / superior up).

Example (the spleen of the sample CT, clicked on the TotalSegmentator map used as the prediction):
    .venv/bin/python scripts/render_unit_maps.py \\
        --ct SegSHAP/Resources/SampleData/example_ct_sm.nii.gz \\
        --organs SegSHAP/Resources/SampleData/example_ct_sm_totalseg.nii.gz \\
        --prediction SegSHAP/Resources/SampleData/example_ct_sm_totalseg.nii.gz --target 1 \\
        --roi-point=-117.96,122.32,151.3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from SegSHAPLib.io.image_io import Volume, read_volume  # noqa: E402
from SegSHAPLib.scoring.roi import bounding_box, point_to_ijk, roi_from_mask, roi_from_point  # noqa: E402
from SegSHAPLib import options  # noqa: E402
from SegSHAPLib.units import fcc_units, hybrid_units, organ_class_names, organ_units, slic_units  # noqa: E402

WINDOW_HU = (-160.0, 240.0)
OVERLAY_UPSAMPLING = 4  # overlay pixels per voxel side


def _to_lps(volume: Volume, array: np.ndarray) -> Volume:
    """``array`` (z, y, x) on ``volume``'s grid, permuted/flipped (no interpolation) to the nearest axis-aligned
    LPS orientation: x towards the patient's left, y towards posterior, z towards superior."""
    return Volume.from_sitk(sitk.DICOMOrient(volume.with_array(array).to_sitk(), "LPS"))


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """2D bool: pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def _draw(ax, ct, units, roi, support, colours, extent, origin, title):
    ax.imshow(ct, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], extent=extent, origin=origin)
    units = np.repeat(np.repeat(units, OVERLAY_UPSAMPLING, 0), OVERLAY_UPSAMPLING, 1)  # thinner boundaries
    overlay = np.zeros(units.shape + (4,))
    overlay[..., :3] = colours[units]
    overlay[..., 3] = np.where(units > 0, 0.5, 0.0)
    overlay[_boundaries(units)] = (0, 0, 0, 1)
    ax.imshow(overlay, extent=extent, origin=origin, interpolation="nearest")
    for mask, colour, style in ((roi, "yellow", "solid"), (support, "cyan", "dashed")):
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linestyles=style, linewidths=1.2,
                       extent=extent, origin=origin)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def render(ct: Volume, units_labels: np.ndarray, roi: np.ndarray, support: np.ndarray, title: str, out: Path):
    """Write one PNG: axial and coronal slices through the ROI centre (all arrays (z, y, x) on ct's grid)."""
    ct_lps = _to_lps(ct, ct.array)
    units_lps, roi_lps, support_lps = (_to_lps(ct, a).array for a in
                                       (units_labels, roi.astype(np.uint8), support.astype(np.uint8)))
    z, y, _ = (int(round(c)) for c in np.argwhere(roi_lps).mean(axis=0))
    (nz, ny, nx), (sz, sy, sx) = ct_lps.shape_zyx, ct_lps.spacing_zyx
    colours = np.random.default_rng(0).uniform(0.15, 1.0, size=(int(units_labels.max()) + 1, 3))
    fig, (axial, coronal) = plt.subplots(1, 2, figsize=(11, 5.2))
    _draw(axial, ct_lps.array[z], units_lps[z], roi_lps[z] > 0, support_lps[z] > 0, colours,
          (0, nx * sx, ny * sy, 0), "upper", "axial through the ROI centre")
    _draw(coronal, ct_lps.array[:, y], units_lps[:, y], roi_lps[:, y] > 0, support_lps[:, y] > 0, colours,
          (0, nx * sx, 0, nz * sz), "lower", "coronal through the ROI centre")
    for ax in (axial, coronal):
        for x, side in ((0.01, "R"), (0.97, "L")):
            ax.text(x, 0.5, side, transform=ax.transAxes, color="white", fontsize=11, va="center")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", required=True)
    parser.add_argument("--organs", required=True, help="organ label map on the CT grid")
    roi_source = parser.add_mutually_exclusive_group(required=True)
    roi_source.add_argument("--roi-mask")
    roi_source.add_argument("--roi-point", help="x,y,z in RAS mm (or i,j,k with --point-space ijk); write "
                            "--roi-point=X,Y,Z when X is negative")
    parser.add_argument("--point-space", choices=("ras", "ijk"), default="ras")
    parser.add_argument("--prediction", help="label map clicked with --roi-point (default: the organ map)")
    parser.add_argument("--target", type=int, default=1)
    parser.add_argument("--support-margin", type=int, default=10, help="voxels around the ROI's bounding box")
    parser.add_argument("--fcc-scale-mm", type=float, default=30.0)
    parser.add_argument("--slic-size-mm", type=float, default=options.SLIC_SIZE_MM)
    parser.add_argument("--slic-compactness", type=float, default=options.SLIC_COMPACTNESS)
    parser.add_argument("--grouping", default=None, help="organ grouping: built-in name or JSON file")
    parser.add_argument("--out-dir", default="docs/images")
    args = parser.parse_args(argv)

    ct, organs = read_volume(args.ct), read_volume(args.organs)
    names = organ_class_names(args.organs)
    if args.roi_mask:
        roi = roi_from_mask(read_volume(args.roi_mask), ct)
    else:
        prediction = read_volume(args.prediction or args.organs)
        point = [float(v) for v in args.roi_point.split(",")]
        roi = roi_from_point(prediction.array, args.target, point_to_ijk(ct, point, args.point_space))
    support = np.zeros(ct.shape_zyx, bool)
    support[tuple(slice(max(a - args.support_margin, 0), b + args.support_margin) for a, b in bounding_box(roi))] = True

    fcc = fcc_units(ct, support, args.fcc_scale_mm, organ_labels_zyx=organs.array, class_names=names)
    unit_maps = {"organs": (organ_units(organs.array, support, names, grouping=args.grouping), ""),
                 "fcc": (fcc, f", S = {args.fcc_scale_mm:g} mm"),
                 "hybrid": (hybrid_units(fcc, organs.array, names), f", S = {args.fcc_scale_mm:g} mm")}
    slic = slic_units(ct, support, args.slic_size_mm, args.slic_compactness, organ_labels_zyx=organs.array,
                      class_names=names)
    unit_maps.update({"slic": (slic, f", S = {args.slic_size_mm:g} mm"),
                      "slic-hybrid": (hybrid_units(slic, organs.array, names), f", S = {args.slic_size_mm:g} mm")})
    for kind, (units, detail) in unit_maps.items():
        out = Path(args.out_dir) / f"units_{kind}.png"
        render(ct, units.labels, roi, support, f"{kind} units: M = {units.n_units}{detail}", out)
        print(f"{kind}: M = {units.n_units} -> {out}")


if __name__ == "__main__":
    main()
