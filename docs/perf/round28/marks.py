"""The marks of a run (tl-marks.diff): every ``<pid>.tl`` file of a directory, merged."""

import glob


def load(directory: str) -> list[tuple[int, str, str]]:
    """(time ns, pid, mark) of every process's marks, in time order."""
    ev = []
    for f in glob.glob(f"{directory}/*.tl"):
        pid = f.split("/")[-1][:-3]
        for line in open(f):
            t, n = line.rstrip("\n").split(" ", 1)
            ev.append((int(t), pid, n))
    ev.sort()
    return ev
