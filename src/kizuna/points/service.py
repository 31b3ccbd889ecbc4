"""The points module's front door: programmes on top of the ledger.

Every point that moves goes through :class:`kizuna.ledger.service.Ledger` (one transfer or
one linked chain per event, with an id derived from the client-chosen event id, so a retry
or a double tap moves nothing twice). This module keeps what the ledger does not know:
residents (実名), shops, the eco-action catalogue and its CO2 arithmetic, coupons, and a
read model of the ledger's transfers (``points_moves``) for pages and the dashboard.

Errors are :class:`PointsError` (a Problem with a Japanese and an English message); nothing
is moved when one is raised.

    points = Points(engine, ledger, data_dir)
    points.setup_programme("takasago", ProgrammeCreate(name_ja="たかさご未来資産"))
    resident = points.register_resident("takasago", "hanako", ResidentCreate(...))
    points.log_action("takasago", resident, EcoLogIn(id=..., action="my-bag"))
    payment = points.authorize("takasago", resident, PaymentIn(id=..., shop="s1", amount=500))
    points.confirm("takasago", resident, payment.id)
"""

from __future__ import annotations

from kizuna.ledger.service import Originator
from kizuna.points.base import (
    PointsError,
    error,
    ledger_error,
    purchased_shop_account,
    purchased_wallet,
    shop_code_of,
)
from kizuna.points.clock import JST, fiscal_year, month_of, today
from kizuna.points.coupons import Coupons
from kizuna.points.dashboard import Dashboard, Figures
from kizuna.points.eco import EcoActions
from kizuna.points.moves import ReadModel
from kizuna.points.payments import PayLink, Payments, hold_expiry_label
from kizuna.points.people import People
from kizuna.points.programme import Programmes, Sale
from kizuna.points.schemas import Resident, Shop
from kizuna.points.settlement import Settlement
from kizuna.points.volunteering import Volunteering
from kizuna.points.wallet import Wallet, Wallets


class Points(
    Programmes,
    People,
    EcoActions,
    Volunteering,
    Coupons,
    Payments,
    Wallets,
    ReadModel,
    Settlement,
    Figures,
):
    """One per process (``app.state.services.points``); thread-safe.

    Each area's methods live in its own module (a mixin on :class:`PointsBase`, which
    holds the engine, the ledger and the caches); an area calls another through ``self``.
    """


__all__ = [
    "JST",
    "Dashboard",
    "Originator",
    "PayLink",
    "Points",
    "PointsError",
    "Resident",
    "Sale",
    "Shop",
    "Wallet",
    "error",
    "fiscal_year",
    "hold_expiry_label",
    "ledger_error",
    "month_of",
    "purchased_shop_account",
    "purchased_wallet",
    "shop_code_of",
    "today",
]
