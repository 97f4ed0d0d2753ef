"""Settings and the RUNNER_* environment variables they come from (flag > env > default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runner import errors

ENV_STORE = "RUNNER_STORE"
ENV_LEASE_TTL = "RUNNER_LEASE_TTL"
ENV_LOG_DIR = "RUNNER_LOG_DIR"
ENV_LOG_LIMIT = "RUNNER_LOG_LIMIT"
ENV_FAILPOINTS = "RUNNER_FAILPOINTS"
ENV_ETCD_USER = "RUNNER_ETCD_USER"
ENV_ETCD_PASSWORD = "RUNNER_ETCD_PASSWORD"
ENV_ETCD_PASSWORD_FILE = "RUNNER_ETCD_PASSWORD_FILE"
# Set by CI systems (docs/CI.md): annotations and groups, the step summary file.
ENV_GITHUB_ACTIONS = "GITHUB_ACTIONS"
ENV_GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"

# What `runner worker` passes to its tasks without --inherit-env (docs/SECURITY.md): enough to
# find programs, a home, a locale and a time zone, and for call tasks' Python to start.
BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)
ENV_UI_TOKEN = "RUNNER_UI_TOKEN"  # the web dashboard's token (docs/UI.md)
ENV_HOOK_LEASE = "RUNNER_HOOK_LEASE"  # seconds a deliverer holds a hook delivery (docs/HOOKS.md)
ENV_HOOK_RETRY_DELAY = "RUNNER_HOOK_RETRY_DELAY"  # backoff before a hook's first retry

DEFAULT_STORE = "sqlite:///.runner/state.db"
DEFAULT_LEASE_TTL = 10.0
DEFAULT_LOG_DIR = ".runner/logs"
DEFAULT_LOG_LIMIT = 1024 * 1024  # bytes of each attempt's log kept in the store; a local log
# file keeps this many bytes of its head and of its tail (docs/CLI.md, "Environment")
DEFAULT_HOOK_LEASE = 60.0
DEFAULT_HOOK_RETRY_DELAY = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    store: str = DEFAULT_STORE
    lease_ttl: float = DEFAULT_LEASE_TTL
    log_dir: str = DEFAULT_LOG_DIR
    log_limit: int = DEFAULT_LOG_LIMIT
    failpoints: str = ""
    etcd_user: str | None = None
    etcd_password: str | None = field(default=None, repr=False)  # never printed
    ui_token: str | None = field(default=None, repr=False)  # never printed
    hook_lease: float = DEFAULT_HOOK_LEASE
    hook_retry_delay: float = DEFAULT_HOOK_RETRY_DELAY


def _positive_float(
    environ: Mapping[str, str], name: str, default: float, *, unit: str = "seconds"
) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(f"{name}={raw[:40]!r}: expected a number of {unit}") from None
    if value <= 0:
        raise errors.ConfigError(f"{name}={raw[:40]!r}: must be greater than 0")
    return value


def from_env(environ: Mapping[str, str], *, store: str | None = None) -> Settings:
    """Settings from flags (keyword arguments, when not None) over RUNNER_* variables."""
    return Settings(
        store=store or environ.get(ENV_STORE) or DEFAULT_STORE,
        lease_ttl=_positive_float(environ, ENV_LEASE_TTL, DEFAULT_LEASE_TTL),
        log_dir=environ.get(ENV_LOG_DIR) or DEFAULT_LOG_DIR,
        log_limit=max(
            1, int(_positive_float(environ, ENV_LOG_LIMIT, DEFAULT_LOG_LIMIT, unit="bytes"))
        ),
        failpoints=environ.get(ENV_FAILPOINTS, ""),
        etcd_user=environ.get(ENV_ETCD_USER) or None,
        etcd_password=_etcd_password(environ),
        ui_token=environ.get(ENV_UI_TOKEN) or None,
        hook_lease=_positive_float(environ, ENV_HOOK_LEASE, DEFAULT_HOOK_LEASE),
        hook_retry_delay=_positive_float(environ, ENV_HOOK_RETRY_DELAY, DEFAULT_HOOK_RETRY_DELAY),
    )


def _etcd_password(environ: Mapping[str, str]) -> str | None:
    """RUNNER_ETCD_PASSWORD, else the first line of RUNNER_ETCD_PASSWORD_FILE (never argv)."""
    if environ.get(ENV_ETCD_PASSWORD):
        return environ[ENV_ETCD_PASSWORD]
    path = environ.get(ENV_ETCD_PASSWORD_FILE)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise errors.ConfigError(f"{ENV_ETCD_PASSWORD_FILE}={path}: {exc.strerror}") from None
