"""Errors that reach the user as one clear line (the CLI prints them and exits non-zero; Slicer shows them)."""


class InputError(ValueError):
    """Bad user input (a path, an argument, a geometry, an ROI): the message says what is wrong and how to fix it."""


class Cancelled(Exception):
    """The user cancelled a run; everything evaluated before the cancel is kept for a resume."""


class OutputError(Exception):
    """An output could not be written whole (disk full, over quota, read-only or vanished folder): the message
    names the file and the cause. Nothing computed before is lost (the journal keeps every coalition)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Ray and ``kill`` send) raised as an interrupt, so that everything that handles Ctrl-C
    (journal kept, workers stopped, "rerun to resume") handles it the same way; installed by
    ``handle_sigterm``."""


def handle_sigterm():
    """From now on SIGTERM raises ``Terminated`` in the main thread (call it from the main thread); returns the
    previous handler, for ``signal.signal(signal.SIGTERM, previous)`` when done."""
    import signal

    def raise_terminated(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, raise_terminated)
