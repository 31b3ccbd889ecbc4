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
    # Apply pending migrations when a server process starts. `kizuna serve` applies them
    # once before it starts the workers, with this off, so they never load the migration
    # tooling; set it off too where migrations are a deployment step of their own
    # (`kizuna db upgrade`).
    migrate_on_start: bool = True

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
    # Pages that take data files (the energy page's CSV upload: a year of 30-minute demand
    # for ~200 facilities is ~18 MB) accept bodies up to this size.
    max_upload_bytes: int = 64 * 1024 * 1024
    default_page_limit: int = 20
    max_page_limit: int = 1000

    # OpenID Connect (e.g. Keycloak): tokens signed by keys at jwks_url are accepted.
    oidc_jwks_url: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_roles_claim: str = "realm_access.roles"
    oidc_tenants_claim: str = "kizuna_tenants"

    token_ttl_hours: int = 12

    # Mimamori and flood watch (kizuna.watch). Empty MQTT URL: the app does not start the
    # MQTT consumer (run `kizuna watch ingest` instead, or set mqtt://127.0.0.1:1883).
    watch_mqtt_url: str = ""
    # Topics are <prefix>/<tenant>/<device id>/<detections|reading>.
    watch_mqtt_topic_prefix: str = "kizuna"
    # A stable client id keeps the broker-side session (QoS 1 messages queued while away).
    watch_mqtt_client_id: str = "kizuna-watch-ingest"
    # True only where broker ACLs already bind each device to its own topic (see docs/watch.md).
    watch_mqtt_trust_topic: bool = False
    watch_retention_days: int = 30
    # Published per-area-per-hour counts: cells with fewer distinct tags are withheld.
    watch_min_published_count: int = 5
    # Background jobs (not-seen checks, beacon silence, webhooks, retention, counts).
    watch_jobs_enabled: bool = True
    watch_job_interval_seconds: float = 30.0
    # A flood beacon unheard this long is taken to be under water.
    watch_beacon_silence_minutes: float = 10.0
    # Volunteer phones: points per accepted detections, and caps (administrative points).
    watch_volunteer_detections_per_point: int = 20
    watch_volunteer_daily_point_cap: int = 10
    watch_volunteer_monthly_point_cap: int = 100
    # They are paid as volunteering of the town's points programme (its budget and cap).
    # Guardians' webhooks: https only (the server POSTs wherever a resident points it, so
    # plain http to anything, e.g. services on the server's own network, is refused).
    watch_webhook_allow_http: bool = False

    # Ledger jobs in every server process (0 turns one off): sign a checkpoint of each
    # tenant's log when it grew; void timed-out pending transfers and sweep expired lots.
    ledger_checkpoint_seconds: float = 60
    ledger_jobs_seconds: float = 300

    # Notification delivery (subscriptions): the outbox worker in every serve process.
    notify_worker: bool = True
    # Seconds between outbox polls when nothing woke the worker. A commit that wrote outbox
    # rows wakes its own process, and a failure wakes it when the retry is due; the poll
    # finds rows written by other processes (a CLI, a worker that died) and idles cheaply.
    notify_poll_interval: float = 1.0
    notify_timeout: float = 10.0  # per HTTP request / MQTT publish acknowledgement
    notify_per_endpoint: int = 8  # deliveries in flight to one endpoint, per process
    notify_concurrency: int = 256  # deliveries in flight, per process
    notify_batch: int = 256  # outbox rows looked at per claim
    notify_lease_seconds: float = 30.0  # a claimed row comes due again after this
    notify_backoff_base: float = 0.5  # first retry after this, doubling per attempt
    notify_backoff_max: float = 60.0
    notify_give_up_seconds: float = 86_400.0  # undelivered this long: kept as dead
    # Points: the key that signs shop QR codes (empty: a random key kept in
    # data_dir/points/qr.key, shared by every server on that folder).
    points_qr_secret: str = ""
    # Points: an OIDC identity claim that counts as 実名 verification (dotted path, e.g.
    # "verified_claims.verification.trust_framework"); empty: staff verify every resident.
    points_oidc_verified_claim: str = ""
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
