"""Typed errors of the model package.

One root exception (``UgatitError``) so callers such as the pipeline CLI can catch
everything this package raises and turn it into a one-line message, while programming
errors (``TypeError``, ``KeyError`` in our own code) still surface as tracebacks.
"""

from __future__ import annotations


class UgatitError(Exception):
    """Root of every error raised on purpose by :mod:`ugatit`."""


class CheckpointError(UgatitError):
    """A file is not a usable U-GAT-IT checkpoint (missing, unsafe, wrong keys or shapes)."""


class TrainingError(UgatitError):
    """Training cannot start or go on: bad dataset or options, or a non-finite loss."""


class EvaluationError(UgatitError):
    """Evaluation cannot run: missing or empty tile folders, names that do not pair, tiles of
    mixed sizes, a bad dataset.json or feature extractor."""


class DeviceError(UgatitError):
    """The asked compute device is malformed or not present on this machine.

    `message` says what is wrong, `hint` what to do; `str()` joins them for callers that
    print one line (app.py). The pipeline's DeviceError subclasses this one.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message}; {hint}")
        self.message = message
        self.hint = hint
