"""One sweep job's training in a fresh Python process (``hydra/launcher=joblib``).

joblib's loky workers are reused from job to job, and TensorFlow keeps its memory (GPU memory
above all) and graph state until its process exits. So a job of a joblib sweep trains in a child
process of its own: the loky worker only starts it and waits; the child writes its result (the
final metrics, or the error) to a JSON file and exits, handing everything back to the system.
Several such children share a GPU, so each grows its GPU memory on demand
(``TF_FORCE_GPU_ALLOW_GROWTH=true`` unless set) instead of claiming it all at start.

Child command: ``python -m gan_cli.cli.job_process CONFIG.yaml RUN_DIR RESULT.json``.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gan_cli.core import errors
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
    """``train(cfg, run_dir)`` in a new Python process; returns its result or raises its error
    (same class and one-line message; the child prints any traceback to stderr itself)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with tempfile.TemporaryDirectory(prefix="gan_job_") as tmp:
        cfg_path, result_path = Path(tmp) / "config.yaml", Path(tmp) / "result.json"
        cfg_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        proc = subprocess.run([sys.executable, "-m", "gan_cli.cli.job_process", str(cfg_path), str(run_dir),
                               str(result_path)], env=env)
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if "error" in result:
                raise _rebuild(result["error"]["type"], result["error"]["message"])
            return result["metrics"]
    if proc.returncode in (130, 143):  # interrupted: the child wrote its checkpoint and said how to resume
        raise SystemExit(proc.returncode)
    raise RuntimeError(f"the training process exited with status {proc.returncode} (see its output above)")


def main(argv: list[str]) -> int:
    cfg_path, run_dir, result_path = argv
    from gan_cli.core.tf_import import quiet_tensorflow

    quiet_tensorflow()
    from gan_cli.job.train import train

    cfg = OmegaConf.load(cfg_path)
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


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # the job's files are closed and its result written: skip the interpreter's teardown with TensorFlow
    # loaded (seconds that every job of the sweep would wait for; gan_cli.cli.main._finished)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
