"""How a command writes its result lines: stdout is its output, logging is for people."""

import sys


def emit(line: str) -> None:
    """One line of a command's results on stdout (its output, not a log message), flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
