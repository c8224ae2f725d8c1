"""Model nodes on the OpenAI-compatible HTTP API (SPEC §8): chat, transcribe, embed, image.

They speak plain HTTP through the runtime's guarded session (``ctx.http``); see
:mod:`nodes.builtin.llm.client` for why not the ``openai`` package, and for retries.
"""

from __future__ import annotations

from nodes.builtin.llm.chat import LlmChat
from nodes.builtin.llm.media import LlmEmbed, LlmImage, LlmTranscribe

LLM_TYPES = (LlmChat, LlmTranscribe, LlmEmbed, LlmImage)

__all__ = ["LLM_TYPES", "LlmChat", "LlmEmbed", "LlmImage", "LlmTranscribe"]
