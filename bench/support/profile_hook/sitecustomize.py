"""A cProfile switch for bench processes: SIGUSR1 starts a CPU-time profile, SIGUSR2 stops it and saves it.

Python imports ``sitecustomize`` at start-up from ``sys.path``; ``bench/nodecpu.py --profile`` puts this
directory first on the nodes' ``PYTHONPATH`` and names the output directory in
``SWAPMEET_BENCH_PROFILE_DIR`` (the profile goes to ``<dir>/<pid>.prof``). Without that variable this
module does nothing. Only the main thread (the node's trio thread) is profiled.
"""

from __future__ import annotations

import os
import signal

_OUT = os.environ.get("SWAPMEET_BENCH_PROFILE_DIR")

if _OUT:
    import cProfile
    import time

    _profile = cProfile.Profile(time.thread_time)

    def _start(signum: int, frame: object) -> None:
        _profile.enable()

    def _stop(signum: int, frame: object) -> None:
        _profile.disable()
        _profile.dump_stats(os.path.join(_OUT, f"{os.getpid()}.prof"))

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
