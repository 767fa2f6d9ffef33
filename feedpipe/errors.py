"""Exception classes shared across feedpipe packages."""


class FeedpipeError(Exception):
    """Base class of all feedpipe errors."""


class ConfigError(FeedpipeError):
    """topology.yaml or settings are invalid; the message names the file and the field."""


class SerializationError(FeedpipeError):
    """A record could not be encoded or decoded (bad framing, unknown schema id, bad Avro)."""


class RejectedInput(FeedpipeError):
    """Input that a stage refuses by design; routed to the DLQ with ``reason``.

    Attributes:
        reason: human-readable reason stored in the dead-letter record.
        code: short machine-readable reason code (e.g. ``invalid_json``).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
