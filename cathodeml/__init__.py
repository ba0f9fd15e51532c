"""cathodeml: machine-learned interatomic potentials for battery cathode materials.

One command-line chain -- ingest VASP runs, add virtual spin atoms, train a JAX DeepPot-SE,
test it, run NVT molecular dynamics and analyse Li-ion transport -- where every step reads
and writes files.  Float64 is the default everywhere (tests, CPU runs); a model may ask for
float32 for speed on GPUs.  From Python, `cathodeml.load_model(path)` reads a model.h5 or a
DeePMD-kit `.dp` file.
"""

import os as _os
import sys as _sys

# The one place float64 is switched on: every cathodeml module that uses JAX is imported after
# this package, so the environment variable reaches JAX when it is first imported; a script that
# imported JAX before cathodeml gets the same setting through the config (float32 stays a
# per-model option, ModelConfig.precision).
_os.environ.setdefault("JAX_ENABLE_X64", "1")
if "jax" in _sys.modules and _os.environ["JAX_ENABLE_X64"].lower() not in ("0", "false"):
    _sys.modules["jax"].config.update("jax_enable_x64", True)

__version__ = "0.1.0"

# The user's door, `cathodeml.load_model(...)`, resolved on first use: `import cathodeml` stays
# free of JAX (the CLI imports it for every command).  Name -> module that defines it; further
# public names (an ASE calculator, ...) go here too.
_LAZY_ATTRIBUTES = {"load_model": "cathodeml.model.store"}


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        import importlib

        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))
