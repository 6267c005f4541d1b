"""Report sections for cross-spectral matrices: eigenvalue spectra, beamforming maps, source counts.

Generated CSMs come from the newest ``samples/step_*.npz`` (model-space ``fake``, decoded with the
dataset's ``to_user_space``); real ones from ``data.real_samples`` decoded the same way, exactly as
the training metrics compare them. Beamforming uses ``gan_cli.metrics.csm.MapBeamformer`` (acoular's conventions,
conventional beamforming, diagonal removal) on a few samples only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gan_cli.report.plots_common import FAKE_COLOR, REAL_COLOR, Html, Image, Run, Section, new_figure, save

BEAMFORM_SAMPLES = 4    # maps per side (real / generated)
BEAMFORM_GRID = 31      # grid points per axis
DYNAMIC_RANGE = 15.0    # dB shown below each map's peak
REAL_SAMPLES = 500


def real_csms(data, n: int, seed: int) -> tuple[np.ndarray, str]:
    """``n`` real CSMs ``(n, M, M)`` complex128 normalised like the training data (``C[ref, ref] = 1``), read
    from the data file so their eigenvalues are the data's own, and a phrase saying where they came from.

    Falls back to decoding model-space samples (``to_user_space``; for ``representation=eigenvectors``
    that imposes the data's mean spectrum on every sample) when the file cannot be read directly.
    """
    try:
        from gan_cli.data.csm_io import CsmReader, read_csm_file

        file = Path(data.file)
        if file.suffix.lower() in (".h5", ".hdf5"):
            with CsmReader(file, freq_index=data.freq_index, limit=data.max_samples) as rd:
                total = rd.num_samples
                idx = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
                csm = rd.read(idx).csm
        else:
            csm = read_csm_file(file, freq_index=data.freq_index, limit=n).csm
        ref = int(data.reference_mic)
        pref = csm[:, ref, ref].real
        ok = np.isfinite(pref) & (pref > 0)
        if ok.any():
            return np.asarray(csm[ok] / pref[ok, None, None], np.complex128), f"read from {file.name}"
    except Exception:  # noqa: BLE001 - fall back to the decoded training samples
        pass
    real_x, _ = data.real_samples(n, seed)
    return np.asarray(data.to_user_space(real_x), np.complex128), "training samples decoded like generated ones"


class CsmReport:
    """Builds the CSM sections of a run's report."""

    def __init__(self, run: Run, data, out_dir: Path):
        self.run, self.data, self.out = run, data, Path(out_dir)
        if not run.snapshots:
            self.step, self.gen = None, None
            return
        self.step, path = run.snapshots[-1]
        fake = run.load_snapshot(path)["fake"]
        self.gen = np.asarray(data.to_user_space(fake), np.complex128)
        self.first_step, first = run.snapshots[0]
        self.gen_first = np.asarray(data.to_user_space(run.load_snapshot(first)["fake"]), np.complex128)
        n_real = min(REAL_SAMPLES, int(getattr(data, "num_samples", REAL_SAMPLES)))
        self.real, self.real_source = real_csms(data, n_real, int(run.config.train.seed) + 7)
        self.representation = str(getattr(data, "representation", ""))
        finite = np.isfinite(self.gen).all(axis=(-2, -1))
        self.gen = np.where(finite[:, None, None], self.gen, 0.0)
        self.nonfinite = int((~finite).sum())

    def sections(self) -> list[Section]:
        if self.gen is None:
            note = Html("<p class='note'>no samples/step_*.npz in this run folder: nothing to draw.</p>")
            return [Section(s, t, [note]) for s, t in (("eigenvalues", "Eigenvalue spectra"),
                                                        ("beamforming", "Beamforming maps"),
                                                        ("source-count", "Source-count histograms"))]
        return [self.eigenvalues(), self.beamforming(), self.source_counts()]

    def eigenvalues(self) -> Section:
        from gan_cli.metrics.csm import eig_db

        real_db, gen_db, first_db = eig_db(self.real), eig_db(self.gen), eig_db(self.gen_first)
        m = real_db.shape[1]
        j = np.arange(1, m + 1)
        fig = new_figure(10.5, 3.6)
        ax = fig.add_subplot(1, 2, 1)
        for db, color, label in ((real_db, REAL_COLOR, f"real ({len(real_db)})"),
                                 (gen_db, FAKE_COLOR, f"generated, step {self.step} ({len(gen_db)})")):
            lo, hi = np.percentile(db, 10, axis=0), np.percentile(db, 90, axis=0)
            ax.fill_between(j, lo, hi, color=color, alpha=0.18, linewidth=0)
            ax.plot(j, db.mean(0), color=color, marker="o", markersize=3, label=label)
        if self.first_step != self.step:
            ax.plot(j, first_db.mean(0), color=FAKE_COLOR, ls="--", lw=1, alpha=0.6,
                    label=f"generated, step {self.first_step}")
        ax.set_xlabel("eigenvalue index j (descending)")
        ax.set_ylabel("10 log10(lambda_j / lambda_1) [dB]")
        ax.set_title("Mean spectrum (band: 10th-90th percentile)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        ax2 = fig.add_subplot(1, 2, 2)
        k = min(m, 6)
        for db, color, label in ((real_db, REAL_COLOR, "real"), (gen_db, FAKE_COLOR, "generated")):
            ax2.plot(j[:k], db[: min(30, len(db)), :k].T, color=color, alpha=0.3, lw=0.8)
            ax2.plot([], [], color=color, label=label)
        ax2.set_xlabel("eigenvalue index j")
        ax2.set_ylabel("dB re lambda_1")
        ax2.set_title(f"First {k} eigenvalues of 30 single samples", fontsize=10)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path = save(fig, self.out / "csm_eigenvalues.png")
        diff = float(np.mean(np.abs(gen_db.mean(0) - real_db.mean(0))))
        note = f" {self.nonfinite} non-finite generated CSMs were zeroed." if self.nonfinite else ""
        if self.representation == "eigenvectors":
            note += (" With representation=eigenvectors the generator outputs eigenvectors only: generated CSMs are "
                     "V diag(mean real spectrum) V^H, so their spectra differ from the mean only where V is not orthonormal.")
        return Section("eigenvalues", "Eigenvalue spectra (dB)", [Image(path, "Eigenvalues of the (Hermitian part "
                       f"of the) CSMs in dB re the largest, real (green; {self.real_source}) vs generated (purple); mean "
                       f"absolute difference of the mean spectra {diff:.2f} dB.{note}")])

    def beamforming(self) -> Section:
        data = self.data
        if getattr(data, "mic_positions", None) is None or not getattr(data, "frequency", None):
            return Section("beamforming", "Beamforming maps", [Html("<p class='note'>the data set has no microphone "
                           "positions or frequency, so no beamforming maps can be drawn.</p>")])
        from gan_cli.metrics.csm import MapBeamformer

        ap = float(data.aperture)
        extent = 0.5 * ap
        bf = MapBeamformer(data.mic_positions, data.frequency, data.reference_mic, extent=extent, z=0.5 * ap,
                           c=data.c, grid_points=BEAMFORM_GRID)
        k = min(BEAMFORM_SAMPLES, len(self.real), len(self.gen))
        maps = {"real": bf.maps(self.real[:k]), "generated": bf.maps(self.gen[:k])}
        n = BEAMFORM_GRID
        xy = bf.grid_xy.reshape(n, n, 2)            # acoular RectGrid: x index first
        transpose = not np.allclose(xy[:, 0, 0], xy[0, 0, 0])  # x varies along axis 0 -> transpose to [y, x]
        fig = new_figure(2.6 * k + 1.0, 5.6)
        axes = []
        im = None
        for r, (name, mp) in enumerate(maps.items()):
            for i in range(k):
                ax = fig.add_subplot(2, k, r * k + i + 1)
                axes.append(ax)
                grid = mp[i].reshape(n, n)
                grid = grid.T if transpose else grid
                db = 10 * np.log10(np.maximum(grid, 1e-30) / max(float(grid.max()), 1e-30))
                db = np.maximum(db, -DYNAMIC_RANGE)   # floor first: smooth edges when interpolated
                im = ax.imshow(db, origin="lower", extent=(-extent, extent, -extent, extent), cmap="inferno",
                               vmin=-DYNAMIC_RANGE, vmax=0, interpolation="bicubic")
                ax.set_title(f"{name} #{i + 1}", fontsize=9, color=REAL_COLOR if name == "real" else FAKE_COLOR,
                             fontweight="bold")
                ax.tick_params(labelsize=6)
                if i == 0:
                    ax.set_ylabel("y [m]", fontsize=8)
                if r == 1:
                    ax.set_xlabel("x [m]", fontsize=8)
        fig.tight_layout()
        cbar = fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02)
        cbar.set_label("dB re map peak", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        path = save(fig, self.out / "csm_beamforming.png")
        return Section("beamforming", "Beamforming maps", [Image(path, f"Conventional beamforming (acoular's conventions, diagonal "
                       f"removal) at {data.frequency:.0f} Hz on a {n} x {n} grid at distance {0.5 * ap:.2f} m "
                       f"(half the aperture): top row real ({self.real_source}), bottom row generated (step {self.step}); each map in dB "
                       f"re its own peak, {DYNAMIC_RANGE:g} dB range."), self.peak_scatter(bf, extent)])

    def peak_scatter(self, bf, extent: float) -> Image:
        """Map-peak positions of every real and generated sample on one plot, with their exact W1."""
        from gan_cli.metrics.csm import wasserstein_2d

        k = min(len(self.real), len(self.gen))
        real_xy, real_db = bf.peaks(self.real)
        gen_xy, gen_db = bf.peaks(self.gen)
        w1 = wasserstein_2d(gen_xy[:k], real_xy[:k]) / (2 * extent)
        rng = np.random.default_rng(0)
        jitter = 0.25 * bf.increment   # peaks sit on grid points: spread them a little to show how many
        fig = new_figure(9.0, 4.0)
        ax = fig.add_subplot(1, 2, 1)
        for xy, color, label in ((real_xy, REAL_COLOR, f"real ({len(real_xy)})"),
                                 (gen_xy, FAKE_COLOR, f"generated, step {self.step} ({len(gen_xy)})")):
            ax.scatter(*(xy + rng.uniform(-jitter, jitter, xy.shape)).T, s=8, alpha=0.5, color=color, label=label)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xlabel("x [m]", fontsize=8)
        ax.set_ylabel("y [m]", fontsize=8)
        ax.set_title(f"Map-peak positions (W1 {w1:.3f} apertures)", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax2 = fig.add_subplot(1, 2, 2)
        bins = np.linspace(min(real_db.min(), gen_db.min()), max(real_db.max(), gen_db.max()) + 1e-9, 25)
        ax2.hist(real_db, bins=bins, color=REAL_COLOR, alpha=0.6, density=True, label="real")
        ax2.hist(gen_db, bins=bins, color=FAKE_COLOR, alpha=0.6, density=True, label="generated")
        ax2.set_xlabel("map peak level [dB re the reference-mic autopower]", fontsize=8)
        ax2.set_ylabel("density", fontsize=8)
        ax2.set_title("Map-peak levels", fontsize=10)
        ax2.legend(fontsize=7)
        fig.tight_layout()
        path = save(fig, self.out / "csm_peaks.png")
        return Image(path, f"Where each CSM's beamforming map peaks (left; positions jittered by a quarter grid step so "
                     f"that coinciding peaks show) and how high (right): real ({self.real_source}) against generated. "
                     "A GAN that learned the source layout puts the purple cloud where the green one is.")

    def source_counts(self) -> Section:
        from gan_cli.metrics.csm import eig_db, source_count

        max_src = int(getattr(getattr(self.data, "params", None), "max_sources", 10))
        real_c = source_count(eig_db(self.real), max_src)
        gen_c = source_count(eig_db(self.gen), max_src)
        bins = np.arange(1, max_src + 1)
        pr = np.array([(real_c == b).mean() for b in bins])
        pg = np.array([(gen_c == b).mean() for b in bins])
        fig = new_figure(7.0, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(bins - 0.2, pr, width=0.4, color=REAL_COLOR, label=f"real ({len(real_c)})")
        ax.bar(bins + 0.2, pg, width=0.4, color=FAKE_COLOR, label=f"generated, step {self.step} ({len(gen_c)})")
        ax.set_xticks(bins)
        ax.set_xlabel("estimated number of sources (largest gap in the dB spectrum)")
        ax.set_ylabel("fraction of samples")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        tv = 0.5 * float(np.abs(pr - pg).sum())
        ax.set_title(f"Source-count histograms (total-variation distance {tv:.2f})", fontsize=10)
        fig.tight_layout()
        path = save(fig, self.out / "csm_source_count.png")
        return Section("source-count", "Source-count histograms", [Image(path, "The source count of a CSM is "
                       f"estimated as the position of the largest drop among its first {max_src + 1} eigenvalues (dB); real: "
                       f"{self.real_source}" + ("" if self.real_source.startswith("training") else " (the training "
                       "metric source_count_dist compares with decoded training samples instead, so it can differ)") + ".")])
