"""Fixtures of the points tests: a programme with a verified resident pair and a shop."""

from __future__ import annotations

import uuid

import pytest

from kizuna.ledger.service import Ledger
from kizuna.points.schemas import ProgrammeCreate, ResidentCreate, ShopCreate
from kizuna.points.service import Points


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test: the PostgreSQL schema is shared by the session."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def points(engine, tmp_path, tenant) -> Points:  # noqa: ANN001
    ledger = Ledger(engine, tmp_path)
    service = Points(engine, ledger, tmp_path)
    service.setup_programme(
        tenant,
        ProgrammeCreate(
            name_ja="たかさご未来資産ポイント",
            name_en="Takasago future points",
            eligible_towns=["荒井町", "伊保", "高砂町"],
            thanks_daily_limit=100,
        ),
    )
    return service


@pytest.fixture
def hanako(points, tenant):  # noqa: ANN001, ANN201
    r = points.register_resident(
        tenant,
        "hanako",
        ResidentCreate(real_name="高砂 花子", kana="たかさご はなこ", town="荒井町"),
    )
    return points.verify_resident(tenant, r.id, "staff:clerk")


@pytest.fixture
def taro(points, tenant):  # noqa: ANN001, ANN201
    r = points.register_resident(
        tenant, "taro", ResidentCreate(real_name="伊保 太郎", kana="いほ たろう", town="伊保")
    )
    return points.verify_resident(tenant, r.id, "staff:clerk")


@pytest.fixture
def shop(points, tenant):  # noqa: ANN001, ANN201
    return points.register_shop(
        tenant,
        ShopCreate(
            code="sakura-bakery",
            name="さくらベーカリー",
            town="荒井町",
            address="荒井町1-2-3",
            fee_bp=150,
        ),
    )
