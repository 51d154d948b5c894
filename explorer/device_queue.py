"""One queue per device: latency runs take the device exclusively, in arrival order.

Timings taken while another job runs on the same device are wrong, so every latency run
holds its device's queue; cost analyses (meta device) never wait here.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable


class DeviceQueue:
    def __init__(self, name: str):
        self.name = name
        self._cond = threading.Condition()
        self._waiting: list[object] = []  # tickets in arrival order; the first one holds the device

    def position(self, ticket: object) -> int:
        with self._cond:
            return self._waiting.index(ticket)

    @property
    def length(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextlib.contextmanager
    def hold(self, on_wait: Callable[[int], None] | None = None, poll_seconds: float = 0.25):
        """Wait for our turn, calling `on_wait(position)` (1 = next) while queued."""
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
        try:
            with self._cond:
                while self._waiting[0] is not ticket:
                    if on_wait is not None:
                        on_wait(self._waiting.index(ticket))
                    self._cond.wait(poll_seconds)
            yield
        finally:
            with self._cond:
                self._waiting.remove(ticket)
                self._cond.notify_all()


_QUEUES: dict[str, DeviceQueue] = {}
_QUEUES_LOCK = threading.Lock()


def queue_for(device: str) -> DeviceQueue:
    with _QUEUES_LOCK:
        if device not in _QUEUES:
            _QUEUES[device] = DeviceQueue(device)
        return _QUEUES[device]
