"""univrs: the replicated, durable cluster state of the Univrs container orchestrator."""

__version__ = "0.1.0"
