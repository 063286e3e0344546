"""The project's error tree. Every error the library raises derives from one base.

    OrchestratorError
    ├── ConfigError               a configuration the user wrote is invalid
    ├── StateError                a workflow state snapshot is invalid
    │   └── InconsistentStateError    it validates but breaks the workflow's rules
    ├── DecisionError             no decision can be made or applied
    │   ├── AwaitingHumanError        the workflow waits for a human answer
    │   ├── WorkflowFinishedError     the workflow is in a terminal state
    │   └── IllegalTransitionError    an action is not legal in the current state
    ├── HumanAnswerError          a human answer does not fit the workflow's state
    ├── LLMError                  the LLM could not give a usable answer
    │   ├── LLMUnavailableError       timeouts, connection errors, 429, 5xx
    │   ├── LLMOutputError            invalid, truncated or off-schema output
    │   └── LLMBudgetError            the workflow's LLM call or token budget is spent
    ├── AgentError                an agent could not produce its step's result
    ├── SandboxError              generated code could not be run safely
    └── StoreError                persistence failed
        ├── StoreCorruptError         the database or a row in it is damaged
        ├── StoreVersionError         the data comes from a newer schema
        ├── UnknownWorkflowError      no workflow has that id
        └── ConcurrencyError          another process holds the workflow

Each message says what happened, to which workflow, and what to do next. Third-party errors
are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error raised by the orchestrator's packages."""


class ConfigError(OrchestratorError):
    """A workflow configuration failed validation."""


class StateError(OrchestratorError):
    """A workflow state snapshot failed validation."""


class InconsistentStateError(StateError):
    """A state snapshot validates field by field but breaks the workflow's rules."""


class DecisionError(OrchestratorError):
    """No decision can be made or applied in the workflow's current state."""


class AwaitingHumanError(DecisionError):
    """The workflow waits at a gate for a human answer."""


class WorkflowFinishedError(DecisionError):
    """The workflow is completed, rejected or failed; nothing is left to decide."""


class IllegalTransitionError(DecisionError):
    """An action is not legal in the workflow's current machine state."""


class HumanAnswerError(OrchestratorError):
    """A human answer was given to a workflow that is not waiting for it."""


class LLMError(OrchestratorError):
    """The LLM could not give a usable answer.

    Attributes:
        requests: the HTTP requests the failed call made (0 when none was sent), so the
            workflow's LLM accounting charges failed calls too.
    """

    def __init__(self, message: str = "", *, requests: int = 0) -> None:
        super().__init__(message)
        self.requests = requests


class LLMUnavailableError(LLMError):
    """The LLM server timed out, refused the connection, rate-limited or failed (5xx)."""


class LLMOutputError(LLMError):
    """The LLM answered, but its output is invalid, truncated or off-schema."""


class LLMBudgetError(LLMError):
    """The workflow's LLM call or token budget is spent: no request was sent."""


class AgentError(OrchestratorError):
    """An agent could not produce its step's result.

    Attributes:
        error_type: what kind of failure, recorded in the step's error and read by the
            classifier and the retry strategy ("timeout", "llm_unavailable", "invalid_output",
            "workspace_violation", "template_error", ...).
        retryable: False when retrying cannot help (a missing template, a bad config).
    """

    def __init__(self, message: str, *, error_type: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class SandboxError(OrchestratorError):
    """Generated code could not be run inside the sandbox."""


class StoreError(OrchestratorError):
    """Persistence failed."""


class StoreCorruptError(StoreError):
    """The database file, or a row in it, is damaged."""


class StoreVersionError(StoreError):
    """The stored data was written by a newer schema than this program knows."""


class UnknownWorkflowError(StoreError):
    """No workflow has the given id."""


class ConcurrencyError(StoreError):
    """Another process holds the workflow (its lease is live or its version moved on)."""
