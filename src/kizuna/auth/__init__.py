"""Who is calling: users and roles, API keys for machines, bearer tokens, OIDC."""
