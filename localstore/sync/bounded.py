"""Running blocking calls (HTTP requests) a bounded number at a time."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Generator[R, None, None]:
    """Run ``fn`` over ``items`` with at most ``concurrency`` calls in flight, yielding
    results as they complete; the first exception propagates after the calls not yet
    started are cancelled and those in flight abandoned, not waited for: the same when
    the caller stops early (closes the generator) or Ctrl-C arrives."""
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="localstore-io")
    todo = iter(items)
    pending: set[Future[R]] = set()
    try:
        while True:
            for item in todo:
                pending.add(pool.submit(fn, item))
                if len(pending) >= concurrency:
                    break
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
