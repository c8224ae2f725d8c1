"""Configuration: one pydantic-settings object, read once (flag → GRAPH_RUNTIME_* env → default)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from nodes.limits import Limits


class Settings(BaseSettings):
    """Every knob of a graph-runtime process. See README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="GRAPH_RUNTIME_", extra="forbid", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./graph_runtime.db"
    flows_dir: Path | None = Path("sample_flows")
    max_concurrent_jobs: int = Field(default=10, ge=1, le=10_000)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    http_allow_private: bool = False
    poll_interval_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=10.0, ge=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_response_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    template_memory_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024 * 1024)
    template_cpu_s: float = Field(default=10.0, gt=0)
    secrets_key: SecretStr | None = None  # base64 of 32 bytes; else a 0600 key file next to the database
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    def limits(self) -> Limits:
        """The ceilings every node run gets (``RunContext.limits``)."""
        return Limits(
            max_output_bytes=self.max_output_bytes,
            max_response_bytes=self.max_response_bytes,
            template_memory_bytes=self.template_memory_bytes,
            template_cpu_s=self.template_cpu_s,
        )
