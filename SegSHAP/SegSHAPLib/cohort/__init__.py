"""Studies of many explanations (``segshap cohort``), resumable through each explanation's journal.

- ``manifest``:      the study manifest (CSV) -> one ``CohortTask`` per explanation.
- ``state``:         where a study keeps its state and what state each explanation is in.
- ``run``:           manifest -> tasks -> triage -> an executor -> outcomes.
- ``local``, ``ray_executor``: the executors (worker processes on this machine, or Ray tasks).
- ``worker``:        one explanation of a study, run by a worker.
- ``status``, ``gather``: the study as it is now, and every finished explanation as one table.
"""
