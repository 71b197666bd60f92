"""What an admin sends to create a connection or set its credential, validated per auth kind."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    model_validator,
)

from grantflow.connections.models import AuthKind, ConnectionKind
from grantflow.strict import Bool, Int, NotNull, Number

Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$",
    ),
]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,100}$")]


class AuthSettings(BaseModel):
    """Non-secret settings of the auth kind."""

    model_config = ConfigDict(extra="forbid")

    header: HeaderName | None = Field(None, description="api_key_header: the header name")
    param: str | None = Field(None, max_length=100, description="api_key_query: the parameter")
    token_url: HttpUrl | None = Field(None, description="oauth_*: the token endpoint")
    scope: str | None = Field(None, max_length=1000, description="oauth_*: requested scopes")
    audience: str | None = Field(None, max_length=1000)


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "HEAD", "OPTIONS"] = "GET"
    path: str = Field("/", max_length=2000, description="relative to the base URL")
    expect: list[Int] = Field(default_factory=list, description="default: any 2xx")


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: ConnectionKind = ConnectionKind.HTTP
    base_url: HttpUrl
    auth_kind: AuthKind = AuthKind.NONE
    auth_settings: AuthSettings = Field(default_factory=AuthSettings)
    timeout_seconds: Number = Field(30.0, gt=0, le=300)
    rate_limit_per_second: Number | None = Field(None, gt=0, le=10_000)
    rate_limit_burst: Int | None = Field(None, ge=1, le=10_000)
    max_concurrency: Int | None = Field(None, ge=1, le=1000)
    allowed_hosts: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list,
        max_length=50,
        description="other hosts this connection may be redirected to",
    )
    health_check: HealthCheck = Field(default_factory=HealthCheck)

    @model_validator(mode="after")
    def _settings_for_kind(self) -> ConnectionCreate:
        check_auth_settings(self.auth_kind, self.auth_settings)
        return self


class ConnectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: NotNull[HttpUrl] = None
    auth_settings: NotNull[AuthSettings] = None
    timeout_seconds: NotNull[Number] = Field(None, gt=0, le=300)
    rate_limit_per_second: Number | None = Field(None, gt=0, le=10_000)
    rate_limit_burst: Int | None = Field(None, ge=1, le=10_000)
    max_concurrency: Int | None = Field(None, ge=1, le=1000)
    allowed_hosts: NotNull[list[str]] = Field(None, max_length=50)
    health_check: NotNull[HealthCheck] = None
    enabled: NotNull[Bool] = None


def check_auth_settings(kind: AuthKind, settings: AuthSettings) -> None:
    if kind == AuthKind.API_KEY_HEADER and not settings.header:
        raise ValueError("auth_settings.header is required for api_key_header")
    if kind == AuthKind.API_KEY_QUERY and not settings.param:
        raise ValueError("auth_settings.param is required for api_key_query")
    if (
        kind in (AuthKind.OAUTH_CLIENT_CREDENTIALS, AuthKind.OAUTH_REFRESH_TOKEN)
        and settings.token_url is None
    ):
        raise ValueError(f"auth_settings.token_url is required for {kind}")


Secret = Annotated[SecretStr, Field(min_length=1, max_length=8192)]


class BearerSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Secret


class BasicSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(..., min_length=1, max_length=500)
    password: Secret


class ApiKeySecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: Secret


class ClientCredentialsSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str = Field(..., min_length=1, max_length=500)
    client_secret: Secret


class RefreshTokenSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str = Field(..., min_length=1, max_length=500)
    client_secret: Secret | None = None
    refresh_token: Secret
    access_token: Secret | None = None
    expires_in: int | None = Field(None, ge=0, description="seconds the access token lives")


SECRET_MODELS: dict[AuthKind, type[BaseModel]] = {
    AuthKind.BEARER: BearerSecret,
    AuthKind.BASIC: BasicSecret,
    AuthKind.API_KEY_HEADER: ApiKeySecret,
    AuthKind.API_KEY_QUERY: ApiKeySecret,
    AuthKind.OAUTH_CLIENT_CREDENTIALS: ClientCredentialsSecret,
    AuthKind.OAUTH_REFRESH_TOKEN: RefreshTokenSecret,
}


def plain_secret(model: BaseModel) -> dict[str, Any]:
    """The secret values as plain data, for encryption only."""
    return {
        k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
        for k, v in model
        if v is not None
    }
