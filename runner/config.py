"""Settings and the RUNNER_* environment variables they come from (flag > env > default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runner import errors

ENV_STORE = "RUNNER_STORE"
ENV_LEASE_TTL = "RUNNER_LEASE_TTL"
ENV_LOG_DIR = "RUNNER_LOG_DIR"
ENV_LOG_LIMIT = "RUNNER_LOG_LIMIT"
ENV_FAILPOINTS = "RUNNER_FAILPOINTS"

DEFAULT_STORE = "sqlite:///.runner/state.db"
DEFAULT_LEASE_TTL = 10.0
DEFAULT_LOG_DIR = ".runner/logs"
DEFAULT_LOG_LIMIT = 1024 * 1024  # bytes of each attempt's log kept in the store


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    store: str = DEFAULT_STORE
    lease_ttl: float = DEFAULT_LEASE_TTL
    log_dir: str = DEFAULT_LOG_DIR
    log_limit: int = DEFAULT_LOG_LIMIT
    failpoints: str = ""


def _positive_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise errors.ConfigError(f"{name}={raw!r}: must be greater than 0")
    return value


def from_env(environ: Mapping[str, str], *, store: str | None = None) -> Settings:
    """Settings from flags (keyword arguments, when not None) over RUNNER_* variables."""
    return Settings(
        store=store or environ.get(ENV_STORE) or DEFAULT_STORE,
        lease_ttl=_positive_float(environ, ENV_LEASE_TTL, DEFAULT_LEASE_TTL),
        log_dir=environ.get(ENV_LOG_DIR) or DEFAULT_LOG_DIR,
        log_limit=int(_positive_float(environ, ENV_LOG_LIMIT, DEFAULT_LOG_LIMIT)),
        failpoints=environ.get(ENV_FAILPOINTS, ""),
    )
