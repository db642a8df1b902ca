"""The node's HTTP API (hypercorn's trio worker + Starlette) and its small HTTP client."""
