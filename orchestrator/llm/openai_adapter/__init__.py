"""The ``ChatModel`` for OpenAI-compatible servers, in modules of one concept each.

``client`` checks the base URL and builds the ``AsyncOpenAI`` client (``connect``);
``adapter`` is the chat model; ``formats`` negotiates structured output; ``retry`` says
which failures are retried and how long to wait; ``json_extract`` digs JSON out of prose;
``redaction`` makes server text fit for messages (clipped, the key blanked).
Every module that imports ``openai`` lives in this package.
"""

from orchestrator.llm.openai_adapter.adapter import OpenAIChatModel
from orchestrator.llm.openai_adapter.client import (
    check_base_url,
    connect,
    list_models,
    make_client,
    openai_chat_model,
    resolve_model,
)
from orchestrator.llm.openai_adapter.formats import FormatMode
from orchestrator.llm.openai_adapter.json_extract import parse_json_object
from orchestrator.llm.openai_adapter.retry import RetryPolicy, parse_retry_after

__all__ = [
    "FormatMode",
    "OpenAIChatModel",
    "RetryPolicy",
    "adapter",
    "check_base_url",
    "client",
    "connect",
    "formats",
    "json_extract",
    "list_models",
    "make_client",
    "openai_chat_model",
    "parse_json_object",
    "parse_retry_after",
    "redaction",
    "resolve_model",
    "retry",
]
