"""Chaos tooling: scripted fault scenarios against real node processes (issue 7).

Parts, one concept per module:

* ``history``: the JSON Lines operation history and its pairing into operations;
* ``linearizability``: a per-key Wing-Gong-Lowe checker over a register model;
* ``proxy``: a Trio TCP fault proxy for one ordered peer link (i -> j);
* ``scenario``: the TOML scenario format;
* ``faults``: process and network faults a scenario schedules;
* ``workload``: concurrent clients that record the history;
* ``checks``: the checks after healing (digests, acknowledged writes, applied prefix);
* ``runner`` and ``report``: running a scenario end to end and presenting the verdict;
* ``cli``: ``univrs chaos run|list``.

The pure parts (history, linearizability, scenario) import no trio and start no process.
"""
