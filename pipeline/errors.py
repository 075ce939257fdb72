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

from os import PathLike

import ugatit.errors


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
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint

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
