"""The errors of `sam2-rt` commands: reported as one line on stderr, with exit status 1 or 2."""

from sam2_rt.detection.driver import DetectionFileError
from sam2_rt.io.prompts import PromptError
from sam2_rt.io.track_outputs import OutputError
from sam2_rt.io.video import VideoSourceError
from sam2_rt.tracking.state import TrackerInputError
from sam2_rt.weights.checkpoint import CheckpointError


class CliError(RuntimeError):
    """A problem with what was asked (reported as one line, exit status 1)."""


class UsageError(Exception):
    """A wrong command line (reported as one line, exit status 2)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message} (see {prog} --help)")


# The errors reported as one line without a traceback: everything a user can cause and fix.
USER_ERRORS = (CliError, CheckpointError, VideoSourceError, PromptError, OutputError, TrackerInputError,
               DetectionFileError)

