"""Files in and out: images with their geometry (NIfTI, NRRD, DICOM series) and files written whole or not at all.

- ``image_io``:     ``Volume`` (array z, y, x + geometry), ``read_volume``, ``write_volume``.
- ``label_maps``:   ``label_values``, ``binary_mask``: integer labels and one-value masks, or the values found.
- ``atomic_files``: ``write_json_atomic``, ``write_bytes_atomic``, ``atomic_target``: a reader never sees half a
  file; a failed write raises ``OutputError``. ``sha256_of``: a file's digest.
"""
