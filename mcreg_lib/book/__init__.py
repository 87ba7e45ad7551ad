"""The book's build, not its science: the papermill runner (``run``), chapter parameters declared once
(``parameters``), claims and the claims ledger (``claims``, ``ledger``) and the figure style (``plots``).

    python -m mcreg_lib.book run-all          # execute every chapter (what `make book` does)
    python -m mcreg_lib.book run NAME -p n=50 # one chapter with your parameters, into _build/reruns/
"""

from . import claims, ledger, parameters, plots, run
from .claims import Claims

__all__ = ["Claims", "claims", "ledger", "parameters", "plots", "run"]
