"""The demo region's synthetic year: simulated, kept as a run for the energy page, published.

Called by ``kizuna demo`` (kizuna.demo.seed). Idempotent: the synthetic year is simulated
once per region; seeding again only re-publishes its monthly results (an upsert).
"""

from __future__ import annotations

from typing import Any

from kizuna.energy import publish as publishing
from kizuna.energy import runs

DEMO_TITLE = "合成データ FY2025（デモ） / Synthetic FY2025 (demo)"
DEMO_AUTHOR = "kizuna-demo"


def seed(services: Any, region_id: str = "higashi-harima") -> str:
    """The synthetic FY2025 for the region's 161 facilities; returns a line for the summary."""
    engine, data_dir = services.engine, services.settings.data_dir
    run = runs.find_run(engine, region_id, DEMO_TITLE, DEMO_AUTHOR)
    if run is None or not run.path(data_dir).is_dir():
        # numpy/pandas/matplotlib load only here, not with the server.
        from kizuna.energy import service

        result = service.simulate_inputs(service.synthesize(fiscal_year=2025))
        run = runs.save_run(
            engine, data_dir, result, region_id=region_id, title=DEMO_TITLE, created_by=DEMO_AUTHOR
        )
    published = publishing.publish(services, region_id, run.entities(data_dir))
    runs.mark_published(engine, run.id)
    return (
        f"energy: synthetic FY{run.fiscal_year} ({run.facilities} facilities, self-sufficiency "
        f"{run.summary['rate']:.1f}%) → /energy; {published.total} monthly entities published "
        f"to {len(published.by_tenant)} tenants"
    )
