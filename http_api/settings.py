"""Configuration: one pydantic-settings object, read once (flag → GRAPH_RUNTIME_* env → default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from graph_runtime.events import EVENTS_LATER_S
from graph_runtime.flow import PoolName
from nodes.builtin.ssrf import AllowedHosts
from nodes.limits import Limits


class TokenPrice(BaseModel):
    """One model's price in the ``LLM_PRICES`` table, in credits per 1M tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(default=0.0, ge=0)


_PRICE_TABLE = TypeAdapter(dict[str, TokenPrice])


class Settings(BaseSettings):
    """Every knob of a graph-runtime process. See README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="GRAPH_RUNTIME_", extra="forbid", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./graph_runtime.db"
    flows_dir: Path | None = Path("sample_flows")
    max_concurrent_jobs: int = Field(default=10, ge=1, le=10_000)
    # serve: 1 runs tasks in the API process (the embedded default); 0 is API only: never node code
    workers: int = Field(default=1, ge=0, le=1)
    # serve: N API+worker processes on one port (SO_REUSEPORT), to use every core; 1 is one process
    processes: int = Field(default=1, ge=1, le=64)
    # --pool gpu --pool big (or GRAPH_RUNTIME_POOLS=gpu,big): the pools whose nodes this process's
    # worker runs, besides every node that names no pool (SPEC §10)
    pools: Annotated[list[PoolName], NoDecode] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    http_allow_private: bool = False
    # host or host:port entries reachable on private addresses while the SSRF guard stays on
    http_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    llm_prices: Path | None = None  # JSON/YAML {model: {input, output}}, credits per 1M tokens
    poll_interval_s: float = Field(default=1.0, gt=0)
    # How long a task's events nobody here reads may wait to be stored with what follows (one to two
    # of these): how late a stream read through another process sees them, what a killed worker loses.
    events_later_s: float = Field(default=EVENTS_LATER_S, gt=0, le=60)
    lease_s: float = Field(default=10.0, ge=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    template_memory_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024 * 1024)
    template_cpu_s: float = Field(default=10.0, gt=0)
    files_dir: Path = Path("graph_runtime_files")  # content-addressed blobs: <dir>/<sha[:2]>/<sha>
    files_url: str | None = None  # s3://bucket/prefix (the s3 extra; endpoint, credentials: AWS_* variables)
    files_s3_path_style: bool = False  # http://host/bucket/key addressing, as MinIO-style servers need
    max_file_bytes: int = Field(default=1024**3, ge=1)
    file_link_ttl_s: int = Field(default=86400, ge=1, le=10 * 365 * 86400)
    files_retention_days: int = Field(default=7, ge=1)
    cache_max_bytes: int = Field(default=256 * 1024**2, ge=0)  # output cache bound (SPEC §9); 0 turns it off
    secrets_key: SecretStr | None = None  # base64 of 32 bytes; else a 0600 key file next to the database
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, with the `action` and ids as fields
    metrics_public: bool = False  # GET /metrics without a key (a scraper on a trusted network)

    @field_validator("http_allow_hosts", "pools", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # From the environment or a flag: "ollama.lan:11434,10.0.0.7" (a JSON list also works).
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return yaml.safe_load(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        if isinstance(value, list):  # a repeated flag, each maybe a comma list: --pool gpu,big --pool cpu
            return [part.strip() for item in value for part in (item.split(",") if isinstance(item, str) else [item])
                    if not isinstance(part, str) or part.strip()]
        return value

    @field_validator("http_allow_hosts")
    @classmethod
    def _readable_hosts(cls, value: list[str]) -> list[str]:
        AllowedHosts.parse(value)  # a ValueError names the bad entry
        return value

    def llm_price_table(self) -> dict[str, dict[str, float]]:
        """The ``LLM_PRICES`` file read and checked: ``{model: {input, output}}`` per 1M tokens.

        Read once at start-up (``open_services``); an empty table when no file is set.

        Raises:
            ValueError: the file cannot be read or is not such a table (naming the file).
        """
        if self.llm_prices is None:
            return {}
        try:
            data = yaml.safe_load(self.llm_prices.read_text(encoding="utf-8"))  # YAML reads JSON too
            table = _PRICE_TABLE.validate_python(data or {})
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ValueError(f"LLM_PRICES {self.llm_prices}: {exc}") from exc
        return {model: price.model_dump() for model, price in table.items()}

    @field_validator("files_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value:
            from storage.files.s3 import S3Location  # storage's imports only when a bucket is named

            S3Location.parse(value)  # a ValueError says what to write
        return value or None

    def limits(self) -> Limits:
        """The ceilings every node run gets (``RunContext.limits``)."""
        return Limits(
            max_output_bytes=self.max_output_bytes,
            max_response_bytes=self.max_response_bytes,
            template_memory_bytes=self.template_memory_bytes,
            template_cpu_s=self.template_cpu_s,
        )
