"""The one progress event of SegSHAP (no imports: the core, the cohort, the Slicer job and the CLI all use it)."""

from dataclasses import dataclass, field


@dataclass
class ProgressEvent:
    """A progress report: ``stage`` ('prepare', 'coalitions', 'verify', 'write', and the Slicer job's
    'faithfulness'), ``done`` of ``total`` in that stage, a ``message`` for people, and the cost ``counters`` of
    the coalitions stage (coalitions, patch_forwards, patch_cache_hits, hit_rate, eta_s)."""

    stage: str
    done: int
    total: int
    message: str
    counters: dict = field(default_factory=dict)
