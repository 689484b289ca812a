"""`sam2-rt`: the console script's entry point; runs the command the command line names (`track`,
`download`, `bench`), with log lines on stderr and each error as one line and an exit status.

The parser and its help are in `sam2_rt.cli.parser`, each command in its own module.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from typing import Iterator, Optional, Sequence

from sam2_rt.cli.bench import run_bench
from sam2_rt.cli.download import run_download
from sam2_rt.cli.errors import USER_ERRORS, UsageError
from sam2_rt.cli.parser import parse_command_line
from sam2_rt.cli.track import run_track

COMMANDS = {"track": run_track, "download": run_download, "bench": run_bench}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `sam2-rt`; returns the exit status."""
    try:
        args = parse_command_line(argv)
    except UsageError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    if not args.debug:  # FFmpeg's own log lines would repeat our one-line error about an unreadable input
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        with _console_logging(args):
            return COMMANDS[args.command](args)
    except UsageError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"sam2-rt {args.command}: error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"sam2-rt {args.command}: interrupted\n")
        return 130
    except Exception as error:  # a bug, not a user error: say so in one line unless asked for the traceback
        if args.debug:
            raise
        sys.stderr.write(f"sam2-rt {args.command}: internal error: {type(error).__name__}: {error} "
                         "(--debug shows the traceback)\n")
        return 1


@contextlib.contextmanager
def _console_logging(args: argparse.Namespace) -> Iterator[None]:
    """Log lines on stderr while a command runs (warnings only with --quiet, debug lines with --debug),
    routed through tqdm so that they do not break a progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(name)s: %(message)s" if args.debug else "%(levelname)s: %(message)s"))
    previous_level = root.level
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO)
    root.addHandler(handler)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())