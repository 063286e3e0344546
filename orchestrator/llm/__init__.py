"""LLM access: the chat-model seam, the OpenAI-compatible adapter and a scripted double."""

__all__ = [
    "backoff",
    "cassette",
    "local_server",
    "metering",
    "openai_adapter",
    "protocol",
    "scripted",
    "tracing",
]
