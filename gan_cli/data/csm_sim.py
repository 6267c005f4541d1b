"""Synthetic microphone-array CSMs following AcouPipe's defaults (AcouPipe, github.com/adku1173/acoupipe).

Physics (one frequency ``f``, wavenumber ``k = 2 pi f / c``):

* ``J = min(Poisson(3) + 1, max_sources)`` monopoles in the plane ``z = 0.5 * aperture`` with
  ``x, y ~ N(0, 0.1688 * aperture)`` clipped to ``+-0.5 * aperture``.
* Squared source strengths ``q_j ~ Rayleigh(sigma=5)`` (Pa^2, at the reference microphone).
* Transfer matrix ``H`` (M x J) from acoular's ``SteeringVector(ref=<reference mic position>)
  .transfer(f)``: free-field monopole ``H[m, j] = r0_j / r_mj * exp(-i k (r_mj - r0_j))`` with
  ``r0_j`` the source-to-reference-mic distance, so ``H[ref, j] = 1`` and ``q_j`` is the
  squared pressure the source produces at the reference microphone.
* Exact CSM (mode ``analytic``): ``C = H diag(q) H^H + sigma^2 I`` with mic-noise variance
  ``sigma^2 = sum_j q_j * U(1e-5, 0.1)``.
* ``B``-snapshot estimate (mode ``wishart``): ``C_hat = W / B`` with ``W ~ CWishart_M(B, C)``,
  i.e. the law of ``(L A)(L A)^H`` with ``L = chol(C)`` and ``A`` an ``M x B`` matrix of
  CN(0, 1) entries. For ``B >= M`` it is drawn through the complex Bartlett decomposition
  ``W = (L T)(L T)^H``, ``T`` lower triangular with ``|T_ii|^2 ~ Gamma(B - i, 1)``
  (``i = 0..M-1``) and ``T_ij ~ CN(0, 1)`` below the diagonal: the same distribution at
  ``O(M^3)`` instead of ``O(M^2 B)`` cost. For ``B < M`` ``A`` is drawn directly.

Several frequencies (``dataset.frequency=[1000, 2000, 4000]``): every sample keeps its sources,
strengths and noise variance at all ``F`` lines and is stored as ``(F, M, M)``, so a file holds
``(N, F, M, M)`` with the line frequencies in its dataset ``f`` (``CsmH5Writer``).

Randomness: per-sample parameters come from ``default_rng([seed, 0])`` for the whole set,
Wishart noise from ``default_rng([seed, 1, block])`` per block of ``BLOCK`` samples (line
``k > 0`` of a multi-line set: ``[seed, 1, block, k]``), so a set is a pure function of its
parameters.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from gan_cli.core.errors import ConfigError

import warnings

import numpy as np

from gan_cli.data.csm_geometry import array_aperture, validate_geometry
from gan_cli.data.csm_io import CsmH5Writer, canonical_eig

BLOCK = 256            # samples per vectorised block (fixed: part of the RNG layout)
SOURCE_STD = 0.1688    # x, y standard deviation / aperture
SOURCE_BOUND = 0.5     # |x|, |y| <= bound * aperture
PLANE_Z = 0.5          # source plane z / aperture
POISSON_MU = 3.0
STRENGTH_SIGMA = 5.0   # Rayleigh sigma of q = p^2
NOISE_RANGE = (1e-5, 0.1)
MODES = ("analytic", "wishart")
DEFAULT_HELMHOLTZ = 4.0625   # Fragnière's (2022) He, used when neither dataset.helmholtz nor dataset.frequency is set
POSITION_SUFFIXES = (".npy", ".csv", ".txt")


@dataclass(frozen=True)
class SimParams:
    """Generation parameters (the ``conf/dataset/csm.yaml`` keys that shape the data).

    array: acoular geometry name (``tub_vogel64``, ``minidsp_uma-16``, any file in acoular's
        ``xml/`` folder), a path to an XML file with ``<pos Name x y z>`` elements or to a
        positions file (``.npy``, ``.csv``, ``.txt``: M rows of x y [z]), or the positions
        themselves (a tuple of ``(x, y[, z])`` rows; see ``load_mic_positions``).
    aperture: rescale the geometry to this aperture in m (max pairwise mic distance);
        None keeps the file's size.
    helmholtz: He = f * aperture / c, used when ``frequency`` is None; a tuple gives several lines.
    frequency: Hz (overrides helmholtz); a tuple of ``F`` values simulates ``F`` frequency
        lines per sample (the same sources at every line, see ``CsmSimulator``).
    """

    array: Any = "tub_vogel64"
    aperture: float | None = 1.0
    helmholtz: Any = DEFAULT_HELMHOLTZ
    frequency: Any = None
    c: float = 343.0
    mode: str = "wishart"
    snapshots: int = 1070
    num_samples: int = 2000
    max_sources: int = 10
    reference_mic: int | None = None
    seed: int = 0

    @classmethod
    def from_mapping(cls, cfg: Any) -> "SimParams":
        """Typed parameters from a mapping with the simulation keys (a csm dataset config or the
        constructor's keywords); a value of the wrong type is a one-line ConfigError naming the key."""
        def typed(key: str, typ: type, allow_none: bool = False):
            val = cfg.get(key)
            if val is None and allow_none:
                return None
            try:
                if typ is int and (isinstance(val, bool) or float(val) != int(float(val))):
                    raise ValueError
                return typ(val)
            except (TypeError, ValueError):
                kind = {int: "an integer", float: "a number", str: "a string"}[typ]
                raise ConfigError(f"dataset.{key}={val!r} must be {kind}{' or null' if allow_none else ''}") from None

        def lines(key: str, default: Any):
            """A number, a list of numbers (several frequency lines; one entry = a number) or null."""
            val = cfg.get(key)
            if val is None:
                return default
            if isinstance(val, (str, bytes)) or not hasattr(val, "__len__"):
                return typed(key, float)
            try:
                vals = tuple(float(v) for v in val if not isinstance(v, bool))
                if len(vals) != len(val) or not vals:
                    raise ValueError
            except (TypeError, ValueError):
                raise ConfigError(f"dataset.{key}={list(val)!r} must be a number or a non-empty list of numbers") from None
            return vals[0] if len(vals) == 1 else vals

        return cls(array=array_spec(cfg.get("array")), aperture=typed("aperture", float, True),
                   helmholtz=lines("helmholtz", DEFAULT_HELMHOLTZ), frequency=lines("frequency", None),
                   c=typed("c", float), mode=typed("mode", str), snapshots=typed("snapshots", int),
                   num_samples=typed("num_samples", int), max_sources=typed("max_sources", int),
                   reference_mic=typed("reference_mic", int, True), seed=typed("seed", int))

    def validate(self) -> None:
        """Raise ConfigError on out-of-range values."""
        if self.mode not in MODES:
            raise ConfigError(f"dataset.mode={self.mode!r} is invalid; use one of {', '.join(MODES)}")
        if self.num_samples < 1:
            raise ConfigError(f"dataset.num_samples={self.num_samples} must be >= 1")
        if self.snapshots < 1:
            raise ConfigError(f"dataset.snapshots={self.snapshots} must be >= 1 (AcouPipe uses 1070)")
        if not 1 <= self.max_sources <= 64:
            raise ConfigError(f"dataset.max_sources={self.max_sources} must be in [1, 64]")
        if self.c <= 0:
            raise ConfigError(f"dataset.c={self.c} must be > 0 (speed of sound in m/s)")
        if self.frequency is None and not min(np.atleast_1d(self.helmholtz)) > 0:
            raise ConfigError(f"dataset.helmholtz={self.helmholtz} must be > 0 (or set dataset.frequency)")
        if self.frequency is not None and not min(np.atleast_1d(self.frequency)) > 0:
            raise ConfigError(f"dataset.frequency={self.frequency} must be > 0 Hz (or null to use helmholtz)")
        if self.array is None:
            raise ConfigError("dataset.array=null gives no microphone positions to simulate; name an acoular "
                              "geometry (tub_vogel64, minidsp_uma-16, ...), a positions file or a list of [x, y, z]")
        if self.aperture is not None and not self.aperture > 0:
            raise ConfigError(f"dataset.aperture={self.aperture} must be > 0 m (or null to keep the file's size)")


# --------------------------------------------------------------------------- geometry
def _acoular():
    """acoular, imported on first use: its import takes ~2 s, and training on an already simulated
    (cached) set needs none of it before the first evaluation."""
    # acoular would rather be imported before numpy (numba/OpenBLAS threading); after numpy it only
    # falls back to serial numba, which is fine for this module's small transfer/beamforming jobs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="We detected that Numpy is already loaded")
        import acoular
    return acoular


def acoular_xml_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("acoular")  # the package folder, without importing it
    return Path(next(iter(spec.submodule_search_locations))) / "xml"


def resolve_array(array: str) -> Path:
    """Geometry name or path -> XML path; ConfigError listing acoular's geometries if unknown."""
    p = Path(os.path.expanduser(str(array)))
    if p.suffix.lower() == ".xml" and p.is_file():
        return p
    for cand in (acoular_xml_dir() / f"{array}.xml", acoular_xml_dir() / str(array)):
        if cand.is_file():
            return cand
    names = sorted(x.stem for x in acoular_xml_dir().glob("*.xml"))
    raise ConfigError(f"unknown microphone array {array!r}; use a path to an XML geometry or positions file "
                      f"(.npy/.csv/.txt), a list of [x, y, z], or one of: {', '.join(names)}")


def array_spec(val: Any) -> Any:
    """``dataset.array`` as given -> a string (name or path), None, or a tuple of ``(x, y[, z])`` rows."""
    if val is None or isinstance(val, str):
        return val
    try:
        rows = tuple(tuple(float(v) for v in row) for row in val)
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.array={val!r} must be an acoular geometry name, a file path or a list of "
                          "[x, y, z] microphone positions in m") from None
    return rows


def array_label(array: Any) -> str:
    """Short description of ``dataset.array`` for messages and file attributes."""
    if isinstance(array, tuple):
        return f"{len(array)} inline positions"
    return str(array)


def array_file(array: Any) -> str:
    """File name of the geometry ``dataset.array`` names (``"inline"`` for a list of positions)."""
    if isinstance(array, tuple):
        return "inline"
    if Path(str(array)).suffix.lower() in POSITION_SUFFIXES:
        return Path(str(array)).name
    return resolve_array(array).name


def read_positions(array: Any) -> np.ndarray | None:
    """Positions ``(M, 3)`` from an inline list or a ``.npy``/``.csv``/``.txt`` file (``M x 2`` rows get
    ``z = 0``); None when ``array`` names an acoular geometry or an XML file instead."""
    if isinstance(array, tuple):
        where = "dataset.array"
        pos = array
    else:
        p = Path(os.path.expanduser(str(array)))
        if p.suffix.lower() not in POSITION_SUFFIXES:
            return None
        where = f"microphone positions file {p}"
        if not p.is_file():
            raise ConfigError(f"{where} does not exist; check dataset.array")
        try:
            if p.suffix.lower() == ".npy":
                pos = np.load(p, allow_pickle=False)
            else:
                pos = np.loadtxt(p, delimiter="," if p.suffix.lower() == ".csv" else None, ndmin=2)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {where} ({str(exc).splitlines()[0][:120]}); write M rows of x y [z] in m") from None
    try:
        pos = np.asarray(pos, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} is not a table of numbers; give M rows of x y [z] in m") from None
    if pos.ndim != 2 or pos.shape[1] not in (2, 3) or pos.shape[0] < 2:
        raise ConfigError(f"{where} has shape {pos.shape}; give M >= 2 rows of x y [z] in m (M x 3 or M x 2)")
    if pos.shape[1] == 2:
        pos = np.concatenate([pos, np.zeros((pos.shape[0], 1))], axis=1)
    return pos


def load_mic_positions(array: Any, aperture: float | None = 1.0) -> np.ndarray:
    """Microphone positions ``(M, 3)`` in m, scaled to ``aperture`` (None keeps the given size).

    ``array``: an acoular geometry name or XML file, a ``.npy``/``.csv``/``.txt`` file or an inline
    list of ``M`` rows ``(x, y[, z])`` (``array_spec``)."""
    array = array_spec(array)
    if array is None:
        raise ConfigError("dataset.array is null; name the microphone array (an acoular geometry, a positions file or a list of [x, y, z])")
    pos = read_positions(array)
    if pos is not None:
        validate_geometry(pos, where=f"microphone geometry {array_label(array)}")
        return pos * (aperture / array_aperture(pos)) if aperture is not None else pos
    path = resolve_array(array)
    acoular = _acoular()
    from traits.observation.api import pop_exception_handler, push_exception_handler

    # acoular parses the file in a traits change handler, whose errors traits would print as a
    # traceback and swallow; re-raised here, they become the one-line error below
    push_exception_handler(lambda *args: None, reraise_exceptions=True)
    try:
        mg = acoular.MicGeom(file=str(path))
        pos = np.asarray(mg.pos, dtype=np.float64).T
    except Exception as exc:
        raise ConfigError(f"cannot read microphone geometry {path} ({type(exc).__name__}); pass an acoular XML file with <pos Name x y z> elements") from None
    finally:
        pop_exception_handler()
    if pos.shape[0] < 2:
        raise ConfigError(f"microphone geometry {path} has {pos.shape[0]} microphone(s); need at least 2")
    validate_geometry(pos, where=f"microphone geometry {path}")
    if aperture is not None:
        pos = pos * (aperture / array_aperture(pos))
    return pos


def transfer(mic_positions: np.ndarray, sources: np.ndarray, frequency: float, c: float,
             reference_mic: int) -> np.ndarray:
    """acoular monopole transfer ``(P, M)`` complex from ``sources (P, 3)`` to the mics.

    Normalised to the reference microphone: ``transfer[:, reference_mic] == 1``.
    """
    acoular = _acoular()
    mics = acoular.MicGeom(pos_total=np.ascontiguousarray(mic_positions.T))
    grid = acoular.ImportGrid(pos=np.ascontiguousarray(sources.T, dtype=np.float64))
    steer = acoular.SteeringVector(grid=grid, mics=mics, ref=mic_positions[reference_mic],
                                   env=acoular.Environment(c=c))
    return np.asarray(steer.transfer(frequency))


# --------------------------------------------------------------------------- simulation
class CsmSimulator:
    """Vectorised generator of CSM sets; see the module docstring for the model."""

    def __init__(self, params: SimParams):
        params.validate()
        self.params = params
        self.mic_positions = load_mic_positions(params.array, params.aperture)
        self.num_mics = m = self.mic_positions.shape[0]
        ref = m - 1 if params.reference_mic is None else int(params.reference_mic)
        if not 0 <= ref < m:
            raise ConfigError(f"dataset.reference_mic={params.reference_mic} is out of range for {m} microphones; use 0..{m - 1} or null (= {m - 1})")
        self.reference_mic = ref
        self.aperture = array_aperture(self.mic_positions)
        given = params.frequency if params.frequency is not None else params.helmholtz
        scale = 1.0 if params.frequency is not None else params.c / self.aperture
        # the frequency of every line (Hz); ``frequency`` is the only one of a one-line set, else None
        self.frequencies = [float(x) * scale for x in np.atleast_1d(given)]
        self.frequency = self.frequencies[0] if len(self.frequencies) == 1 else None

    def attrs(self) -> dict[str, Any]:
        """HDF5 attributes describing the set."""
        p = asdict(self.params)
        he = [f * self.aperture / self.params.c for f in self.frequencies]
        array = self.params.array
        p.update(frequency=self.frequency, reference_mic=self.reference_mic, aperture=self.aperture,
                 helmholtz=he[0] if len(he) == 1 else np.asarray(he), array=array_label(array),
                 num_lines=len(self.frequencies),
                 source_std=SOURCE_STD, source_bound=SOURCE_BOUND, plane_z=PLANE_Z,
                 poisson_mu=POISSON_MU, strength_sigma=STRENGTH_SIGMA, noise_min=NOISE_RANGE[0],
                 noise_max=NOISE_RANGE[1], num_mics=self.num_mics,
                 array_file=array_file(array),
                 steering="acoular SteeringVector.transfer, monopole, ref = reference mic position",
                 strength_unit="Pa^2 at the reference mic")
        return p

    def draw_sources(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample source layout for the whole set.

        Returns ``num (N,) int, loc (N, J_max, 3) NaN-padded, q (N, J_max) NaN-padded,
        noise_var (N,)``.
        """
        p, n, jmax, ap = self.params, self.params.num_samples, self.params.max_sources, self.aperture
        rng = np.random.default_rng([p.seed, 0])
        num = np.minimum(rng.poisson(POISSON_MU, n) + 1, jmax)
        xy = np.clip(rng.normal(0.0, SOURCE_STD * ap, (n, jmax, 2)), -SOURCE_BOUND * ap, SOURCE_BOUND * ap)
        q = rng.rayleigh(STRENGTH_SIGMA, (n, jmax))
        noise_frac = rng.uniform(*NOISE_RANGE, n)
        valid = np.arange(jmax)[None, :] < num[:, None]
        loc = np.concatenate([xy, np.full((n, jmax, 1), PLANE_Z * ap)], axis=-1)
        loc[~valid] = np.nan
        q = np.where(valid, q, np.nan)
        noise_var = np.nansum(q, axis=1) * noise_frac
        return num, loc, q, noise_var

    def exact_csm(self, loc: np.ndarray, q: np.ndarray, noise_var: np.ndarray,
                  frequency: float | None = None) -> np.ndarray:
        """``C = H diag(q) H^H + sigma^2 I``: ``(n, M, M)`` complex128 from NaN-padded inputs, at
        ``frequency`` (default: the set's first line)."""
        n, jmax = q.shape
        valid = ~np.isnan(q)
        h = np.zeros((n, jmax, self.num_mics), np.complex128)
        freq = self.frequencies[0] if frequency is None else float(frequency)
        if valid.any():
            h[valid] = transfer(self.mic_positions, loc[valid], freq, self.params.c, self.reference_mic)
        g = h * np.sqrt(np.where(valid, q, 0.0))[..., None]            # (n, J, M)
        c = np.swapaxes(g, -1, -2) @ g.conj()                          # sum_j q_j h_j h_j^H (n, M, M)
        c[:, np.arange(self.num_mics), np.arange(self.num_mics)] += noise_var[:, None]
        return c

    def wishart(self, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One ``B``-snapshot estimate per exact CSM ``c (n, M, M)`` (see module docstring)."""
        n, m = c.shape[0], c.shape[-1]
        b = self.params.snapshots
        chol = np.linalg.cholesky(c)
        if b >= m:
            # complex Bartlett factor: CN(0,1) strictly below the diagonal, sqrt(Gamma(B - i)) on it
            t = (rng.standard_normal((n, m, m)) + 1j * rng.standard_normal((n, m, m))) * np.sqrt(0.5)
            t = np.tril(t, -1)
            t[:, np.arange(m), np.arange(m)] = np.sqrt(rng.gamma(b - np.arange(m), 1.0, (n, m)))
        else:
            t = (rng.standard_normal((n, m, b)) + 1j * rng.standard_normal((n, m, b))) * np.sqrt(0.5)
        x = chol @ t
        return (x @ np.conj(np.swapaxes(x, -1, -2))) / b

    def blocks(self, progress: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Yield blocks ``{start, csm (n,M,M) c128, eigenvalues, eigenvectors, loc, num_sources, strength}``.

        With ``F > 1`` frequencies ``csm`` is ``(n, F, M, M)`` (eigenvalues ``(n, F, M)``): the same
        sources, strengths and noise variance at every line, an independent Wishart draw per line
        (line 0 from the one-line seed ``[seed, 1, block]``, line ``k > 0`` from ``[seed, 1, block, k]``)."""
        from tqdm.auto import tqdm

        num, loc, q, noise_var = self.draw_sources()
        n = self.params.num_samples
        bar = tqdm(total=n, unit="CSM", desc=f"simulating {self.params.mode} CSMs", disable=not progress,
                   dynamic_ncols=True, leave=False)
        try:
            for bi, start in enumerate(range(0, n, BLOCK)):
                sl = slice(start, min(n, start + BLOCK))
                per_line = []
                for k, freq in enumerate(self.frequencies):
                    c = self.exact_csm(loc[sl], q[sl], noise_var[sl], freq)
                    if self.params.mode == "wishart":
                        c = self.wishart(c, np.random.default_rng([self.params.seed, 1, bi] + ([k] if k else [])))
                    per_line.append(c)
                c = per_line[0] if len(per_line) == 1 else np.stack(per_line, axis=1)
                w, v = canonical_eig(c, self.reference_mic)
                yield dict(start=start, csm=c, eigenvalues=w, eigenvectors=v, loc=loc[sl],
                           num_sources=num[sl], strength=q[sl])
                bar.update(c.shape[0])
        finally:
            bar.close()

    def simulate(self, progress: bool = False) -> dict[str, np.ndarray]:
        """The whole set in memory (small sets/tests): same keys as ``blocks`` minus ``start``."""
        parts = list(self.blocks(progress))
        keys = ("csm", "eigenvalues", "eigenvectors", "loc", "num_sources", "strength")
        return {k: np.concatenate([p[k] for p in parts]) for k in keys}

    def write(self, path: str | os.PathLike, force: bool = False, progress: bool = True,
              atomic: bool = True) -> Path:
        """Simulate block by block into ``path`` (project HDF5 layout; atomic unless ``atomic=False``,
        for a caller that writes to a temporary name itself, see ``CsmH5Writer``)."""
        p = self.params
        with CsmH5Writer(path, p.num_samples, self.num_mics, reference_mic=self.reference_mic,
                         j_max=p.max_sources, mic_positions=self.mic_positions, attrs=self.attrs(),
                         force=force, atomic=atomic,
                         frequencies=self.frequencies if len(self.frequencies) > 1 else None) as wr:
            for blk in self.blocks(progress):
                wr.write(blk["start"], blk["csm"], (blk["eigenvalues"], blk["eigenvectors"]),
                         blk["loc"], blk["num_sources"], blk["strength"])
        return Path(path)
