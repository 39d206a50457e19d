"""SegSHAP core: Shapley attributions for nnU-Net 3D segmentations, importable without Slicer.

Axis convention used throughout the core: image arrays are numpy arrays in (z, y, x) order, exactly as
SimpleITK's ``GetArrayFromImage`` and nnU-Net's ``SimpleITKIO`` return them. Physical points, spacings and
IJK indices that cross a user-facing boundary (CLI, summary.json, Slicer) are in (x, y, z) / (i, j, k)
order; every function that converts between the two says so in its docstring.
"""

__version__ = "0.1.0"
