"""The one root error of hierfl and its kinds; the CLI turns each into one line and exit 2."""

from __future__ import annotations


class HierflError(Exception):
    """Root of every error hierfl raises on purpose."""


class ScenarioError(HierflError, ValueError):
    """A scenario (file, table or override) breaks a rule: names the key, the rule and the value."""

    def __init__(self, messages: str | list[str]) -> None:
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        more = len(self.messages) - 1
        text = self.messages[0] + (f" (and {more} more error{'s' * (more > 1)})" if more else "")
        super().__init__(text)


class ModelDoesNotFitError(ScenarioError):
    """No device of the fleet has the memory to train the scenario's model."""


class OutputError(HierflError):
    """A file or folder hierfl writes cannot be: names the path and the system's reason."""


class CorruptError(HierflError):
    """A file hierfl wrote (checkpoint, run folder) does not read back as it was written."""
