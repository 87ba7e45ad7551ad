"""One module per chapter notebook (``notebooks/NAME.md`` <-> ``mcreg_lib/chapters/NAME.py``): the chapter's declared
parameters (``PARAMETERS``) and the science it needs beyond the engine. Import a chapter as
``from mcreg_lib.chapters import depth`` (or ``mc.chapters.depth``)."""

import importlib

NAMES = ("getting_started", "balancedness", "depth", "norms", "penalty")


def __getattr__(name: str):
    if name in NAMES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def module(name: str):
    """The chapter module of ``notebooks/NAME.md``; a clear error for an unknown chapter."""
    if name not in NAMES:
        raise ValueError(f"chapter={name!r} is not allowed: chapters are {', '.join(NAMES)}")
    return importlib.import_module(f".{name}", __name__)
