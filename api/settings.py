"""The API server's settings, read from ``INSTRUMETRY_*`` environment variables.

Built by the CLI or the app factory, never at import time, so importing the
API (for its OpenAPI schema, or in tests) needs no environment at all.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from instrumetry.domain.errors import ConfigError


class ApiSettings(BaseSettings):
    """Where to listen and which database to read, with the connection pool's size."""

    model_config = SettingsConfigDict(env_prefix="INSTRUMETRY_", extra="ignore", frozen=True)

    database_url: str = Field(description="PostgreSQL URL or libpq connection string.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    pool_min_size: int = Field(default=1, ge=0, description="Connections kept open while idle.")
    pool_max_size: int = Field(default=10, ge=1, description="Most connections open at once.")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a request waits for a free connection."
    )

    @model_validator(mode="after")
    def _pool_sizes_ordered(self) -> ApiSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) exceeds pool_max_size ({self.pool_max_size})"
            )
        return self


def load_settings(
    database_url: str | None = None, host: str | None = None, port: int | None = None
) -> ApiSettings:
    """Settings from the arguments over ``INSTRUMETRY_*`` variables over defaults.

    ``None`` means not given (a CLI option left out). A missing or bad value is
    a ``ConfigError`` naming the setting and its variable, not a pydantic dump.
    """
    given: dict[str, Any] = {"database_url": database_url, "host": host, "port": port}
    try:
        return ApiSettings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        where = f"setting {name} (INSTRUMETRY_{name.upper()})" if name else "settings"
        raise ConfigError(f"API {where}: {message}") from None
