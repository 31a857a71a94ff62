"""The domain errors, in a module of their own so that `lrsched --help` imports nothing heavy."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config the user must fix; `key` is its dotted path when one key is to blame."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class RunUnusable(ValueError):
    """A run directory that cannot be used as asked: the user must fix or choose another."""


class RunNotFound(RunUnusable):
    """A path that does not hold a readable run directory."""


class RunInUse(RunUnusable):
    """A run directory another lrsched process is training in."""
