"""Structured-output negotiation: which ``response_format`` to send, and when to step down.

``json_schema`` first (OpenAI, vLLM, Ollama); when the server rejects that mode (llama.cpp's
servers do), ``json_object`` with the schema attached (llama-cpp-python turns it into a
grammar); as a last resort plain text with the schema in a system message.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletionMessageParam

from orchestrator.llm.protocol import LLMRequest, Message

FormatMode = Literal["json_schema", "json_object", "text"]

NEXT_MODE: dict[FormatMode, FormatMode] = {"json_schema": "json_object", "json_object": "text"}
_FORMAT_WORDS = ("response_format", "json_schema", "json_object")

_SCHEMA_INSTRUCTION = (
    "Answer with one JSON object and nothing else: no prose, no code fence. "
    "It must be valid against this JSON Schema:\n{schema}"
)


def messages_for(request: LLMRequest, mode: FormatMode) -> list[ChatCompletionMessageParam]:
    """The request's messages, with the schema spelled out when the server will not enforce it."""
    messages = list(request.messages)
    if request.json_schema is not None and mode != "json_schema":
        # json_object servers may ignore the attached schema (vLLM, Ollama), and OpenAI
        # insists the word JSON appear in the prompt, so the schema is stated in words too.
        schema = json.dumps(request.json_schema, separators=(",", ":"))
        hint = Message("system", _SCHEMA_INSTRUCTION.format(schema=schema))
        leading = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
        messages.insert(leading, hint)
    return [_message_param(m) for m in messages]


def _message_param(message: Message) -> ChatCompletionMessageParam:
    """One message in the client's typed shape."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def format_body(request: LLMRequest, mode: FormatMode) -> dict[str, Any] | None:
    """The ``response_format`` to send, as extra body.

    Extra body because ``json_object`` carries a schema key the client's types do not know.
    """
    schema = request.json_schema
    if schema is None or mode == "text":
        return None
    if mode == "json_schema":
        spec = {"name": request.schema_name, "schema": schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    return {"response_format": {"type": "json_object", "schema": schema}}


def rejects_format(exc: openai.APIStatusError, mode: FormatMode) -> bool:
    """Whether ``exc`` is the server refusing the structured-output ``mode``.

    llama.cpp's server answers 400; llama-cpp-python's answers 500 with its validation error
    (``Input should be 'text' or 'json_object'``), so a 500 naming response_format counts too.
    """
    if mode == "text" or exc.status_code not in (400, 422, 500):
        return False
    text = error_text(exc).lower()
    return any(word in text for word in _FORMAT_WORDS)


def error_text(exc: openai.APIStatusError) -> str:
    """The server's error message, as text."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        return str(message if message is not None else body)
    if body is not None:
        return str(body)
    try:
        return exc.response.text
    except Exception:  # a streamed body that cannot be read any more: the status must do
        return ""
