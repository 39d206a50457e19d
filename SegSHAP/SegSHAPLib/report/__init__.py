"""The HTML reports and their figures (matplotlib, Agg).

- ``figures``:       slice panels, ranked bar charts and curves as PNG bytes.
- ``page``:          ``write_report(folders, out)``: one self-contained HTML page for one or more output folders
                     (``explain.folder.ExplanationFolder``s, read by the caller).
- ``verdict``:       ``verdict(summary)``: converged or noise, a headline, units ranked by the lower confidence
                     bound, settled signs, the fixes with their cost (the report, the CLI and the panel use it).
- ``statistics``:    bootstrap intervals, curves on a common grid, paired Wilcoxon tests (plain arrays in).
- ``study_figures``, ``study_page``: the figures and the page of a study (``segshap cohort report``), from rows
  and arrays that ``cohort.report`` gathers.
"""
