"""The example study of `segshap cohort report`: six crops of the bundled sample CT, organs vs fcc units.

    .venv/bin/python examples/cohort_study.py cohort_study            # crops + cohort_study/study.csv
    .venv/bin/segshap cohort run cohort_study/study.csv --out cohort_study/out --evaluate --workers 2
    .venv/bin/segshap cohort report cohort_study/out                  # -> cohort_study/out/report.html

Each "case" is a 64 x 48 x 16 voxel crop (x, y, z; two sliding-window patches of the demo model) around the
spleen component, shifted by a few voxels, so the model sees a different context each time; the same RAS point
picks the component in every crop. They stand in for independent patients only to show the report (six cases
are the fewest for which a two-sided signed-rank test can reach p < 0.05): they overlap, so do not read the
statistics as evidence about the model. Budget 8 keeps the run to minutes; raise it for converged phi.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE = REPOSITORY / "SegSHAP" / "Resources" / "SampleData"
MODEL = REPOSITORY / "SegSHAP" / "Resources" / "DemoModel"
SPLEEN_POINT_RAS = "-127,152.3,142.3"               # voxel (17, 47, 16) of the full sample CT
CROP_SIZE = (64, 48, 16)                            # x, y, z voxels
CROP_STARTS = {"crop_a": (0, 10, 7), "crop_b": (4, 10, 7), "crop_c": (0, 6, 7), "crop_d": (0, 10, 5),
               "crop_e": (4, 6, 9), "crop_f": (2, 8, 3)}
COLUMNS = "case_id,ct,model,target,roi_point,point_space,organs,units,values,budget,seed,batch_size,fcc_scale_mm\n"


def write_study(folder: Path) -> Path:
    """Write <case>_ct.nii.gz and <case>_organs.nii.gz for every crop (nibabel's slicer keeps the geometry and
    the organ map's label table) and the manifest study.csv; return the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = nibabel.load(str(SAMPLE / "example_ct_sm.nii.gz"))
    organs = nibabel.load(str(SAMPLE / "example_ct_sm_totalseg.nii.gz"))
    rows = []
    for case_id, start in CROP_STARTS.items():
        crop = tuple(slice(a, a + n) for a, n in zip(start, CROP_SIZE))
        nibabel.save(ct.slicer[crop], str(folder / f"{case_id}_ct.nii.gz"))
        nibabel.save(organs.slicer[crop], str(folder / f"{case_id}_organs.nii.gz"))
        rows.append(f'{case_id},{case_id}_ct.nii.gz,{MODEL},spleen,"{SPLEEN_POINT_RAS}",ras,'
                    f"{case_id}_organs.nii.gz,organs;fcc,softdice;dice,8,0,8,60\n")
    manifest = folder / "study.csv"
    manifest.write_text(COLUMNS + "".join(rows))
    return manifest


if __name__ == "__main__":
    written = write_study(Path(sys.argv[1] if len(sys.argv) > 1 else "cohort_study"))
    print(f"wrote {written}; next: segshap cohort run {written} --out {written.parent / 'out'} --evaluate")
