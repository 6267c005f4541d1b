"""One sweep job's training in a fresh Python process (``hydra/launcher=joblib``).

joblib's loky workers are reused from job to job, and TensorFlow keeps its memory (GPU memory
above all) and graph state until its process exits. So a job of a joblib sweep trains in a child
process of its own: the loky worker only starts it and waits; the child writes its result (the
final metrics, or the error) to a JSON file and exits, handing everything back to the system.

The child is a fork of the worker, which imports TensorFlow once and never runs it, where that is
safe (``_warm_fork``: a single-threaded worker without a GPU); jobs then skip Python's start-up and
the TensorFlow import. Otherwise it is a fresh Python: ``python -m gan_cli.cli.job_process
CONFIG.yaml RUN_DIR RESULT.json``. Several such children share a GPU, so each grows its GPU memory
on demand (``TF_FORCE_GPU_ALLOW_GROWTH=true`` unless set) instead of claiming it all at start.
"""

from __future__ import annotations

import builtins
import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gan_cli.core import errors

# what gan_cli.cli.main's signal handlers raise: SIGINT, SIGTERM
_SIGNALLED = (KeyboardInterrupt, errors.Terminated)


def _rebuild(kind: str, message: str) -> Exception:
    """The child's exception as an instance of the same class when it is one of ours or a builtin."""
    cls = getattr(errors, kind, None) or getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return RuntimeError(f"{kind}: {message}")


def train_in_fresh_process(cfg: DictConfig, run_dir: Path) -> dict:
    """``train(cfg, run_dir)`` in a new process; returns its result or raises its error (same class and
    one-line message; the child prints any traceback to stderr itself).

    The new process is a fork of this one where that is safe (``_warm_fork``): this process imports
    TensorFlow once and each job's child starts with it loaded, instead of a fresh Python that imports
    it again. Otherwise it is ``python -m gan_cli.cli.job_process``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gan_job_") as tmp:
        cfg_path, result_path = Path(tmp) / "config.yaml", Path(tmp) / "result.json"
        if _warm_fork():
            code = _train_in_fork(cfg, run_dir, result_path)
        else:
            env = {**os.environ}
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
            cfg_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
            code = subprocess.run([sys.executable, "-m", "gan_cli.cli.job_process", str(cfg_path), str(run_dir),
                                   str(result_path)], env=env).returncode
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if "error" in result:
                raise _rebuild(result["error"]["type"], result["error"]["message"])
            return result["metrics"]
    if code in (130, 143):  # interrupted: the child wrote its checkpoint and said how to resume
        raise SystemExit(code)
    raise RuntimeError(f"the training process exited with status {code} (see its output above)")


def _warm_fork() -> bool:
    """Whether a job may train in a fork of this process, after importing TensorFlow here (once per process).

    Only where that is safe: POSIX guarantees a forked child a consistent state only when the parent has a
    single thread, and TensorFlow's runtime (its thread pools, a GPU driver) starts threads when it first
    runs; so fork only while this process is single-threaded (Linux, where ``/proc/self/task`` lists the
    threads) and sees no GPU (CUDA is not fork-safe once initialised). A loky worker of a joblib sweep, or
    a sweep run with ``hydra.launcher.n_jobs=1`` from the command line, is such a process: it never runs
    TensorFlow itself."""
    if not hasattr(os, "fork") or not os.path.isdir("/proc/self/task") or glob.glob("/dev/nvidia[0-9]*"):
        return False  # (an NVIDIA GPU: not even TensorFlow's import is needed here)
    from gan_cli.core.tf_import import quiet_tensorflow

    quiet_tensorflow()  # no-op after the first job
    import tensorflow as tf

    return len(os.listdir("/proc/self/task")) == 1 and not tf.config.list_physical_devices("GPU")


def _train_in_fork(cfg: DictConfig, run_dir: Path, result_path: Path) -> int:
    """Train in a forked child (``_warm_fork`` said it is safe); its exit status once it has ended."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # as the fresh process reads it
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing buffered is written twice
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: train, write the result, end without this process's exit handlers
        code = 1
        try:
            _stop_with_parent(parent)
            code = run_job(job, run_dir, result_path)
        except SystemExit as exc:  # train() ends an interrupted run with 130 / 143 after its checkpoint
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - a signal before train() installed its handlers, or a bug
            if isinstance(exc, _SIGNALLED):
                code = 130 if isinstance(exc, KeyboardInterrupt) else 143
            else:
                import traceback

                traceback.print_exc()
        finally:
            _end(code)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except BaseException as exc:
            # Ctrl-C or SIGTERM (gan_cli.cli.main's handlers raise KeyboardInterrupt / Terminated): passed on to
            # the child, which stops after its current compiled call and writes a checkpoint; wait for it. A
            # Ctrl-C in a terminal reaches the child directly as well; the second one only makes it stop at once.
            if not isinstance(exc, _SIGNALLED):
                raise
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent ends (Linux ``PR_SET_PDEATHSIG``), so that a
    job whose worker died (joblib itself takes a worker's children down when it stops a sweep) stops with a
    checkpoint instead of training on unattended."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_job(cfg: DictConfig, run_dir: Path, result_path: Path) -> int:
    """One job's training; its result (the final metrics, or the error as one line) goes to ``result_path``."""
    from gan_cli.core.tf_import import quiet_tensorflow

    quiet_tensorflow()
    from gan_cli.job.train import train

    try:
        metrics = train(cfg, Path(run_dir), report_later=True)  # the parent job starts the report after DONE
        result = {"metrics": metrics}
    except Exception as exc:  # noqa: BLE001 - handed back to the parent job as one line
        if not isinstance(exc, errors.UserError):
            import traceback

            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result = {"error": {"type": type(exc).__name__, "message": message}}
    Path(result_path).write_text(json.dumps(result))
    return 0


def main(argv: list[str]) -> int:
    cfg_path, run_dir, result_path = argv
    return run_job(OmegaConf.load(cfg_path), Path(run_dir), Path(result_path))


def _end(code: int) -> None:
    """End the process at once: the job's files are closed and its result written, so skip the
    interpreter's teardown with TensorFlow loaded (seconds that every job of the sweep would wait
    for; gan_cli.cli.main._finished) and, in a forked child, the parent's exit handlers."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _end(main(sys.argv[1:]))
