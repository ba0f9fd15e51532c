"""Physical constants and unit conversions: the only place where numbers with units live.

Internal units are eV, Å, fs (MD integrates in "metal" time units of sqrt(amu·Å²/eV)), amu, K
and the elementary charge.  Transport results are reported in cm²/s and mS/cm.
"""

import math

# CODATA 2018 exact / recommended values.
BOLTZMANN_EV_PER_K = 8.617333262e-5  # k_B in eV/K
ELEMENTARY_CHARGE_C = 1.602176634e-19  # e in C
BOLTZMANN_J_PER_K = 1.380649e-23  # k_B in J/K
AMU_KG = 1.66053906660e-27
EV_J = ELEMENTARY_CHARGE_C

# One metal time unit sqrt(amu·Å²/eV) expressed in fs (≈ 10.1805 fs).
METAL_TIME_UNIT_FS = math.sqrt(AMU_KG * 1e-20 / EV_J) * 1e15
FS_PER_PS = 1000.0
# Kinetic energy: 1 amu·Å²/fs² expressed in eV (= METAL_TIME_UNIT_FS², ≈ 103.6427 eV).
AMU_A2_PER_FS2_IN_EV = METAL_TIME_UNIT_FS**2
FS_PER_NS = 1.0e6
SECONDS_PER_DAY = 86400.0

# Stress × volume: 1 eV/Å³ = 160.21766 GPa; VASP prints stress in kBar (1 kBar = 0.1 GPa).
EV_PER_A3_IN_GPA = EV_J / 1e-30 / 1e9
KBAR_IN_EV_PER_A3 = 0.1 / EV_PER_A3_IN_GPA

# Diffusion: 1 Å²/fs = 1e-16 cm² / 1e-15 s = 0.1 cm²/s.
A2_PER_FS_IN_CM2_PER_S = 0.1
# Conductivity: S/m → mS/cm is × 10.
S_PER_M_IN_MS_PER_CM = 10.0
# Diffusion in SI: 1 Å²/fs = 1e-20 m² / 1e-15 s = 1e-5 m²/s; number density: 1 Å⁻³ = 1e30 m⁻³.
A2_PER_FS_IN_M2_PER_S = 1.0e-5
PER_A3_IN_PER_M3 = 1.0e30
ANGSTROM_M = 1e-10
CM_M = 1e-2


def fs_to_metal_time(t_fs: float) -> float:
    """Convert a time in fs to metal time units sqrt(amu·Å²/eV)."""
    return t_fs / METAL_TIME_UNIT_FS


def kbar_stress_to_virial(stress_kbar, volume_a3):
    """VASP stress (kBar, the "in kB" line) times cell volume (Å³) → virial in eV.

    VASP prints -stress with the sign convention of pressure; the virial DeePMD-kit stores
    is W = -σ·V with σ the stress tensor, which equals the printed "in kB" values × V.
    """
    return stress_kbar * KBAR_IN_EV_PER_A3 * volume_a3
