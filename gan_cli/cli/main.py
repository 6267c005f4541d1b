"""``gan``: the command-line front. Imports TensorFlow only inside the subcommands that need it.

Subcommands: train, sample, evaluate, resume, reproduce, report, sweep-report, data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gan_cli.core import tf_import
from gan_cli.core.errors import Terminated, UserError

# acoular's numba kernels and numpy's many small (64 x 64) linear-algebra calls run best with a
# single-threaded OpenBLAS; it must be set before anything (config checks included) imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# TensorFlow's oneDNN CPU kernels: on by default only on CPUs with AVX-512/AMX; on AVX2 CPUs they
# ran the benchmark's reference loop faster (docs/performance.md). Read once, when TensorFlow loads;
# TF_ENABLE_ONEDNN_OPTS=0 in the environment turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_train(argv: list[str]) -> int:
    """``gan train ARGS``: ARGS go unchanged to the Hydra app (gan_cli/cli/hydra_app.py), so every Hydra flag
    and the whole override grammar work. Validation runs inside the app (gan_cli/cli/hydra_callbacks.py);
    Hydra's own composition errors (an unknown group option, a bad override) become one line here."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gan_cli.cli.hydra_app import app
    from gan_cli.cli.hydra_callbacks import ChecksFailed

    full_error = os.environ.get("HYDRA_FULL_ERROR")  # the user's own setting: Hydra's full traceback
    os.environ["HYDRA_FULL_ERROR"] = "1"  # makes Hydra raise its errors instead of printing and exiting 1
    saved = sys.argv
    # the program name in Hydra's usage line; shell completion registers the command itself (gan)
    completion = any(a in ("-sc", "--shell-completion") for a in argv)
    sys.argv = ["gan" if completion else "gan train", *argv]
    try:
        app()
    except ChecksFailed as exc:
        raise exc.error from None
    except (HydraException, OmegaConfBaseException) as exc:
        if full_error == "1":
            raise
        text = " ".join(str(exc).split()).split(" Config search path")[0]
        raise UserError(f"{text}  (see `gan train --help`)") from None
    finally:
        sys.argv = saved
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    return 0


def _shell_completion(argv: list[str]) -> int:
    """``gan -sc query=bash``, which the script of ``gan train -sc install=bash`` runs on each Tab: words
    after ``gan train`` are completed by Hydra, the subcommand itself from this parser."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) >= 2 and words[1] == "train" and (len(words) > 2 or line.endswith(" ")):
        os.environ["COMP_LINE"] = line.replace(" train", "", 1)  # Hydra completes `APP OVERRIDES...`
        return cmd_train(argv)
    if any(a.startswith("query=") for a in argv):
        typed = words[1] if len(words) > 1 else ""
        names = [n for n in build_parser()._subparsers._group_actions[0].choices if n.startswith(typed)]
        print(" ".join(names))
        return 0
    return cmd_train(argv)  # install= / uninstall=


def cmd_sample(args: argparse.Namespace) -> int:
    tf_import.quiet_tensorflow()
    import numpy as np

    from gan_cli.run.load import load_for_inference

    out = Path(args.output)
    if out.exists() and not args.force:
        return _fail(f"{out} exists; choose another -o or add --force")
    if args.seed < 0:
        return _fail(f"--seed must be >= 0, got {args.seed}")
    if args.n < 1:
        return _fail(f"-n must be >= 1, got {args.n}")
    cfg, data, gan = load_for_inference(Path(args.run))
    labels = None
    if args.frequency is not None:
        if args.label is not None:
            return _fail("give --label K or --frequency HZ, not both")
        label = _frequency_label(data, args.frequency)
        if label is not None:
            args.label = label
    lines = getattr(data, "line_frequencies", None) if gan.conditional else None
    n = args.n
    if args.label is None and lines:   # a multi-line CSM model: n samples of every line, (n, L, M, M)
        labels = np.tile(np.arange(len(lines), dtype=np.int32), args.n)
        n = args.n * len(lines)
    if args.label is not None:
        if not gan.conditional:
            return _fail("--label needs a conditional model (model.conditional=true)")
        if not 0 <= args.label < data.num_classes:
            return _fail(f"--label must be in 0..{data.num_classes - 1}, got {args.label}")
        labels = np.full(args.n, args.label, np.int32)
    fake, labels = gan.sample(n, seed=args.seed, labels=labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    data.write_samples(fake, labels, out)
    if lines and args.label is None:
        print(f"wrote {args.n} samples of each of {len(lines)} frequency lines to {out}")
    elif lines:
        print(f"wrote {args.n} samples at {lines[args.label]:.10g} Hz (label {args.label}) to {out}")
    else:
        print(f"wrote {args.n} samples to {out}")
    return 0


def _frequency_label(data, frequency: float) -> int | None:
    """``--frequency HZ`` -> the label of that trained line (None: the model's only line); UserError otherwise."""
    lines = getattr(data, "line_frequencies", None)
    single = getattr(data, "frequency", None)
    trained = [float(f) for f in lines] if lines else ([float(single)] if single else [])
    if not trained:
        raise UserError("--frequency applies to CSM runs whose data has a known frequency; this run's has none")
    k = min(range(len(trained)), key=lambda i: abs(trained[i] - frequency))
    if abs(trained[k] - frequency) > 1e-3 * trained[k]:
        listed = ", ".join(f"{f:.10g}" for f in trained)
        raise UserError(f"--frequency {frequency:g} Hz is not a trained line; this run's line(s): {listed} Hz"
                        + (" (or pass --label K)" if lines else ""))
    return k if lines else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.num_samples is not None and args.num_samples < 2:
        return _fail(f"--num-samples must be >= 2, got {args.num_samples}")
    tf_import.quiet_tensorflow()
    from gan_cli.callbacks.monitor import evaluation_samples
    from gan_cli.run.checkpoint import latest_checkpoint
    from gan_cli.run.load import load_for_inference

    cfg, data, gan = load_for_inference(Path(args.run))
    n = args.num_samples if args.num_samples is not None else int(cfg.metrics.num_samples)
    fake, labels = evaluation_samples(gan, cfg, n)
    from gan_cli.metrics import evaluator_for

    metrics = evaluator_for(data, n, int(cfg.train.seed))(fake, labels)
    from gan_cli.callbacks.monitor import _clean

    result = {"checkpoint": str(latest_checkpoint(Path(args.run))), "step": int(gan.round.numpy()),
              **{k: _clean(v) for k, v in metrics.items()}}  # NaN/inf: null (JSON has no such numbers)
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted run in its own folder from its newest checkpoint (exactly: the RNG and
    data state are functions of the stored round); appends to metrics.jsonl without duplicating steps."""
    from gan_cli.run.checkpoint import latest_checkpoint, read_config

    run = Path(args.run)
    if run.is_file():
        return _fail(f"{run} is a file; gan resume takes the run folder (the one holding checkpoints/)")
    ckpt = latest_checkpoint(run, warn=False)  # checked before the slow TensorFlow import; train() warns
    cfg = read_config(ckpt)
    tf_import.quiet_tensorflow()
    from gan_cli.job.train import train

    train(cfg, run, resume=True, report_later=True)
    (run / "DONE").write_text("ok\n")
    (run / "FAILED").unlink(missing_ok=True)
    from gan_cli.report import background

    background.after_done(cfg, run)
    return 0


def _last_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; give the folder of a finished gan train run")
    from gan_cli.run.files import read_rows

    rows = read_rows(path)
    if not rows:
        raise UserError(f"{path} is empty; the run never reached an evaluation")
    return rows[-1]


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Re-run a run's saved overrides (+ new ones) into a new folder and compare final metrics.

    Exit 0 when they are identical, 1 when any differs (the differences are printed); with
    train.deterministic=true in the original run the final metrics (and weights) are expected to be identical.
    """
    import datetime

    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{run} is not a run folder; give a folder written by gan train (outputs/DATE/TIME)")
    saved = run / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UserError(f"{run} has no .hydra/overrides.yaml; give a run folder written by gan train")
    original = _last_metrics(run)
    from gan_cli.run.files import read_overrides

    saved_overrides = read_overrides(run)
    if saved_overrides is None:
        raise UserError(f"{saved} is not a YAML list of overrides; restore it or re-run with gan train")
    # model=auto / optimizer=auto (older runs) are what the dataset and loss configs now choose themselves
    old = [o for o in saved_overrides if not o.lstrip("+~").startswith("hydra.")
           and o not in ("model=auto", "optimizer=auto")]
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
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    """The run's generator as a .keras file (model space) or a SavedModel (data units) loadable without gan-cli."""
    tf_import.quiet_tensorflow()
    from gan_cli.run.export import export_run

    path = export_run(Path(args.run), Path(args.output), args.format, args.force)
    print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """RUN/report.html (self-contained) + RUN/report/*.png."""
    tf_import.quiet_tensorflow()  # per-class image grids load the checkpoint
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
    # (no TensorFlow: simulating and writing a set needs numpy, h5py and acoular only)
    if args.kind != "csm":
        return _fail(f"unknown data kind '{args.kind}'; valid: csm")
    from gan_cli.data.csm_cli import generate_command

    return generate_command(args.output, args.force, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan", description="Config-driven GAN experiments on TensorFlow/Keras.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("train", help="train a GAN: gan train [-m] [OVERRIDE ...] (a Hydra app: gan train --help)",
                   add_help=False)
    p = sub.add_parser("sample", help="write generated samples from a run's last checkpoint")
    p.add_argument("run", help="run folder or checkpoint .h5")
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("-o", "--output", required=True, help="output file (.npy; .png for images; .h5 for csm)")
    p.add_argument("--label", type=int, default=None, help="class to generate (conditional models)")
    p.add_argument("--frequency", type=float, default=None, metavar="HZ",
                   help="CSM runs: the frequency line to generate (one of the trained lines)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p = sub.add_parser("evaluate", help="print the quality metrics of a run's last checkpoint as JSON")
    p.add_argument("run", help="run folder or checkpoint .h5")
    p.add_argument("--num-samples", type=int, default=None, help="samples to score (default: the run's metrics.num_samples)")
    p = sub.add_parser("resume", help="continue an interrupted run in its own folder")
    p.add_argument("run", help="run folder")
    p = sub.add_parser("reproduce", help="re-run a finished run's config (+ overrides) into a new folder and compare")
    p.add_argument("run", help="run folder")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    p = sub.add_parser("export", help="write a run's generator as a .keras file or a TF SavedModel (no gan-cli needed to load it)")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("-o", "--output", required=True, help="PATH.keras, or a folder for --format saved_model")
    p.add_argument("--format", default="keras", choices=("keras", "saved_model"),
                   help="keras: the generator z[, label] -> model-space samples (default); saved_model: "
                        "generate(z[, label]) -> samples in the data's units, as gan sample writes them")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
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


_SIGNALS_SEEN: list[int] = []


def _on_signal(signum, frame) -> None:
    """SIGINT raises KeyboardInterrupt (as Python's own handler does), SIGTERM Terminated; both are noted."""
    import signal

    _SIGNALS_SEEN.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def _signal_exit() -> int:
    """Exit status and line for the signal that stopped the command: 143 SIGTERM, 130 SIGINT."""
    import signal

    if signal.SIGTERM in _SIGNALS_SEEN:
        return _fail("terminated (SIGTERM)", 143)
    return _fail("interrupted", 130)


def _finished(code: int, as_program: bool) -> int:
    """End the `gan train` / `gan resume` process at once when it has trained: the run folder is complete
    (its files closed; the report, if any, is drawn by a process of its own), and Python's teardown of the
    interpreter with TensorFlow loaded takes seconds that the user would wait for (the "exit" phase of
    ``benchmarks/throughput.py --whole-process``). Log handlers and the standard streams are flushed first.
    Only for the command itself (``as_program``) and without a joblib sweep, whose worker processes are shut
    down by the interpreter's exit handlers; otherwise returns ``code``."""
    if not as_program or "joblib" in sys.modules:
        return code
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 success, 2 bad input (one line), 1 a bug (traceback), 130 SIGINT, 143 SIGTERM."""
    import signal
    import threading

    as_program = argv is None  # the `gan` command itself (not a call from Python code)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    previous = {}
    _SIGNALS_SEEN.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):  # not when ignored (nohup, &)
                previous[sig] = signal.signal(sig, _on_signal)
    try:
        if argv and argv[0] == "train":
            return _finished(cmd_train(argv[1:]), as_program)
        if argv and argv[0] in ("-sc", "--shell-completion"):
            return _shell_completion(argv)
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
                   "reproduce": cmd_reproduce, "report": cmd_report, "export": cmd_export, "sweep-report": cmd_sweep_report}
        code = handler[args.command](args)
        return _finished(code, as_program) if args.command == "resume" else code
    except Exception as exc:
        # the exception raised in a signal handler can surface as another one (an extension module
        # that was running turns it into a SystemError, a reader into a DataError): still the signal
        if _SIGNALS_SEEN:
            return _signal_exit()
        if isinstance(exc, UserError):
            return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
        raise
    except (KeyboardInterrupt, Terminated) as exc:
        if not _SIGNALS_SEEN:  # Ctrl-C where no handler of ours was installed
            _SIGNALS_SEEN.append(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        return _signal_exit()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
