"""What every ``llm.*`` node type shares: where the API is, its key, the model, prices, cost and policy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from nodes.builtin import http_client
from nodes.builtin.llm.client import TokenPrices
from nodes.contract import CostModel, RunPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"

LLM_COST = CostModel(per_unit={"token_credits": 1.0})
"""Tokens priced by the node (``prices`` or ``LLM_PRICES``) and reported as ``token_credits``."""

LLM_POLICY = RunPolicy(timeout_s=120, retries=3, retry_backoff_s=1)
"""Models are slow and rate-limited: two minutes a try, and three retries of transient failures."""


class SecretRef(BaseModel):
    """A ``{"$secret": NAME}`` reference: valid in a flow's settings, replaced by its value before the run."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(alias="$secret", min_length=1)


class LlmParams(BaseModel):
    """The parameters every ``llm.*`` node type takes."""

    model_config = ConfigDict(extra="forbid")

    base_url: http_client.HttpUrl = Field(DEFAULT_BASE_URL, description="The API's base URL, e.g. http://ollama.lan:11434/v1.")
    api_key: str | SecretRef | None = Field(
        None, description='Sent as a Bearer token; normally {"$secret": NAME}, resolved just before the node runs.')
    model: str = Field(min_length=1, description="The model's name at that API.")
    prices: TokenPrices | None = Field(
        None, description="Credits per 1M tokens {input, output}; null uses the server's LLM_PRICES.")

