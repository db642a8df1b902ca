"""A deterministic, seeded simulator of a univrs Raft cluster, with invariant checkers and mutants.

Run ``python -m univrs.sim --seeds 100`` (see docs/simulator.md). Pure Python in one process:
no trio, threads or wall clock; one seed decides everything, so a failing seed replays exactly.
"""
