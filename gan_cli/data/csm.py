"""Microphone-array cross-spectral matrices as a GAN training set (seed 000).

Model-space representations (``M`` microphones, column ``j`` = ``j``-th eigenvector in
descending eigenvalue order, eigenvectors phase-canonical at the reference mic):

* ``eigenvectors``: ``(M, M, 2)`` = [Re V, Im V] of the normalised CSM (seed default).
* ``eigmode``: ``(M, M, 3)`` = [Re V, Im V, s] with ``s[i, j] = 10 log10(lambda_j / lambda_0) / 100``
  (eigenvalue in dB re the largest, divided by 100 dB, floored at -1.2; the same value in every
  row ``i``). ``s[:, 0] = 0``; the absolute scale is implied by the normalisation
  ``C[ref, ref] = 1``: ``lambda_0 = 1 / sum_j 10^(10 s_j) |V[ref, j]|^2``.
* ``csm``: ``(M, M, 2)`` = [Re C, Im C] of the normalised CSM.

Every CSM is first divided by its reference-mic autopower ``C[ref, ref]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from gan_cli.data.base import Evaluator, GanDataset, data_cache_dir
from gan_cli.errors import ConfigError, DataError, UserError

REPRESENTATIONS = ("eigenvectors", "eigmode", "csm")
EIG_DB_SCALE = 100.0     # dB per unit of the eigmode eigenvalue channel
EIG_DB_FLOOR = -120.0    # eigenvalues below lambda_0 * 1e-12 are clipped there
CACHE_VERSION = 1        # bump when the simulator changes its output


class CsmDataset(GanDataset):
    """CSMs from ``path`` (gan-cli HDF5, AcouPipe HDF5 or AcouPipe TFRecord) or simulated.

    Constructor keywords are exactly the keys of ``conf/dataset/csm.yaml``; see there and
    ``docs/csm.md``. Data is loaded (or simulated into the cache) on first use.
    """

    kind = "csm"
    default_model = "csm_mlp"
    default_latent_dim = 128
    primary_metric = "spectrum_db"
    num_classes = 0
    # seed 000's batch 64; a run short enough for the main job to finish in minutes on 2 CPU cores
    default_train = {"steps": 300, "batch_size": 64, "eval_every": 100, "checkpoint_every": 300}

    def __init__(self, name: str = "csm", path: str | None = None, array: str = "tub_vogel64",
                 aperture: float | None = 1.0, helmholtz: float = 4.0625, frequency: float | None = None,
                 c: float = 343.0, mode: str = "wishart", snapshots: int = 1070, num_samples: int = 2000,
                 max_sources: int = 10, reference_mic: int | None = None, seed: int = 0,
                 representation: str = "eigenvectors", freq_index: int = 0, max_samples: int | None = None,
                 orthonormal: bool = False, canonical_phase: bool = True, eval_beamform: int = 32,
                 eval_grid: int = 21):
        from gan_cli.data.csm_sim import SimParams

        self.name = name
        if representation not in REPRESENTATIONS:
            raise ConfigError(f"dataset.representation={representation!r} is invalid; use one of {', '.join(REPRESENTATIONS)}")
        if freq_index < 0:
            raise ConfigError(f"dataset.freq_index={freq_index} must be >= 0")
        if max_samples is not None and max_samples < 1:
            raise ConfigError(f"dataset.max_samples={max_samples} must be >= 1 or null (all)")
        if not 0 <= eval_beamform <= 1024 or eval_grid < 3:
            raise ConfigError("dataset.eval_beamform must be in [0, 1024] and dataset.eval_grid >= 3")
        self.path = None if path in (None, "", "null") else Path(str(path)).expanduser()
        self.params = SimParams(array=str(array), aperture=aperture, helmholtz=float(helmholtz),
                                frequency=None if frequency is None else float(frequency), c=float(c),
                                mode=str(mode), snapshots=int(snapshots), num_samples=int(num_samples),
                                max_sources=int(max_sources),
                                reference_mic=None if reference_mic is None else int(reference_mic), seed=int(seed))
        if self.path is None:
            self.params.validate()
        self.representation = representation
        self.freq_index = int(freq_index)
        self.max_samples = max_samples
        self.orthonormal = bool(orthonormal)
        self.canonical_phase = bool(canonical_phase)
        self.eval_beamform = int(eval_beamform)
        self.eval_grid = int(eval_grid)
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
        from gan_cli.data.csm_sim import CsmSimulator

        path = self.cache_path()
        if not path.exists():
            CsmSimulator(self.params).write(path, force=True, progress=True)
        return path

    def _load(self) -> None:
        if self._loaded:
            return
        from gan_cli.data.csm_io import canonical_eig, read_csm_file
        from gan_cli.data.csm_sim import array_aperture, load_mic_positions

        file = self._ensure_file()
        m_hint = None
        try:
            geom = load_mic_positions(self.params.array, self.params.aperture)
            m_hint = geom.shape[0]
        except ConfigError:
            if self.path is None:
                raise
            geom = None
        d = read_csm_file(file, freq_index=self.freq_index, num_mics_hint=m_hint, limit=self.max_samples)
        n, m = d.csm.shape[0], d.csm.shape[-1]
        ref = d.attrs.get("reference_mic", self.params.reference_mic)
        ref = m - 1 if ref is None else int(ref)
        if not 0 <= ref < m:
            raise ConfigError(f"dataset.reference_mic={ref} is out of range for the {m} microphones in {file}; use 0..{m - 1} or null")
        self.reference_mic = ref
        # geometry and frequency: from the file when stored, else from the config
        self.mic_positions = d.mic_positions if d.mic_positions is not None else (geom if geom is not None and geom.shape[0] == m else None)
        self.c = float(d.attrs.get("c", self.params.c))
        if "frequency" in d.attrs and d.attrs["frequency"] is not None:
            self.frequency = float(d.attrs["frequency"])
        elif self.params.frequency is not None:
            self.frequency = float(self.params.frequency)
        elif self.mic_positions is not None:
            self.frequency = self.params.helmholtz * self.c / array_aperture(self.mic_positions)
        else:
            self.frequency = None
        self.aperture = array_aperture(self.mic_positions) if self.mic_positions is not None else None
        self.file = file
        self.attrs = d.attrs
        self.num_mics = m

        # normalise by the reference-mic autopower
        pref = d.csm[:, ref, ref].real
        bad = ~(np.isfinite(pref) & (pref > 0))
        if bad.any():
            raise DataError(f"{file}: {int(bad.sum())} of {n} CSMs have a non-positive or non-finite autopower at reference mic {ref}; fix the data or set dataset.reference_mic")
        csm_n = d.csm / pref[:, None, None]
        if d.eigenvalues is not None and d.eigenvectors is not None:
            lam, vec = d.eigenvalues / pref[:, None], d.eigenvectors
        else:
            lam, vec = canonical_eig(csm_n, ref)
        self.mean_spectrum = np.maximum(lam, 0).mean(0)   # (M,) normalised mean eigenvalues
        self._x = self._encode(csm_n, lam, vec)
        self._loaded = True

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
            from gan_cli.data.csm_sim import load_mic_positions

            return load_mic_positions(self.params.array, self.params.aperture).shape[0]
        self._load()
        return self.num_mics

    def arrays(self) -> tuple[np.ndarray, None]:
        """Model-space samples ``(N, *sample_shape)`` float32 and no labels."""
        self._load()
        return self._x, None

    def output_transform(self) -> Any:
        """Keras layer for the generator's raw ``(B, *sample_shape)`` output (see CsmOutputTransform)."""
        from gan_cli.models.csm import CsmOutputTransform

        self._load()
        return CsmOutputTransform(representation=self.representation, reference_mic=int(self.reference_mic),
                                  orthonormal=self.orthonormal, canonical_phase=self.canonical_phase,
                                  name="csm_output_transform")

    def to_user_space(self, x: np.ndarray) -> np.ndarray:
        """Model space -> complex CSMs ``(n, M, M)`` complex64, normalised (``C[ref, ref] ~ 1``).

        ``eigenvectors``: ``C = V diag(mean_spectrum) V^H`` with the real data's mean normalised
        eigenvalue spectrum; ``eigmode``: ``C = V diag(lambda) V^H`` with the model's
        eigenvalues; ``csm``: ``C = x[..., 0] + i x[..., 1]``.
        """
        self._load()
        return self._decode(np.asarray(x, np.float64)).astype(np.complex64)

    def _decode(self, x: np.ndarray) -> np.ndarray:
        if self.representation == "csm":
            return x[..., 0] + 1j * x[..., 1]
        v = x[..., 0] + 1j * x[..., 1]
        if self.representation == "eigmode":
            lam = channel_to_eig(x[..., 2].mean(axis=1), v, self.reference_mic)
        else:
            lam = np.broadcast_to(self.mean_spectrum, v.shape[:1] + self.mean_spectrum.shape)
        return (v * lam[:, None, :]) @ np.conj(np.swapaxes(v, -1, -2))

    def write_samples(self, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
        """``.h5``: generated CSMs in the project layout (beamformable); ``.npy``: complex CSMs."""
        path = Path(path)
        csm = self.to_user_space(x)
        if path.suffix == ".npy":
            np.save(path, csm)
            return
        if path.suffix not in (".h5", ".hdf5"):
            raise UserError(f"cannot write {path.name}: dataset 'csm' writes .h5 or .npy files; use -o FILE.h5 or -o FILE.npy")
        from gan_cli.data.csm_io import write_csm_h5

        attrs = {"frequency": self.frequency, "c": self.c, "source": "generated",
                 "representation": self.representation, "normalised": "C[ref, ref] = 1 (reference-mic autopower)",
                 "training_file": str(self.file)}
        write_csm_h5(path, csm.astype(np.complex128), reference_mic=self.reference_mic,
                     mic_positions=self.mic_positions, attrs=attrs, force=True)

    def evaluator(self, num_samples: int, seed: int) -> Evaluator:
        """Scores generated model-space samples against ``num_samples`` real ones (gan_cli.metrics.csm)."""
        from gan_cli.metrics.csm import MapBeamformer, csm_metrics

        self._load()
        real_x, _ = self.real_samples(num_samples, seed)
        real_csm = self._decode(real_x.astype(np.float64))
        bf = None
        if self.eval_beamform > 0 and self.mic_positions is not None and self.frequency:
            ap = self.aperture
            bf = MapBeamformer(self.mic_positions, self.frequency, self.reference_mic, extent=0.5 * ap,
                               z=0.5 * ap, c=self.c, grid_points=self.eval_grid)
        cache: dict[str, Any] = {}
        max_src = self.params.max_sources

        def evaluate(x: np.ndarray, labels: np.ndarray | None = None) -> dict:
            x = np.asarray(x, np.float64)
            gen_csm = self._decode(x)
            vec = None if self.representation == "csm" else x[..., 0] + 1j * x[..., 1]
            return csm_metrics(gen_csm, real_csm, max_sources=max_src, gen_vectors=vec, beamformer=bf,
                               num_beamformed=self.eval_beamform, real_cache=cache)

        return evaluate


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
