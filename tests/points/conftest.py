"""Fixtures of the points tests: a programme with a verified resident pair and a shop."""

from __future__ import annotations

import uuid

import pytest

from kizuna.ledger.service import Ledger
from kizuna.points.schemas import ProgrammeCreate, ResidentCreate, ShopCreate
from kizuna.points.service import Points

TENANT = "takasago"


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def points(engine, tmp_path) -> Points:  # noqa: ANN001
    ledger = Ledger(engine, tmp_path)
    service = Points(engine, ledger, tmp_path)
    service.setup_programme(
        TENANT,
        ProgrammeCreate(
            name_ja="たかさご未来資産ポイント",
            name_en="Takasago future points",
            eligible_towns=["荒井町", "伊保", "高砂町"],
            thanks_daily_limit=100,
        ),
    )
    return service


@pytest.fixture
def hanako(points):  # noqa: ANN001, ANN201
    r = points.register_resident(TENANT, "hanako", ResidentCreate(real_name="高砂 花子", kana="たかさご はなこ", town="荒井町"))
    return points.verify_resident(TENANT, r.id, "staff:clerk")


@pytest.fixture
def taro(points):  # noqa: ANN001, ANN201
    r = points.register_resident(TENANT, "taro", ResidentCreate(real_name="伊保 太郎", kana="いほ たろう", town="伊保"))
    return points.verify_resident(TENANT, r.id, "staff:clerk")


@pytest.fixture
def shop(points):  # noqa: ANN001, ANN201
    return points.register_shop(
        TENANT,
        ShopCreate(code="sakura-bakery", name="さくらベーカリー", town="荒井町", address="荒井町1-2-3", fee_bp=150),
    )
