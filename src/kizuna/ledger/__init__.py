"""Double-entry regional points ledger: accounts, transfers, lots/expiry, audit log, settlement.

Other modules use :mod:`kizuna.ledger.service` only.
"""
