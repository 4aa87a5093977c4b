"""Synthetic short-axis cardiac cine MRI in the exact ACDC on-disk layout.

``python -m data.synthetic --out_dir D --num_patients N --seed S`` writes
``D/training/patientXXX/Info.cfg`` (ED, ES, Group, Height, NbFrame, Weight) and the ED and ES
frames ``patientXXX_frameYY.nii.gz`` with ``patientXXX_frameYY_gt.nii.gz`` (labels 0 bg, 1 RV,
2 Myo, 3 LV). No ``_4d.nii.gz`` cine file is written.

Each patient is drawn from ``numpy.random.default_rng([seed, patient_number])`` (deterministic,
independent of N), with group ``GROUPS[(patient_number - 1) % 5]``:

- anatomy (mm, local heart frame, LV centre at the origin, RV towards +u): the LV is a
  half-ellipsoid (base at z=0, apex at z=L) with an irregular cross-section; the myocardium a
  ring whose thickness follows area conservation between ED and ES; papillary muscles (dark,
  labelled LV); an RV crescent wrapping the septum with an unlabelled free wall; a basal outflow
  gap; atria (bright, unlabelled) above the base;
- groups: NOR normal, DCM dilated thin-walled hypokinetic LV, HCM small cavity with thick
  (septal) wall, MINF dilated LV with a thinned infarct sector, RV enlarged hypokinetic RV;
- surroundings: body outline with subcutaneous fat, lungs with bright vessels, a bright
  descending aorta (blood-like confounder), liver (myocardium-like intensity) in apical slices,
  pericardial fat;
- acquisition: random heart position and in-plane rotation (and mirroring), oblique
  non-identity affine, anisotropic spacing (1.2-1.9 mm in-plane, 5-10 mm slices), matrix
  sizes from the field of view, 6-12 slices; through-plane partial volume (3 sub-planes per
  slice), in-plane blur, per-patient tissue contrast and gamma, smooth multiplicative bias field
  with a coil hot-spot, Rician noise, integer storage.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from common.errors import InputError

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")

# Per group: ED endocardial radius (mm), ED wall thickness (mm), ES/ED endocardial radius ratio,
# RV size factor, ES/ED RV width ratio.
GROUP_PARAMS = {
    "NOR": dict(r_endo=(21.0, 25.0), wall=(7.0, 9.0), contraction=(0.60, 0.70), rv_size=(0.9, 1.1), rv_contraction=(0.55, 0.7)),
    "DCM": dict(r_endo=(28.0, 33.0), wall=(5.0, 6.5), contraction=(0.85, 0.93), rv_size=(0.9, 1.2), rv_contraction=(0.75, 0.9)),
    "HCM": dict(r_endo=(15.0, 19.0), wall=(12.0, 16.0), contraction=(0.45, 0.58), rv_size=(0.8, 1.0), rv_contraction=(0.55, 0.7)),
    "MINF": dict(r_endo=(25.0, 30.0), wall=(6.5, 8.0), contraction=(0.78, 0.88), rv_size=(0.9, 1.1), rv_contraction=(0.6, 0.75)),
    "RV": dict(r_endo=(20.0, 24.0), wall=(7.0, 9.0), contraction=(0.60, 0.70), rv_size=(1.35, 1.65), rv_contraction=(0.8, 0.92)),
}

# Tissue codes (painted in this order; later ones cover earlier ones).
AIR, BODY, SUBCUT_FAT, LUNG, LUNG_VESSEL, LIVER, AORTA, PERI_FAT, RV_WALL, ATRIUM, RV_BLOOD, MYO, LV_BLOOD, PAPILLARY = range(14)
LABEL_OF_TISSUE = np.zeros(14, np.int16)
LABEL_OF_TISSUE[[RV_BLOOD, MYO, LV_BLOOD, PAPILLARY]] = [1, 2, 3, 3]
BLOOD_TISSUES = (AORTA, ATRIUM, RV_BLOOD, LV_BLOOD, LUNG_VESSEL)


@dataclass
class Patient:
    """One synthetic patient: Info.cfg fields and the two annotated frames."""

    number: int
    group: str
    info: dict
    frames: dict  # frame number -> (image (H0, W0, D) int16, label (H0, W0, D) int16)
    affine: np.ndarray


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (H0, W0)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-8)


class _Anatomy:
    """Random anatomy and appearance of one patient; renders tissue maps of any plane."""

    def __init__(self, rng: np.random.Generator, group: str, shape: tuple[int, int], spacing: float):
        p = GROUP_PARAMS[group]
        self.group = group
        h0, w0 = shape
        x = (np.arange(h0) - (h0 - 1) / 2.0) * spacing
        y = (np.arange(w0) - (w0 - 1) / 2.0) * spacing
        self.X, self.Y = np.meshgrid(x, y, indexing="ij")  # (H0, W0) mm
        fov = (h0 * spacing, w0 * spacing)
        # heart pose
        self.centre = (rng.uniform(-8, 8), rng.uniform(-8, 8))
        theta = rng.uniform(-math.radians(60), math.radians(60))
        mirror = -1.0 if rng.random() < 0.3 else 1.0
        dx, dy = self.X - self.centre[0], self.Y - self.centre[1]
        self.U = np.cos(theta) * dx + np.sin(theta) * dy
        self.V = mirror * (-np.sin(theta) * dx + np.cos(theta) * dy)
        self.rho = np.hypot(self.U, self.V)
        self.phi = np.arctan2(self.V, self.U)
        # LV geometry
        self.r_endo = _u(rng, p["r_endo"])
        self.wall = _u(rng, p["wall"])
        self.contraction = _u(rng, p["contraction"])
        self.length = rng.uniform(80.0, 100.0)  # base-apex length of the LV cavity at ED (mm)
        self.es_shortening = rng.uniform(0.85, 0.92)
        a1, a2 = rng.uniform(0, 0.07), rng.uniform(0, 0.08)
        f1, f2 = rng.uniform(-np.pi, np.pi, size=2)
        self.modulation = 1.0 + a1 * np.cos(self.phi - f1) + a2 * np.cos(2 * (self.phi - f2))  # (H0, W0)
        wall_profile = np.ones_like(self.phi)
        if group == "HCM":  # asymmetric septal hypertrophy (septum faces the RV, phi ~ 0)
            wall_profile = 1.0 + rng.uniform(0.25, 0.5) * np.cos(self.phi)
        if group == "MINF":  # thinned, akinetic infarct sector
            centre = rng.uniform(-np.pi, np.pi)
            width = rng.uniform(0.5, 0.9)
            d = np.angle(np.exp(1j * (self.phi - centre)))
            wall_profile = 1.0 - rng.uniform(0.4, 0.6) * np.exp(-0.5 * (d / width) ** 2)
        self.wall_profile = wall_profile
        self.lvot = rng.random() < 0.7
        self.lvot_dir = rng.uniform(-np.pi, np.pi)
        self.lvot_width = rng.uniform(0.5, 1.0)
        self.pap_angles = rng.uniform(-np.pi, np.pi) + np.array([0.0, rng.uniform(1.6, 2.4)])
        # RV
        self.rv_size = _u(rng, p["rv_size"])
        self.rv_contraction = _u(rng, p["rv_contraction"])
        self.rv_width = rng.uniform(17.0, 26.0) * self.rv_size
        self.rv_span = rng.uniform(1.05, 1.25) * (0.85 + 0.15 * self.rv_size)
        self.rv_len = rng.uniform(0.7, 0.88)
        self.rv_wall = rng.uniform(2.0, 3.5)
        self.peri_fat = rng.uniform(0.5, 4.0)
        # surroundings (image frame)
        bc = (rng.uniform(-8, 8), rng.uniform(-8, 8))
        ba, bb = rng.uniform(0.42, 0.52) * fov[0], rng.uniform(0.36, 0.46) * fov[1] * 1.4
        self.body = ((self.X - bc[0]) / ba) ** 2 + ((self.Y - bc[1]) / bb) ** 2
        fat = rng.uniform(5.0, 14.0)
        self.body_inner = ((self.X - bc[0]) / (ba - fat)) ** 2 + ((self.Y - bc[1]) / (bb - fat)) ** 2
        self.lungs = np.zeros(shape, bool)
        for side in (-1.0, 1.0):
            lc = (self.centre[0] + rng.uniform(-15, 15), self.centre[1] + side * rng.uniform(50, 70))
            la, lb = rng.uniform(35, 55), rng.uniform(25, 40)
            self.lungs |= ((self.X - lc[0]) / la) ** 2 + ((self.Y - lc[1]) / lb) ** 2 < 1
        self.vessels = np.zeros(shape, bool)
        for _ in range(int(rng.integers(3, 9))):
            vc = (rng.uniform(-0.5, 0.5) * fov[0], rng.uniform(-0.5, 0.5) * fov[1])
            self.vessels |= np.hypot(self.X - vc[0], self.Y - vc[1]) < rng.uniform(1.5, 4.0)
        r_epi0 = self.r_endo + self.wall
        ao = (-rng.uniform(0, 20), -(r_epi0 + rng.uniform(16, 28)))
        self.aorta = np.hypot(self.U - ao[0], self.V - ao[1]) < rng.uniform(9.0, 13.0)
        liver_dir = rng.uniform(-np.pi, np.pi)
        lr = rng.uniform(40, 60)
        lcu, lcv = (r_epi0 + lr * 0.75) * np.cos(liver_dir), (r_epi0 + lr * 0.75) * np.sin(liver_dir)
        self.liver_dist = np.hypot(self.U - lcu, self.V - lcv) / lr
        self.liver_start = rng.uniform(0.45, 0.7)
        self.la_offset = (rng.uniform(-8, 0), rng.uniform(-8, 8))
        # appearance
        blood = rng.uniform(0.75, 1.0)
        myo = rng.uniform(0.18, 0.45)
        lut = np.zeros(14)
        lut[AIR] = 0.0
        lut[BODY] = myo * rng.uniform(0.8, 1.35)
        lut[SUBCUT_FAT] = rng.uniform(0.6, 1.0)
        lut[LUNG] = rng.uniform(0.02, 0.1)
        lut[LUNG_VESSEL] = blood * rng.uniform(0.5, 0.9)
        lut[LIVER] = rng.uniform(0.25, 0.55)
        lut[AORTA] = blood * rng.uniform(0.85, 1.1)
        lut[PERI_FAT] = lut[SUBCUT_FAT] * rng.uniform(0.5, 1.0)
        lut[RV_WALL] = myo * rng.uniform(0.9, 1.2)
        lut[ATRIUM] = blood * rng.uniform(0.85, 1.05)
        lut[RV_BLOOD] = blood * rng.uniform(0.8, 1.0)
        lut[MYO] = myo
        lut[LV_BLOOD] = blood
        lut[PAPILLARY] = myo * rng.uniform(0.9, 1.3)
        self.lut = lut
        sig = 5.0 / spacing
        self.texture_blood = 0.10 * _smooth_field(rng, shape, sig)
        self.texture_tissue = 0.08 * _smooth_field(rng, shape, sig)
        self.is_blood = np.zeros(14, bool)
        self.is_blood[list(BLOOD_TISSUES)] = True
        self.gamma = rng.uniform(0.8, 1.25)

    def tissue(self, z: float, es: bool) -> np.ndarray:
        """Tissue code map (H0, W0) of the plane at depth ``z`` mm below the base (z < 0: atria)."""
        t = np.full(self.X.shape, AIR, np.int8)
        t[self.body < 1] = BODY
        t[(self.body < 1) & (self.body_inner >= 1)] = SUBCUT_FAT
        inner = self.body_inner < 1
        t[self.lungs & inner] = LUNG
        t[self.lungs & inner & self.vessels] = LUNG_VESSEL
        length = self.length * (self.es_shortening if es else 1.0)
        zr = z / length
        if zr > self.liver_start:
            grow = min(1.0, (zr - self.liver_start) / 0.3) ** 0.5
            t[(self.liver_dist < grow) & inner] = LIVER
        t[self.aorta & inner] = AORTA
        # LV radii with area-conserving wall thickening at ES
        r_endo = self.r_endo * (self.contraction if es else 1.0)
        wall = self.wall * self.wall_profile
        if es:
            ring = 2 * self.r_endo * wall + wall ** 2
            wall = np.sqrt(r_endo ** 2 + ring) - r_endo
            if self.group == "MINF":  # akinetic sector keeps its ED thickness
                wall = np.where(self.wall_profile < 0.85, self.wall * self.wall_profile, wall)
        wall_apex = float(np.mean(wall))
        endo_taper = math.sqrt(max(0.0, 1.0 - zr ** 2)) if z >= 0 else 0.0
        epi_taper = math.sqrt(max(0.0, 1.0 - (z / (length + wall_apex)) ** 2)) if z >= 0 else 0.0
        r_endo_map = r_endo * endo_taper * self.modulation
        r_epi_map = (r_endo * endo_taper + wall) * self.modulation if epi_taper > 0 else np.zeros_like(self.rho)
        if epi_taper > 0 and endo_taper == 0:
            r_epi_map = (r_endo + wall) * epi_taper * self.modulation  # apical cap
        r_epi0 = self.r_endo + self.wall
        # RV (crescent around the septum)
        rv_taper = math.sqrt(max(0.0, 1.0 - (zr / self.rv_len) ** 2)) if z >= 0 else 0.0
        rv_in = np.zeros_like(self.rho, bool)
        if rv_taper > 0:
            width = self.rv_width * (self.rv_contraction if es else 1.0) * rv_taper
            d = 0.5 * r_epi0 * max(rv_taper, 0.3)
            a = 0.5 * r_epi0 * max(rv_taper, 0.3) + width
            b = r_epi0 * self.rv_span * (0.85 + 0.15 * (self.rv_contraction if es else 1.0)) * max(rv_taper, 0.3)
            e = ((self.U - d) / a) ** 2 + (self.V / b) ** 2
            e_wall = ((self.U - d) / (a + self.rv_wall)) ** 2 + (self.V / (b + self.rv_wall)) ** 2
            e_fat = ((self.U - d) / (a + self.rv_wall + self.peri_fat)) ** 2 + (self.V / (b + self.rv_wall + self.peri_fat)) ** 2
            outside_lv = self.rho >= r_epi_map
            t[(e_fat < 1) & outside_lv & inner] = PERI_FAT
            t[(e_wall < 1) & outside_lv] = RV_WALL
            rv_in = (e < 1) & outside_lv
        if epi_taper > 0:
            t[(self.rho < r_epi_map + self.peri_fat) & (t != RV_WALL) & ~rv_in & inner] = PERI_FAT
        if z < 0:  # above the base: atria (bright, unlabelled)
            la = np.hypot(self.U - self.la_offset[0], self.V - self.la_offset[1]) < self.r_endo * 0.9
            ra = np.hypot(self.U - r_epi0 * 0.9, self.V + 5) < self.r_endo * 0.8
            t[(la | ra) & inner] = ATRIUM
            return t
        t[rv_in] = RV_BLOOD
        myo = (self.rho < r_epi_map)
        t[myo] = MYO
        t[self.rho < r_endo_map] = LV_BLOOD
        if self.lvot and zr < 0.12 and endo_taper > 0:  # basal outflow: ring open towards the LVOT
            d = np.angle(np.exp(1j * (self.phi - self.lvot_dir)))
            t[myo & (np.abs(d) < self.lvot_width / 2) & (self.rho >= r_endo_map)] = LV_BLOOD
        if 0.15 < zr < 0.75 and endo_taper > 0:
            rp = r_endo * endo_taper
            for ang in self.pap_angles:
                pc = (0.62 * rp * np.cos(ang), 0.62 * rp * np.sin(ang))
                t[(np.hypot(self.U - pc[0], self.V - pc[1]) < 0.2 * self.r_endo) & (self.rho < r_endo_map)] = PAPILLARY
        return t

    def intensity(self, tissue: np.ndarray) -> np.ndarray:
        """Noise-free intensity (H0, W0) of a tissue map."""
        tex = np.where(self.is_blood[tissue], self.texture_blood, self.texture_tissue)
        return self.lut[tissue] * (1.0 + tex)


def _affine(rng: np.random.Generator, spacing: float, thickness: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Oblique voxel-to-world matrix with the given voxel sizes (column norms)."""
    angles = rng.uniform(-0.6, 0.6, size=3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rot = rz @ ry @ rx @ np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([spacing, spacing, thickness])
    centre = aff[:3, :3] @ (np.array(shape, float) - 1) / 2
    aff[:3, 3] = rng.uniform(-30, 30, size=3) - centre
    return aff


def make_patient(seed: int, number: int) -> Patient:
    """Generate patient ``number`` (1-based) of the dataset with ``seed`` (deterministic)."""
    rng = np.random.default_rng([int(seed), int(number)])
    group = GROUPS[(number - 1) % len(GROUPS)]
    spacing = rng.uniform(1.2, 1.9)
    fov = rng.uniform(175.0, 240.0)
    h0 = int(round(fov / spacing))
    w0 = int(round(fov * rng.uniform(0.8, 1.0) / spacing))
    anatomy = _Anatomy(rng, group, (h0, w0), spacing)
    length = anatomy.length
    depth = int(rng.integers(max(6, math.ceil(length / 10.0)), 13))
    thickness = float(np.clip(length * rng.uniform(1.0, 1.15) / depth, 5.0, 10.0))
    z0 = rng.uniform(-0.4, 0.2) * thickness
    n_frames = int(rng.integers(20, 36))
    ed = 1 if rng.random() < 0.85 else int(rng.integers(2, 5))
    es = ed + int(round(n_frames * rng.uniform(0.3, 0.42)))
    info = {
        "ED": ed, "ES": es, "Group": group, "Height": round(float(rng.uniform(150, 195)), 1),
        "NbFrame": n_frames, "Weight": round(float(rng.uniform(50, 110)), 1),
    }
    # acquisition (shared by both frames)
    shape2 = (h0, w0)
    bias_order = rng.uniform(-1, 1, size=5) * rng.uniform(0.15, 0.45)
    xn, yn = anatomy.X / (h0 * spacing / 2), anatomy.Y / (w0 * spacing / 2)
    log_bias = (bias_order[0] * xn + bias_order[1] * yn + bias_order[2] * xn * yn
                + bias_order[3] * xn ** 2 + bias_order[4] * yn ** 2)
    coil = (rng.uniform(-0.6, 0.6) * h0 * spacing, rng.uniform(-0.6, 0.6) * w0 * spacing)
    log_bias = log_bias + rng.uniform(0.3, 0.8) * np.exp(
        -((anatomy.X - coil[0]) ** 2 + (anatomy.Y - coil[1]) ** 2) / (2 * rng.uniform(50, 90) ** 2))
    bias_z = rng.uniform(-0.15, 0.15)
    blur = rng.uniform(0.4, 0.9)
    noise = rng.uniform(0.02, 0.07)
    scale = rng.uniform(300.0, 1200.0)
    frames = {}
    for frame, es_phase in ((ed, False), (es, True)):
        img = np.empty((h0, w0, depth), np.float64)
        lab = np.empty((h0, w0, depth), np.int16)
        for k in range(depth):
            z = z0 + k * thickness
            centre = anatomy.tissue(z, es_phase)
            lab[:, :, k] = LABEL_OF_TISSUE[centre]
            sub = [anatomy.intensity(anatomy.tissue(z + dz, es_phase)) for dz in (-thickness / 3, thickness / 3)]
            plane = (anatomy.intensity(centre) + sub[0] + sub[1]) / 3.0
            plane = ndimage.gaussian_filter(plane, blur, mode="nearest")
            rel = (k - (depth - 1) / 2) / max(depth - 1, 1)
            plane = np.clip(plane, 0, None) ** anatomy.gamma * np.exp(log_bias + bias_z * rel)
            re = plane + rng.normal(0.0, noise, shape2)
            im = rng.normal(0.0, noise, shape2)
            img[:, :, k] = np.hypot(re, im)  # Rician magnitude
        frames[frame] = (np.clip(np.rint(img * scale), 0, 32767).astype(np.int16), lab)
    affine = _affine(rng, spacing, thickness, (h0, w0, depth))
    return Patient(number=number, group=group, info=info, frames=frames, affine=affine)


def info_cfg_text(info: dict) -> str:
    """Info.cfg content in ACDC's format and key order."""
    return "".join(f"{k}: {info[k]}\n" for k in ("ED", "ES", "Group", "Height", "NbFrame", "Weight"))


def write_patient(root: Path, patient: Patient) -> None:
    """Write one patient folder ``root/patientXXX`` (root is the ``training`` directory)."""
    name = f"patient{patient.number:03d}"
    pdir = root / name
    pdir.mkdir(parents=True)
    (pdir / "Info.cfg").write_text(info_cfg_text(patient.info))
    for frame, (img, lab) in patient.frames.items():
        for arr, suffix in ((img, ""), (lab, "_gt")):
            hdr = nib.Nifti1Header()
            hdr.set_data_dtype(np.int16)
            hdr.set_xyzt_units("mm", "sec")
            nib.save(nib.Nifti1Image(arr, patient.affine, hdr), str(pdir / f"{name}_frame{frame:02d}{suffix}.nii.gz"))


def generate(out_dir: str | os.PathLike, num_patients: int, seed: int = 0, progress: bool = False) -> dict:
    """Write a synthetic dataset into ``out_dir`` (replaced atomically).

    Args:
        out_dir: destination; gets ``training/patientXXX/`` folders and ``synthetic.json``.
        num_patients: number of patients (1..999).
        seed: dataset seed; patient ``i`` depends only on ``(seed, i)``.
        progress: show a tqdm progress bar.

    Returns:
        The ``synthetic.json`` dict (seed, patients, groups, seconds).
    """
    from tqdm import tqdm

    from common.atomic import atomic_dir

    if not 1 <= int(num_patients) <= 999:
        raise InputError(f"--num_patients={num_patients}: must be between 1 and 999")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out_dir={out_dir} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "synthetic.json").is_file():
        raise InputError(f"--out_dir={out_dir} exists, is not empty and was not written by data.synthetic; "
                         "refusing to replace it")
    t0 = time.time()
    groups = {}
    with atomic_dir(out) as tmp:
        for number in tqdm(range(1, int(num_patients) + 1), desc="synthetic", unit="patient", disable=not progress):
            patient = make_patient(seed, number)
            write_patient(tmp / "training", patient)
            groups[f"{number:03d}"] = patient.group
        summary = {"generator": "data.synthetic", "seed": int(seed), "num_patients": int(num_patients), "groups": groups}
        (tmp / "synthetic.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = time.time() - t0
    return summary


def main(argv: list[str]) -> None:
    """absl entry point of ``python -m data.synthetic``."""
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out_dir:
        raise InputError("--out_dir is required")
    s = generate(FLAGS.out_dir, FLAGS.num_patients, FLAGS.seed, progress=sys.stderr.isatty())
    counts = {g: list(s["groups"].values()).count(g) for g in GROUPS}
    print(f"wrote {s['num_patients']} synthetic patients (seed {s['seed']}; "
          + ", ".join(f"{g} {n}" for g, n in counts.items()) + f") to {FLAGS.out_dir} in {s['seconds']:.1f} s")


if __name__ == "__main__":
    from absl import app, flags

    from common.cli import run_main
    from configs.synthetic import NUM_PATIENTS

    flags.DEFINE_string("out_dir", None, "output directory (ACDC layout: training/patientXXX/...)")
    flags.DEFINE_integer("num_patients", NUM_PATIENTS, "number of patients (the synthetic splits use 001..040)")
    flags.DEFINE_integer("seed", 0, "random seed (patient i depends only on (seed, i))")
    app.run(run_main(main))
