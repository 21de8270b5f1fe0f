"""The one exception the local node raises: its message is the one line the user sees."""


class LocalNodeError(RuntimeError):
    """A local Elasticsearch node could not be installed, started or stopped.

    ``log_tail`` carries the last lines of the node's log when there is one to show.
    """

    def __init__(self, message: str, *, log_tail: str | None = None):
        super().__init__(message)
        self.log_tail = log_tail
