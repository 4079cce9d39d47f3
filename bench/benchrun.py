"""
Running one benchmark on the global reactor, bounded in time, for every
script under bench/: start it, stop the reactor when it fires, and after
C{hardLimit} seconds kill whatever it started (the server, SIPp) and stop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["runBounded"]


def _kill(children: Iterable[Any]) -> None:
    for child in children:
        if child.running and child.pid:
            os.kill(child.pid, 9)


def runBounded(
    run: Callable[[Any], Any],
    hardLimit: float | None,
    children: list[Any],
) -> Any:
    """
    Run C{run(reactor)} (a Deferred) on the global reactor until it fires.

    @param hardLimit: seconds after which the processes in C{children} are
        killed and the reactor stopped, whatever happens; L{None}: no bound.
    @param children: the processes the benchmark started (it appends to the
        list as it goes); killed on overtime and on an interrupted run.
    @return: what C{run} fired with, or L{None} when it did not fire; a
        failure's traceback is printed and L{None} returned.
    """
    from twisted.internet import reactor

    outcome: dict[str, Any] = {}

    def finished(result: Any) -> None:
        outcome["result"] = result
        reactor.stop()

    def overtime() -> None:
        print(f"hard time limit {hardLimit:.0f} s reached", file=sys.stderr)
        _kill(children)
        reactor.stop()

    # Interrupted (^C): no step's own clean-up will run.
    reactor.addSystemEventTrigger("before", "shutdown", lambda: _kill(children))
    if hardLimit is not None:
        reactor.callLater(hardLimit, overtime)
    reactor.callWhenRunning(lambda: run(reactor).addBoth(finished))
    reactor.run()
    result = outcome.get("result")
    if result is not None and hasattr(result, "printTraceback"):
        result.printTraceback()
        return None
    return result
