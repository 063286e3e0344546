"""LLM access: the chat-model seam, the OpenAI-compatible adapter and a scripted double."""
