"""The ``segshap`` command line: argument parsing and the one-line error policy.

Each subcommand lives in its own module (``cli/<name>.py``) with ``add_parser(subparsers)`` and ``run(args)``;
this module only dispatches. Bad input (``InputError``) prints one line and exits 2; an output that cannot be
written (``OutputError``: disk full, quota, read-only) one line and exits 1; Ctrl-C exits 130 and SIGTERM 143
(``errors.Terminated``, handled exactly like Ctrl-C) after saying how to resume.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from SegSHAPLib import __version__
from SegSHAPLib.errors import Cancelled, InputError, OutputError, Terminated, handle_sigterm

SUBCOMMANDS = ("predict", "explain", "evaluate", "demo", "organs", "cohort")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="segshap", description="Shapley attributions for nnU-Net 3D CT segmentations.")
    parser.add_argument("--version", action="version", version=f"segshap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __package__).add_parser(subparsers)
    return parser


def glue_negative_values(argv: list[str]) -> list[str]:
    """'--roi-point -111.9,122.3,148.3' -> '--roi-point=-111.9,...' (argparse takes a leading '-' for a flag)."""
    glued, i = [], 0
    while i < len(argv):
        if argv[i] in ("--roi-point",) and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        glued.append(argv[i])
        i += 1
    return glued


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(glue_negative_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    previous_sigterm = handle_sigterm()
    try:
        return int(args.run(args) or 0)
    except InputError as err:
        print(f"segshap {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OutputError as err:
        print(f"segshap {args.command}: error: {err}; everything computed so far is kept - free space or fix the "
              "folder and rerun the same command", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Cancelled) as err:
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"segshap {args.command}: {how}; everything computed so far is kept - rerun the same command "
              "to resume", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)      # a caller in this process gets its own handler back


if __name__ == "__main__":
    sys.exit(main())
