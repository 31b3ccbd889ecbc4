"""The NGSI-LD temporal API: attribute history, temporal representations, aggregation."""
