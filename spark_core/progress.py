"""Progress of long stages, for whoever watches in this process (the CLI's progress bars).

Code that knows how far it got calls ``publish``; a watcher ``subscribe``s. Nothing here knows
about Prefect: the tasks mirror the same figures into Prefect progress artifacts for the UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, float, float], None]  # (what, done, total)

_listeners: list[Listener] = []
_lock = threading.Lock()


def publish(what: str, done: float, total: float) -> None:
    """Report that ``done`` of ``total`` units of ``what`` are finished."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(what, done, total)


@contextmanager
def subscribed(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
