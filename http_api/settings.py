"""Configuration: one pydantic-settings object, read once (flag → GRAPH_RUNTIME_* env → default)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a graph-runtime process. See README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="GRAPH_RUNTIME_", extra="forbid", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./graph_runtime.db"
    flows_dir: Path | None = Path("sample_flows")
    max_concurrent_jobs: int = Field(default=10, ge=1, le=10_000)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    http_allow_private: bool = False
    poll_interval_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=10.0, ge=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
