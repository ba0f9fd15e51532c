# The md preset of the Li3TiCl6 paper (DESIGN.md "Published setups"), as shell variables.
# `cathodeml md` takes no config file: source this file and pass $MD_ARGS, one run per temperature.
#
#   . examples/md_preset.sh
#   for T in $MD_TEMPERATURES; do cathodeml md model.h5 POSCAR -T $T $MD_ARGS -o traj_${T}K.h5; done
#
# Field by field:
#   --ensemble nvt         Nosé–Hoover chain thermostat (Martyna–Tuckerman–Klein, as ASE/LAMMPS)
#   --chain 3              chain length
#   --dt 1                 time step, fs
#   --tdamp 100            thermostat time constant τ, fs (Q1 = N_f k_B T τ²)
#   --steps 5500000        5.5 ns at 1 fs
#   --stride 1000          one stored frame per ps (positions unwrapped, image counts kept)
#   --checkpoint-every     restartable with --restart after a wall-time limit
#   --minimize             FIRE-relax the start structure (fmax 0.05 eV/Å) before heating
# The paper's cell has ~20,000 atoms: build it with --supercell (e.g. 10x10x8 of a 24-atom cell).
# shellcheck disable=SC2034
MD_TEMPERATURES="298 313 328 343 358 373"
MD_ARGS="--ensemble nvt --chain 3 --dt 1 --tdamp 100 --steps 5500000 --stride 1000 --checkpoint-every 100000 --minimize"
# analyze: fit the MSD from where it turns linear (≥1 ps) to half the run, 5 blocks for the error bars
ANALYZE_ARGS="--species Li --fit-window auto:0.5T --blocks 5 --arrhenius-fit lnD --at 300"
