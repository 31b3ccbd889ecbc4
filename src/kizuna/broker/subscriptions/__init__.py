"""NGSI-LD subscriptions and notification delivery through an outbox (HTTP and MQTT).

models.py (tables), document.py (the Subscription document in and out), matching.py
(which changes concern which subscriptions, in Python), service.py (the front door and
the write-path listener), render.py (Notification bodies), delivery.py (the worker),
routes.py (/ngsi-ld/v1/subscriptions).
"""
