"""Errors of the wire contract."""

from instructrec.errors import InstructRecError


class SchemaError(InstructRecError):
    """Base class for wire-contract errors."""


class DecodeError(SchemaError):
    """Bytes from a topic are not a valid record of that topic.

    ``reason`` is short, stable and machine-readable (it becomes the dead letter's
    ``reason``); ``detail`` says which field was wrong and how.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
