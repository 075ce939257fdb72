"""Typed errors of the scene pipeline.

One root exception (`PipelineError`) so that callers (the CLI, the directory runner)
can catch every expected failure in one place and still tell the kinds apart. Each
error carries the offending `path` (a file, or the config key) and a `hint` saying how
to fix it, because an error a user cannot act on is only half an error message.

Exit status used by the CLI (`exit_code`):
  2  the command line or configuration is wrong (ConfigError, DeviceError): a usage
     error, the same status click gives for a bad flag;
  1  the run could not be done with the given files (InputError, OutputError,
     ModelError) or failed while running.
"""

from __future__ import annotations

import reprlib
from os import PathLike
from typing import Any

import ugatit.errors
from pipeline.urls import redact_text, redact_url

#: longest message / path an error keeps (characters): an error is one line a person
#: reads; a hostile input (a huge asset name, an Item id of megabytes) must not make it
#: megabytes long, nor the run report that records it
MAX_MESSAGE_CHARS = 2000


def _cap(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 80
_BRIEF.maxlist = _BRIEF.maxdict = _BRIEF.maxset = _BRIEF.maxtuple = 6
_BRIEF.maxlevel = 3


def brief(value: Any) -> str:
    """A repr of `value` bounded in size and depth (reprlib), for error messages about
    values read from a file: building the full repr of a hostile value (an expanded YAML
    alias bomb, a list of a million names) would cost gigabytes before the error shows."""
    return _BRIEF.repr(value)


class PipelineError(Exception):
    """Root of every expected pipeline failure.

    `path` names what is wrong (a file, a directory, a config key); `hint` says what the
    user can do about it. `str(err)` is the bare message; `format()` is the one-line
    form the CLI prints.
    """

    exit_code: int = 1

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, hint: str | None = None
    ) -> None:
        # URLs lose their userinfo and query here, once, so no form of the error (the
        # CLI's line, the run report, a log line, a pickled copy) carries a secret
        message = _cap(redact_text(message))
        super().__init__(message)
        self.message = message
        self.path = None if path is None else _cap(redact_url(str(path)))
        self.hint = None if hint is None else _cap(redact_text(hint))

    def __reduce__(self) -> tuple:
        # keep path and hint when the error crosses a process boundary (Dask workers)
        return (_rebuild, (type(self), self.message, self.path, self.hint))

    def format(self) -> str:
        """One line: `<path>: <message>. Hint: <hint>` (parts omitted when absent)."""
        text = self.message.rstrip(".")
        if self.path:
            text = f"{self.path}: {text}"
        if self.hint:
            text = f"{text}. Hint: {self.hint}"
        return " ".join(text.split())


class PipelineWarning(UserWarning):
    """A run completed but the user should know something (e.g. an all-nodata scene).

    Library callers see it as a Python warning; the CLI prints it as `Warning: ...`."""


class InputError(PipelineError):
    """The input scene cannot be used (unreadable, not georeferenced, wrong bands...)."""


class OutputError(PipelineError):
    """The output cannot be written where asked (exists, missing directory, read-only)."""


class ModelError(PipelineError):
    """The checkpoint is missing, broken, or incompatible with the asked tiling."""


class DeviceError(PipelineError, ugatit.errors.DeviceError):
    """The asked compute device is malformed or not present on this machine.

    Also a `ugatit.errors.DeviceError`: the device policy is ugatit.device's, and
    `from_ugatit` carries its message and hint over with the `--device` path."""

    exit_code = 2

    @classmethod
    def from_ugatit(cls, exc: ugatit.errors.DeviceError) -> DeviceError:
        return cls(exc.message, path="--device", hint=exc.hint)


class ConfigError(PipelineError):
    """A configuration value (file or flag) is invalid."""

    exit_code = 2


def _rebuild(
    cls: type[PipelineError], message: str, path: str | None, hint: str | None
) -> PipelineError:
    return cls(message, path=path, hint=hint)
