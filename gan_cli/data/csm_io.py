"""Cross-spectral matrix (CSM) conversions and file I/O.

Everything here is batched numpy; shapes use ``N`` samples and ``M`` microphones.

* ``csm_to_csmtriu`` / ``csmtriu_to_csm``: the compressed real form of a Hermitian CSM
  (Fragnière 2022, AcouPipe): ``T[i, j] = Re C[i, j]`` for ``i <= j`` and ``T[j, i] = Im C[i, j]``
  for ``i < j``.
* ``canonical_eig``: eigenvalues descending, each eigenvector column rotated so that its
  reference-microphone entry is real and >= 0.
* ``write_csm_h5`` / ``read_csm_file``: this project's HDF5 layout (documented in the
  docs/csm.md, "HDF5 layout"), AcouPipe's per-sample-group HDF5 layout and AcouPipe TFRecords.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gan_cli.core.errors import DataError

FORMAT_NAME = "gan-cli-csm"
# 2: files carry ``complete`` and ``checksums`` (sha256 of each dataset's stored bytes), checked on read
FORMAT_VERSION = 2
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


# --------------------------------------------------------------------------- conversions
def csm_to_csmtriu(csm: np.ndarray) -> np.ndarray:
    """Complex Hermitian CSMs ``(..., M, M)`` -> real csmtriu ``(..., M, M)`` float32.

    Upper triangle incl. diagonal: ``Re C``; strictly lower ``[j, i]``: ``Im C[i, j]`` (i < j).
    """
    csm = np.asarray(csm)
    m = csm.shape[-1]
    upper = np.triu(np.ones((m, m), dtype=bool))
    strict_upper = np.triu(np.ones((m, m), dtype=bool), 1)
    re = np.where(upper, csm.real, 0.0)
    im_up = np.where(strict_upper, csm.imag, 0.0)
    return (re + np.swapaxes(im_up, -1, -2)).astype(np.float32)


def csmtriu_to_csm(triu: np.ndarray) -> np.ndarray:
    """Real csmtriu ``(..., M, M)`` -> complex Hermitian CSMs ``(..., M, M)`` complex128.

    The diagonal is real by construction; ``C[j, i] = conj(C[i, j])``.
    """
    t = np.asarray(triu, dtype=np.float64)
    m = t.shape[-1]
    upper = np.triu(np.ones((m, m), dtype=bool))
    strict_upper = np.triu(np.ones((m, m), dtype=bool), 1)
    re_up = np.where(upper, t, 0.0)                               # Re C[i, j], i <= j
    im_up = np.where(strict_upper, np.swapaxes(t, -1, -2), 0.0)   # Im C[i, j], i < j
    c_up = re_up + 1j * im_up
    c_strict = np.where(strict_upper, c_up, 0.0)
    return c_up + np.conj(np.swapaxes(c_strict, -1, -2))


def fmt_hz(x: float) -> str:
    """A frequency in Hz as written in messages and metric names: up to 10 significant digits (1071.875)."""
    return f"{float(x):.10g}"


def realimag_to_complex(x: np.ndarray) -> np.ndarray:
    """``(..., 2)`` float [re, im] -> ``(...)`` complex."""
    return x[..., 0] + 1j * x[..., 1]


def canonical_eig(csm: np.ndarray, reference_mic: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical eigendecomposition of Hermitian CSMs ``(N, M, M)``.

    Returns ``(eigenvalues (N, M) float64, descending; eigenvectors (N, M, M) complex128)``
    with ``C = V diag(lambda) V^H``; column ``V[:, :, j]`` belongs to ``lambda[:, j]`` and is
    rotated by a unit phase so that ``V[:, reference_mic, j]`` is real and >= 0 (columns whose
    reference entry is numerically zero keep the phase ``eigh`` gave them).
    """
    csm = np.asarray(csm)
    w, v = np.linalg.eigh(csm.astype(np.complex128, copy=False))  # ascending
    w = w[..., ::-1]
    v = v[..., ::-1]
    return w, canonical_phase(v, reference_mic)


def canonical_phase(v: np.ndarray, reference_mic: int) -> np.ndarray:
    """Rotate each column of ``v`` ``(N, M, K)`` so its ``reference_mic`` row is real >= 0."""
    ref = v[..., reference_mic, :]                     # (N, K)
    mag = np.abs(ref)
    phase = np.where(mag > 1e-12, np.conj(ref) / np.maximum(mag, 1e-300), 1.0)
    out = v * phase[..., None, :]
    # remove the rounding residue so the reference entries are exactly real
    out[..., reference_mic, :] = np.abs(out[..., reference_mic, :])
    return out


# --------------------------------------------------------------------------- container
@dataclass
class CsmData:
    """CSM samples read from a file.

    Attributes:
        csm: ``(N, M, M)`` complex128 Hermitian CSMs (Pa^2), unnormalised.
        eigenvalues / eigenvectors: canonical eigendecomposition when the file stores it
            (this project's layout), else None (computed by the caller).
        loc: ``(N, J_max, 3)`` source positions (NaN padded) or None.
        num_sources: ``(N,)`` int or None; strength: ``(N, J_max)`` squared source
            pressure at the reference mic (Pa^2, NaN padded) or None.
        mic_positions: ``(M, 3)`` or None (AcouPipe files do not store the geometry).
        attrs: file attributes (``frequency``, ``c``, ``reference_mic`` ...), may be empty.
        source_format: ``"gan-cli"``, ``"acoupipe-h5"`` or ``"acoupipe-tfrecord"``.
        num_lines: ``F``, the number of frequency lines per sample in the file.
        file_frequencies: ``(F,)`` Hz of every line in the file (AcouPipe ``f``, a gan-cli file's
            ``f`` dataset or ``frequency`` attribute), or None when the file does not say.
        lines: the file's line indices that were read (``freq_index`` resolved).
        labels: ``(N,)`` int, position of each sample's line in ``lines``, when several lines
            were asked for (``freq_index`` a list or ``"all"``; samples are then sample-major:
            row ``i * L + k`` is sample ``i`` at line ``lines[k]``), else None.
    """

    csm: np.ndarray
    eigenvalues: np.ndarray | None = None
    eigenvectors: np.ndarray | None = None
    loc: np.ndarray | None = None
    num_sources: np.ndarray | None = None
    strength: np.ndarray | None = None
    mic_positions: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    source_format: str = "gan-cli"
    num_lines: int = 1
    file_frequencies: np.ndarray | None = None
    lines: list[int] = field(default_factory=lambda: [0])
    labels: np.ndarray | None = None

    @property
    def frequencies(self) -> np.ndarray | None:
        """``(L,)`` Hz of the lines read (``file_frequencies[lines]``), or None."""
        return None if self.file_frequencies is None else np.asarray(self.file_frequencies)[self.lines]


# --------------------------------------------------------------------------- writer
class CsmH5Writer:
    """Incremental, atomic writer of this project's HDF5 layout.

    Opens a unique temporary name beside ``path`` (``gan_cli.data.cache.temp_path``), preallocates
    chunked datasets for ``n`` samples of ``m`` mics, accepts blocks with ``write(start, csm, ...)``
    and on ``close()`` stores each dataset's sha256 and ``complete = 1``, fsyncs and renames to
    ``path`` (the temporary file is removed on ``abort()`` or an exception inside ``with``).
    ``atomic=False`` writes ``path`` itself (for a caller that already writes to a temporary name).
    Refuses to overwrite an existing ``path`` unless ``force``.

    ``frequencies`` with ``F > 1`` entries writes the multi-line layout: ``csm``/``csmtriu``/
    ``eigenvectors`` ``(N, F, M, M)``, ``eigenvalues`` ``(N, F, M)`` (line ``k`` at ``f[k]`` Hz) and
    the dataset ``f`` ``(F,)``; ``write`` then takes ``csm`` ``(n, F, M, M)``.
    """

    def __init__(self, path: str | os.PathLike, n: int, m: int, *, reference_mic: int,
                 j_max: int | None = None, mic_positions: np.ndarray | None = None,
                 attrs: dict[str, Any] | None = None, force: bool = False, chunk: int = 64,
                 atomic: bool = True, frequencies: Any = None):
        import h5py

        from gan_cli.data.cache import temp_path

        self.path = Path(path)
        if self.path.exists() and not force:
            raise DataError(f"{self.path} already exists; pass --force to overwrite it or choose another -o FILE")
        self.atomic = atomic
        self.tmp = temp_path(self.path) if atomic else self.path
        self.reference_mic = int(reference_mic)
        self.frequencies = None if frequencies is None else np.atleast_1d(np.asarray(frequencies, np.float64))
        ch = max(1, min(chunk, n))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.tmp, "w")
        except BaseException as exc:  # (a signal can arrive after the file exists, before h5py returns)
            self._remove_tmp()
            if isinstance(exc, OSError):
                raise DataError(f"cannot write {self.tmp} ({str(exc).splitlines()[0]}); choose a writable -o path "
                                "(or GAN_CLI_DATA folder) with free space") from None
            raise
        try:
            self._layout(n, m, ch, j_max, mic_positions, attrs)
        except BaseException:
            self.abort()
            raise

    def _layout(self, n: int, m: int, ch: int, j_max: int | None, mic_positions: np.ndarray | None,
                attrs: dict[str, Any] | None) -> None:
        """Preallocate the chunked datasets and write the attributes."""
        f = self.f
        lines = () if self.frequencies is None or self.frequencies.size == 1 else (self.frequencies.size,)
        f.create_dataset("csm", (n, *lines, m, m), np.complex64, chunks=(ch, *lines, m, m))
        f.create_dataset("csmtriu", (n, *lines, m, m), np.float32, chunks=(ch, *lines, m, m))
        f.create_dataset("eigenvalues", (n, *lines, m), np.float32, chunks=(ch, *lines, m))
        f.create_dataset("eigenvectors", (n, *lines, m, m), np.complex64, chunks=(ch, *lines, m, m))
        if lines:
            f.create_dataset("f", data=self.frequencies)
        if j_max is not None:
            f.create_dataset("loc", (n, j_max, 3), np.float32, chunks=(ch, j_max, 3), fillvalue=np.nan)
            f.create_dataset("num_sources", (n,), np.int32, chunks=(ch,))
            f.create_dataset("strength", (n, j_max), np.float32, chunks=(ch, j_max), fillvalue=np.nan)
        if mic_positions is not None:
            f.create_dataset("mic_positions", data=np.asarray(mic_positions, np.float64))
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["reference_mic"] = self.reference_mic
        for key, val in (attrs or {}).items():
            f.attrs[key] = "null" if val is None else val

    def write(self, start: int, csm: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None,
              loc: np.ndarray | None = None, num_sources: np.ndarray | None = None,
              strength: np.ndarray | None = None) -> None:
        """Store samples ``start : start + len(csm)``; computes ``canonical_eig`` when ``eig`` is None."""
        sl = slice(start, start + csm.shape[0])
        w, v = eig if eig is not None else canonical_eig(csm, self.reference_mic)
        f = self.f
        f["csm"][sl] = csm.astype(np.complex64)
        f["csmtriu"][sl] = csm_to_csmtriu(csm)
        f["eigenvalues"][sl] = np.asarray(w, np.float32)
        f["eigenvectors"][sl] = np.asarray(v, np.complex64)
        if loc is not None and "loc" in f:
            f["loc"][sl] = np.asarray(loc, np.float32)
        if num_sources is not None and "num_sources" in f:
            f["num_sources"][sl] = np.asarray(num_sources, np.int32)
        if strength is not None and "strength" in f:
            f["strength"][sl] = np.asarray(strength, np.float32)

    def close(self) -> Path:
        from gan_cli.data.cache import commit, fsync_path

        try:
            self.f.attrs["checksums"] = json.dumps(dataset_checksums(self.f), sort_keys=True)
            self.f.attrs["complete"] = 1
        except BaseException:
            self.abort()
            raise
        self.f.close()
        if self.atomic:
            commit(self.tmp, self.path)
        else:
            fsync_path(self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass

    def __enter__(self) -> "CsmH5Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_csm_h5(path: str | os.PathLike, csm: np.ndarray, *, reference_mic: int,
                 mic_positions: np.ndarray | None = None, loc: np.ndarray | None = None,
                 num_sources: np.ndarray | None = None, strength: np.ndarray | None = None,
                 attrs: dict[str, Any] | None = None, force: bool = False,
                 eig: tuple[np.ndarray, np.ndarray] | None = None, frequencies: Any = None) -> Path:
    """Write in-memory CSMs ``(N, M, M)``, or ``(N, F, M, M)`` at the ``F`` ``frequencies`` (Hz),
    and optional labels in this project's layout, atomically."""
    csm = np.asarray(csm)
    lines = 1 if csm.ndim == 3 else (csm.shape[1] if csm.ndim == 4 else 0)
    if lines == 0 or csm.shape[-1] != csm.shape[-2] or csm.shape[0] == 0:
        raise DataError(f"cannot write CSMs of shape {csm.shape}; expected (N, M, M) or (N, F, M, M) with N > 0")
    if lines > 1 and (frequencies is None or np.size(frequencies) != lines):
        raise DataError(f"cannot write CSMs of shape {csm.shape} without their {lines} line frequencies")
    j_max = None if loc is None else np.asarray(loc).shape[1]
    with CsmH5Writer(path, csm.shape[0], csm.shape[-1], reference_mic=reference_mic, j_max=j_max,
                     mic_positions=mic_positions, attrs=attrs, force=force,
                     frequencies=frequencies if lines > 1 else None) as wr:
        wr.write(0, csm, eig, loc, num_sources, strength)
    return Path(path)


# --------------------------------------------------------------------------- checks
CHECKSUM_CHUNK_BYTES = 64 << 20


def dataset_checksums(f) -> dict[str, str]:
    """sha256 of the stored bytes of every top-level dataset of the open HDF5 file ``f``, read in chunks,
    and (key ``attrs``) of its attributes other than ``checksums`` and ``complete``."""
    h = hashlib.sha256()
    for key in sorted(k for k in f.attrs.keys() if k not in ("checksums", "complete")):
        val = f.attrs[key]
        h.update(key.encode() + b"=")
        if isinstance(val, (str, bytes)):
            h.update(val.encode() if isinstance(val, str) else val)
        else:
            arr = np.asarray(val)
            h.update(arr.dtype.str.encode() + arr.tobytes())
        h.update(b";")
    out = {"attrs": h.hexdigest()}
    for name in sorted(f.keys()):
        d = f[name]
        if not hasattr(d, "shape"):
            continue
        h = hashlib.sha256()
        if d.shape == () or d.shape[0] == 0:
            h.update(np.asarray(d[()]).tobytes())
        else:
            row = max(1, int(np.prod(d.shape[1:])) * d.dtype.itemsize)
            step = max(1, CHECKSUM_CHUNK_BYTES // row)
            if d.chunks:
                step = max(d.chunks[0], step // d.chunks[0] * d.chunks[0])
            for i in range(0, d.shape[0], step):
                h.update(np.ascontiguousarray(d[i:i + step]).tobytes())
        out[name] = h.hexdigest()
    return out


def verify_csm_file(path: str | os.PathLike, checksums: bool = True) -> None:
    """Check a file in this project's layout before use; DataError (one line) when it fails.

    Checks the format version, the ``complete`` mark, (with ``checksums``) every dataset's sha256
    and the stored microphone geometry (``csm_sim.validate_geometry``). Files of format version 1
    (written before the checks existed) pass on the version and geometry checks alone; files in
    AcouPipe's layouts carry nothing to check and pass.
    """
    import h5py

    path = Path(path)
    if detect_format(path) != "hdf5":
        return
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot open {path} as HDF5 ({str(exc).splitlines()[0][:120]}); the file is truncated or corrupt, regenerate it") from None
    fix = "regenerate it with `gan data csm`"
    try:
        if f.attrs.get("format") != FORMAT_NAME:
            return
        version = int(f.attrs.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise DataError(f"{path} has format version {version}, newer than this gan-cli reads ({FORMAT_VERSION}); upgrade gan-cli")
        if version >= 2:
            if int(f.attrs.get("complete", 0)) != 1 or "checksums" not in f.attrs:
                raise DataError(f"{path} is incomplete (its writer stopped before the end); {fix}")
            if checksums:
                try:
                    stored = json.loads(f.attrs["checksums"])
                except ValueError:
                    raise DataError(f"{path}: its checksum record is unreadable; the file is corrupt, {fix}") from None
                actual = dataset_checksums(f)
                bad = sorted(k for k in set(stored) | set(actual) if stored.get(k) != actual.get(k))
                if bad:
                    raise DataError(f"{path}: dataset '{bad[0]}' fails its checksum; the file is corrupt, {fix}")
        if "mic_positions" in f:
            from gan_cli.data.csm_geometry import validate_geometry

            name = "csm" if "csm" in f else "csmtriu"
            m = int(f[name].shape[-1]) if name in f else None
            validate_geometry(np.asarray(f["mic_positions"], np.float64), expected_m=m, where=f"{path}: mic_positions")
    except DataError:
        raise
    except Exception as exc:  # h5py raises many types for corrupt files
        raise _data_error(path, exc) from exc
    finally:
        f.close()


# --------------------------------------------------------------------------- readers
def detect_format(path: Path) -> str:
    """``"hdf5"`` or ``"tfrecord"`` from the file's first bytes (and suffix as a hint)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); check that it is a readable file") from None
    if head == HDF5_SIGNATURE:
        return "hdf5"
    if len(head) < 8:
        raise DataError(f"{path} is empty or truncated ({len(head)} bytes); regenerate it with `gan data csm -o {path.name} --force`")
    if path.suffix.lower() in TFRECORD_SUFFIXES or _looks_like_tfrecord(path):
        return "tfrecord"
    raise DataError(f"{path} is neither HDF5 nor TFRecord; pass a .h5 file from `gan data csm` or AcouPipe, or an AcouPipe .tfrecord file")


def _looks_like_tfrecord(path: Path) -> bool:
    """A TFRecord starts with a uint64 record length, then 4 bytes CRC, then the record."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12:
        return False
    length = int.from_bytes(head[:8], "little")
    return 0 < length <= size - 16


def is_multi_line(freq_index: Any) -> bool:
    """True when ``freq_index`` asks for several lines (a list or ``"all"``), each a class label."""
    return not isinstance(freq_index, (int, np.integer))


def resolve_lines(path: Path, freq_index: Any, num_lines: int, freqs: np.ndarray | None = None) -> list[int]:
    """``freq_index`` (an int, a list of ints or ``"all"``) -> the file's line indices to read."""
    if isinstance(freq_index, str):
        return list(range(num_lines))
    idx = [int(freq_index)] if not is_multi_line(freq_index) else [int(i) for i in freq_index]
    bad = [i for i in idx if not 0 <= i < num_lines]
    if bad:
        hz = "" if freqs is None else " at " + ", ".join(fmt_hz(x) for x in freqs) + " Hz"
        raise DataError(f"{path}: dataset.freq_index={bad[0]} is out of range for the file's {num_lines} frequency "
                        f"line(s){hz}; use 0..{num_lines - 1}, a list of them, or all")
    return idx


def read_csm_file(path: str | os.PathLike, *, freq_index: Any = 0, num_mics_hint: int | None = None,
                  limit: int | None = None, num_lines_hint: int | None = None) -> CsmData:
    """Read CSMs from this project's HDF5, AcouPipe HDF5 or AcouPipe TFRecord (auto-detected).

    ``freq_index`` selects the frequency line(s) of files with ``F`` lines per sample: an int
    gives ``(N, M, M)``; a list or ``"all"`` gives ``(N * L, M, M)`` sample-major with ``labels``
    (see ``CsmData``). Flat TFRecord features of ``F*M*M`` values are resolved from the file's
    ``f`` feature (``F``), else ``num_lines_hint`` (``F``), else ``num_mics_hint`` (``M``), else as
    one square matrix. ``limit`` reads at most that many samples. Raises DataError on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check dataset.path or create one with `gan data csm -o {path.name}`")
    if path.is_dir():
        raise DataError(f"data path {path} is a folder; point dataset.path at a .h5 or .tfrecord file")
    kind = detect_format(path)
    try:
        if kind == "hdf5":
            return _read_h5(path, freq_index, limit)
        return _read_tfrecord(path, freq_index, num_mics_hint, limit, num_lines_hint)
    except DataError:
        raise
    except Exception as exc:  # h5py/TF raise many types for corrupt files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {msg[:160]}); the file is corrupt or truncated, regenerate or re-download it") from exc


def _read_h5(path: Path, freq_index: Any, limit: int | None) -> CsmData:
    """The whole file (up to ``limit`` samples) through ``CsmReader``, which detects the layout."""
    with CsmReader(path, freq_index=freq_index, limit=limit) as reader:
        if reader.num_samples == 0:
            raise DataError(f"{path} holds 0 samples; regenerate the file with num_samples > 0")
        return reader.read(slice(0, reader.num_samples))


def _check_square(path: Path, arr_shape: tuple[int, ...], what: str) -> None:
    if len(arr_shape) not in (3, 4) or arr_shape[-1] != arr_shape[-2] or arr_shape[-1] < 2:
        raise DataError(f"{path}: dataset '{what}' has shape {arr_shape}, expected (N, M, M) or (N, F, M, M) with M >= 2; "
                        "regenerate the file with `gan data csm`")
    if arr_shape[0] == 0 or (len(arr_shape) == 4 and arr_shape[1] == 0):
        raise DataError(f"{path}: dataset '{what}' holds 0 samples; regenerate the file with num_samples > 0")


def _sel_end(sel, total: int) -> int:
    """One past the last sample index a selection (slice with step 1, or sorted index array) reads."""
    if isinstance(sel, slice):
        return total if sel.stop is None else min(int(sel.stop), total)
    return int(sel[-1]) + 1 if len(sel) else 0


def _flatten_lines(x: np.ndarray | None, lines: list[int], multi: bool) -> np.ndarray | None:
    """``(n, F, ...)`` -> the chosen lines: ``(n, ...)`` for one line, ``(n * L, ...)`` sample-major for several."""
    if x is None:
        return None
    x = x[:, lines]
    return x.reshape((-1, *x.shape[2:])) if multi else x[:, 0]


def _repeat_rows(x: np.ndarray | None, times: int) -> np.ndarray | None:
    return x if x is None or times == 1 else np.repeat(x, times, axis=0)


def _project_frequencies(path: Path, f, num_lines: int) -> np.ndarray | None:
    """Line frequencies of this project's layout: the ``f`` dataset, else the ``frequency`` attribute (one line)."""
    if "f" in f:
        fr = np.atleast_1d(np.asarray(f["f"], np.float64))
        if fr.shape != (num_lines,):
            raise DataError(f"{path}: dataset 'f' has shape {fr.shape}, expected ({num_lines},) line frequencies; regenerate the file")
        return fr
    val = f.attrs.get("frequency")
    if num_lines == 1 and val is not None and not (isinstance(val, str) and val == "null"):
        return np.array([float(val)])
    return None


def _read_project_h5(path: Path, f, limit: int | None, sel=None, freq_index: Any = 0) -> CsmData:
    """Samples ``sel`` (default: the first ``limit``, or all) of this project's layout at lines ``freq_index``.

    ``csm`` is ``(N, M, M)`` (one line) or ``(N, F, M, M)`` (``F`` lines, frequencies in ``f``);
    the other per-line datasets (``eigenvalues``, ``eigenvectors``) carry the same line axis.
    """
    sl = sel if sel is not None else (slice(None) if limit is None else slice(0, int(limit)))
    name = "csm" if "csm" in f else "csmtriu"
    shape = f[name].shape
    _check_square(path, shape, name)
    num_lines = shape[1] if len(shape) == 4 else 1
    freqs = _project_frequencies(path, f, num_lines)
    lines = resolve_lines(path, freq_index, num_lines, freqs)
    multi = is_multi_line(freq_index)
    raw = np.asarray(f["csm"][sl], dtype=np.complex128) if name == "csm" else csmtriu_to_csm(f["csmtriu"][sl])
    if len(shape) == 3:
        raw = raw[:, None]
    csm = _flatten_lines(raw, lines, multi)
    n, m = raw.shape[0], raw.shape[-1]
    need = _sel_end(sl, shape[0])
    attrs = _project_attrs(f)
    line_tail = shape[1:-2]                       # () or (F,)

    def opt(name, shape_tail=None, dtype=None):
        if name not in f:
            return None
        d = f[name]
        if d.shape[0] < need or (shape_tail is not None and d.shape[1:] != shape_tail):
            raise DataError(f"{path}: dataset '{name}' has shape {d.shape}, inconsistent with csm {shape}; regenerate the file")
        return np.asarray(d[sl], dtype=dtype)

    def per_line(x):
        if x is None:
            return None
        return _flatten_lines(x if len(shape) == 4 else x[:, None], lines, multi)

    w = per_line(opt("eigenvalues", (*line_tail, m), np.float64))
    v = per_line(opt("eigenvectors", (*line_tail, m, m), np.complex128))
    mic = _project_mics(path, f, m)
    reps = len(lines) if multi else 1
    labels = np.tile(np.arange(len(lines)), n) if multi else None
    return CsmData(csm=csm, eigenvalues=w, eigenvectors=v, loc=_repeat_rows(opt("loc", dtype=np.float64), reps),
                   num_sources=_repeat_rows(opt("num_sources", dtype=np.int64), reps),
                   strength=_repeat_rows(opt("strength", dtype=np.float64), reps),
                   mic_positions=mic, attrs=attrs, source_format="gan-cli", num_lines=num_lines,
                   file_frequencies=freqs, lines=lines, labels=labels)


def _project_attrs(f) -> dict[str, Any]:
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return {k: (None if isinstance(v, str) and v == "null" else v) for k, v in attrs.items()}


def _project_mics(path: Path, f, m: int) -> np.ndarray | None:
    if "mic_positions" not in f:
        return None
    mic = np.asarray(f["mic_positions"], np.float64)
    if mic.shape != (m, 3):
        raise DataError(f"{path}: mic_positions has shape {mic.shape}, expected ({m}, 3); regenerate the file")
    return mic


def _as_lines(path: Path, arr: np.ndarray, what: str) -> np.ndarray:
    """One AcouPipe sample's feature -> complex CSMs ``(F, M, M)``.

    ``csmtriu``: real ``(F, M, M)``, ``(M, M)`` or either with a trailing axis of 1;
    ``csm``: complex ``(F, M, M)`` / ``(M, M)``, or real with a trailing [re, im] axis.
    """
    a = np.asarray(arr)
    if what == "csmtriu":
        if a.ndim >= 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1] != a.shape[2] or np.iscomplexobj(a):
            raise DataError(f"{path}: feature 'csmtriu' has shape {np.shape(arr)}, expected (F, M, M) real; the file is not an AcouPipe CSM file")
        return csmtriu_to_csm(a)
    if not np.iscomplexobj(a) and a.ndim >= 3 and a.shape[-1] == 2 and a.shape[-2] != 2:
        a = realimag_to_complex(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise DataError(f"{path}: feature 'csm' has shape {np.shape(arr)}, expected (F, M, M) complex; the file is not an AcouPipe CSM file")
    return a.astype(np.complex128)


def _check_f(path: Path, fr: np.ndarray | None, ref: np.ndarray | None, num_lines: int, where: str) -> np.ndarray | None:
    """A sample's ``f`` ``(F,)``: consistent with its CSM's line count and with the first sample's ``f``."""
    if fr is None:
        if ref is not None:
            raise DataError(f"{path}: {where} has no 'f' feature while the first sample has one; the file mixes data sets")
        return None
    fr = np.atleast_1d(np.asarray(fr, np.float64)).reshape(-1)
    if fr.size != num_lines:
        raise DataError(f"{path}: {where} has {fr.size} frequencies in 'f' but {num_lines} CSM line(s); the file is corrupt")
    if ref is not None and (fr.shape != ref.shape or not np.allclose(fr, ref, rtol=1e-6)):
        raise DataError(f"{path}: {where} has frequencies {fr.tolist()} in 'f', the first sample {ref.tolist()}; "
                        "use a file whose samples share their frequency lines")
    return fr


def _read_acoupipe_h5(path: Path, f, groups: list[str], freq_index: Any, limit: int | None) -> CsmData:
    if limit is not None:
        groups = groups[: int(limit)]
    multi = is_multi_line(freq_index)
    csms, locs, strengths = [], [], []
    ref_f = lines = None
    num_lines = 0
    for g in groups:
        grp = f[g]
        if "csmtriu" in grp:
            c = _as_lines(path, grp["csmtriu"][()], "csmtriu")
        elif "csm" in grp:
            c = _as_lines(path, grp["csm"][()], "csm")
        else:
            raise DataError(f"{path}: AcouPipe sample group '{g}' has no 'csmtriu' or 'csm' dataset; generate AcouPipe data with features csmtriu")
        if lines is None:
            num_lines = c.shape[0]
            ref_f = _check_f(path, grp["f"][()] if "f" in grp else None, None, num_lines, f"sample '{g}'")
            lines = resolve_lines(path, freq_index, num_lines, ref_f)
        elif c.shape[0] != num_lines:
            raise DataError(f"{path}: sample '{g}' has {c.shape[0]} frequency lines, the first sample {num_lines}; the file mixes data sets")
        else:
            _check_f(path, grp["f"][()] if "f" in grp else None, ref_f, num_lines, f"sample '{g}'")
        csms.append(c[lines])
        if "loc" in grp:
            loc = np.asarray(grp["loc"][()], np.float64)
            locs.append(loc.T if loc.ndim == 2 and loc.shape[0] in (2, 3) else loc)
        else:
            locs.append(None)
        if "source_strength_analytic" in grp:
            s = np.asarray(grp["source_strength_analytic"][()], np.float64)
            strengths.append(s[lines] if s.ndim == 2 and s.shape[0] == num_lines else np.broadcast_to(s, (len(lines), *np.shape(s)[-1:])))
        else:
            strengths.append(None)
    m = {c.shape[-1] for c in csms}
    if len(m) != 1:
        raise DataError(f"{path}: AcouPipe samples have different microphone counts {sorted(m)}; use a file from one array")
    csm = _flatten_lines(np.stack(csms).astype(np.complex128), list(range(len(lines))), multi)
    reps = len(lines) if multi else 1
    loc_arr = num = strength = None
    if all(x is not None for x in locs):
        jmax = max(x.shape[0] for x in locs)
        loc_arr = np.full((len(locs), jmax, 3), np.nan)
        for i, x in enumerate(locs):
            loc_arr[i, : x.shape[0], : x.shape[1]] = x
            if x.shape[1] == 2:
                loc_arr[i, : x.shape[0], 2] = np.nan
        num = np.array([x.shape[0] for x in locs])
    if all(x is not None for x in strengths):
        jmax = max(np.shape(x)[-1] for x in strengths)
        strength = np.full((len(strengths), len(lines), jmax), np.nan)
        for i, x in enumerate(strengths):
            strength[i, :, : np.shape(x)[-1]] = x
        strength = _flatten_lines(strength, list(range(len(lines))), multi)
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    labels = np.tile(np.arange(len(lines)), len(groups)) if multi else None
    return CsmData(csm=csm, loc=_repeat_rows(loc_arr, reps), num_sources=_repeat_rows(num, reps), strength=strength,
                   attrs=attrs, source_format="acoupipe-h5", num_lines=num_lines, file_frequencies=ref_f,
                   lines=lines, labels=labels)


def _read_tfrecord(path: Path, freq_index: Any, num_mics_hint: int | None, limit: int | None,
                   num_lines_hint: int | None = None) -> CsmData:
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path))
    if limit is not None:
        ds = ds.take(int(limit))
    records = [raw.numpy() for raw in ds]
    if not records:
        raise DataError(f"{path} holds no TFRecord examples; regenerate the file")
    return _read_tfrecord_bytes(path, records, freq_index, num_mics_hint, num_lines_hint)


def _tf_lines(path: Path, n: int, shape: tuple[int, ...] | None, num_f: int | None, m_hint: int | None,
              f_hint: int | None) -> tuple[int, int]:
    """``(F, M)`` of a flat feature of ``n`` (complex) values.

    From an explicit shape; else ``F`` from the sample's ``f`` (``num_f``) or ``f_hint`` and
    ``M = sqrt(n / F)``; else ``M`` = ``m_hint`` (the configured array) and ``F = n / M^2``;
    else one square matrix.
    """
    if shape is not None:
        if int(np.prod(shape)) != n or len(shape) < 2:
            raise DataError(f"{path}: csmtriu_shape {shape} does not match {n} values; the file is corrupt")
        if shape[-1] == 1 and len(shape) >= 3:   # (..., M, M, 1) as in the seed's (64, 64, 1)
            shape = shape[:-1]
        if shape[-1] != shape[-2]:
            raise DataError(f"{path}: csmtriu_shape {shape} is not (F, M, M); the file is not an AcouPipe CSM file")
        m = int(shape[-1])
        return n // (m * m), m
    lines = num_f if num_f is not None else f_hint
    if lines is not None:
        m = int(round(np.sqrt(n / lines))) if lines > 0 else 0
        if m < 2 or lines * m * m != n:
            src = "its 'f' feature" if num_f is not None else "dataset.frequency"
            raise DataError(f"{path}: {n} CSM values per sample are not {lines} line(s) of M x M (F = {lines} from {src}); "
                            + ("the file is corrupt" if num_f is not None else "set dataset.frequency to one value per line in the file"))
        return lines, m
    if m_hint and n % (m_hint * m_hint) == 0:
        return n // (m_hint * m_hint), int(m_hint)
    m = int(round(np.sqrt(n)))
    if m >= 2 and m * m == n:
        return 1, m
    raise DataError(f"{path}: {n} CSM values per sample are neither M*M nor F*M*M for the {m_hint} microphones of dataset.array, "
                    "and the file stores no frequencies ('f'); set dataset.array to the recording array")


def _tf_sample(path: Path, i: int, raw: bytes, m_hint: int | None, f_hint: int | None):
    """One serialised AcouPipe ``tf.train.Example`` -> ``(csm (F, M, M) complex, f (F,) or None)``."""
    import tensorflow as tf

    ex = tf.train.Example()
    ex.ParseFromString(raw)
    feats = ex.features.feature
    if "csmtriu" in feats:
        name = "csmtriu"
        vals = np.asarray(feats["csmtriu"].float_list.value, np.float64)
        n = vals.size
    elif "csm" in feats:
        name = "csm"
        flat = np.asarray(feats["csm"].float_list.value, np.float64)
        if flat.size % 2:
            raise DataError(f"{path}: TFRecord example {i} has {flat.size} values in 'csm', not [re, im] pairs; the file is corrupt")
        vals = flat[0::2] + 1j * flat[1::2]
        n = vals.size
    else:
        raise DataError(f"{path}: TFRecord example {i} has no 'csmtriu' feature (has {sorted(feats.keys())[:6]}); write AcouPipe TFRecords with feature csmtriu")
    fr = np.asarray(feats["f"].float_list.value, np.float64) if "f" in feats else None
    shape = tuple(int(s) for s in feats[f"{name}_shape"].int64_list.value) if f"{name}_shape" in feats else None
    num_lines, m = _tf_lines(path, n, shape, None if fr is None else fr.size, m_hint, f_hint)
    a = vals.reshape(num_lines, m, m)
    return (csmtriu_to_csm(a) if name == "csmtriu" else a), fr


def _read_tfrecord_bytes(path: Path, records, freq_index: Any, num_mics_hint: int | None,
                         num_lines_hint: int | None = None) -> CsmData:
    """Serialised AcouPipe ``tf.train.Example`` records -> ``CsmData`` at lines ``freq_index``."""
    csms = []
    ref_f = lines = None
    num_lines = 0
    for i, raw in enumerate(records):
        c, fr = _tf_sample(path, i, raw, num_mics_hint, num_lines_hint)
        if lines is None:
            num_lines = c.shape[0]
            ref_f = _check_f(path, fr, None, num_lines, f"example {i}")
            lines = resolve_lines(path, freq_index, num_lines, ref_f)
        elif c.shape[0] != num_lines or (csms and c.shape[-1] != csms[0].shape[-1]):
            raise DataError(f"{path}: example {i} has {c.shape[0]} line(s) of {c.shape[-1]} mics, the first example "
                            f"{num_lines} of {csms[0].shape[-1]}; the file mixes data sets")
        else:
            _check_f(path, fr, ref_f, num_lines, f"example {i}")
        csms.append(c[lines])
    multi = is_multi_line(freq_index)
    csm = _flatten_lines(np.stack(csms), list(range(len(lines))), multi)
    labels = np.tile(np.arange(len(lines)), len(records)) if multi else None
    return CsmData(csm=csm, source_format="acoupipe-tfrecord", num_lines=num_lines, file_frequencies=ref_f,
                   lines=lines, labels=labels)


# --------------------------------------------------------------------------- partial reads (streaming)
@dataclass
class CsmFileInfo:
    """Size of a CSM file from its shapes, without reading the data.

    ``num_samples`` is exact for HDF5 and estimated from the file size and the first record
    for TFRecord (``exact=False``); ``limit`` (``dataset.max_samples``) is already applied.
    ``num_lines`` is the file's ``F`` lines per sample, ``frequencies`` their ``(F,)`` Hz (None
    when the file does not store them), ``mic_positions`` the stored geometry (gan-cli files)
    and ``attrs`` the file attributes.
    """

    num_samples: int
    num_mics: int
    source_format: str
    exact: bool = True
    num_lines: int = 1
    frequencies: np.ndarray | None = None
    mic_positions: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def csm_file_info(path: str | os.PathLike, *, freq_index: Any = 0, num_mics_hint: int | None = None,
                  limit: int | None = None, num_lines_hint: int | None = None) -> CsmFileInfo:
    """Sample, microphone and line counts of a CSM file (any of the three formats), cheaply."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check dataset.path or create one with `gan data csm -o {path.name}`")
    if path.is_dir():
        raise DataError(f"data path {path} is a folder; point dataset.path at a .h5 or .tfrecord file")
    if detect_format(path) == "hdf5":
        with CsmReader(path, freq_index=freq_index, limit=limit) as rd:
            return CsmFileInfo(rd.num_samples, rd.num_mics, rd.source_format, num_lines=rd.num_lines,
                               frequencies=rd.frequencies, mic_positions=rd.mic_positions, attrs=dict(rd.attrs))
    try:
        import tensorflow as tf

        raw = next(iter(tf.data.TFRecordDataset(str(path)).take(1)), None)
        if raw is None:
            raise DataError(f"{path} holds no TFRecord examples; regenerate the file")
        raw = raw.numpy()
        first = _read_tfrecord_bytes(path, [raw], freq_index, num_mics_hint, num_lines_hint)
    except DataError:
        raise
    except Exception as exc:
        raise _data_error(path, exc) from exc
    n = max(1, path.stat().st_size // (len(raw) + 16))   # 8 length + 4 + 4 CRC bytes per record
    if limit is not None:
        n = min(n, int(limit))
    return CsmFileInfo(int(n), int(first.csm.shape[-1]), "acoupipe-tfrecord", exact=False, num_lines=first.num_lines,
                       frequencies=first.file_frequencies)


def _data_error(path: Path, exc: Exception) -> DataError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"cannot read {path} ({type(exc).__name__}: {msg[:160]}); the file is corrupt or truncated, regenerate or re-download it")


class CsmReader:
    """Random access to the samples of a CSM HDF5 file (this project's or AcouPipe's layout).

    Keeps the file open and reads only the samples asked for, so files larger than memory can
    be streamed. ``read(sel)`` takes a contiguous ``slice`` (fastest) or a sorted array of
    unique indices and returns a ``CsmData`` exactly as ``read_csm_file`` would for those
    samples (``loc``/``strength`` padded per call). ``limit`` caps ``num_samples``.
    ``num_lines`` / ``frequencies``: the file's lines per sample and their Hz (or None).
    Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike, *, freq_index: Any = 0, limit: int | None = None):
        import h5py

        self.path = path = Path(path)
        self.freq_index = freq_index
        try:
            self.f = f = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"cannot open {path} as HDF5 ({str(exc).splitlines()[0][:120]}); the file is truncated or corrupt, regenerate it") from exc
        try:
            self._groups: list[str] | None = None
            if "csm" in f or "csmtriu" in f:
                name = "csm" if "csm" in f else "csmtriu"
                if not isinstance(f[name], h5py.Dataset):
                    raise DataError(f"{path}: 'csm'/'csmtriu' is not a dataset; expected the gan-cli layout (see docs/csm.md, 'HDF5 layout')")
                shape = f[name].shape
                _check_square(path, shape, name)
                total, self.num_mics = int(shape[0]), int(shape[-1])
                self.num_lines = int(shape[1]) if len(shape) == 4 else 1
                self.frequencies = _project_frequencies(path, f, self.num_lines)
                resolve_lines(path, freq_index, self.num_lines, self.frequencies)
                self.source_format = "gan-cli"
                self.attrs = _project_attrs(f)
                self.mic_positions = _project_mics(path, f, self.num_mics)
            else:
                groups = sorted((k for k in f.keys() if k.isdigit() and isinstance(f[k], h5py.Group)), key=int)
                if not groups:
                    raise DataError(f"{path} holds no CSM data (no 'csm'/'csmtriu' dataset and no AcouPipe sample groups '0','1',...); "
                                    "create one with `gan data csm -o FILE.h5`")
                self._groups = groups
                total = len(groups)
                first = self._read(slice(0, 1))
                self.num_mics = int(first.csm.shape[-1])
                self.num_lines = first.num_lines
                self.frequencies = first.file_frequencies
                self.source_format = "acoupipe-h5"
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
                self.mic_positions = None
        except DataError:
            f.close()
            raise
        except Exception as exc:  # h5py raises many types for corrupt files
            f.close()
            raise _data_error(path, exc) from exc
        self.num_samples = total if limit is None else min(total, int(limit))

    def read(self, sel) -> CsmData:
        """Samples ``sel``: ``slice(start, stop)`` or sorted unique indices, all < ``num_samples``."""
        if not isinstance(sel, slice):
            sel = np.asarray(sel, dtype=np.int64)
            if sel.ndim != 1 or (sel.size and (sel[0] < 0 or sel[-1] >= self.num_samples or np.any(np.diff(sel) <= 0))):
                raise ValueError("CsmReader.read: indices must be sorted, unique and in [0, num_samples)")
        else:
            start, stop, step = sel.indices(self.num_samples)
            if step != 1 or stop <= start:
                raise ValueError(f"CsmReader.read: need a non-empty slice with step 1, got {sel}")
            sel = slice(start, stop)
        try:
            return self._read(sel)
        except DataError:
            raise
        except Exception as exc:
            raise _data_error(self.path, exc) from exc

    def _read(self, sel) -> CsmData:
        if self._groups is None:
            return _read_project_h5(self.path, self.f, None, sel, self.freq_index)
        groups = self._groups[sel] if isinstance(sel, slice) else [self._groups[i] for i in sel]
        return _read_acoupipe_h5(self.path, self.f, groups, self.freq_index, None)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "CsmReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
