"""One explanation end to end: the context (model, ROI, units, engine), the run, the journal and faithfulness.

- ``request``:      ``ExplainRequest``: every argument of one explanation and its conversions (JSON, CLI, manifest).
- ``case_inputs``:  ``CaseInputs``: in-memory volumes of a case, their digest and their files.
- ``context``:      ``prepare_context``: everything an explanation needs before the solver runs.
- ``run``:          ``run_explain``: the Python API behind ``segshap explain`` and the Slicer logic.
- ``journal``:      the on-disk journal of evaluated coalitions (resume after Ctrl-C, crash or retry).
- ``folder``:       ``ExplanationFolder``: the one reader of an output folder ("finished" is defined there).
- ``faithfulness``: MoRF / LeRF / random curves, AOPC, ABPC (``segshap evaluate``).
- ``progress_stream``: the JSON-lines progress of ``segshap explain --progress json`` (written and read).
- ``refine``:       a zoom's parent: its request, the refined organs, the reuse of its journal.
- ``zoom_control``: a zoom's control variate: the refined organs' cell patterns measured, the exact parent game.
- ``cost``:         ``cost_preview``: support patches, coalitions, counted patch forwards and time, before a run.
The package is not imported eagerly here: its modules import torch and nnunetv2.
"""
