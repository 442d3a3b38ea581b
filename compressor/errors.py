"""Errors a user can fix.

Every problem caused by the user's input (recipe, checkpoint, data, model code) is raised as a
:class:`CompressorError` subclass whose message is one line saying what is wrong, where (recipe field,
file, layer) and how to fix it. The CLI prints it without a traceback and exits with code 2.
Anything else is a bug in compressor and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CompressorError(Exception):
    """A user-fixable problem. The message is printed as one line; the process exits with 2."""

    exit_code = 2


class RecipeError(CompressorError):
    """The recipe (or a ``--set`` override) is invalid."""


class ModelError(CompressorError):
    """The model cannot be built, traced or pruned as asked."""


class CheckpointError(CompressorError):
    """The checkpoint file cannot be read or does not match the model."""


class DataError(CompressorError):
    """A data path or data file is missing, empty or malformed."""


class SurgeryError(CompressorError):
    """The pruning plan cannot be applied (target unreachable, broken pruned forward, ...)."""


class ExportError(CompressorError):
    """The model cannot be exported to the requested format."""


class ProfilingError(CompressorError):
    """An artifact cannot be profiled as asked (unknown reference, unsupported input type)."""


class MissingDependencyError(CompressorError):
    """An optional dependency needed by the recipe is not installed."""

    def __init__(self, what: str, package: str, extra: str | None = None, hint: str = ""):
        install = f"pip install 'compressor[{extra}]'" if extra else f"pip install {package}"
        msg = f"{what} needs the Python package '{package}', which is not installed; run: {install}"
        super().__init__(msg + (f" ({hint})" if hint else ""))


class OutputDirError(CompressorError):
    """The run folder cannot be created or would overwrite an earlier run."""


class UsageError(CompressorError):
    """The command line combines options that do not go together."""


class DeviceError(CompressorError):
    """A target device cannot be reached or used as asked (``compress deploy --remote``)."""


class TrainingError(CompressorError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and what to change."""


def did_you_mean(name: str, choices: Iterable[str], limit: int = 8) -> str:
    """A short suffix listing alternatives, closest first: ``" (did you mean 'x'? choices: a, b, ...)"``."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1)
    shown = ", ".join(choices[:limit]) + (", ..." if len(choices) > limit else "")
    if close:
        return f" (did you mean '{close[0]}'? choices: {shown})"
    return f" (choices: {shown})"


class Terminated(BaseException):
    """SIGTERM, raised where the program is by ``compress``'s handler, as Python raises KeyboardInterrupt for
    SIGINT (a BaseException, so that no ``except Exception`` on the way swallows it)."""


SIGNAL_EXIT = {KeyboardInterrupt: ("SIGINT", 130), Terminated: ("SIGTERM", 143)}  # 128 + the signal number


class RunInterrupted(BaseException):
    """A run stopped by SIGINT or SIGTERM after recording it in ``status.json`` (``interrupted``): the CLI says
    where and how to go on, and exits 130 / 143."""

    def __init__(self, stage: str, run_dir, cause: BaseException):
        self.signal, self.exit_code = SIGNAL_EXIT.get(type(cause), ("SIGINT", 130))
        self.stage, self.run_dir = stage, run_dir
        super().__init__(f"interrupted ({self.signal}) in stage {stage}; continue with "
                         f"`compress run --resume {run_dir}`")


def interrupt(exc: BaseException) -> bool:
    """SIGINT or SIGTERM (as raised by Python and by ``compress``'s handler)."""
    return isinstance(exc, (KeyboardInterrupt, Terminated))
