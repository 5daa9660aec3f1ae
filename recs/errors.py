"""Every exception `recs` raises on purpose. The CLI maps each to a one-line message."""

from __future__ import annotations


class RecsError(Exception):
    """Base class: a known failure with a message fit for a user."""

    exit_code = 1


class DataError(RecsError):
    """Input data is malformed. The message names file, row and column."""

    exit_code = 2


class ConfigError(RecsError):
    """A configuration value or CLI option is invalid."""

    exit_code = 2


class UnknownUserError(RecsError):
    """A user id is not known to the model and the policy is `raise`."""

    exit_code = 3


class UnknownItemError(RecsError):
    """An item id is not in the catalog."""

    exit_code = 3


class ArtifactError(RecsError):
    """An artifact folder is missing, corrupted, of a newer format, or unsafe."""

    exit_code = 4


class NotFittedError(RecsError):
    """A model was used before `fit` or `load`."""

    exit_code = 1


class ArtifactBusyError(ArtifactError):
    """Another recs process is writing the artifact (its lock is held): try again later."""

    exit_code = 5


class StoreError(RecsError):
    """The event store cannot be opened, read or written (a disk, a server, a schema)."""

    exit_code = 4
