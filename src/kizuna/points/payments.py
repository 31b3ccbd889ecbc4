"""Paying at a shop: signed QR links, the two-phase payment (hold, then post), cancel,
refund, and a payment's state as the ledger has it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from kizuna.ledger.schemas import TransferCreate, TransferPublic, TransferResult
from kizuna.points import clock
from kizuna.points.base import (
    HOLD_SECONDS,
    LEDGER_MESSAGES,
    PointsBase,
    PointsError,
    _memo,
    _parse_memo,
    _tid,
    _unverified,
    error,
    ledger_error,
    purchased_shop_account,
    purchased_wallet,
    shop_code_of,
)
from kizuna.points.models import coupon_uses
from kizuna.points.schemas import Payment, PaymentIn, Programme, Resident, Shop
from kizuna.storage import writer

ONE_OFF_QR_SECONDS = 300  # a shop's one-off QR with an amount is valid 5 minutes


def payment_parts(points: int, discount: int, purchased: int) -> list[tuple[str, str]]:
    """The holds of a payment as (part, id suffix): administrative points from the wallet,
    the coupon's discount, purchased points — each present when > 0, suffixes "", "2", "3"
    in that order (a payment without purchased points keeps its former ids)."""
    present = [
        part
        for part, n in (("pt", points - purchased), ("coupon", discount), ("rp", purchased))
        if n > 0
    ]
    return [(part, "" if i == 0 else str(i + 1)) for i, part in enumerate(present)]


@dataclass
class PayLink:
    tenant: str
    shop: Shop
    amount: int | None  # one-off QR: the amount the shop asked for
    payment_id: str | None  # one-off QR: the payment it stands for (so it pays once)


@dataclass
class PayPlan:
    """A checked payment: its hold transfer(s), to hand to the ledger."""

    spec: PaymentIn
    shop: Shop
    discount: int
    points: int
    use_n: int | None
    items: list[TransferCreate]
    purchased: int = 0


@dataclass
class ConfirmPlan:
    payment_id: str
    hold: TransferPublic
    memo: dict[str, str]
    bill: int
    discount: int
    points: int
    expires: datetime
    items: list[TransferCreate]
    purchased: int = 0


class Payments(PointsBase):
    """QR links and payments; the hot path (plan_* / authorized / confirmed) is also called
    step by step by :mod:`kizuna.points.routes`."""

    def _key(self) -> bytes:
        if self._secret:
            return self._secret
        with self._secret_lock:
            if not self._secret:
                path = self.data_dir / "points" / "qr.key"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    tmp = path.with_suffix(f".{secrets.token_hex(4)}")
                    tmp.write_bytes(secrets.token_bytes(32))
                    tmp.chmod(0o600)
                    with contextlib.suppress(FileExistsError):
                        path.hardlink_to(tmp)  # atomic: the first server's key wins
                    tmp.unlink()
                self._secret = path.read_bytes()
        return self._secret

    def _sign(self, *parts: object) -> str:
        mac = hmac.new(self._key(), "|".join(str(p) for p in parts).encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")

    def pay_path(self, tenant: str, shop: str) -> str:
        """The URL path on the shop's printed QR: opens the pay page for that shop."""
        return f"/points/pay/{tenant}/{shop}?s={self._sign('shop', tenant, shop)}"

    def one_off_path(self, tenant: str, shop: str, amount: int) -> str:
        """A QR for one bill: signed, expires in 5 minutes, and pays once (its nonce is the
        payment id)."""
        expires = int(clock.now().timestamp()) + ONE_OFF_QR_SECONDS
        nonce = secrets.token_hex(8)
        sig = self._sign("bill", tenant, shop, amount, expires, nonce)
        return f"/points/pay/{tenant}/{shop}?a={amount}&e={expires}&n={nonce}&s={sig}"

    def check_link(
        self,
        tenant: str,
        shop_code: str,
        sig: str,
        amount: str | None = None,
        expires: str | None = None,
        nonce: str | None = None,
    ) -> PayLink:
        """Check a scanned QR: forged → refused; a one-off bill past its time → refused."""
        forged = error(
            "qr-forged",
            "このQRコードは正しくありません。お店の方に確認してください（支払いは行われていません）。",
            "This QR code is not valid. Please ask the shop (nothing was paid).",
            400,
        )
        if amount is None:
            expected = self._sign("shop", tenant, shop_code)
        else:
            expected = self._sign("bill", tenant, shop_code, amount, expires, nonce)
        if not sig or not hmac.compare_digest(sig, expected):
            raise forged
        shop = self.shop(tenant, shop_code)
        if shop is None or not shop.active:
            raise error(
                "shop-closed",
                "このお店は現在ポイントを受け付けていません。",
                "This shop does not take points now.",
            )
        if amount is None:
            return PayLink(tenant, shop, None, None)
        if not (amount.isdigit() and expires and expires.isdigit()):
            raise forged
        if int(expires) < clock.now().timestamp():
            raise error(
                "qr-expired",
                "このQRコードは有効期限（5分）が切れています。お店の方に新しいQRコードを出してもらってください。",
                "This QR code has expired (5 minutes). Ask the shop for a new one.",
                410,
            )
        return PayLink(tenant, shop, int(amount), _tid(tenant, "bill", shop_code, nonce))

    def authorize(self, tenant: str, resident: Resident, spec: PaymentIn) -> Payment:
        """Hold the points (two-phase): the wallet's part and a coupon's part as pending
        transfers to the shop, valid 5 minutes; nothing is paid until :meth:`confirm`.

        No read first: the hold's id derives from ``spec.id``, so a replay (a double tap)
        is answered by the ledger ("exists") and only then is the payment read back."""
        plan = self.plan_authorize(tenant, resident, spec)
        if isinstance(plan, Payment):
            return plan
        try:
            first = self._post_plan(tenant, plan)
        except PointsError as exc:
            raise self.refused(tenant, resident, plan, exc) from None
        return self.authorized(tenant, resident, plan, first)

    def plan_authorize(self, tenant: str, resident: Resident, spec: PaymentIn) -> PayPlan | Payment:
        """The checks and the hold transfers of a payment (a Payment when it is a replay)."""
        if spec.coupon and self._coupon_use(spec.id):
            return self._replayed(tenant, resident, spec.id)
        if not resident.verified:
            raise _unverified()
        prog = self.programme(tenant)
        shop = self.shop(tenant, spec.shop)
        if shop is None or not shop.active:
            raise error(
                "shop-closed",
                "このお店は現在ポイントを受け付けていません。",
                "This shop does not take points now.",
            )
        if prog.eligible_towns and shop.town not in prog.eligible_towns:
            raise error(
                "shop-outside-area",
                f"{shop.name}（{shop.town}）は、このポイントの対象地域外のお店です。",
                f"{shop.name} ({shop.town}) is outside the programme's area.",
            )
        discount = 0
        use_n = None
        coupon = None
        if spec.coupon:
            coupon = self.coupon(tenant, spec.coupon)
            discount, use_n = self._take_coupon(tenant, resident, shop, coupon, spec)
        points = spec.amount - discount
        purchased = self._purchased_part(tenant, prog, resident, points)
        # A split depends on balances, which a first tap has changed: a second tap is
        # answered from the hold the first one made, not planned again.
        if purchased and self._transfer(tenant, _tid(tenant, "pay", spec.id, "hold")):
            return self._replayed(tenant, resident, spec.id)
        memo = _memo(
            m=resident.member_code, bill=spec.amount, d=discount, c=spec.coupon, r=purchased or None
        )
        cur = prog.purchase_currency or ""
        legs = {  # part → (debit, credit, amount, currency, code)
            "pt": (resident.wallet, shop.account, points - purchased, prog.currency, "payment"),
            "coupon": ("budget:coupon", shop.account, discount, prog.currency, "coupon"),
            "rp": (
                purchased_wallet(resident, cur),
                purchased_shop_account(shop, cur),
                purchased,
                cur,
                "payment",
            ),
        }
        parts = payment_parts(points, discount, purchased)
        items = []
        for i, (part, suffix) in enumerate(parts):
            debit, credit, amount, currency, code = legs[part]
            items.append(
                TransferCreate(
                    id=_tid(tenant, "pay", spec.id, "hold" + suffix),
                    debit_account=debit,
                    credit_account=credit,
                    amount=amount,
                    currency=currency,
                    code=code,
                    pending=True,
                    timeout_seconds=HOLD_SECONDS,
                    ref=spec.id,
                    memo=memo,
                    linked=i < len(parts) - 1,
                )
            )
        return PayPlan(spec, shop, discount, points, use_n, items, purchased)

    def _purchased_part(self, tenant: str, prog: Programme, resident: Resident, points: int) -> int:
        """How much of a payment the 地域ポイント wallet pays: administrative points go
        first (they are free and the city's to lose), purchased points pay the rest."""
        if not prog.purchase_currency or points <= 0:
            return 0
        wallets = [resident.wallet, purchased_wallet(resident, prog.purchase_currency)]
        administrative, purchased = self.ledger.spendable(tenant, wallets).values()
        if administrative >= points:
            return 0
        return min(points - administrative, purchased)

    def spendable(self, tenant: str, wallet: str) -> int:
        """Unexpired, unheld points of a wallet (what the ledger lets it spend now)."""
        return self.ledger.spendable(tenant, [wallet])[wallet]

    def _post_plan(self, tenant: str, plan: PayPlan) -> TransferResult:
        if len(plan.items) == 1:
            return self._submit(tenant, plan.items[0])
        return self.post_chain(tenant, plan.items)[0]

    def refused(
        self, tenant: str, resident: Resident, plan: PayPlan, exc: PointsError
    ) -> PointsError:
        """What to tell the resident when the ledger refused the hold (nothing moved)."""
        if plan.use_n is not None:
            self._release_coupon(plan.spec.id)
        if exc.code == "id-conflict":  # two taps raced: the other one holds this payment
            return error(
                "payment-in-progress",
                "このお支払いはすでに受け付けています。画面を読み込み直してください。",
                "This payment is already being processed. Reload the page.",
                409,
            )
        if exc.code != "insufficient-funds":
            return exc
        prog = self.programme(tenant)
        balance = self.spendable(tenant, resident.wallet)
        if prog.purchase_currency:
            balance += self.spendable(tenant, purchased_wallet(resident, prog.purchase_currency))
        points = plan.points
        if plan.discount and balance >= points:
            return error(
                "coupon-budget", "クーポンの予算が終了しました。", "The coupon budget is used up."
            )
        return error(
            "insufficient-funds",
            f"ポイント残高が足りません（利用できる残高 {balance:,} pt、お支払い {points:,} pt）。",
            f"Not enough points ({balance:,} pt available, {points:,} pt needed).",
        )

    def authorized(
        self, tenant: str, resident: Resident, plan: PayPlan, first: TransferResult
    ) -> Payment:
        if first.status == "exists":
            return self._replayed(tenant, resident, plan.spec.id)
        assert first.transfer is not None
        spec = plan.spec
        return Payment(
            id=spec.id,
            shop=plan.shop.code,
            shop_name=plan.shop.name,
            member_code=resident.member_code,
            amount=spec.amount,
            discount=plan.discount,
            points=plan.points,
            purchased=plan.purchased,
            coupon=spec.coupon,
            status="authorized",
            created_at=first.transfer.timestamp,
            expires_at=first.transfer.timestamp + timedelta(seconds=HOLD_SECONDS),
        )

    def _replayed(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        found = self.payment(tenant, payment_id)
        if found is None:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        self._own(found, resident)
        return found.model_copy(update={"replay": True})

    def confirm(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        """Post the held transfers: the payment is done. A second confirm (a double tap)
        returns the completed payment (``replay``) and moves nothing."""
        plan = self.plan_confirm(tenant, resident, payment_id)
        if isinstance(plan, Payment):
            return plan
        try:
            first = self._post_plan(tenant, plan)
        except PointsError as exc:
            raise self.confirm_refused(tenant, payment_id, exc) from None
        return self.confirmed(tenant, resident, plan, first)

    def plan_confirm(
        self, tenant: str, resident: Resident, payment_id: str
    ) -> ConfirmPlan | Payment:
        """Read the hold once (whose, how much, still valid) and the post transfers."""
        hold = self._transfer(tenant, _tid(tenant, "pay", payment_id, "hold"))
        memo = _parse_memo(hold.memo if hold else None)
        if hold is None or memo.get("m") != resident.member_code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        bill, discount = int(memo.get("bill", hold.amount)), int(memo.get("d", 0))
        points, purchased = bill - discount, int(memo.get("r", 0))
        expires = hold.timestamp + timedelta(seconds=hold.timeout_seconds or HOLD_SECONDS)
        if expires <= clock.now():  # the ledger refuses it too; its job voids the hold soon
            found = self.payment(tenant, payment_id)
            if found is not None and found.status in ("completed", "refunded"):
                return found.model_copy(update={"replay": True})
            raise error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
        parts = payment_parts(points, discount, purchased)
        items = [
            TransferCreate(
                id=_tid(tenant, "pay", payment_id, "post" + suffix),
                post_pending_id=_tid(tenant, "pay", payment_id, "hold" + suffix),
                code="coupon" if part == "coupon" else "payment",
                ref=payment_id,
                linked=i < len(parts) - 1,
            )
            for i, (part, suffix) in enumerate(parts)
        ]
        return ConfirmPlan(
            payment_id, hold, memo, bill, discount, points, expires, items, purchased
        )

    def confirm_refused(self, tenant: str, payment_id: str, exc: PointsError) -> PointsError:
        if exc.code == "pending-expired":
            return error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
        if exc.code == "pending-already-resolved":
            found = self.payment(tenant, payment_id)
            if found is not None and found.status == "expired":
                return error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
            return error(
                "payment-closed",
                "このお支払いは取り消されています。",
                "This payment was cancelled.",
                409,
            )
        return exc

    def confirmed(
        self, tenant: str, resident: Resident, plan: ConfirmPlan, first: TransferResult
    ) -> Payment:
        if first.status == "exists":
            return self._replayed(tenant, resident, plan.payment_id)
        if plan.discount:
            with writer(self.engine).begin() as conn:
                conn.execute(
                    update(coupon_uses)
                    .where(coupon_uses.c.payment_id == plan.payment_id)
                    .values(state="used")
                )
        shop_code = shop_code_of(plan.hold.credit_account)
        shop = self.shop(tenant, shop_code)
        return Payment(
            id=plan.payment_id,
            shop=shop_code,
            shop_name=shop.name if shop else shop_code,
            member_code=resident.member_code,
            amount=plan.bill,
            discount=plan.discount,
            points=plan.points,
            purchased=plan.purchased,
            coupon=plan.memo.get("c"),
            status="completed",
            created_at=plan.hold.timestamp,
            expires_at=plan.expires,
        )

    def cancel(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        """Void the holds (the resident pressed 取消); the coupon use is given back."""
        payment = self.payment(tenant, payment_id)
        if payment is None:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        self._own(payment, resident)
        if payment.status in ("authorized", "expired"):
            items = [
                TransferCreate(
                    id=_tid(tenant, "pay", payment_id, "void" + suffix),
                    void_pending_id=_tid(tenant, "pay", payment_id, "hold" + suffix),
                    code="cancel",
                    ref=payment_id,
                )
                for _, suffix in payment_parts(payment.points, payment.discount, payment.purchased)
            ]
            for result in self.ledger.post_transfers(tenant, items):
                if not result.ok and result.error and "already-resolved" not in result.error.type:
                    raise ledger_error(result)
            self._release_coupon(payment_id)
        found = self.payment(tenant, payment_id)
        assert found is not None
        return found

    def refund(self, tenant: str, shop: Shop, payment_id: str) -> Payment:
        """The shop gives a completed payment back in full: points to the wallet, a coupon's
        part to the coupon budget (and the coupon use back). Once per payment."""
        payment = self.payment(tenant, payment_id)
        if payment is None or payment.shop != shop.code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        if payment.status == "refunded":
            return payment
        if payment.status != "completed":
            raise error(
                "not-refundable",
                "確定したお支払いだけ返金できます。",
                "Only completed payments can be refunded.",
                409,
            )
        prog = self.programme(tenant)
        resident = self.resident_by_code(tenant, payment.member_code)
        assert resident is not None
        cur = prog.purchase_currency or ""
        legs = {  # part → (debit, credit, amount, currency): each hold given back
            "pt": (
                shop.account,
                resident.wallet,
                payment.points - payment.purchased,
                prog.currency,
            ),
            "coupon": (shop.account, "budget:coupon", payment.discount, prog.currency),
            "rp": (
                purchased_shop_account(shop, cur),
                purchased_wallet(resident, cur),
                payment.purchased,
                cur,
            ),
        }
        parts = payment_parts(payment.points, payment.discount, payment.purchased)
        items = []
        for i, (part, suffix) in enumerate(parts):
            debit, credit, amount, currency = legs[part]
            items.append(
                TransferCreate(
                    id=_tid(tenant, "pay", payment_id, "refund" + suffix),
                    debit_account=debit,
                    credit_account=credit,
                    amount=amount,
                    currency=currency,
                    code="refund",
                    ref=payment_id,
                    linked=i < len(parts) - 1,
                )
            )
        self.post_chain(tenant, items)
        self._release_coupon(payment_id)
        found = self.payment(tenant, payment_id)
        assert found is not None
        return found

    def payment(self, tenant: str, payment_id: str) -> Payment | None:
        """A payment as the ledger has it: the hold, and whether it was posted, voided,
        timed out or refunded."""
        hold = self._transfer(tenant, _tid(tenant, "pay", payment_id, "hold"))
        if hold is None:
            return None
        memo = _parse_memo(hold.memo)
        bill, discount = int(memo.get("bill", hold.amount)), int(memo.get("d", 0))
        shop_code = shop_code_of(hold.credit_account)
        shop = self.shop(tenant, shop_code)
        expires = hold.timestamp + timedelta(seconds=hold.timeout_seconds or HOLD_SECONDS)
        if self._transfer(tenant, _tid(tenant, "pay", payment_id, "post")):
            refunded = self._transfer(tenant, _tid(tenant, "pay", payment_id, "refund"))
            status = "refunded" if refunded else "completed"
        elif self._transfer(tenant, _tid(tenant, "pay", payment_id, "void")):
            status = "cancelled"
        elif expires <= clock.now():
            status = "expired"
        else:
            status = "authorized"
        return Payment(
            id=payment_id,
            shop=shop_code,
            shop_name=shop.name if shop else shop_code,
            member_code=memo.get("m", ""),
            amount=bill,
            discount=discount,
            points=bill - discount,
            purchased=int(memo.get("r", 0)),
            coupon=memo.get("c"),
            status=status,  # type: ignore[arg-type]
            created_at=hold.timestamp,
            expires_at=expires,
        )

    def _own(self, payment: Payment, resident: Resident) -> None:
        if payment.member_code != resident.member_code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)


def hold_expiry_label(expires_at: datetime | None) -> str:
    if expires_at is None:
        return ""
    left = int((expires_at - clock.now()).total_seconds())
    return f"{max(left, 0) // 60}:{max(left, 0) % 60:02d}"
