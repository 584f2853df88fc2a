"""Giving the device up between two blocks of a model: batch work preempted by realtime work.

A step scheduler can only choose what runs next at a step boundary, and one batched transformer step
is long next to a small realtime request (on this CPU, three times a realtime step). ``BlockCheckpoints``
adds a check before every block of a model's stack: while a forward runs with ``yielding_to(ask)``,
each block first calls ``ask()``, and a yes raises ``Preempted``. The forward is abandoned; the
caller has changed nothing of the request yet (a denoising step updates latents and scheduler only
after its forwards; an encoder pass has no state), so the same step or pass runs again later from the
same inputs and gives the same result, bit for bit. What is lost is the work done so far in that
forward: at most one step or pass per realtime arrival.

Not installed on a ``torch.compile``d model (a hook per block would break the graph), and the
Denoiser does not preempt a group with step caching (its hooks keep state across the forward).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any


class Preempted(Exception):
    """A forward gave the device up between two blocks; nothing it was computing for was changed."""


class BlockCheckpoints:
    """A check before each of ``blocks``: inside ``yielding_to(ask)``, a block does not start while
    ``ask()`` says more urgent work waits (it raises ``Preempted``). Per thread: a forward running in
    another thread is not affected."""

    def __init__(self, blocks: Iterable[Any]) -> None:
        self._local = threading.local()
        self.blocks = 0
        for block in blocks:
            block.register_forward_pre_hook(self._before_block)
            self.blocks += 1

    @contextmanager
    def yielding_to(self, ask: Callable[[], bool] | None) -> Iterator[None]:
        previous = getattr(self._local, "ask", None)
        self._local.ask = ask
        try:
            yield
        finally:
            self._local.ask = previous

    def _before_block(self, module: Any, args: Any) -> None:
        ask = getattr(self._local, "ask", None)
        if ask is not None and ask():
            raise Preempted(f"gave the device up before {type(module).__name__}")
