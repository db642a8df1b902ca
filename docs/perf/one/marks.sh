#!/bin/bash
# Puts the timeline marks (docs/perf/timeline/probe.py, apply.py) into the tree DIR, plus two
# of s20-one's: a storage write's completion on the loop ("done") and the end of a driver
# step ("stepend"). Measurement only: never commit the marked tree (strip.sh undoes it).
set -euo pipefail
dir=$1; here=$(cd "$(dirname "$0")" && pwd)
cp "$here/../timeline/probe.py" "$dir/univrs/_probe.py"
python3 "$here/../timeline/apply.py" "$dir"
python3 - "$dir" <<'PY'
import sys
def patch(path, old, new):
    p = sys.argv[1] + "/" + path; s = open(p).read()
    assert s.count(old) == 1, (path, old); open(p, "w").write(s.replace(old, new))
patch("univrs/runtime/writer.py",
      "    def _wrote(self, merged: MergedWrite, result: _Result, seconds: float) -> None:\n",
      "    def _wrote(self, merged: MergedWrite, result: _Result, seconds: float) -> None:\n        _P.mark('done')\n")
patch("univrs/runtime/step.py",
      "                self._process_ready()\n                checks.maybe_stop(self.core)  # a check whose chunk can complete nothing\n",
      "                self._process_ready()\n                checks.maybe_stop(self.core)  # a check whose chunk can complete nothing\n                _P.mark('stepend')\n")
PY
