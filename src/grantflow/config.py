"""Settings read from `GRANTFLOW_*` environment variables, and the master secret key."""

from __future__ import annotations

import base64
import os
import secrets
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from grantflow.auth.permissions import Role
from grantflow.errors import ConfigurationError
from grantflow.redaction import redact_url, redact_webhook_url

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

_SUPPORTED_DATABASES = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
_KEY_BYTES = 32  # AES-256-GCM


class Settings(BaseSettings):
    """The effective configuration; every field is `GRANTFLOW_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="GRANTFLOW_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///./var/grantflow.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql://user@host/db "
        "(?prepare_threshold=none behind a pooler in transaction mode; ?flush_every_step=true "
        "to make pure steps' successes wait for the WAL's flush too)",
    )
    queue_url: str | None = Field(
        default=None,
        description="the queue transport: unset, the database (SKIP LOCKED and LISTEN/NOTIFY); "
        "redis://host:6379/0 (or rediss://), Valkey or Redis Streams for large fleets, while "
        "the database keeps every run's state and lease",
    )
    queue_prefix: str = Field(
        default="grantflow",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="prefix of the Valkey/Redis keys of this installation (several may share "
        "one server)",
    )
    host: str = Field(default="127.0.0.1", description="address `grantflow serve` binds to")
    port: int = Field(default=8000, ge=1, le=65535, description="port `grantflow serve` binds to")
    log_level: LogLevel = Field(default="info", description="debug, info, warning, error")
    log_format: Literal["json", "console"] = Field(default="json", description="log renderer")
    secret_key: SecretStr | None = Field(
        default=None, description="master key (base64, 32 bytes) that encrypts credentials"
    )
    secret_key_file: Path = Field(
        default=Path("./var/secret.key"),
        description="file holding the master key; generated (mode 0600) when missing",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body accepted, in bytes"
    )
    evidence_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest evidence file accepted, in bytes"
    )
    # --- what one template may build and use (definitions/sandbox.py) --------------------------
    template_max_length: int = Field(
        default=1_000_000,
        ge=1000,
        le=100_000_000,
        description="most characters in a string, or items in a list or range, that a "
        "template may build",
    )
    template_max_digits: int = Field(
        default=1000, ge=10, le=4000, description="most decimal digits of a template's integers"
    )
    template_cpu_seconds: float = Field(
        default=1.0, gt=0, le=60, description="CPU time one rendering of a step's templates may use"
    )
    step_output_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest rendered config (a set step's output) a step may have, as JSON bytes",
    )
    run_context_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=4 * 1024 * 1024 * 1024,
        description="largest run context (input, identity, grant and every step output) a run "
        "may gather, as JSON bytes",
    )
    # --- safety: breakers, spend caps, abuse limits (grantflow.safety) -------------------------
    safety_max_runs_per_minute: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="default breaker: runs of one workflow started in any minute before the "
        "workflow is paused for safety (a workflow's `safety:` block overrides it)",
    )
    safety_max_failed_runs: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="default breaker: failed runs of one workflow within the failed-runs "
        "window before it is paused for safety",
    )
    safety_failed_runs_window_seconds: float = Field(
        default=600.0, gt=0, le=7 * 86400, description="the failed-runs breaker's window"
    )
    safety_max_external_calls_per_minute: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="default breaker: external-call steps of one workflow started in any "
        "minute before it is paused for safety",
    )
    max_steps_per_run: int = Field(
        default=10_000,
        ge=10,
        le=10_000_000,
        description="most steps one run may execute, loop passes included",
    )
    response_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="the most of a target's response a step reads, in bytes",
    )
    max_concurrent_runs_per_workflow: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="runs of one workflow running at once, when its settings.max_concurrent_runs "
        "does not say (the others wait, queued)",
    )
    fanout_batch: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="runs one event (an import, a review's revocations) makes ready at once; "
        "the rest follow in batches this size",
    )
    fanout_interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="the pause between two batches of one event's runs"
    )
    spend_cap_timezone: str = Field(
        default="UTC",
        description="IANA timezone whose calendar days and months spend caps count in",
    )
    outbound_allow: str = Field(
        default="",
        description="comma-separated hosts or CIDR ranges that steps may call although they "
        "are loopback, private or link-local (e.g. 127.0.0.1,10.0.0.0/8)",
    )
    sandbox: bool = Field(
        default=False,
        description="run the sandbox targets (a SaaS-like API and a SCIM server on 127.0.0.1) "
        "inside `grantflow serve`, as `--sandbox` does; the outbound guard allows their ports",
    )
    sandbox_port: int = Field(
        default=8470, ge=1, le=65535, description="port of the sandbox's SaaS-like HTTP API"
    )
    sandbox_scim_port: int = Field(
        default=8471, ge=1, le=65535, description="port of the sandbox's SCIM 2.0 server"
    )
    health_check_seconds: float = Field(
        default=300.0, ge=0, description="how often workers test each connection (0: never)"
    )
    token_ttl_days: int = Field(
        default=90, ge=1, le=3650, description="default lifetime of new API tokens, in days"
    )
    idempotency_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="how long the response to a request sent with an Idempotency-Key is kept "
        "(and replayed to a retry with the same key)",
    )
    # --- e-mail to people in the loop (people.email) ---------------------------------------------
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server that relays Grantflow's e-mail; empty: e-mail is off (messages "
        "are still recorded, with status skipped)",
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="none (plain; no credentials allowed), starttls (upgrade, usually port 587) "
        "or tls (implicit TLS, usually port 465); certificates are always verified",
    )
    smtp_username: str | None = Field(default=None, description="SMTP login; empty: no AUTH")
    smtp_password: SecretStr | None = Field(
        default=None, description="SMTP password (never logged, stored or shown)"
    )
    smtp_from: str = Field(
        default="Grantflow <grantflow@localhost>",
        description="From address of Grantflow's e-mail, e.g. 'Grantflow <grantflow@example.com>'",
    )
    smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="timeout of each SMTP connection and command"
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="CA bundle that verifies the SMTP server's certificate (default: the "
        "system's CAs)",
    )
    smtp_max_attempts: int = Field(
        default=5, ge=1, le=50, description="delivery attempts before an e-mail is failed"
    )
    smtp_retry_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="wait before the first retry of a transient SMTP error; doubles each "
        "attempt (at most an hour)",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="base URL people reach Grantflow at; links in e-mail start with it",
    )
    action_link_ttl_hours: int = Field(
        default=72, ge=1, le=24 * 90, description="how long an e-mail's action links work, in hours"
    )

    # --- the console's sign-in (auth.sessions, auth.throttle, auth.oidc) --------------------------
    session_idle_minutes: int = Field(
        default=12 * 60,
        ge=1,
        le=31 * 24 * 60,
        description="a console session unused this long is signed out, in minutes",
    )
    session_max_days: float = Field(
        default=7, gt=0, le=365, description="a console session ends this long after sign-in"
    )
    signin_max_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="failed sign-ins to one account within the window that lock it for a while",
    )
    signin_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="failed sign-ins from one address (to any account) within the window that "
        "lock that address for a while",
    )
    signin_window_minutes: int = Field(
        default=15, ge=1, le=24 * 60, description="the window failed sign-ins are counted in"
    )
    signin_lockout_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        description="how long sign-in stays refused after the last failure that hit a limit",
    )
    signin_link_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        description="how long a one-time sign-in link (`grantflow users sign-in-link`, the "
        "demo's) works",
    )
    invite_link_hours: int = Field(
        default=72, ge=1, le=24 * 90, description="how long an invitation link works, in hours"
    )
    reset_link_minutes: int = Field(
        default=60, ge=5, le=24 * 60, description="how long a password-reset link works"
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL for single sign-on (its "
        "/.well-known/openid-configuration is read); empty: SSO is off",
    )
    oidc_client_id: str | None = Field(default=None, description="the SSO client id")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="the SSO client secret (never logged or shown)"
    )
    oidc_jit_role: str | None = Field(
        default=None,
        description="role given to a user created on their first SSO sign-in; empty: only "
        "existing users may sign in with SSO",
    )
    oidc_label: str = Field(
        default="Sign in with SSO", description="the text of the login page's SSO button"
    )

    # --- audit checkpoints (audit.checkpoints) ---------------------------------------------------
    audit_checkpoint_file: Path | None = Field(
        default=None,
        description="file that audit checkpoints are appended to, one JSON line each (keep it "
        "where the database's administrators cannot write)",
    )
    audit_checkpoint_log: bool = Field(
        default=False, description="also write each audit checkpoint to the log"
    )
    audit_checkpoint_url: str | None = Field(
        default=None, description="webhook URL each audit checkpoint is POSTed to as JSON"
    )
    audit_checkpoint_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=31 * 86400,
        description="how often `serve` and `scheduler` write an audit checkpoint when a "
        "destination is set (0: only on demand, `grantflow audit checkpoint`)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "smtp_host",
        "smtp_username",
        "smtp_ca_file",
        "audit_checkpoint_file",
        "audit_checkpoint_url",
        "oidc_issuer",
        "oidc_client_id",
        "oidc_jit_role",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_username")
    @classmethod
    def _no_password_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("smtp_security") == "none":
            raise ValueError(
                "SMTP credentials need GRANTFLOW_SMTP_SECURITY starttls or tls: with none the "
                "password would cross the network in clear"
            )
        return value

    @field_validator("spend_cap_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone, e.g. Europe/Berlin") from None
        return value

    @field_validator("smtp_from")
    @classmethod
    def _check_from(cls, value: str) -> str:
        _name, address = parseaddr(value)
        if "@" not in address or "\n" in value or "\r" in value:
            raise ValueError("is not an e-mail address, e.g. 'Grantflow <grantflow@example.com>'")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("is not an http(s) URL, e.g. https://grantflow.example.com")
        if parsed.query or parsed.fragment:
            raise ValueError("must be a base URL without ?query or #fragment")
        return value.strip().rstrip("/")

    @field_validator("oidc_issuer")
    @classmethod
    def _check_issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("is not an http(s) URL, e.g. https://login.example.com/realms/staff")
        return value.strip().rstrip("/")

    @field_validator("oidc_jit_role")
    @classmethod
    def _check_jit_role(cls, value: str | None) -> str | None:
        if value is not None and value not in set(Role):
            raise ValueError(f"is not a role; use one of {', '.join(Role)}")
        return value

    @field_validator("audit_checkpoint_url")
    @classmethod
    def _check_checkpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("is not an http(s) URL, e.g. https://siem.example.com/grantflow")
        return value.strip()

    @field_validator("queue_url")
    @classmethod
    def _check_queue_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "is not a Valkey/Redis URL; expected redis://host:6379/0, rediss://… or "
                "unix:///path, or unset for the database transport"
            )
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "is not a database URL; expected sqlite:///path or postgresql://user@host/db"
            ) from None
        backend = url.get_backend_name()
        if backend not in _SUPPORTED_DATABASES:
            raise ValueError(f"database {backend!r} is not supported; use sqlite or postgresql")
        if backend == "postgresql" and not url.host and not url.query.get("host"):
            raise ValueError(
                "a postgresql URL needs a host, e.g. postgresql://postgres@127.0.0.1/db"
            )
        if backend == "postgresql" and "prepare_threshold" in url.query:
            prepare_threshold(str(url.query["prepare_threshold"]))  # (its ValueError names it)
        if "flush_every_step" in url.query:
            if backend != "postgresql":
                raise ValueError("flush_every_step is an option of a postgresql URL only")
            flush_every_step(str(url.query["flush_every_step"]))
        return value

    @cached_property
    def database(self) -> URL:
        """The database URL with the driver Grantflow uses (psycopg 3 for PostgreSQL)."""
        url = make_url(self.database_url)
        return url.set(drivername=_SUPPORTED_DATABASES[url.get_backend_name()])

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data, with secrets replaced, for `config show`."""
        data: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "** set **"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, str) and name == "audit_checkpoint_url":
                value = redact_webhook_url(value)
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # a password in the user part or the query
            data[name] = value
        data["database_url"] = redact_url(self.database.render_as_string(hide_password=True))
        if self.secret_key is None:
            state = "present" if self.secret_key_file.exists() else "generated on first start"
            data["secret_key"] = f"** from {self.secret_key_file} ({state}) **"
        return data


def prepare_threshold(value: str) -> int | None:
    """`?prepare_threshold=` of a PostgreSQL URL: after how many runs of a query psycopg
    prepares it on the server; `none` never does (a pooler in transaction mode needs that)."""
    if value.strip().lower() in ("none", ""):
        return None
    if not value.strip().isdigit():
        raise ValueError(f"prepare_threshold must be a whole number or none, not {value!r}")
    return int(value)


def flush_every_step(value: str) -> bool:
    """`?flush_every_step=` of a PostgreSQL URL: true makes a pure step's success wait for the
    WAL's flush as every other commit does (engine/checkpoint.py); false (the default) lets
    the next commit that waits take it to disk."""
    found = {"true": True, "on": True, "yes": True, "1": True}
    found |= {"false": False, "off": False, "no": False, "0": False}
    flag = found.get(value.strip().lower())
    if flag is None:
        raise ValueError(f"flush_every_step must be true or false, not {value!r}")
    return flag


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; a bad value raises one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = first["msg"].removeprefix("Value error, ")
        # One line, naming the variable: nothing else is printed.
        raise ConfigurationError(f"GRANTFLOW_{field.upper()}: {message}") from None


def master_key(settings: Settings) -> bytes:
    """The current master key (see `master_keys`)."""
    return master_keys(settings)[0]


def master_keys(settings: Settings) -> list[bytes]:
    """Every master key, the current one first: `GRANTFLOW_SECRET_KEY` (comma-separated) or one
    key a line in the key file. Older keys stay readable during a rotation. A missing key file
    is generated with one new key."""
    if settings.secret_key is not None:
        return _decode_keys(
            settings.secret_key.get_secret_value().split(","), "GRANTFLOW_SECRET_KEY"
        )
    path = settings.secret_key_file
    if not path.exists():
        _generate_key_file(path)
    return _decode_keys(path.read_text().split(), "GRANTFLOW_SECRET_KEY_FILE")


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically, private to its owner."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(base64.urlsafe_b64encode(k).decode() + "\n" for k in keys))
    os.replace(tmp, path)


def new_key() -> bytes:
    return secrets.token_bytes(_KEY_BYTES)


def _decode_keys(texts: list[str], variable: str) -> list[bytes]:
    keys = [_decode_key(text.strip(), variable) for text in texts if text.strip()]
    return keys or [_decode_key("", variable)]  # empty: the same "must be 32 bytes" error


def _generate_key_file(path: Path) -> None:
    log = structlog.get_logger("grantflow.config")

    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(_KEY_BYTES)
    # O_EXCL: two processes starting at once must not overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.urlsafe_b64encode(key).decode() + "\n")
    log.warning(
        "config.secret_key.generated",
        path=str(path),
        hint="back this file up: credentials encrypted under it cannot be read without it",
    )


def _decode_key(text: str, variable: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode())
    except (ValueError, TypeError):
        key = b""
    if len(key) != _KEY_BYTES:
        raise ConfigurationError(
            f"{variable}: the master key must be {_KEY_BYTES} bytes, base64-encoded",
            next_action="generate one with: python -c 'import os,base64;"
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'",
        )
    return key
