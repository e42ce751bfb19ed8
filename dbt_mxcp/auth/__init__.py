"""Who is calling: API keys and OAuth 2.1 bearer tokens over HTTP, a configured identity over stdio.

- `api_keys`: keys stored as SHA-256 hashes, compared in constant time, each mapped to a user.
- `tokens`: JWTs validated against the issuer's JWKS (algorithm allowlist, exp/nbf with bounded
  leeway, issuer, mandatory audience, scopes), RFC 7662 introspection, claims mapped to `user`.
- `login`: the server as the authorization server MCP clients log in with (consent page, codes,
  its own tokens), delegating the login to an identity provider (`providers`); `store` keeps
  clients and token digests.
- `middleware`: the ASGI layer in front of `/mcp`: 401/403 challenges as the MCP spec says,
  tokens in query strings refused, the caller handed to the pipeline.
"""
