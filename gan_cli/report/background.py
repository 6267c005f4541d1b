"""The end-of-run report written by a process of its own, so that ``gan train`` returns once training is done.

Drawing a run's report (7 figures and an animation with matplotlib) takes several seconds of CPU, more than
the training itself on a short 2D run. ``gan train`` therefore starts it after the run's final checkpoint and
its ``DONE`` marker and exits without waiting (``train.report=true``, the default):

* ``start(run_dir)`` writes ``RUN/report.pending`` (the worker's process id) and starts
  ``python -m gan_cli.report.background RUN`` in a session of its own (it outlives ``gan train``; Ctrl-C in
  the terminal does not reach it), at a lower CPU priority (nice 10, so it yields to the next job of a
  sweep), with its output in ``RUN/report.log``.
* The worker writes the report as ``gan report RUN`` does (``RUN/report/*.png`` first, ``RUN/report.html``
  last, atomically), then removes ``report.pending``. A run folder holding ``report.html`` and no
  ``report.pending`` has a finished report; while ``report.pending`` exists, the files in ``RUN/report/`` may
  be half written. A failure is logged in ``report.log`` with the command that redoes it (``gan report RUN``).
* ``wait(run_dir)`` blocks until the worker is done (or has died): a sweep calls it for its jobs before the
  command returns, tests call it before reading the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PENDING = "report.pending"
LOG = "report.log"


def in_background(cfg) -> bool:
    """Whether a run of config ``cfg`` gets its report from ``after_done`` (``train.report=true``), rather than
    from training itself: with ``train.logger=mlflow`` the report is written before training returns, as the
    logger uploads it when the run ends."""
    train = cfg.get("train") or {}
    return bool(train.get("report", False)) and train.get("logger") != "mlflow"


def after_done(cfg, run_dir: str | Path) -> None:
    """Start the report of a run that has just been marked done (``RUN/DONE``), if ``in_background(cfg)``."""
    if not in_background(cfg):
        return
    start(run_dir)
    print(f"report: {Path(run_dir) / 'report.html'} (being drawn in the background; complete when "
          f"{PENDING} is gone, a few seconds; `gan report {run_dir}` draws it in the foreground)", file=sys.stderr)


def start(run_dir: str | Path) -> int:
    """Start the report worker for ``run_dir``; returns its process id."""
    run_dir = Path(run_dir)
    pending = run_dir / PENDING
    with open(run_dir / LOG, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gan_cli.report.background", str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "MPLBACKEND": "Agg"})
    pending.write_text(f"{proc.pid}\n")
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the number: ours is gone
        return False
    if Path(f"/proc/{pid}/stat").is_file():  # a finished child of this process that nobody reaped yet
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def pending(run_dir: str | Path) -> bool:
    """True while a report worker is writing ``run_dir``'s report (a marker left by a dead worker: False)."""
    marker = Path(run_dir) / PENDING
    try:
        pid = int(marker.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return marker.exists()  # written a moment ago, not yet filled in
    return _alive(pid)


def wait(run_dir: str | Path, timeout: float = 600.0, poll: float = 0.1) -> bool:
    """Block until ``run_dir``'s report worker is done; True when it finished within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pending(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def main(argv: list[str]) -> int:
    """The worker: write the report of the run folder ``argv[0]``, then remove its ``report.pending``."""
    run_dir = Path(argv[0])
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        from gan_cli.report import write_report

        print(f"report: {write_report(run_dir)}", flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say how to redo its report
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"warning: could not write the report ({message}); retry with: gan report {run_dir}", flush=True)
        return 1
    finally:
        (run_dir / PENDING).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
