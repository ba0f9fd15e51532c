"""cathodeml: machine-learned interatomic potentials for battery cathode materials.

One command-line chain -- ingest VASP runs, add virtual spin atoms, train a JAX DeepPot-SE,
test it, run NVT molecular dynamics and analyse Li-ion transport -- where every step reads
and writes files.  Float64 is the default everywhere (tests, CPU runs); a model may ask for
float32 for speed on GPUs.
"""

import os as _os

# JAX reads this when first imported; modules that use JAX also call enable_float64().
_os.environ.setdefault("JAX_ENABLE_X64", "1")

__version__ = "0.1.0"


def enable_float64() -> None:
    """Let JAX hold float64 arrays (it defaults to float32). Idempotent and cheap."""
    import jax

    jax.config.update("jax_enable_x64", True)
