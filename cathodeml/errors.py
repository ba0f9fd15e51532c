"""The one exception family users can cause.

A `CathodemlError` carries a message that says what is wrong and what to change; the CLI prints
it on one line to stderr and exits non-zero without a traceback (`--debug` shows it).  Bugs are
ordinary exceptions and keep their tracebacks.
"""


class CathodemlError(Exception):
    """An error caused by the user's input, files or settings."""


class InputFormatError(CathodemlError):
    """A file that cannot be read as what it claims to be (truncated, junk, wrong format)."""


class TypeMapError(CathodemlError):
    """Species that do not fit a type map (dataset, model or structure)."""


class SimulationError(CathodemlError):
    """A run that went wrong physically (NaN energy, atoms too close, runaway temperature)."""
