"""Microphone-array cross-spectral matrices as a GAN training set (Fragnière 2022).

Model-space representations (``M`` microphones, column ``j`` = ``j``-th eigenvector in
descending eigenvalue order, eigenvectors phase-canonical at the reference mic):

* ``eigenvectors``: ``(M, M, 2)`` = [Re V, Im V] of the normalised CSM (seed default).
* ``eigmode``: ``(M, M, 3)`` = [Re V, Im V, s] with ``s[i, j] = 10 log10(lambda_j / lambda_0) / 100``
  (eigenvalue in dB re the largest, divided by 100 dB, floored at -1.2; the same value in every
  row ``i``). ``s[:, 0] = 0``; the absolute scale is implied by the normalisation
  ``C[ref, ref] = 1``: ``lambda_0 = 1 / sum_j 10^(10 s_j) |V[ref, j]|^2``.
* ``csm``: ``(M, M, 2)`` = [Re C, Im C] of the normalised CSM.

Every CSM is first divided by its reference-mic autopower ``C[ref, ref]``.

Files whose model-space array (``N * prod(sample_shape) * 4`` bytes) exceeds
``dataset.max_in_memory_mb`` are *streamed* (HDF5 only): ``tf_dataset`` reads them in
contiguous chunks, and statistics come from the first ``STREAM_STATS`` samples.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gan_cli.data.base import PREFETCH, GanDataset, data_cache_dir, fixed_pipeline
from gan_cli.core.errors import ConfigError, DataError, UserError
from gan_cli.data.csm_sim import SimParams

REPRESENTATIONS = ("eigenvectors", "eigmode", "csm")
EIG_DB_SCALE = 100.0     # dB per unit of the eigmode eigenvalue channel
EIG_DB_FLOOR = -120.0    # eigenvalues below lambda_0 * 1e-12 are clipped there
CACHE_VERSION = 2        # bump when the simulator's output or the file format changes
STREAM_CHUNK = 256       # samples per contiguous read when streaming
STREAM_BUFFER = 10_000   # shuffle-buffer samples when streaming (capped at max_in_memory_mb / 4)
STREAM_STATS = 10_000    # leading samples the statistics (mean spectrum) come from when streaming
FREQ_RTOL = 1e-3         # a user-set frequency agrees with a file's within this relative tolerance


# the simulation keys' defaults (SimParams); conf/dataset/csm.yaml states the same values
_SIM = SimParams()


class CsmDataset(GanDataset):
    """CSMs from ``path`` (gan-cli HDF5, AcouPipe HDF5 or AcouPipe TFRecord) or simulated.

    Constructor keywords are exactly the keys of ``conf/dataset/csm.yaml``; see there and
    docs/csm.md. Data is loaded (or simulated into the cache) on first use.

    A file whose model-space array exceeds ``max_in_memory_mb`` MiB is streamed
    (``self.streaming``): ``tf_dataset``, ``real_samples``, ``evaluator`` and the decoders work
    from partial reads, ``arrays()`` raises DataError, and ``mean_spectrum`` is the mean over
    the first ``stream_stats`` samples instead of all of them.
    """

    kind = "csm"
    default_model = "csm_physics"
    default_latent_dim = 128
    primary_metric = "c2st"
    # Fragnière's (2022) batch 64; a run short enough for the main job to finish in minutes on 2 CPU cores
    default_train = {"steps": 300, "batch_size": 64, "eval_every": 100, "checkpoint_every": 300,
                     "steps_per_execution": 10}
    # streaming knobs (class attributes so tests can shrink them)
    stream_chunk = STREAM_CHUNK
    stream_buffer = STREAM_BUFFER
    stream_stats = STREAM_STATS

    def __init__(self, name: str = "csm", path: str | None = None, array: Any = _SIM.array,
                 aperture: float | None = _SIM.aperture, helmholtz: Any = None, frequency: Any = _SIM.frequency,
                 c: float = _SIM.c, mode: str = _SIM.mode, snapshots: int = _SIM.snapshots,
                 num_samples: int = _SIM.num_samples, max_sources: int = _SIM.max_sources,
                 reference_mic: int | None = _SIM.reference_mic, seed: int = _SIM.seed,
                 representation: str | None = None, freq_index: Any = 0, max_samples: int | None = None,
                 orthonormal: bool = False, canonical_phase: bool = True, eval_samples: int = 400,
                 eval_grid: int = 21, max_in_memory_mb: float | None = 2048):
        self.name = name
        if representation is not None and representation not in REPRESENTATIONS:
            raise ConfigError(f"dataset.representation={representation!r} is invalid; use one of "
                              f"{', '.join(REPRESENTATIONS)} or null (the model's own)")
        freq_index = parse_freq_index(freq_index)
        if max_samples is not None and max_samples < 1:
            raise ConfigError(f"dataset.max_samples={max_samples} must be >= 1 or null (all)")
        if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or eval_samples < 10 or eval_grid < 3:
            raise ConfigError("dataset.eval_samples must be an integer >= 10 and dataset.eval_grid >= 3")
        if max_in_memory_mb is not None:
            try:
                max_in_memory_mb = float(max_in_memory_mb)
            except (TypeError, ValueError):
                max_in_memory_mb = -1.0
            if not max_in_memory_mb > 0:
                raise ConfigError("dataset.max_in_memory_mb must be a number > 0 (MiB) or null (never stream)")
        self.path = None if path in (None, "", "null") else Path(str(path)).expanduser()
        self.params = SimParams.from_mapping(dict(
            array=array, aperture=aperture, helmholtz=helmholtz, frequency=frequency, c=c, mode=mode,
            snapshots=snapshots, num_samples=num_samples, max_sources=max_sources, reference_mic=reference_mic,
            seed=seed))
        if self.path is None:
            self.params.validate()
        # null: the model's own (config.resolve sets it from model.representation before loading)
        self.representation = representation or "csm"
        self.freq_index = freq_index
        # user-set (not defaulted) frequency keys: a file that stores its frequencies is checked against them
        self._frequency_given = frequency is not None
        self._helmholtz_given = helmholtz is not None
        self.max_samples = max_samples
        self.orthonormal = bool(orthonormal)
        self.canonical_phase = bool(canonical_phase)
        self.eval_samples = int(eval_samples)
        self.eval_grid = int(eval_grid)
        self.max_in_memory_mb = max_in_memory_mb
        self._streaming = False
        self._loaded = False

    # ------------------------------------------------------------------ loading
    def cache_path(self) -> Path:
        """``data_cache_dir()/csm_default_<hash>.h5`` for the simulation parameters."""
        from dataclasses import asdict

        key = json.dumps({"v": CACHE_VERSION, **asdict(self.params)}, sort_keys=True)
        return data_cache_dir() / f"csm_default_{hashlib.sha256(key.encode()).hexdigest()[:12]}.h5"

    def _ensure_file(self) -> Path:
        if self.path is not None:
            return self.path
        from gan_cli.data.cache import build_once
        from gan_cli.data.csm_io import verify_csm_file
        from gan_cli.data.csm_sim import CsmSimulator

        def build(tmp: Path) -> None:
            CsmSimulator(self.params).write(tmp, force=True, progress=True, atomic=False)

        def check(path: Path) -> Path:
            verify_csm_file(path)
            return path

        # simulated once per parameter set, even by many processes at once; checked at every use
        return build_once(self.cache_path(), build, check, what="CSM cache")

    def prepare(self) -> None:
        """Read (or simulate into the cache) the data set now."""
        self._load()

    def _load(self) -> None:
        if self._loaded:
            return
        from gan_cli.data.csm_io import csm_file_info, detect_format, is_multi_line, resolve_lines

        file = self._ensure_file()
        geom = None
        if self.path is not None and file.is_file() and detect_format(file) == "tfrecord":   # mic count from the array
            geom = self._config_geometry()
        f = self.params.frequency if self._frequency_given else self.params.helmholtz if self._helmholtz_given else None
        lines_hint = None if f is None or np.ndim(f) == 0 else len(f)
        # decide from the shapes alone (no data read) whether the model-space array fits
        info = csm_file_info(file, freq_index=self.freq_index, num_mics_hint=None if geom is None else geom.shape[0],
                             limit=self.max_samples, num_lines_hint=lines_hint)
        m = info.num_mics
        if info.mic_positions is None and self.path is not None:   # AcouPipe files store no geometry
            geom = self._config_geometry() if geom is None else geom
            self._check_geometry(file, geom, m)
        lines = resolve_lines(file, self.freq_index, info.num_lines, info.frequencies)
        # several lines: one conditional GAN, label k = k-th chosen line; a single chosen line is plain data
        self._read_index = self.freq_index if is_multi_line(self.freq_index) and len(lines) > 1 else lines[0]
        self._num_classes = len(lines) if is_multi_line(self._read_index) else 0
        self._lines = lines
        self.model_space_mb = (info.num_samples * len(lines) * m * m * (3 if self.representation == "eigmode" else 2)
                               * 4 / 2 ** 20)
        streaming = self.max_in_memory_mb is not None and self.model_space_mb > self.max_in_memory_mb
        if streaming and info.source_format == "acoupipe-tfrecord":
            raise DataError(f"{file} is a TFRecord file of ~{self.model_space_mb:.0f} MiB in model space, more than "
                            f"dataset.max_in_memory_mb={self.max_in_memory_mb:g}, and only HDF5 files can be streamed; "
                            "convert it to HDF5 (AcouPipe or `gan data csm` layout) or raise dataset.max_in_memory_mb")
        if streaming and self._num_classes:
            raise DataError(f"{file}: {len(lines)} frequency lines of ~{self.model_space_mb:.0f} MiB in model space exceed "
                            f"dataset.max_in_memory_mb={self.max_in_memory_mb:g}, and several lines are trained in memory "
                            "only; raise dataset.max_in_memory_mb, lower dataset.max_samples or pick one dataset.freq_index")
        if self.path is not None:  # (the cache was checked by _ensure_file) checksums cost a pass over the file
            from gan_cli.data.csm_io import verify_csm_file

            verify_csm_file(file, checksums=not streaming)
        self._info = info
        if streaming:
            self._load_streaming(file, geom)
        else:
            self._load_memory(file, geom, None if geom is None else geom.shape[0], lines_hint)
        self._streaming = streaming
        self._loaded = True

    def _config_geometry(self) -> np.ndarray | None:
        """``dataset.array``'s positions (scaled to ``dataset.aperture``), None for ``array: null``."""
        from gan_cli.data.csm_sim import load_mic_positions

        if self.params.array is None:
            return None
        return load_mic_positions(self.params.array, self.params.aperture)

    def _check_geometry(self, file: Path, geom: np.ndarray | None, m: int) -> None:
        """The configured geometry must have the file's microphone count (a file without geometry)."""
        from gan_cli.data.csm_sim import array_label

        if geom is None:
            print(f"gan-cli: warning: dataset.array=null: {file} stores no microphone geometry, so the beamforming "
                  "metrics and maps are off; name the array to get them", file=sys.stderr)
            return
        if geom.shape[0] != m:
            raise ConfigError(f"dataset.array={array_label(self.params.array)} has {geom.shape[0]} microphones but {file} "
                              f"holds {m}-microphone CSMs; set dataset.array to the recording array (an acoular name such as "
                              "minidsp_uma-16, a positions file or a list of [x, y, z]) and dataset.aperture to its size "
                              "(null keeps it)")

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Number of frequency lines trained as labels (``freq_index`` a list or ``all``), else 0."""
        from gan_cli.data.csm_io import is_multi_line

        if not is_multi_line(self.freq_index):
            return 0
        self._load()
        return self._num_classes

    @property
    def streaming(self) -> bool:
        """True when the file is too large for ``max_in_memory_mb`` and is streamed (loads metadata)."""
        self._load()
        return self._streaming

    def _load_memory(self, file: Path, geom: np.ndarray | None, m_hint: int | None,
                     lines_hint: int | None = None) -> None:
        """Read the whole file and encode it into ``self._x`` (and the line labels into ``self._labels``)."""
        from gan_cli.data.csm_io import read_csm_file

        d = read_csm_file(file, freq_index=self._read_index, num_mics_hint=m_hint, limit=self.max_samples,
                          num_lines_hint=lines_hint)
        self._set_metadata(file, d.attrs, d.mic_positions, d.csm.shape[-1], geom)
        self._x, lam = self._prepare(d)
        self._labels = None if d.labels is None else d.labels.astype(np.int32)
        self.num_samples = int(self._x.shape[0])
        self.mean_spectrum = np.maximum(lam, 0).mean(0)   # (M,) normalised mean eigenvalues
        # per line (label) for the eigenvectors decoding of a multi-line set: (L, M)
        self.line_mean_spectrum = (None if self._labels is None else
                                   np.stack([np.maximum(lam[self._labels == k], 0).mean(0) for k in range(self._num_classes)]))

    def _load_streaming(self, file: Path, geom: np.ndarray | None) -> None:
        """Metadata from the file's attributes, statistics from its first ``stream_stats`` samples."""
        from gan_cli.data.csm_io import CsmReader

        self._labels = self.line_mean_spectrum = None
        with CsmReader(file, freq_index=self._read_index, limit=self.max_samples) as rd:
            self._set_metadata(file, rd.attrs, rd.mic_positions, rd.num_mics, geom)
            self.num_samples = rd.num_samples
            total, count = np.zeros(rd.num_mics), 0
            chunk = max(1, int(self.stream_chunk))
            for start in range(0, min(rd.num_samples, max(1, int(self.stream_stats))), chunk):
                stop = min(start + chunk, rd.num_samples, max(1, int(self.stream_stats)))
                _, lam = self._prepare(rd.read(slice(start, stop)))
                total += np.maximum(lam, 0).sum(0)
                count += lam.shape[0]
        self.mean_spectrum = total / count                 # (M,) normalised mean eigenvalues
        self._x = None

    def _set_metadata(self, file: Path, attrs: dict, mic_positions: np.ndarray | None, m: int,
                      geom: np.ndarray | None) -> None:
        """Reference mic, geometry, speed of sound and frequency (file attributes, else the config)."""
        from gan_cli.data.csm_sim import array_aperture

        ref = attrs.get("reference_mic", self.params.reference_mic)
        ref = m - 1 if ref is None else int(ref)
        if not 0 <= ref < m:
            raise ConfigError(f"dataset.reference_mic={ref} is out of range for the {m} microphones in {file}; use 0..{m - 1} or null")
        self.reference_mic = ref
        # geometry and frequency: from the file when stored, else from the config
        self.mic_positions = mic_positions if mic_positions is not None else (geom if geom is not None and geom.shape[0] == m else None)
        self.c = float(attrs.get("c", self.params.c))
        self.aperture = array_aperture(self.mic_positions) if self.mic_positions is not None else None
        self.file = file
        self.attrs = attrs
        self.num_mics = m
        self._resolve_frequencies(file)

    def _resolve_frequencies(self, file: Path) -> None:
        """``frequency`` (one line) or ``line_frequencies`` (one per label), in Hz, and where they come from.

        The file's own frequencies (AcouPipe ``f``, a gan-cli file's ``f``/``frequency``) win; a
        user-set ``dataset.frequency`` or ``dataset.helmholtz`` must agree with them (relative
        ``FREQ_RTOL``; a list gives one value per line in the file, a number the chosen line) or is
        a ConfigError. A file without frequencies takes them from those keys, else from the default
        Helmholtz number (with a warning); several lines without frequencies are refused.
        """
        from gan_cli.data.csm_io import fmt_hz
        from gan_cli.data.csm_sim import DEFAULT_HELMHOLTZ

        info, lines = self._info, self._lines
        key, user = None, None
        if self._frequency_given:
            key, user = "dataset.frequency", np.atleast_1d(np.asarray(self.params.frequency, np.float64))
        elif self._helmholtz_given:
            key = "dataset.helmholtz"
            if self.aperture is None:
                raise ConfigError("dataset.helmholtz needs the array's aperture to give a frequency, and there is no "
                                  "geometry (dataset.array=null); set dataset.frequency in Hz instead")
            user = np.atleast_1d(np.asarray(self.params.helmholtz, np.float64)) * self.c / self.aperture
        hz = lambda a: ", ".join(fmt_hz(x) for x in a)   # noqa: E731
        stored = info.frequencies
        if stored is not None:
            stored = np.asarray(stored, np.float64)
            if user is not None:
                if user.size == stored.size:
                    target = stored
                elif user.size == 1 and len(lines) == 1:
                    target = stored[lines]
                else:
                    raise ConfigError(f"{key} gives {user.size} value(s) but {file} stores its {stored.size} line "
                                      f"frequencies ({hz(stored)} Hz); leave {key} null and choose lines with dataset.freq_index")
                if not np.allclose(user, target, rtol=FREQ_RTOL, atol=0):
                    raise ConfigError(f"{key}={self._given_text(key)} ({hz(user)} Hz) contradicts {file}, which stores "
                                      f"{hz(target)} Hz (all lines: {hz(stored)} Hz); leave {key} null to use the file's "
                                      "frequencies and choose lines with dataset.freq_index")
            freqs, source = stored, "file"
        elif user is not None:
            if user.size not in (1, info.num_lines) or (user.size == 1 and info.num_lines > 1):
                raise ConfigError(f"{key} gives {user.size} value(s) but {file} holds {info.num_lines} frequency lines "
                                  "per sample and stores no frequencies; give one value per line")
            freqs, source = user, key
        elif info.num_lines > 1:
            raise ConfigError(f"{file} stores no frequencies ('f') and holds {info.num_lines} lines of {self.num_mics} "
                              f"microphones per sample (the mic count of dataset.array); set dataset.frequency to the "
                              f"{info.num_lines} line frequencies in Hz, or dataset.array if the mic count is wrong")
        elif self.aperture is not None:
            freqs, source = np.array([DEFAULT_HELMHOLTZ * self.c / self.aperture]), "default dataset.helmholtz"
            print(f"gan-cli: warning: {file} stores no frequency; the beamforming metrics use {fmt_hz(freqs[0])} Hz "
                  f"(He = {DEFAULT_HELMHOLTZ}, the default); set dataset.frequency (Hz) if the data is at another frequency",
                  file=sys.stderr)
        else:
            freqs, source = None, None
        self.file_frequencies = None if freqs is None else [float(x) for x in freqs]
        self.frequency_source = source
        chosen = None if freqs is None else [float(freqs[i]) for i in lines]
        if chosen is not None and min(chosen) <= 0:
            k = lines[int(np.argmin(chosen))]
            raise ConfigError(f"{file}: line {k} is at {fmt_hz(min(chosen))} Hz (the DC bin of AcouPipe's f=None), which has "
                              "no beamforming and no wave field; choose lines above 0 Hz with dataset.freq_index (an index or a list)")
        # line_frequencies: Hz per label (several lines); frequency: the one line's Hz (else None)
        self.line_frequencies = chosen if self._num_classes else None
        self.frequency = chosen[0] if chosen is not None and not self._num_classes else None
        self.lines = list(lines)

    def _given_text(self, key: str) -> str:
        val = self.params.frequency if key == "dataset.frequency" else self.params.helmholtz
        return str(list(val)) if np.ndim(val) else f"{float(val):g}"

    def _prepare(self, d, drop_bad: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """CsmData -> (model space float32 ``(n, *sample_shape)``, normalised eigenvalues ``(n, M)``).

        Normalises by the reference-mic autopower and uses the stored canonical
        eigendecomposition when the file has one, else ``canonical_eig``. Samples with NaN or
        infinite entries or a non-positive reference autopower raise DataError, or are dropped with
        ``drop_bad`` (streaming, where raising would abort training mid-run).
        """
        from gan_cli.data.csm_io import canonical_eig

        ref, n = self.reference_mic, d.csm.shape[0]
        pref = d.csm[:, ref, ref].real
        finite = np.isfinite(d.csm).all(axis=(-2, -1))  # (a NaN entry would stop the eigendecomposition)
        bad = ~(np.isfinite(pref) & (pref > 0)) | ~finite
        if bad.any():
            if not finite.all():
                count, what, fix = int((~finite).sum()), "NaN or infinite entries", "fix or regenerate the file"
            else:
                count, what, fix = (int(bad.sum()), f"a non-positive or non-finite autopower at reference mic {ref}",
                                    "fix the data or set dataset.reference_mic")
            if not drop_bad:
                raise DataError(f"{self.file}: {count} of {n} CSMs have {what}; {fix}")
            if not getattr(self, "_warned_bad", False):
                print(f"gan-cli: warning: skipping CSMs with {what} in {self.file}", file=sys.stderr)
                self._warned_bad = True
            keep = ~bad
            d = type(d)(csm=d.csm[keep], eigenvalues=None if d.eigenvalues is None else d.eigenvalues[keep],
                        eigenvectors=None if d.eigenvectors is None else d.eigenvectors[keep])
            pref = pref[keep]
        csm_n = d.csm / pref[:, None, None]
        if d.eigenvalues is not None and d.eigenvectors is not None:
            lam, vec = d.eigenvalues / pref[:, None], d.eigenvectors
        else:
            lam, vec = canonical_eig(csm_n, ref)
        return self._encode(csm_n, lam, vec), lam

    def _encode(self, csm_n: np.ndarray, lam: np.ndarray, vec: np.ndarray) -> np.ndarray:
        """Normalised CSMs + canonical eigendecomposition -> model space float32."""
        if self.representation == "csm":
            return np.stack([csm_n.real, csm_n.imag], -1).astype(np.float32)
        parts = [vec.real, vec.imag]
        if self.representation == "eigmode":
            parts.append(np.broadcast_to(eig_to_channel(lam)[:, None, :], vec.shape))
        return np.stack(parts, -1).astype(np.float32)

    # ------------------------------------------------------------------ GanDataset API
    @property
    def sample_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        m = self._num_mics_cheap()
        return (m, m, 3 if self.representation == "eigmode" else 2)

    def _num_mics_cheap(self) -> int:
        if self._loaded:
            return self.num_mics
        if self.path is None:
            from gan_cli.data.csm_io import csm_file_info
            from gan_cli.data.csm_sim import load_mic_positions

            cached = self.cache_path()
            if cached.exists():  # already simulated: its file says (no geometry file parsed)
                try:
                    return csm_file_info(cached).num_mics
                except DataError:  # unreadable: _ensure_file rebuilds it; the geometry says
                    pass
            return load_mic_positions(self.params.array, self.params.aperture).shape[0]
        self._load()
        return self.num_mics

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Model-space samples ``(N, *sample_shape)`` float32 and their line labels ``(N,)`` int32 when
        several frequency lines are trained (``freq_index`` a list or ``all``), else None (in-memory files only)."""
        self._load()
        if self.streaming:
            raise DataError(f"{self.file} is streamed ({self.num_samples} samples, {self.model_space_mb:.0f} MiB in model space > "
                            f"dataset.max_in_memory_mb={self.max_in_memory_mb:g}), so all its samples are not in memory; "
                            "raise dataset.max_in_memory_mb to load it whole")
        return self._x, self._labels

    def real_samples(self, n: int, seed: int) -> tuple[np.ndarray, None]:
        """``n`` real samples (model space), drawn like the base class; streaming reads only those rows."""
        self._load()
        if not self.streaming:
            return super().real_samples(n, seed)
        rng = np.random.default_rng(seed)
        idx = rng.choice(self.num_samples, size=n, replace=self.num_samples < n)
        uniq, inverse = np.unique(idx, return_inverse=True)           # sorted, as h5py needs
        return self._read_rows(uniq)[inverse], None

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Model-space samples at sorted unique indices ``rows``, read ``stream_chunk`` rows at a time."""
        from gan_cli.data.csm_io import CsmReader

        out = np.empty((len(rows), *self.sample_shape), np.float32)
        chunk = max(1, int(self.stream_chunk))
        with CsmReader(self.file, freq_index=self._read_index, limit=self.max_samples) as rd:
            for i in range(0, len(rows), chunk):
                out[i:i + chunk] = self._prepare(rd.read(rows[i:i + chunk]))[0]
        return out

    def tf_dataset(self, batch_size: int, seed: int, start_step: int = 0, batches_per_step: int = 1):
        """Infinite ``tf.data.Dataset`` of ``(batch_size, batches_per_step, *sample_shape)`` real batches.

        In-memory files: the base class (stateless draws keyed on ``(seed, step)``, bit-exact resume).
        Streamed files: a pass reads the file in contiguous chunks of ``stream_chunk`` samples in
        a random chunk order, encodes each chunk like the in-memory path, mixes it through a
        shuffle buffer of up to ``stream_buffer`` samples (at most a quarter of
        ``max_in_memory_mb``), batches and repeats forever, prefetched. The stream is a pure
        function of ``(seed, start_step)``, so the same seed gives the same stream; a resumed run
        (``start_step > 0``) continues with a fresh, equally distributed stream rather than the
        exact batches the uninterrupted run would have seen.
        """
        self._load()
        if not self.streaming:
            return super().tf_dataset(batch_size, seed, start_step=start_step, batches_per_step=batches_per_step)
        import tensorflow as tf

        shape = (int(batches_per_step), int(batch_size), *self.sample_shape)
        spec = tf.TensorSpec((shape[1], shape[0], *shape[2:]), tf.float32)  # batch axis first (GanDataset.tf_dataset)
        ds = tf.data.Dataset.from_generator(lambda: self._stream(shape, int(seed), int(start_step)), output_signature=spec)
        return fixed_pipeline(ds.prefetch(PREFETCH))

    def _stream_buffer_size(self) -> int:
        n, chunk = self.num_samples, max(1, int(self.stream_chunk))
        sample_bytes = 4 * int(np.prod(self.sample_shape))
        by_memory = int(self.max_in_memory_mb * 2 ** 20 / 4 / sample_bytes)
        return min(n, max(chunk, min(int(self.stream_buffer), by_memory)))

    def _stream(self, shape: tuple[int, ...], seed: int, start_step: int):
        """Generator behind the streamed ``tf_dataset``: yields float32 arrays ``(shape[1], shape[0], *shape[2:])``
        (``shape`` = ``(batches_per_step, batch_size, *sample_shape)``: the batch axis first)."""
        from gan_cli.data.csm_io import CsmReader

        n, chunk = self.num_samples, max(1, int(self.stream_chunk))
        per = shape[0] * shape[1]
        starts = np.arange(0, n, chunk)
        cap = self._stream_buffer_size()          # >= every chunk's length
        rng = np.random.default_rng([seed % 2 ** 63, start_step % 2 ** 63, 0x5354])
        pool = np.empty((0, *shape[2:]), np.float32)
        out = np.empty((0, *shape[2:]), np.float32)
        with CsmReader(self.file, freq_index=self._read_index, limit=self.max_samples) as rd:
            while True:
                produced = 0
                for i in rng.permutation(len(starts)):
                    x = self._prepare(rd.read(slice(starts[i], min(starts[i] + chunk, n))), drop_bad=True)[0]
                    produced += len(x)
                    x = x[rng.permutation(len(x))]
                    if len(pool) < cap:                      # fill the shuffle buffer first
                        take = cap - len(pool)
                        pool, x = np.concatenate([pool, x[:take]]), x[take:]
                    if len(x):                               # emit random buffer entries, replace them
                        pos = rng.choice(len(pool), size=len(x), replace=False)
                        out = np.concatenate([out, pool[pos]])
                        pool[pos] = x
                    while len(out) >= per:
                        yield np.ascontiguousarray(out[:per].reshape(shape).swapaxes(0, 1))
                        out = out[per:]
                if produced == 0:
                    raise DataError(f"{self.file}: no sample has a positive reference-mic autopower; fix the data or set dataset.reference_mic")

    def to_user_space(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Model space -> complex CSMs ``(n, M, M)`` complex64 on the training scale (the real CSMs
        divided by their reference-mic autopower, so ``C[ref, ref]`` is about 1).

        ``eigenvectors``: ``C = V diag(mean_spectrum) V^H`` with the real data's mean normalised
        eigenvalue spectrum (of each sample's line, given ``labels`` of a multi-line set);
        ``eigmode``: ``C = V diag(lambda) V^H`` with the model's eigenvalues (``C[ref, ref] = 1``
        exactly); ``csm``: ``C = x[..., 0] + i x[..., 1]``.
        """
        self._load()
        return self.decode(np.asarray(x, np.float64), labels).astype(np.complex64)

    def decode(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        if self.representation == "csm":
            return x[..., 0] + 1j * x[..., 1]
        v = x[..., 0] + 1j * x[..., 1]
        if self.representation == "eigmode":
            lam = channel_to_eig(x[..., 2].mean(axis=1), v, self.reference_mic)
        elif labels is not None and getattr(self, "line_mean_spectrum", None) is not None:
            lam = self.line_mean_spectrum[np.asarray(labels, np.int64)]
        else:
            lam = np.broadcast_to(self.mean_spectrum, v.shape[:1] + self.mean_spectrum.shape)
        return (v * lam[:, None, :]) @ np.conj(np.swapaxes(v, -1, -2))

    def write_samples(self, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
        """``.h5``: generated CSMs in the project layout (beamformable); ``.npy``: complex CSMs.

        One line (an unconditional model, or one ``label``): ``(n, M, M)`` with the line's
        ``frequency`` attribute. Several labels of a multi-line model, each ``k`` times: ``(k, L, M, M)``
        in label order with the line frequencies in the dataset ``f`` (the multi-line layout). The
        attributes say what the values are: ``normalised`` is true only when every sample's
        ``C[ref, ref]`` is 1 (``ref_autopower_min``/``_max`` give the range), ``psd`` whether all
        are positive semi-definite, ``frequency_source`` where the frequency came from.
        """
        from gan_cli.data.csm_io import canonical_eig, write_csm_h5

        path = Path(path)
        self._load()
        x = np.asarray(x)
        csm = self.to_user_space(x, labels if self.num_classes else None).astype(np.complex128)
        attrs: dict[str, Any] = {"source": "generated", "representation": self.representation,
                                 "training_file": str(self.file), "c": self.c, "aperture": self.aperture,
                                 "num_mics": self.num_mics, "frequency_source": self.frequency_source}
        freqs = None
        if self.num_classes and labels is not None:
            labels = np.asarray(labels, np.int64)
            chosen, counts = np.unique(labels, return_counts=True)
            if len(chosen) == 1:
                k = int(chosen[0])
                attrs.update(frequency=self.line_frequencies[k], label=k, line_index=self.lines[k])
            elif np.all(counts == counts[0]):
                order = np.argsort(labels, kind="stable")            # label-major, then regrouped per sample
                csm = csm[order].reshape(len(chosen), counts[0], *csm.shape[1:]).swapaxes(0, 1)
                freqs = [self.line_frequencies[int(k)] for k in chosen]
                attrs.update(frequency=None, labels=chosen.astype(np.int64), line_index=np.asarray(self.lines)[chosen])
            else:
                raise UserError("the generated samples hold the frequency lines in unequal numbers; "
                                "pass --label K or --frequency HZ for one line")
        else:
            attrs.update(frequency=self.frequency)
            if self.num_classes:
                raise UserError("a multi-line model needs the line of every sample; pass --label K or --frequency HZ")
        if path.suffix == ".npy":
            np.save(path, csm.astype(np.complex64))
            return
        if path.suffix not in (".h5", ".hdf5"):
            raise UserError(f"cannot write {path.name}: dataset 'csm' writes .h5 or .npy files; use -o FILE.h5 or -o FILE.npy")
        ref = self.reference_mic
        pref = csm[..., ref, ref].real
        w, v = canonical_eig(csm, ref)
        attrs.update(normalised=bool(np.allclose(pref, 1.0, rtol=0, atol=1e-4)),
                     scale="relative: the training CSMs were divided by their reference-mic autopower C[ref, ref]; "
                           "generated CSMs are on that scale, not renormalised",
                     ref_autopower_min=float(pref.min()), ref_autopower_max=float(pref.max()),
                     psd=bool(np.all(w[..., -1] >= -1e-6 * np.abs(w).max(axis=-1))))
        write_csm_h5(path, csm, reference_mic=ref, mic_positions=self.mic_positions, attrs=attrs, force=True,
                     eig=(w, v), frequencies=freqs)

    def disjoint_rows(self, n: int, seed: int, label: int | None = None) -> tuple[np.ndarray, None]:
        """``min(n, N)`` distinct real samples (model space; of line ``label`` when given) in a random
        order keyed on ``seed``."""
        rows = np.random.default_rng([seed, 0x6576]).permutation(self.num_samples)
        if label is not None:
            rows = rows[self._labels[rows] == label]
        return self._x[rows[:n]], None


def parse_freq_index(value: Any) -> Any:
    """``dataset.freq_index``: an int >= 0, ``"all"`` or a non-empty list of distinct ints >= 0 (ConfigError otherwise)."""
    hint = "use a line index >= 0, a list such as [0, 2], or all"
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return "all"
        raise ConfigError(f"dataset.freq_index={value!r} is invalid; {hint}")
    if isinstance(value, bool):
        raise ConfigError(f"dataset.freq_index={value!r} is invalid; {hint}")
    if hasattr(value, "__len__"):
        try:
            idx = [int(v) for v in value if not isinstance(v, bool) and int(v) == float(v)]
        except (TypeError, ValueError):
            idx = []
        if not idx or len(idx) != len(value) or min(idx) < 0 or len(set(idx)) != len(idx):
            raise ConfigError(f"dataset.freq_index={list(value)!r} is invalid; {hint} (distinct indices)")
        return idx
    try:
        idx = int(value)
        if idx != float(value) or idx < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.freq_index={value!r} is invalid; {hint}") from None
    return idx


# ---------------------------------------------------------------------- eigenvalue encoding
def eig_to_channel(lam: np.ndarray) -> np.ndarray:
    """Descending eigenvalues ``(n, M)`` -> eigmode channel ``s = dB(lambda / lambda_0) / 100`` in [-1.2, 0]."""
    top = np.maximum(lam[:, :1], 1e-300)
    db = 10 * np.log10(np.maximum(lam, top * 10 ** (EIG_DB_FLOOR / 10)) / top)
    return (db / EIG_DB_SCALE).astype(np.float32)


def channel_to_eig(s: np.ndarray, v: np.ndarray, reference_mic: int) -> np.ndarray:
    """Eigmode channel ``(n, M)`` + eigenvectors ``(n, M, M)`` -> eigenvalues ``(n, M)``.

    Relative spectrum ``r_j = 10^(s_j * 100 / 10)``; the scale makes the reconstructed
    reference autopower 1: ``lambda_0 = 1 / sum_j r_j |V[ref, j]|^2``.
    """
    r = 10 ** (s * EIG_DB_SCALE / 10)
    denom = (r * np.abs(v[:, reference_mic, :]) ** 2).sum(-1)
    return r / np.maximum(denom, 1e-12)[:, None]
