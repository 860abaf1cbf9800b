"""Error classes of the search package.

Every message says what was wrong, where (which field, file or candidate) and how to fix it.
"""

from __future__ import annotations


class SearchError(Exception):
    """Base class of the search package's own errors."""


class SearchConfigError(SearchError, ValueError):
    """A :class:`~searcher.search.SearchConfig` field (or a controller / budget option) with a
    bad value; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self):  # keep both fields across pickling (worker processes)
        return (type(self), (self.field, self.reason))


class CandidateError(SearchError, ValueError):
    """A candidate (or its JSON) that is malformed or outside the search space."""


class MutationError(SearchError, ValueError):
    """A mutation table entry that is misdeclared (unknown gene, bad weight, ...)."""


class RegistryError(SearchError, ValueError):
    """A controller or executor declaration that cannot be registered (not a subclass of the
    base class, or a name already taken)."""


class PluginError(SearchError, ValueError):
    """A plugin (``--plugins FILE.py|MODULE``, the pipeline's ``plugins``) that cannot be
    imported: a missing file or module, or user code that raised while importing."""


class JournalError(SearchError, RuntimeError):
    """A run folder's journal that cannot be used: missing, from another configuration, or
    inconsistent with what the search proposes on resume."""


class ScorerError(SearchError, RuntimeError):
    """The scorer failed on every candidate of the first step: it is broken, not the
    candidates (missing checkpoint or data, not importable in workers, ...)."""


class WorkerError(SearchError, RuntimeError):
    """A worker backend that cannot start (e.g. Ray not installed or not reachable)."""


class RunFolderError(SearchError, ValueError):
    """A run folder that cannot be used as asked: ``--resume`` of a folder holding no run, a
    new run into a folder that holds one, or a resume with other settings."""
