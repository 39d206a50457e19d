"""Files in and out: images with their geometry (NIfTI, NRRD, DICOM series) and files written whole or not at all.

- ``image_io``:     ``Volume`` (array z, y, x + geometry), ``read_volume``, ``write_volume``.
- ``atomic_files``: ``write_json_atomic``, ``write_bytes_atomic``: a reader never sees half a file.
"""
