"""The ledger's error types: stable ``urn:kizuna:errors:ledger:<code>`` ProblemDetails."""

from __future__ import annotations

from kizuna.problems import Problem

PREFIX = "urn:kizuna:errors:ledger:"

# code -> (HTTP status, title). The codes are part of the API: never rename one.
CODES: dict[str, tuple[int, str]] = {
    "invalid-transfer": (400, "Invalid transfer"),
    "invalid-request": (400, "Invalid request"),
    "linked-chain-open": (400, "The last transfer of a batch cannot be linked"),
    "account-not-found": (404, "Unknown account"),
    "currency-not-found": (404, "Unknown currency"),
    "transfer-not-found": (404, "Unknown transfer"),
    "pending-not-found": (404, "Unknown pending transfer"),
    "id-conflict": (409, "Transfer id already used with a different body"),
    "account-conflict": (409, "Account exists with different settings"),
    "currency-conflict": (409, "Currency exists with different settings"),
    "pending-already-resolved": (409, "Pending transfer already posted or voided"),
    "currency-mismatch": (422, "Accounts and transfer are in different currencies"),
    "account-closed": (422, "Account is closed"),
    "insufficient-funds": (422, "Amount over the available balance"),
    "credit-cap-exceeded": (422, "The credit account's cap would be exceeded"),
    "debit-cap-exceeded": (422, "The debit account's cap would be exceeded"),
    "daily-limit-exceeded": (422, "Daily send limit exceeded"),
    "pending-expired": (422, "Pending transfer timed out"),
    "amount-exceeds-pending": (422, "Amount over the pending amount"),
    "linked-event-failed": (422, "Another transfer of the linked chain failed"),
    "not-a-merchant": (422, "Account is not a merchant"),
    "settlement-period-invalid": (400, "Invalid settlement period"),
    "nothing-to-settle": (422, "Nothing to settle in this period"),
    "checkpoint-not-found": (404, "No such checkpoint"),
    "not-purchasable": (422, "The currency cannot be bought"),
    "purchase-limit-exceeded": (422, "Over the purchase limit"),
    "premium-budget-exhausted": (422, "The premium budget is used up"),
}


def ledger_problem(code: str, detail: str | None = None, **extra: object) -> Problem:
    status, title = CODES[code]
    return Problem(status, PREFIX + code, title, detail, **extra)
