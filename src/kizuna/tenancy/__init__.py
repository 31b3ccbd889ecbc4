"""Municipalities as tenants, wide-area regions, and who may act in which tenant."""
