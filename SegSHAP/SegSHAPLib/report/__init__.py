"""The HTML report and its figures (matplotlib, Agg).

- ``figures``: slice panels, ranked bar charts and curves as PNG bytes.
- ``page``:    ``write_report(folders, out)``: one self-contained HTML page for one or more output folders
               (``explain.folder.ExplanationFolder``s, read by the caller).
"""
