"""Error classes of the distillation package.

Every error message should say what was wrong, where, and how to fix it.
Other modules may add classes here; keep each one a thin subclass.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base class of the distillation layer's own errors."""


class MissingAssetError(DistillError, FileNotFoundError):
    """An offline asset (teacher model, movie-review data, ...) is absent or fails its
    sha256 check. The message names the command that fetches it."""


class AssetFetchError(DistillError, RuntimeError):
    """Fetching an asset failed (package registry unreachable, tool missing, ...)."""


class DataFormatError(DistillError, ValueError):
    """A data file does not have the expected schema or format."""


class DatasetUnavailableError(DistillError, RuntimeError):
    """A public data set (GLUE, SQuAD) could not be loaded from the hub or its cache."""


class ConfigError(DistillError, ValueError):
    """A student configuration with a bad value; ``field`` names it (e.g. ``layers[2].expr``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"config field {field!r}: {reason}")

    def __reduce__(self):  # keep both fields across pickling (worker processes)
        return (type(self), (self.field, self.reason))


class CheckpointError(DistillError, ValueError):
    """A saved model folder that is missing files or does not match its config."""


class DistillShapeError(DistillError, ValueError):
    """Student and teacher tensors that cannot be compared by a distillation loss."""


class TeacherError(DistillError, ValueError):
    """A teacher folder that cannot be loaded, or a teacher unsuitable for distillation
    (no query/key projections to read attention scores from, ...)."""


class TeacherCacheError(DistillError, ValueError):
    """Cached teacher outputs that are absent, incomplete or do not match the inputs."""


class TrainingError(DistillError, RuntimeError):
    """A training run that cannot start or continue (bad settings, a checkpoint of another
    run, a sub-network needing weight pools the optimizer does not know, ...)."""


class DataFileError(DataFormatError):
    """A user's data file that cannot serve as a task: missing, empty, not UTF-8, lacking a
    column, with empty texts or labels, a single class, a label unseen in train, ... The
    message names the file (and the row, column, label or byte offset) and the fix."""


class ExportError(DistillError, ValueError):
    """An export that cannot be done as asked (unknown format, a folder as the output path,
    a missing exporter package)."""


class ExportCheckError(DistillError, RuntimeError):
    """An exported artifact whose outputs differ from the model's beyond the tolerance."""
