"""vecrank's exceptions. Each message is one line a user can act on and never holds a secret."""


class VecrankError(Exception):
    """Base of every error vecrank raises on purpose."""


class ConfigError(VecrankError, ValueError):
    """A setting is malformed; the message names where it came from (flag, variable, file:line)."""


class ElasticsearchUnavailable(VecrankError):
    """The cluster could not be reached or refused us: names the URL and the cause."""
