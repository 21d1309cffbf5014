"""The one root of every error this project raises on purpose."""


class InstructRecError(Exception):
    """Base class: catch this to catch anything the project raises deliberately."""


class ConfigurationError(InstructRecError):
    """A setting is missing or inconsistent; the message says which and how to fix it."""


class BrokerError(InstructRecError):
    """The Kafka broker (embedded or external) could not be reached or started."""
