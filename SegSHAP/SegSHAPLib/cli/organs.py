"""``segshap organs``: a TotalSegmentator organ map of a CT on the CT's grid, with organ names (for ``--organs``)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import read_volume


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "organs", help="write a TotalSegmentator organ map of a CT (the --organs input of explain)",
        description="Run TotalSegmentator's total task on one CT and write its organ label map on the CT's voxel "
                    "grid, with the organ names in the NIfTI header, ready for `segshap explain --organs`. Needs "
                    "the totalseg extra and TotalSegmentator's weights (downloaded on first use, or imported on an "
                    "offline machine).")
    parser.add_argument("--ct", required=True, type=Path, help="CT image (NIfTI, NRRD or a DICOM series folder)")
    parser.add_argument("--out", required=True, type=Path, help="new output label map (.nii.gz or .nii)")
    parser.add_argument("--fast", action="store_true",
                        help="TotalSegmentator's 3 mm model (much faster, coarser; default: the 1.5 mm model)")
    parser.add_argument("--device", choices=options.ORGAN_MAP_DEVICES, default=options.ORGAN_MAP_DEVICE,
                        help=f"{' or '.join(options.ORGAN_MAP_DEVICES)} (default {options.ORGAN_MAP_DEVICE}; "
                             "TotalSegmentator falls back to the CPU without a GPU)")
    parser.add_argument("--roi-subset", nargs="+", metavar="CLASS",
                        help="only these classes of the total task, e.g. liver spleen (faster)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from SegSHAPLib.units.organ_segmentation import (check_output_path, check_roi_subset, check_weights, import_totalsegmentator,
                                     run_totalsegmentator, server_reachable, to_ct_grid, total_class_names,
                                     weights_needed, write_named_label_map)

    check_output_path(args.out)
    ct = read_volume(args.ct)
    python_api = import_totalsegmentator()
    check_roi_subset(args.roi_subset, total_class_names())
    check_weights(weights_needed(args.fast, bool(args.roi_subset)), server_reachable)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segshap_organs_") as workdir:
        totalseg_path = run_totalsegmentator(python_api, ct, Path(workdir), args.fast, args.device,
                                             args.roi_subset, quiet=not args.verbose)
        labels, names = to_ct_grid(totalseg_path, ct)
    try:
        write_named_label_map(labels, names, args.out)
    except OSError as err:
        raise InputError(f"cannot write {args.out}: {err}") from None
    present = [names[int(v)] for v in np.unique(labels.array) if v]
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s: {len(present)} organs "
          f"({', '.join(present[:8])}{', ...' if len(present) > 8 else ''})")
    return 0
