"""Progress of long work: a tqdm bar on a terminal, a one-line heartbeat otherwise.

When stderr is a terminal, :class:`Progress` is a tqdm bar (it disappears when done). When it
is not (CI, ``nohup``, ``robustlens study > log 2>&1``), it writes at most one line every
:attr:`HeartbeatConfig.every_s` seconds (30 s; one rate for the whole process, so nested loops
never print faster) to stderr::

    [robustness] pgd linf eps=0.03137 | batch 3/8 | 768/2000 img (38%) | 24 s elapsed, ~39 s left | 2410 gradients robust=41.2%

naming the study stage (:func:`stage`, set by the study runner; empty outside a study), what is
running, the step, the work done, the time left estimated from the rate so far, and the
gradient evaluations the attacks reported with :func:`pulse` (so an ensemble that works for
minutes on one batch still beats). Nothing is written before the first interval has passed, nor
by a loop younger than a sixth of it (5 s), so short work stays silent.

``ROBUSTLENS_HEARTBEAT_S`` (seconds) overrides the interval; :func:`configure` sets it (and the
clock and stream) for a test.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

_STAGE: contextvars.ContextVar[str] = contextvars.ContextVar("robustlens_stage", default="")


@dataclass(frozen=True)
class HeartbeatConfig:
    """Where and how often heartbeat lines go: at most one every ``every_s`` seconds of ``clock``."""

    every_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    stream: TextIO | None = None  # None: sys.stderr at the time of writing
    tty: bool | None = None  # None: ask the stream


@dataclass
class _State:
    config: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    last: float | None = None  # clock time of the last heartbeat line (any Progress)
    active: list[Progress] = field(default_factory=list)  # open heartbeats, innermost last


_state = _State()


def configure(config: HeartbeatConfig | None = None) -> HeartbeatConfig:
    """Replace the process's heartbeat settings (None: the defaults, with
    ``ROBUSTLENS_HEARTBEAT_S`` applied); returns the previous ones."""
    previous = _state.config
    if config is None:
        env = os.environ.get("ROBUSTLENS_HEARTBEAT_S", "")
        config = HeartbeatConfig(every_s=float(env)) if env else HeartbeatConfig()
    _state.config, _state.last = config, None
    return previous


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Inside this block every heartbeat names ``name`` as its stage."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)
        _state.active.clear()  # a loop that died with the stage leaves no heartbeat behind


def pulse() -> None:
    """One unit of inner work (a gradient evaluation) inside the innermost open :class:`Progress`:
    counted, and a heartbeat line if the interval has passed, so an attack that spends minutes
    on one batch still shows it is alive. Costs a clock read."""
    if _state.active:
        p = _state.active[-1]
        p.pulses += 1
        p.beat()


def _stream() -> TextIO:
    return _state.config.stream if _state.config.stream is not None else sys.stderr


def on_terminal() -> bool:
    """Whether progress shows as a bar (stderr is a terminal) rather than heartbeat lines."""
    if _state.config.tty is not None:
        return _state.config.tty
    isatty = getattr(_stream(), "isatty", None)  # a foreign stream object (pytest's capture) may lack it
    return bool(isatty and isatty())


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class Progress:
    """Progress of ``total`` units of work (images, batches) described by ``desc``.

    ``update(n, step=..., **postfix)`` adds ``n`` units done, ``step`` says where the loop is
    ("epoch 2/5 batch 30/60"), ``postfix`` adds figures (``robust="41.2%"``). ``enabled=False``
    shows nothing. Use as a context manager or call :meth:`close`."""

    def __init__(self, desc: str, total: int, *, unit: str = "img", enabled: bool = True, initial: int = 0) -> None:
        self.desc, self.total, self.unit, self.done = desc, int(total), unit, int(initial)
        self.step = ""
        self.pulses = 0
        self.postfix: dict[str, Any] = {}
        self.enabled = enabled
        self.bar = None
        self.t0 = _state.config.clock()
        self.start_done = self.done
        if enabled and on_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, leave=False, file=_stream())
        if enabled and self.bar is None:
            _state.active.append(self)
            if _state.last is None:
                _state.last = self.t0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, *, step: str | None = None, **postfix: Any) -> None:
        self.done += int(n)
        if step is not None:
            self.step = step
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(int(n))
            if postfix or step is not None:
                self.bar.set_postfix_str(" ".join(filter(None, [self.step, *(f"{k}={v}" for k, v in self.postfix.items())])))
            return
        self.beat()

    def beat(self) -> None:
        """Write the heartbeat line if the process's interval has passed since the last one."""
        now, every = _state.config.clock(), _state.config.every_s
        if now - self.t0 >= every / 6 and (_state.last is None or now - _state.last >= every):
            _state.last = now
            print(self.line(now), file=_stream(), flush=True)

    def line(self, now: float) -> str:
        """The heartbeat line at clock time ``now``."""
        elapsed = max(0.0, now - self.t0)
        done_here = self.done - self.start_done
        parts = [f"[{_STAGE.get()}] {self.desc}" if _STAGE.get() else self.desc]
        if self.step:
            parts.append(self.step)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts.append(f"{self.done}/{self.total} {self.unit}{pct}" if self.total else f"{self.done} {self.unit}")
        left = elapsed / done_here * (self.total - self.done) if done_here > 0 and self.total else None
        parts.append(f"{_seconds(elapsed)} elapsed, " + ("time left unknown" if left is None else f"~{_seconds(left)} left"))
        extra = [f"{self.pulses} gradients"] * bool(self.pulses) + [f"{k}={v}" for k, v in self.postfix.items()]
        if extra:
            parts.append(" ".join(extra))
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self in _state.active:
            _state.active.remove(self)


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "step", enabled: bool = True,
          step: Callable[[int], str] | None = None) -> Iterator[T]:
    """``items``, one at a time, inside a :class:`Progress` of ``total`` units (default
    ``len(items)``) that counts one unit per item: a bar on a terminal, heartbeat lines
    otherwise. ``step(i)`` (the items done so far) names where the loop is. The progress closes
    when the loop ends, breaks or raises."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0
    with Progress(desc, total, unit=unit, enabled=enabled) as bar:
        for i, item in enumerate(items):
            yield item
            bar.update(1, step=None if step is None else step(i + 1))


configure()
