"""Every run keeps its own report: ``<runs_dir>/<run_name>/reports/<run id>/``, and
``reports/latest`` points at the newest one. Two runs of the same name (a rerun, a retry
with changed parameters, a scheduled re-evaluation) no longer overwrite each other's report,
so an older run's link still shows that run's numbers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LATEST = "latest"


def report_folder(run_dir: Path, run_id: str) -> Path:
    """The report folder of one run (``run_id``: the flow run's id, or the evaluate key
    outside Prefect)."""
    if not run_id or run_id == LATEST or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"not a run id for a report folder: {run_id!r}")
    return run_dir / "reports" / run_id


def point_latest(folder: Path) -> Path:
    """Make ``reports/latest`` point at ``folder``: a relative symlink swapped in atomically
    (a reader never sees it missing), or a copy where symlinks are not allowed."""
    latest = folder.parent / LATEST
    temp = folder.parent / f".{LATEST}-{os.getpid()}"
    try:
        if temp.is_symlink() or temp.exists():
            temp.unlink()
        temp.symlink_to(folder.name, target_is_directory=True)
        os.replace(temp, latest)
    except OSError:
        if latest.is_symlink():
            latest.unlink()
        elif latest.exists():
            shutil.rmtree(latest)
        shutil.copytree(folder, latest)
    return latest
