"""One Settings object for the whole process; nothing else reads the environment.

Every field can be set as ``KIZUNA_<NAME>`` (e.g. ``KIZUNA_DATABASE_URL``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the ETSI conformance suite's own @context documents are published; the
# files themselves ship in ../shared/ngsi-ld-test-contexts for offline use.
ETSI_TEST_CONTEXT_BASE = (
    "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KIZUNA_", extra="ignore")

    data_dir: Path = Path("var")
    # Empty means the embedded default: a SQLite file in data_dir.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    # Anonymous callers act as platform admin. Only for local conformance runs and
    # development; never in production (the server logs a warning at start).
    open_access: bool = False
    # Base URL used in Location headers and pagination links when behind a proxy.
    public_base_url: str = ""

    # @context handling: preloaded folders (URL prefix -> folder of .jsonld files)
    # and a short timeout for anything that still has to be fetched.
    context_preload: dict[str, Path] = Field(default_factory=dict)
    context_fetch_timeout: float = 3.0
    context_fetch_enabled: bool = True

    max_body_bytes: int = 8 * 1024 * 1024
    default_page_limit: int = 20
    max_page_limit: int = 1000

    # OpenID Connect (e.g. Keycloak): tokens signed by keys at jwks_url are accepted.
    oidc_jwks_url: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_roles_claim: str = "realm_access.roles"
    oidc_tenants_claim: str = "kizuna_tenants"

    token_ttl_hours: int = 12

    # Temporal API: attribute instances returned per attribute before a response is cut
    # (206 + Content-Range); history kept this many days (0: forever), per tenant
    # overrides ({"kakogawa": 365}); how often the serve process purges.
    temporal_instance_limit: int = 100
    temporal_retention_days: int = 0
    temporal_retention_by_tenant: dict[str, int] = Field(default_factory=dict)
    temporal_retention_interval_minutes: float = 60.0

    @property
    def temporal_retention_enabled(self) -> bool:
        return self.temporal_retention_days > 0 or any(
            d > 0 for d in self.temporal_retention_by_tenant.values()
        )

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'kizuna.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
