"""docs/cli.md's walkthrough runs as shown: examples/cli_walkthrough.sh with the installed
``taskflow`` command, in an empty directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cli_walkthrough.sh"


def test_the_walkthrough_runs(tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)  # python and taskflow of this environment
    assert shutil.which("taskflow", path=bin_dir), "the taskflow console script is missing"
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TASKFLOW_BACKEND", None)

    run = subprocess.run(
        ["sh", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )

    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    ids = dict(line.split() for line in (tmp_path / "ids.txt").read_text().splitlines())
    assert "schema" in out and "version 3 (current)" in out
    assert f'"task_id": "{ids["charge"]}"' in out  # list --status failed --json
    assert "card declined for order 1042" in out  # show
    assert f"task {ids['sync']} is CANCELLED" in out
    assert f"task {ids['charge']} is PENDING again" in out
    assert "retried 0 tasks" in run.stderr
    assert "purged 4 finished tasks" in out
    assert (tmp_path / "tasks.db").exists()
