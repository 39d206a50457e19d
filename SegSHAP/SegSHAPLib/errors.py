"""Errors that reach the user as one clear line (the CLI prints them and exits non-zero; Slicer shows them)."""


class InputError(ValueError):
    """Bad user input (a path, an argument, a geometry, an ROI): the message says what is wrong and how to fix it."""


class Cancelled(Exception):
    """The user cancelled a run; everything evaluated before the cancel is kept for a resume."""
