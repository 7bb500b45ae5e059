"""ConfigError, without the config models' imports (pydantic): what the development issuer and
the entry points need to tell an unusable config from a crash."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config document that cannot be used; the message names the field and the reason."""
