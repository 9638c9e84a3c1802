"""``convprop.no_grad()``: a thread-local switch that makes ``model(x)`` keep no context for backward.

Inside ``with convprop.no_grad():`` (or in eval mode) calling a module runs its plain ``forward``:
nothing is kept for a later ``backward`` and nothing is written to the layer, as ``torch.no_grad``.
The flag is per thread, so one thread's ``no_grad`` never changes another's training step.
"""

from __future__ import annotations

import threading
from types import TracebackType

_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless this thread is inside ``with convprop.no_grad():``."""
    return getattr(_state, "depth", 0) == 0


class no_grad:  # torch's name, lower case: used as ``with convprop.no_grad():``
    """Context manager: in this thread, ``module(x)`` keeps no context (see ``Module.__call__``).

    Nests; re-entrant. The explicit ``forward_with_context`` still returns a context inside it.
    """

    def __enter__(self) -> no_grad:
        _state.depth = getattr(_state, "depth", 0) + 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _state.depth -= 1
