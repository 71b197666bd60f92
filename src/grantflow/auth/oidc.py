"""Single sign-on with any OpenID Connect provider: authorization code flow with PKCE (S256)
through Authlib's OAuth 2.0 client, the provider found by discovery
(`<GRANTFLOW_OIDC_ISSUER>/.well-known/openid-configuration`).

The ID token is checked before anything is believed: its signature against the provider's
published keys (joserfc), its issuer, its audience (our client id; `azp` too when there are
several), its expiry and its nonce; the `state` of the round trip is checked by the caller
against the one it kept. A user is matched by e-mail only when the provider says the e-mail is
verified (`email_verified: true`); an unknown e-mail is refused unless just-in-time creation is
on (GRANTFLOW_OIDC_JIT_ROLE), which creates the user with that role. Every refusal is audited
(`auth.login.failed`) by the caller's `signin.refuse`.

The provider's URLs are the administrator's configuration, not user input: calls to them do
not go through the outbound guard for workflow steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user, find_user_by_email
from grantflow.config import Settings
from grantflow.errors import ConfigurationError, GrantflowError, Unauthenticated

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
_TIMEOUT = 15.0
_CACHE_SECONDS = 3600.0
_LEEWAY = 120  # seconds of clock difference tolerated on exp / iat


class SsoRefused(Unauthenticated):
    code = "sso_refused"
    default_next_action = "sign in with your password, or ask an admin"


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    jit_role: Role | None

    @classmethod
    def of(cls, settings: Settings) -> OidcConfig | None:
        """The SSO configuration, or None when SSO is off (no issuer or client id)."""
        if not settings.oidc_issuer or not settings.oidc_client_id:
            return None
        secret = settings.oidc_client_secret
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else "",
            redirect_uri=f"{settings.public_url}/login/sso/callback",
            jit_role=Role(settings.oidc_jit_role) if settings.oidc_jit_role else None,
        )


@dataclass(frozen=True)
class RoundTrip:
    """What the browser carries (sealed) from the redirect to the provider to the callback."""

    state: str
    nonce: str
    verifier: str


class Provider:
    """The provider's discovery document and signing keys, fetched once an hour at most (the
    keys again at once when a token names a key not yet known: a rotation)."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: tuple[float, KeySet] | None = None

    def _get(self, url: str) -> dict[str, Any]:
        try:
            response = httpx2.get(url, timeout=_TIMEOUT, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise ConfigurationError(
                f"the single sign-on provider could not be reached at {url}: {exc}",
                next_action="check GRANTFLOW_OIDC_ISSUER and that the provider is up",
                code="sso_unavailable",
            ) from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"{url} did not answer a JSON object", code="sso_unavailable")
        return data

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata[0] > _CACHE_SECONDS:
                url = f"{self.config.issuer}/.well-known/openid-configuration"
                data = self._get(url)
                if data.get("issuer") != self.config.issuer:
                    raise ConfigurationError(
                        f"the provider's discovery document names issuer {data.get('issuer')!r},"
                        f" not {self.config.issuer!r}",
                        next_action="set GRANTFLOW_OIDC_ISSUER to the provider's exact issuer",
                        code="sso_misconfigured",
                    )
                self._metadata = (time.monotonic(), data)
            return self._metadata[1]

    def keys(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            stale = self._keys is None or time.monotonic() - self._keys[0] > _CACHE_SECONDS
        if refresh or stale:
            keyset = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))  # type: ignore[arg-type]
            with self._lock:
                self._keys = (time.monotonic(), keyset)
        assert self._keys is not None
        return self._keys[1]

    def client(self) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            scope="openid email profile",
            redirect_uri=self.config.redirect_uri,
            code_challenge_method="S256",
            timeout=_TIMEOUT,
        )


def authorization_url(provider: Provider) -> tuple[str, RoundTrip]:
    """Where to send the browser, and what to keep until it comes back."""
    trip = RoundTrip(
        state=generate_token(32), nonce=generate_token(32), verifier=generate_token(64)
    )
    with provider.client() as client:
        url, _state = client.create_authorization_url(
            provider.metadata()["authorization_endpoint"],
            state=trip.state,
            code_verifier=trip.verifier,
            nonce=trip.nonce,
        )
    return str(url), trip


def _decode(provider: Provider, id_token: str) -> dict[str, Any]:
    try:
        try:
            token = jwt.decode(id_token, provider.keys(), algorithms=ALGORITHMS)
        except JoseError:  # perhaps signed with a key published since: fetch the keys again
            token = jwt.decode(id_token, provider.keys(refresh=True), algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise SsoRefused(f"the provider's ID token is not valid: {exc}") from exc
    return dict(token.claims)


def verify_id_token(provider: Provider, id_token: str, nonce: str) -> dict[str, Any]:
    """The ID token's claims, once its signature, issuer, audience, expiry and nonce hold."""
    claims = _decode(provider, id_token)
    config = provider.config
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    now = time.time()
    problems = []
    if claims.get("iss") != config.issuer:
        problems.append(f"issuer {claims.get('iss')!r} is not {config.issuer!r}")
    if config.client_id not in audiences:
        problems.append("it was issued to another client (aud)")
    if len(audiences) > 1 and claims.get("azp") != config.client_id:
        problems.append("its authorised party (azp) is another client")
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] + _LEEWAY < now:
        problems.append("it has expired")
    if isinstance(claims.get("iat"), int | float) and claims["iat"] - _LEEWAY > now:
        problems.append("it was issued in the future")
    if not nonce or claims.get("nonce") != nonce:
        problems.append("its nonce does not match this sign-in")
    if problems:
        raise SsoRefused("the provider's ID token is not valid: " + "; ".join(problems))
    return claims


def exchange(provider: Provider, code: str, trip: RoundTrip) -> dict[str, Any]:
    """Trade the authorization code (with the PKCE verifier) for tokens; the verified claims."""
    try:
        with provider.client() as client:
            token = client.fetch_token(
                provider.metadata()["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=trip.verifier,
            )
    except (httpx2.HTTPError, GrantflowError) as exc:
        raise SsoRefused(f"the provider did not answer the sign-in: {exc}") from exc
    except Exception as exc:  # Authlib's OAuthError: the provider refused the code
        raise SsoRefused(f"the provider refused the sign-in: {exc}") from exc
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise SsoRefused("the provider answered without an ID token (is 'openid' allowed?)")
    return verify_id_token(provider, id_token, trip.nonce)


def user_for(session: Session, config: OidcConfig, claims: dict[str, Any]) -> User:
    """The Grantflow user the verified claims name: matched by verified e-mail, or created
    with the JIT role. Refusals say why, in words."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SsoRefused("the provider did not share an e-mail address (scope 'email')")
    if claims.get("email_verified") is not True:
        raise SsoRefused(
            f"the provider has not verified the e-mail {email}",
            next_action="verify your e-mail address with the provider, then try again",
        )
    user = find_user_by_email(session, email)
    if user is None:
        if config.jit_role is None:
            raise SsoRefused(
                f"there is no Grantflow user with the e-mail {email}",
                next_action="ask a Grantflow admin to create or invite you",
            )
        name = claims.get("name")
        user = create_user(
            session,
            Actor.system("sso"),
            email=email,
            display_name=name if isinstance(name, str) and name.strip() else None,
            roles=[config.jit_role],
        )
    if not user.active:
        raise SsoRefused(f"the Grantflow user {user.email} is deactivated")
    return user
