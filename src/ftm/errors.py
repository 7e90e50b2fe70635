"""The one exception hierarchy of ftm; the CLI maps each class to an exit code (listed in
docs/architecture.md, *Exit codes*)."""

from __future__ import annotations


class FtmError(Exception):
    """Base of every error ftm raises on purpose. The message says what happened and what to do."""

    exit_code = 1


class UsageError(FtmError):
    """Raised when a request is malformed: a bad quarter label, a missing input, an unknown firm."""

    exit_code = 2


class SettingsError(FtmError):
    """Raised when settings or credentials are invalid: an unknown key, a wrong type, a secret in TOML."""

    exit_code = 4


class DataError(FtmError):
    """Raised when input or stored data breaks its contract: a missing column, no calls in a quarter."""


class SchemaError(DataError):
    """Raised when a stored file does not match its schema; names the file and the column."""


class PartialFailure(FtmError):
    """Raised when work finished but some batches or firms failed, or some names fell back to
    keywords; the failures are recorded."""

    exit_code = 3


class RunStopped(FtmError):
    """Raised (as `ftm watch`'s exit code) when a run was stopped before its batches finished,
    by Ctrl-C or `ftm cancel`, and none failed: submitting again goes on."""

    exit_code = 5
