"""Keep Python's full garbage collections short in a serving process that holds many cubes.

Why: 50 open LoCoMo-sized cubes are about 435,000 objects the cycle collector tracks, and a full
collection walks all of them: 330-716 ms with every thread of the process stopped (measured by the
fifth session's add helper at load 7-12, about every 27 s of adds at 50/s), which alone breaks an
add's or a search's p95. The cubes' objects live as long as the service, so after a cube opens the
process collects once and *freezes* what is left (:func:`gc.freeze`): later collections skip it (the
same run's full passes took 35-39 ms).

The cost: an object frozen here that later becomes cyclic garbage is not freed until the process
ends (a cube the service closes; the service rarely closes one). Only serving processes do this
(``memcube serve``, its workers, ``bench_service``); a library user's process and the tests keep the
normal collector.
"""

from __future__ import annotations

import gc
from typing import Any


def settle() -> None:
    """Collect now, then move every surviving object out of the collector's reach (cheap after the first call)."""
    gc.collect()
    gc.freeze()


def install(mos: Any) -> None:
    """Settle now and after every cube ``mos`` opens (:attr:`memos_integrations.mos.MOS.on_open`)."""
    mos.on_open = lambda _cube: settle()
    settle()
