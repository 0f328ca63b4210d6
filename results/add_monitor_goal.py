"""Record each committed run's monitored metric and its goal in summary.json's run info (what
`python -m jaxfit.report DIR` reads instead of importing the experiment; runs written since
record them themselves), then redraw summary.md and the engine's figures from the files.

    python results/add_monitor_goal.py [DIR ...]     (default: every committed run)

Nothing else in summary.json changes (checked); the experiment's own figures are left as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxfit import config, report

ROOT = Path(__file__).resolve().parent


def add(folder: Path) -> None:
    summary = report.read_summary(folder)
    task = config.load(str(folder / "config.toml")).task
    run = summary["run"] | {"monitor": task.monitor, "goal": task.goal}
    if run != summary["run"]:
        report.write_summary(folder, summary | {"run": run})
    report.redraw(folder)
    after = report.read_summary(folder)
    assert after["models"] == summary["models"] and after["run"] == run, folder
    print(f"{folder}: monitor {task.monitor!r}, goal {task.goal!r}")


if __name__ == "__main__":
    for folder in [Path(f) for f in sys.argv[1:]] or sorted(p.parent for p in ROOT.rglob("summary.json")):
        add(folder.resolve())
