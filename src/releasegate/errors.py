"""The errors releasegate shows to a person: one line, naming the component and what to do.

Anything raised as a ``ReleasegateError`` is printed without a traceback; anything else is a
bug in releasegate and keeps its traceback.
"""

from __future__ import annotations


class ReleasegateError(Exception):
    """An expected failure with a message written for the person running the gates."""


class ConfigError(ReleasegateError):
    """The environment file is missing, unreadable or invalid."""


class ProbeError(ReleasegateError):
    """A dependency could not be reached or did not answer in time: never a pass."""

    def __init__(self, component: str, problem: str, hint: str = "") -> None:
        self.component = component
        self.problem = problem
        self.hint = hint
        text = f"{component}: {problem}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ActionError(ReleasegateError):
    """A mutation (backup, migration, rollout, rollback) did not complete."""
