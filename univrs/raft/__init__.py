"""The sans-IO Raft core: a pure, deterministic state machine fed events, handing back Ready.

See docs/core-api.md for the API and univrs/raft/ready.py for the Ready ordering contract.
"""
