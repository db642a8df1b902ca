"""Tools that run real node processes on this machine: ``devcluster`` (a local cluster of
``univrs node start`` processes), used by ``scripts/cluster``, the chaos runner, the benchmarks
and the process tests. They sit on top of the product: nothing below them imports them."""
