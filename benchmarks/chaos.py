"""Chaos checks: parallel builds of one cache, SIGKILL at random moments, corrupted files, concurrent sweeps.

    python benchmarks/chaos.py [--builders 6] [--build-rounds 3] [--kills 20] [--cli-kills 6]
                               [--corruptions 40] [--seed 0] [--sweeps] [--checkpoint-kills 3]

Every scenario works on fresh folders under a temporary directory (``GAN_CLI_DATA`` included) with a
small simulated CSM set (``array=minidsp_uma-16``) and checks the data a process finally uses against a
reference build: the simulation is a pure function of its parameters, so a correct cache gives
bit-identical model-space arrays. Prints one Markdown row per scenario: tries, what happened, and
``wrong`` = runs that used a half-written, corrupt or different file, or lost data (must be 0).

Scenarios (the functions are imported by ``tests/test_chaos.py`` with small counts):

* ``parallel_builds``: N processes load the same set on a fresh folder at once: one build, same data.
* ``kill_cache_builds``: SIGKILL a process at a random moment while it writes the cache, then load again.
* ``kill_data_command``: SIGKILL ``gan data csm -o FILE --force`` at a random moment of its write.
* ``corrupt_caches`` / ``corrupt_user_files``: flip bytes, truncate, zero ranges, zero the geometry,
  clear the ``complete`` mark, edit an attribute; a cache must be rebuilt, a user file refused (exit 2).
* ``concurrent_sweeps`` (``--sweeps``): two ``gan train -m`` sweeps at once (one with joblib, n_jobs=2)
  into different folders on one fresh data folder: every job DONE, one cache, identical metrics.
* ``sweep_with_a_corrupt_file``: a sweep over a good and a corrupted user file: one job DONE, one FAILED with
  the one-line cause, a non-zero exit naming it (``--sweeps``: with the joblib launcher).
* ``kill_checkpoint_writes`` (``--checkpoint-kills``): SIGKILL ``gan train`` as a checkpoint is being written or
  at a random moment, then ``gan resume``: the final metrics equal an uninterrupted run's; a truncated newest
  checkpoint makes ``gan resume`` fall back to the previous one and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALL = {"array": "minidsp_uma-16", "num_samples": 64}     # parallel builds, corruptions
KILL = {"array": "minidsp_uma-16", "num_samples": 4000}    # long enough a write (~0.3 s) to kill inside



def load(kw: dict) -> dict:
    """Load the set ``kw`` in this process (``GAN_CLI_DATA`` from the environment, building the cache when
    needed); returns how many builds ran and a digest of the model-space data, geometry and frequency."""
    import hashlib

    import numpy as np

    import gan_cli.data.csm_sim as sim
    from gan_cli.data.csm import CsmDataset

    builds = []
    write = sim.CsmSimulator.write

    def counted(self, *args, **kwargs):
        builds.append(1)
        return write(self, *args, **kwargs)

    sim.CsmSimulator.write = counted
    try:
        d = CsmDataset(**kw)
        d.prepare()
    finally:
        sim.CsmSimulator.write = write
    h = hashlib.sha256(np.ascontiguousarray(d._x).tobytes())
    h.update(np.asarray(d.mic_positions, np.float64).tobytes())
    h.update(repr((float(d.frequency), int(d.reference_mic), int(d.num_mics))).encode())
    return {"builds": len(builds), "digest": h.hexdigest()}


# A child process: ``load`` there, one JSON line out; a bad-input error is one line and exit 2, like the CLI.
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from chaos import load
from gan_cli.core.errors import UserError
try:
    out = load(json.loads(sys.argv[1]))
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
print(json.dumps(out))
"""


@dataclass
class Result:
    scenario: str
    tries: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    wrong: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, outcome: str, wrong: bool = False, note: str = "") -> None:
        self.tries += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if wrong:
            self.wrong += 1
            if note:
                self.notes.append(note)

    def row(self) -> str:
        what = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"| {self.scenario} | {self.tries} | {what} | {self.wrong} |"


def _env(data_dir: Path) -> dict:
    return {**os.environ, "GAN_CLI_DATA": str(data_dir), "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def spawn_child(data_dir: Path, kw: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kw), str(ROOT / "benchmarks")], env=_env(data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    """rc, builds, digest, stderr of a child."""
    out, err = proc.communicate(timeout=timeout)
    res = {"rc": proc.returncode, "stderr": err, "builds": None, "digest": None}
    if proc.returncode == 0:
        res.update(json.loads(out.strip().splitlines()[-1]))
    return res


def run_child(data_dir: Path, kw: dict) -> dict:
    return finish(spawn_child(data_dir, kw))


def reference(work: Path, kw: dict) -> tuple[str, float]:
    """Digest of the data a clean build of ``kw`` gives, and the seconds its write took (from the
    temporary file appearing to the final file appearing)."""
    data = work / "reference"
    proc = spawn_child(data, kw)
    t0 = t1 = None
    while proc.poll() is None:
        now = time.monotonic()
        if t0 is None and list(data.glob(".csm_default_*.tmp.h5")):
            t0 = now
        if t0 is not None and t1 is None and _caches(data):
            t1 = now
        time.sleep(0.002)
    res = finish(proc)
    if res["rc"] != 0:
        raise RuntimeError(f"reference build failed: {res['stderr'][-2000:]}")
    return res["digest"], max(0.05, (t1 or time.monotonic()) - t0) if t0 else 0.5


@contextlib.contextmanager
def data_dir(folder: Path):
    """``GAN_CLI_DATA=folder`` in this process for the ``with`` block."""
    old = os.environ.get("GAN_CLI_DATA")
    os.environ["GAN_CLI_DATA"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            del os.environ["GAN_CLI_DATA"]
        else:
            os.environ["GAN_CLI_DATA"] = old


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp*")) if folder.is_dir() else []


def _caches(folder: Path) -> list[Path]:
    return sorted(folder.glob("csm_default_*.h5")) if folder.is_dir() else []


def _traceback(stderr: str) -> bool:
    return "Traceback (most recent call last)" in stderr


# --------------------------------------------------------------------------- scenarios
def parallel_builds(work: Path, n: int = 4, rounds: int = 1, kw: dict | None = None) -> Result:
    """``n`` processes start loading the same set on a fresh data folder at the same moment."""
    kw = kw or SMALL
    ref, _ = reference(work, kw)
    res = Result(f"{n} processes build one cache at once")
    for r in range(rounds):
        data = work / f"parallel{r}"
        procs = [spawn_child(data, kw) for _ in range(n)]
        outs = [finish(p) for p in procs]
        builds = sum(o["builds"] or 0 for o in outs)
        ok = all(o["rc"] == 0 and o["digest"] == ref for o in outs)
        clean = len(_caches(data)) == 1 and not _temporaries(data)
        if ok and builds == 1 and clean:
            res.add("one build, all jobs done")
        else:
            res.add(f"{builds} builds" if ok else "a job failed", wrong=not ok or not clean,
                    note=" | ".join(o["stderr"][-300:] for o in outs if o["rc"]))
    return res


def _kill_during_write(proc: subprocess.Popen, folder: Path, pattern: str, full_size: int,
                       rng: random.Random, timeout: float = 120) -> str:
    """SIGKILL ``proc`` at a random point of its write: once the temporary matching ``pattern`` in ``folder``
    has grown to a random fraction of ``full_size`` bytes (the complete file's size), or at once when the
    temporary is gone (renamed) before that. Returns what happened, for the outcome counts."""
    fraction = rng.uniform(0.0, 1.0)
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        temps = list(folder.glob(pattern))
        if temps:
            seen = True
            try:
                if temps[0].stat().st_size >= fraction * full_size:
                    break
            except OSError:  # renamed between glob and stat
                break
        elif seen:
            break
        time.sleep(0.001)
    if proc.poll() is not None:
        proc.communicate()
        return "finished first"
    temps = list(folder.glob(pattern))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return "killed mid-write" if temps else "killed after the rename"


def kill_cache_builds(work: Path, kills: int = 3, seed: int = 0, kw: dict | None = None) -> Result:
    """SIGKILL a process at a random moment of its cache write, check the folder, then load again."""
    from gan_cli.data.csm_io import verify_csm_file
    from gan_cli.core.errors import DataError

    kw = kw or KILL
    rng = random.Random(seed)
    ref, _ = reference(work, kw)
    full = _caches(work / "reference")[0].stat().st_size
    res = Result("SIGKILL during a cache build, then rerun")
    for i in range(kills):
        data = work / f"killcache{i}"
        how = _kill_during_write(spawn_child(data, kw), data, ".csm_default_*.tmp.h5", full, rng)
        half = False
        for c in _caches(data):  # the final name holds a complete, checked file or nothing
            try:
                verify_csm_file(c)
            except DataError:
                half = True
        again = run_child(data, kw)
        ok = again["rc"] == 0 and again["digest"] == ref and not _temporaries(data) and len(_caches(data)) == 1
        outcome = f"{how}: {'rebuilt' if again['builds'] else 'reused the complete file'}"
        res.add(outcome, wrong=half or not ok, note=again["stderr"][-300:])
    return res


def kill_data_command(work: Path, kills: int = 2, seed: int = 0, num_samples: int = 4000) -> Result:
    """SIGKILL ``gan data csm -o FILE --force`` at a random moment of its write (over an older file
    every other time, the first included); FILE must then be absent, the older file, or the complete new one."""
    import h5py

    from gan_cli.data.csm_io import verify_csm_file
    from gan_cli.core.errors import DataError

    rng = random.Random(seed + 1)
    args = ["data", "csm", "--force", f"array={KILL['array']}", f"num_samples={num_samples}"]
    folder = work / "datacmd"
    folder.mkdir(parents=True, exist_ok=True)
    env = _env(work / "datacmd_data")

    def gan(out: Path, extra=()) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", *args, "-o", str(out), *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sums(path: Path) -> str:
        with h5py.File(path, "r") as f:
            return str(f.attrs["checksums"])

    ref_path, old_path = folder / "ref.h5", folder / "old.h5"
    from gan_cli.data.csm_cli import generate_command

    with data_dir(work / "datacmd_data"):  # the same writer as the command, without its start-up time
        for path, extra in ((ref_path, []), (old_path, ["seed=7"])):
            generate_command(str(path), True, args[3:] + extra)
    new_sums, old_sums = sums(ref_path), sums(old_path)
    full = ref_path.stat().st_size
    res = Result("SIGKILL during `gan data csm`, then rerun")
    for i in range(kills):
        out = folder / f"out{i}.h5"
        over_old = i % 2 == 0
        if over_old:
            shutil.copy(old_path, out)
        how = _kill_during_write(gan(out), folder, f".{out.name}.*.tmp.h5", full, rng)
        wrong = False
        if out.exists():
            try:
                verify_csm_file(out)
                state = {new_sums: "new file", old_sums: "old file"}.get(sums(out), "other")
            except DataError:
                state = "half-written"
            wrong = state in ("half-written", "other") or (state == "old file" and not over_old)
        else:
            state = "no file"
            wrong = over_old  # the older complete file must survive a killed overwrite
        p = gan(out)
        _, err = p.communicate()
        done = p.returncode == 0 and sums(out) == new_sums and not list(folder.glob(f".{out.name}.*"))
        res.add(f"{how}, left {state}", wrong=wrong or not done, note=err[-300:])
    return res


def _corrupt(path: Path, kind: str, rng: random.Random) -> None:
    """Damage ``path`` in place the way ``kind`` says."""
    import h5py
    import numpy as np

    size = path.stat().st_size
    if kind == "flip bytes":
        with open(path, "r+b") as fh:
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(size)
                fh.seek(pos)
                b = fh.read(1)
                fh.seek(pos)
                fh.write(bytes([b[0] ^ (1 << rng.randrange(8))]))
    elif kind == "truncate":
        os.truncate(path, rng.randrange(size))
    elif kind == "zero a range":
        with open(path, "r+b") as fh:
            pos = rng.randrange(size)
            fh.seek(pos)
            fh.write(bytes(min(rng.randint(1, 8192), size - pos)))
    elif kind == "zero the geometry":
        with h5py.File(path, "r+") as f:
            f["mic_positions"][...] = 0.0
    elif kind == "NaN in a CSM":
        with h5py.File(path, "r+") as f:
            f["csm"][rng.randrange(f["csm"].shape[0]), 0, 1] = np.nan
    elif kind == "clear complete":
        with h5py.File(path, "r+") as f:
            f.attrs["complete"] = 0
    elif kind == "edit an attribute":
        with h5py.File(path, "r+") as f:
            f.attrs["frequency"] = float(f.attrs["frequency"]) * 1.01
    elif kind == "empty file":
        os.truncate(path, 0)
    else:
        raise ValueError(kind)


CORRUPTIONS = ("flip bytes", "truncate", "zero a range", "zero the geometry", "NaN in a CSM", "clear complete",
               "edit an attribute", "empty file")


def corrupt_caches(work: Path, tries: int = 8, seed: int = 0, kw: dict | None = None) -> Result:
    """Damage a built cache, then load: it must be rebuilt (or be harmlessly intact) and give the reference data."""
    kw = kw or SMALL
    rng = random.Random(seed + 2)
    ref, _ = reference(work, kw)
    good = _caches(work / "reference")[0]
    res = Result("corrupted cache, then load")
    for i in range(tries):  # in this process (one start-up for all tries): the same code as a job's
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        data = work / f"corrupt{i}"
        data.mkdir(parents=True, exist_ok=True)
        shutil.copy(good, data / good.name)
        _corrupt(data / good.name, kind, rng)
        try:
            with data_dir(data):
                out = load(kw)
        except Exception as exc:  # noqa: BLE001 - counted
            res.add(f"{kind}: failed", wrong=True, note=f"{type(exc).__name__}: {exc}")
            continue
        if out["digest"] == ref:
            res.add("detected, rebuilt" if out["builds"] else "intact data, reused")
        else:
            res.add(f"{kind}: wrong data used", wrong=True)
    return res


def corrupt_user_files(work: Path, tries: int = 8, seed: int = 0, kw: dict | None = None) -> Result:
    """Damage a user's data file (dataset.path): refused with exit 2 and one line, or read intact."""
    kw = kw or SMALL
    rng = random.Random(seed + 3)
    reference(work, kw)
    good = _caches(work / "reference")[0]
    ref = run_child(work / "userref", {**kw, "path": str(good)})["digest"]
    res = Result("corrupted user file, then load")
    for i in range(tries):
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        path = work / f"user{i}.h5"
        shutil.copy(good, path)
        _corrupt(path, kind, rng)
        out = run_child(work / "userdata", {**kw, "path": str(path)})
        lines = [ln for ln in out["stderr"].splitlines() if ln.strip()]
        if out["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: "):
            res.add("refused, exit 2, one line")
        elif out["rc"] == 0 and out["digest"] == ref:
            res.add("intact data, read")
        else:
            res.add(f"{kind}: rc {out['rc']}", wrong=True, note=out["stderr"][-300:])
    return res


# --------------------------------------------------------------------------- whole commands (slow)
def _gan(args: list[str], data_dir: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan_cli.cli.main", *args], cwd=cwd, env=_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)


SWEEP = ["dataset=csm", "dataset.array=minidsp_uma-16", "dataset.num_samples=256", "loss=wgan", "train.steps=4",
         "train.eval_every=2", "train.checkpoint_every=4", "train.steps_per_execution=2", "train.batch_size=16",
         "metrics.num_samples=64", "train.progress=false", "train.report=false", "train.deterministic=true"]


def concurrent_sweeps(work: Path, seeds: str = "1,2") -> Result:
    """Two sweeps at once into different folders, one data folder (fresh): a joblib sweep (n_jobs=2) and a
    basic one. Every job DONE, one cache, and job i of one sweep logs the same metrics as job i of the other."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "sweepdata"
    cmds = [["train", "-m", *SWEEP, f"train.seed={seeds}", f"hydra.sweep.dir={work / 'sweepA'}",
             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
            ["train", "-m", *SWEEP, f"train.seed={seeds}", f"hydra.sweep.dir={work / 'sweepB'}"]]
    procs = [subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", *c], cwd=work, env=_env(data),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=900) for p in procs]
    res = Result("two sweeps at once (joblib + basic), one fresh data folder")
    n = len(seeds.split(","))
    for k in range(n):
        rows = []
        for sweep in ("sweepA", "sweepB"):
            job = work / sweep / str(k)
            done = (job / "DONE").is_file() and not (job / "FAILED").exists()
            rows.append([{kk: v for kk, v in json.loads(line).items() if kk != "time"}
                         for line in (job / "metrics.jsonl").read_text().splitlines()] if done else None)
        same = rows[0] is not None and rows[0] == rows[1]
        res.add("job DONE in both, same metrics" if same else "job failed or metrics differ", wrong=not same,
                note=" | ".join(e[-400:] for _, e in outs))
    if any(p.returncode != 0 for p in procs) or len(_caches(data)) != 1 or _temporaries(data):
        res.add("exit status / cache folder wrong", wrong=True, note=" | ".join(e[-400:] for _, e in outs))
    return res


def sweep_with_a_corrupt_file(work: Path, launcher: str = "basic") -> Result:
    """A sweep over a good and a corrupted data file (``dataset.path=GOOD,BAD``): the good job ends DONE, the
    other FAILED with the one-line cause, and the sweep exits non-zero naming it, without a traceback."""
    from gan_cli.data.csm_cli import generate_command

    work.mkdir(parents=True, exist_ok=True)
    data = work / "failsweepdata"
    good, bad = work / "good.h5", work / "bad.h5"
    with data_dir(data):
        generate_command(str(good), True, ["array=minidsp_uma-16", "num_samples=256"])
    shutil.copy(good, bad)
    _corrupt(bad, "zero the geometry", random.Random(0))
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    out = _gan(["train", "-m", *SWEEP, f"dataset.path={good},{bad}", f"hydra.sweep.dir={work / 'failsweep'}", *extra],
               data, work)
    jobs = work / "failsweep"
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    ok = (out.returncode != 0 and (jobs / "0" / "DONE").is_file() and (jobs / "1" / "FAILED").is_file()
          and "bad.h5" in last and "fails its checksum" in last and not _traceback(out.stderr))
    res = Result(f"sweep ({launcher} launcher) over a good and a corrupted data file")
    res.add(f"exit {out.returncode}, good job DONE, bad job FAILED in one line" if ok else "dishonest end",
            wrong=not ok,
            note=out.stderr[-600:])
    return res


CKPT_RUN = ["dataset=ring", "train.steps=400", "train.eval_every=20", "train.checkpoint_every=20",
            "train.steps_per_execution=20", "train.batch_size=32", "metrics.num_samples=200", "train.progress=false",
            "dataset.num_samples=2000", "train.deterministic=true", "train.report=false"]


def _checkpoint_files(run: Path) -> tuple[list[Path], list[Path]]:
    """(complete checkpoints, temporaries) in ``run/checkpoints``, by name alone."""
    folder = run / "checkpoints"
    names = sorted(folder.iterdir()) if folder.is_dir() else []
    temps = [p for p in names if "tmp" in p.name]
    return [p for p in names if p.name.startswith("ckpt_") and p not in temps], temps


def kill_checkpoint_writes(work: Path, kills: int = 2, seed: int = 0) -> Result:
    """SIGKILL ``gan train`` (a run that checkpoints every 20 steps) at the moment a checkpoint's temporary file
    appears after the first complete checkpoint (even tries) or at a random moment after the first checkpoint
    (odd tries), then ``gan resume``:
    the resumed run must end DONE with the final metrics of an uninterrupted run. Then the newest checkpoint of
    a finished run is truncated: ``gan resume`` must fall back to the one before, say so, and end the same."""
    rng = random.Random(seed + 4)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "ckptdata"
    ref_dir = work / "ckpt_ref"
    out = _gan(["train", *CKPT_RUN, f"hydra.run.dir={ref_dir}"], data, work)
    if out.returncode != 0:
        raise RuntimeError(f"reference run failed: {out.stderr[-2000:]}")

    def last(run: Path) -> dict:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {k: v for k, v in rows[-1].items() if k != "time"}

    want = last(ref_dir)
    res = Result("SIGKILL during training / checkpoint writes, then `gan resume`")
    for i in range(kills):
        run = work / f"ckpt{i}"
        proc = subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", "train", *CKPT_RUN, f"hydra.run.dir={run}"],
                                cwd=work, env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        at_write = i % 2 == 0
        while proc.poll() is None and time.monotonic() < deadline:
            done, temps = _checkpoint_files(run)
            if done and (temps or not at_write):  # a write after the first complete checkpoint (or any moment)
                break
            if not at_write:
                time.sleep(0.005)
        if not at_write:
            time.sleep(rng.uniform(0, 1.0))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()
        hit_write = bool(_checkpoint_files(run)[1])
        if not killed:
            res.add("finished before the kill")
            continue
        again = _gan(["resume", str(run)], data, work)
        ok = again.returncode == 0 and (run / "DONE").is_file() and last(run) == want
        where = "killed mid-checkpoint-write" if hit_write else "killed between writes"
        res.add(f"{where}, resumed to the uninterrupted result" if ok else f"{where}, resume failed or differs",
                wrong=not ok, note=again.stderr[-400:])
    # a truncated newest checkpoint (a disk that lost the end of the file)
    run = work / "ckpt_truncated"
    shutil.copytree(ref_dir, run)
    newest = _checkpoint_files(run)[0][-1]
    os.truncate(newest, newest.stat().st_size // 2)
    again = _gan(["resume", str(run)], data, work)
    ok = again.returncode == 0 and last(run) == want and newest.name in again.stderr
    res.add("truncated newest checkpoint: fell back, said so, same result" if ok
            else "truncated newest checkpoint: failed",
            wrong=not ok, note=again.stderr[-400:])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--builders", type=int, default=6)
    ap.add_argument("--build-rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--cli-kills", type=int, default=6)
    ap.add_argument("--corruptions", type=int, default=40)
    ap.add_argument("--sweeps", action="store_true",
                    help="also run two sweeps at once and a joblib sweep over a corrupted data file (slow)")
    ap.add_argument("--checkpoint-kills", type=int, default=0, help="kills during training + resume (slow)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help="run only these scenarios (comma-separated function names, e.g. concurrent_sweeps)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="gan_chaos_") as tmp:
        work = Path(tmp)
        t0 = time.time()
        runs = [("parallel_builds", lambda: parallel_builds(work / "a", args.builders, args.build_rounds)),
                ("kill_cache_builds", lambda: kill_cache_builds(work / "b", args.kills, args.seed)),
                ("kill_data_command", lambda: kill_data_command(work / "c", args.cli_kills, args.seed)),
                ("corrupt_caches", lambda: corrupt_caches(work / "d", args.corruptions, args.seed)),
                ("corrupt_user_files", lambda: corrupt_user_files(work / "e", args.corruptions, args.seed))]
        if args.sweeps:
            runs += [("concurrent_sweeps", lambda: concurrent_sweeps(work / "f")),
                     ("sweep_with_a_corrupt_file", lambda: sweep_with_a_corrupt_file(work / "h", "joblib"))]
        if args.checkpoint_kills:
            runs.append(("kill_checkpoint_writes",
                         lambda: kill_checkpoint_writes(work / "g", args.checkpoint_kills, args.seed)))
        only = set(args.only.split(",")) if args.only else None
        for name, run in runs:
            if only is None or name in only:
                results.append(run())
        print("| scenario | tries | what happened | wrong |")
        print("|---|---|---|---|")
        for r in results:
            print(r.row())
        print(f"\n{sum(r.tries for r in results)} tries in {time.time() - t0:.0f} s; "
              f"{sum(r.wrong for r in results)} used a half-written, corrupt or different file or lost data")
        for r in results:
            for note in r.notes[:3]:
                print(f"  {r.scenario}: {note}")
    return 1 if any(r.wrong for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
