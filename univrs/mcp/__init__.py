"""The MCP server of univrs (``univrs mcp``): the cluster state as tools and resources for AI
agents, over ``univrs.client`` (univrs/mcp/server.py)."""
