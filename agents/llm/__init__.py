"""LLM access: the chat-model seam, the OpenAI-compatible adapter, the local model and a scripted double."""
