"""``gan``: the command-line front. Imports TensorFlow only inside the subcommands that need it.

Subcommands: train, sample, evaluate, resume, reproduce, report, sweep-report, data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

from gan_cli.errors import UserError

# acoular's numba kernels and numpy's many small (64 x 64) linear-algebra calls run best with a
# single-threaded OpenBLAS; it must be set before anything (config checks included) imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# TensorFlow's oneDNN CPU kernels: on by default only on CPUs with AVX-512/AMX; on AVX2 CPUs they
# ran the benchmark's reference loop 1.1-1.3x faster (README "Throughput"). Read once, when TensorFlow loads;
# TF_ENABLE_ONEDNN_OPTS=0 in the environment turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

USAGE_TRAIN = """usage: gan train [-m] [OVERRIDE ...]

Compose conf/config.yaml with Hydra overrides and train, e.g.
  gan train loss=wgan dataset=csm
  gan train dataset=grid experiment=grid train.seed=3
  gan train -m loss=wgan,wgan_gp train.n_critic=1,5       (a sweep: one folder per job)
  gan train -m hydra/launcher=joblib hydra.launcher.n_jobs=4 train.seed=0,1,2,3   (jobs in parallel processes)
  gan train -m hparams_search=toy2d_optuna                 (an Optuna search; see README "Scaling out")
  gan train train.strategy=mirrored                         (all GPUs of this machine; multiworker: TF_CONFIG)
Groups: dataset (ring grid parabola ganlab_* csm digits mnist fashion_mnist folder h5),
        loss (gan nsgan mlgan lsgan wgan wgan_gp hinge), model (auto mlp maxout csm_mlp dcgan),
        optimizer (auto adam adam_wgangp rmsprop sgd), experiment (see conf/experiment),
        hparams_search (toy2d_optuna csm_optuna).
Sections: train.*, latent.*, metrics.*. Run folder: outputs/DATE/TIME (hydra.run.dir=... to choose).
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing on CPU machines) silenced.

    The chatter is written by absl to file descriptor 2 before any Python logging is set up,
    so fd 2 is pointed at a temporary file during the import and replayed only if it fails.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    # Keras imports scikit-learn and matplotlib.pyplot when it loads, only for its optional sklearn
    # wrappers and image-gallery plot, which gan-cli never calls (both imports sit in try/except
    # ImportError). Hiding them for the import saves ~2.5 s of start-up on a 2-core machine; they
    # load normally when gan-cli itself needs them (digits data, plots).
    deferred = [name for name in ("sklearn", "matplotlib.pyplot") if name not in sys.modules]
    for name in deferred:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe also logs on first use
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            for name in deferred:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
            os.close(saved)


def _expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """All concrete override lists of a (possibly sweeping) override list. An ``interval(a, b)``
    search range (Optuna sweeper) stands for its two ends, which is what the checks need."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_interval_sweep():
            values = [str(o.value().start), str(o.value().end)]
        elif o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        else:
            values = [o.get_value_element_as_str()]
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(o.type.name, "")
        choices.append([f"{prefix}{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*choices)]


def validate_overrides(overrides: list[str], multirun: bool) -> None:
    """Compose and check every job of the command before Hydra creates any folder."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gan_cli.config import validate

    user = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        jobs = _expand_sweeps(user) if multirun else [user]
    except HydraException as exc:
        raise UserError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None
    hydra_overrides = [o for o in overrides if o not in user]

    def checked(job: list[str], where: str = ""):
        try:
            cfg = compose("config", overrides=job)
        except (HydraException, OmegaConfBaseException) as exc:
            text = " ".join(str(exc).split()).split(" Config search path")[0]
            raise UserError(f"{where}{text}  (see `gan train --help`)") from None
        try:
            validate(cfg)
        except UserError as exc:
            if not where:
                raise
            raise type(exc)(f"{where}{exc}") from None

    with initialize_config_module("gan_cli.conf", version_base="1.3"):
        for job in jobs[:2000]:
            checked(job)
        if multirun:
            for job, where in _search_space_jobs(jobs[0], hydra_overrides, compose):
                checked(job, where)
    _check_output_dir(overrides, multirun)


def _search_space_jobs(job: list[str], hydra_overrides: list[str], compose) -> list[tuple[list[str], str]]:
    """Jobs covering every value of the config's ``hydra.sweeper.params`` (the search space of an
    ``hparams_search`` config): all parameters at their first value, then each parameter through
    its values (an interval: its ends) with the others at their first; each with a label naming it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        full = compose("config", overrides=job + hydra_overrides, return_hydra_config=True)
        params = full.hydra.sweeper.get("params") or {}
    except (HydraException, OmegaConfBaseException):
        return []  # a bad hydra override: Hydra itself reports it
    given = {o.lstrip("+~").partition("=")[0] for o in job}  # fixed on the command line: not searched
    space = {}
    for key, value in params.items():
        if key in given:
            continue
        try:
            space[key] = [o[0] for o in _expand_sweeps([f"{key}={value}"])]
        except HydraException as exc:
            raise UserError(f"hydra.sweeper.params.{key}: cannot parse '{value}': {str(exc).splitlines()[0]}") from None
    first = {k: v[0] for k, v in space.items()}
    out = [(job + list(first.values()), "search space: ")]
    for key, values in space.items():
        for v in values[1:]:
            out.append((job + [v if k == key else first[k] for k in space], f"hydra.sweeper.params {v}: "))
    return out


def _check_output_dir(overrides: list[str], multirun: bool) -> None:
    """Fail before Hydra creates anything when the run (sweep) folder cannot be written: a parent is
    a file, the nearest existing folder is read-only, or its disk is full."""
    import shutil

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = "multirun" if multirun else "outputs"  # conf/config.yaml: relative to the working folder
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep and k == key:
            value = v.strip("'\"")
    static = value.split("${", 1)[0] or "."  # the part before any ${now:...} interpolation
    probe = Path(static)
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if os.path.lexists(probe) and not probe.is_dir():
        raise UserError(f"cannot create the run folder {value}: {probe} is a file, not a folder; choose another {key}")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run folder {value}: {probe} is not writable; choose another {key}")
    if probe.is_dir() and shutil.disk_usage(probe).free < 1 << 20:
        raise UserError(f"cannot create the run folder {value}: no space left on the disk of {probe}; "
                        f"free some space or choose another {key}")


def cmd_train(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE_TRAIN)
        return 0
    # an hparams_search config sets hydra.mode=MULTIRUN itself (hydra.mode=RUN: one run with its settings)
    multirun = any(a in ("-m", "--multirun") for a in argv) or (
        any(a.startswith("hparams_search=") for a in argv) and "hydra.mode=RUN" not in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    bad = [a for a in overrides if a.startswith("-")]
    if bad:
        return _fail(f"unknown option {bad[0]}; gan train takes Hydra overrides KEY=VALUE and -m for sweeps")
    validate_overrides(overrides, multirun)
    _quiet_tensorflow()
    from gan_cli.hydra_app import app

    sys.argv = ["gan"] + (["--multirun"] if multirun else []) + overrides
    app()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import numpy as np

    from gan_cli.train import load_for_inference

    out = Path(args.output)
    if out.exists() and not args.force:
        return _fail(f"{out} exists; choose another -o or add --force")
    if args.seed < 0:
        return _fail(f"--seed must be >= 0, got {args.seed}")
    if args.n < 1:
        return _fail(f"-n must be >= 1, got {args.n}")
    cfg, data, gan = load_for_inference(Path(args.run))
    labels = None
    if args.label is not None:
        if not gan.conditional:
            return _fail("--label needs a conditional model (model.conditional=true)")
        if not 0 <= args.label < data.num_classes:
            return _fail(f"--label must be in 0..{data.num_classes - 1}, got {args.label}")
        labels = np.full(args.n, args.label, np.int32)
    fake, labels = gan.sample(args.n, seed=args.seed, labels=labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    data.write_samples(fake, labels, out)
    print(f"wrote {args.n} samples to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.num_samples is not None and args.num_samples < 2:
        return _fail(f"--num-samples must be >= 2, got {args.num_samples}")
    _quiet_tensorflow()
    from gan_cli.callbacks import evaluation_samples
    from gan_cli.checkpoint import latest_checkpoint
    from gan_cli.train import load_for_inference

    cfg, data, gan = load_for_inference(Path(args.run))
    n = args.num_samples if args.num_samples is not None else int(cfg.metrics.num_samples)
    fake, labels = evaluation_samples(gan, cfg, n)
    metrics = data.evaluator(n, int(cfg.train.seed))(fake, labels)
    result = {"checkpoint": str(latest_checkpoint(Path(args.run))), "step": int(gan.round.numpy()),
              **{k: float(v) for k, v in metrics.items()}}
    print(json.dumps(result, indent=2))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted run in its own folder from its newest checkpoint (exactly: the RNG and
    data state are functions of the stored round); appends to metrics.jsonl without duplicating steps."""
    from gan_cli.checkpoint import latest_checkpoint, read_config

    run = Path(args.run)
    if run.is_file():
        return _fail(f"{run} is a file; gan resume takes the run folder (the one holding checkpoints/)")
    ckpt = latest_checkpoint(run)  # checked before the slow TensorFlow import
    cfg = read_config(ckpt)
    _quiet_tensorflow()
    from gan_cli.train import train

    train(cfg, run, resume=True)
    (run / "DONE").write_text("ok\n")
    (run / "FAILED").unlink(missing_ok=True)
    return 0


def _last_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; give the folder of a finished gan train run")
    from gan_cli.run_files import read_rows

    rows = read_rows(path)
    if not rows:
        raise UserError(f"{path} is empty; the run never reached an evaluation")
    return rows[-1]


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Re-run a run's saved overrides (+ new ones) into a new folder and compare final metrics.

    Exit 0 either way (the comparison is printed); with train.deterministic=true in the original
    run the final metrics (and weights) are expected to be identical.
    """
    import datetime

    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{run} is not a run folder; give a folder written by gan train (outputs/DATE/TIME)")
    saved = run / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UserError(f"{run} has no .hydra/overrides.yaml; give a run folder written by gan train")
    original = _last_metrics(run)
    from gan_cli.run_files import read_overrides

    saved_overrides = read_overrides(run)
    if saved_overrides is None:
        raise UserError(f"{saved} is not a YAML list of overrides; restore it or re-run with gan train")
    old = [o for o in saved_overrides if not o.lstrip("+~").startswith("hydra.")]
    now = datetime.datetime.now()
    new_dir = Path("outputs") / now.strftime("%Y-%m-%d") / (now.strftime("%H-%M-%S-%f") + "_reproduce")
    # a trial of an Optuna search: its overrides hold the sampled values; run it once, not a new search
    single = ["hydra.mode=RUN"] if any(o.startswith("hparams_search=") for o in old) else []
    rc = cmd_train(old + list(args.overrides) + [f"hydra.run.dir={new_dir}"] + single)
    if rc:
        return rc
    fresh = _last_metrics(new_dir)
    keys = [k for k in original if k not in ("time",) and k in fresh]
    diffs = {k: (original[k], fresh[k]) for k in keys if original[k] != fresh[k]}
    if not diffs:
        print(f"reproduced: final metrics of {new_dir} are identical to {run} ({len(keys)} values)")
        return 0
    print(f"final metrics differ from {run} (new run: {new_dir}):")
    for k, (a, b) in diffs.items():
        print(f"  {k}: original {a} -> reproduced {b}")
    if "train.deterministic=true" not in old + list(args.overrides):
        print("  (bit-identical runs need train.deterministic=true)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """RUN/report.html (self-contained) + RUN/report/*.png."""
    _quiet_tensorflow()  # per-class image grids load the checkpoint
    from gan_cli.report import write_report

    path = write_report(Path(args.run))
    print(f"wrote {path} (images in {path.parent / 'report'})")
    return 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    """One row per job of a sweep folder: Markdown (printed), CSV, HTML + plot."""
    from gan_cli.report import write_sweep_report

    paths = write_sweep_report(Path(args.multirun), sort=args.sort)
    print(paths["markdown"].read_text(), end="")
    print(f"\nwrote {paths['markdown']}, {paths['csv']} and {paths['html']}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    if args.kind != "csm":
        return _fail(f"unknown data kind '{args.kind}'; valid: csm")
    from gan_cli.data.csm_cli import generate_command

    return generate_command(args.output, args.force, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan", description="Config-driven GAN experiments on TensorFlow/Keras.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("train", help="train a GAN: gan train [-m] [OVERRIDE ...] (Hydra overrides)", add_help=False)
    p = sub.add_parser("sample", help="write generated samples from a run's last checkpoint")
    p.add_argument("run", help="run folder or checkpoint .npz")
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("-o", "--output", required=True, help="output file (.npy; .png for images; .h5 for csm)")
    p.add_argument("--label", type=int, default=None, help="class to generate (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p = sub.add_parser("evaluate", help="print the quality metrics of a run's last checkpoint as JSON")
    p.add_argument("run", help="run folder or checkpoint .npz")
    p.add_argument("--num-samples", type=int, default=None, help="samples to score (default: the run's metrics.num_samples)")
    p = sub.add_parser("resume", help="continue an interrupted run in its own folder")
    p.add_argument("run", help="run folder")
    p = sub.add_parser("reproduce", help="re-run a finished run's config (+ overrides) into a new folder and compare")
    p.add_argument("run", help="run folder")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    p = sub.add_parser("report", help="write RUN/report.html and RUN/report/*.png: config, metrics and plots of a run")
    p.add_argument("run", help="run folder")
    p = sub.add_parser("sweep-report", help="summarise a sweep: one row per job (Markdown, CSV, HTML with a plot)")
    p.add_argument("multirun", help="sweep folder (multirun/DATE/TIME)")
    p.add_argument("--sort", default=None, metavar="METRIC",
                   help="metric to sort the jobs by, best first (default: the data's primary metric)")
    p = sub.add_parser("data", help="generate a data set file: gan data csm -o FILE.h5 [OVERRIDE ...]")
    p.add_argument("kind", help="data kind (csm)")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("overrides", nargs="*", help="dataset overrides, e.g. dataset.array=minidsp_uma-16")
    parser.data_parser = p
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        if argv and argv[0] == "data":
            # overrides may follow -o: parse the subcommand's arguments intermixed
            args = parser.data_parser.parse_intermixed_args(argv[1:])
            args.command = "data"
        else:
            args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        handler = {"sample": cmd_sample, "evaluate": cmd_evaluate, "resume": cmd_resume, "data": cmd_data,
                   "reproduce": cmd_reproduce, "report": cmd_report, "sweep-report": cmd_sweep_report}
        return handler[args.command](args)
    except UserError as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
