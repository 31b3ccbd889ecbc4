"""The NGSI-LD temporal API: attribute history recorded with every entity write."""
