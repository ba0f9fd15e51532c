"""Molecular dynamics with cathodeml potentials: integrators (NVE, Nosé–Hoover chain NVT), FIRE
minimisation, the jitted run loop, and `run_md`, which ties a run to its trajectory, thermo log and
checkpoint files.  See each module's docstring; `cathodeml md` is the command-line entry point."""
