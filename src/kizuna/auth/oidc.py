"""OIDC bearer tokens (e.g. Keycloak): signature, issuer and audience checked against the
configured JWKS.

Imported only where an OIDC provider is configured: PyJWT with cryptography is ~10 MB of
every process that loads it.
"""

from __future__ import annotations

from typing import Any

import jwt

from kizuna.problems import unauthorized
from kizuna.settings import Settings

_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._jwks = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=600)

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; 401 for anything else."""
        s = self._settings
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            return jwt.decode(
                token,
                key.key,
                algorithms=_ALGORITHMS,
                audience=s.oidc_audience or None,
                issuer=s.oidc_issuer or None,
                options={"verify_aud": bool(s.oidc_audience)},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid OIDC token: {exc}") from None
