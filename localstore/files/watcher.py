"""The watcher: a watchfiles loop over a checkout folder that queues file edits as
changes, refreshes the files after every sync (its own, or one another process ran),
and, with ``sync_every``, syncs periodically — quietly while the API does not answer.

Each touched file is handled once it has *settled* (unchanged for ``settle_ms``), by
reading it as it is then and comparing it with the manifest, so editors' atomic saves
(temp file + rename), a truncate-then-write and bursts of saves count once, and an
unchanged content queues nothing. A file that vanishes (vim's backup dance, a tool's
``mv tmp R.json``) queues its delete only once it has stayed away for ``grace`` seconds:
reappearing before that keeps its record, and no sync can push a delete in the gap.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localstore.errors import LocalstoreError, SyncInProgressError, UsageError
from localstore.files.checkout_dir import Checkout, CheckoutReport, FileOutcome
from localstore.files.fs import CONFLICT_SUFFIX
from localstore.store.db import Store

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.sync.run import SyncReport


GRACE = 2.0  # seconds a removed file may stay away before its delete is queued
SETTLE_MS = 400  # a touched file is read once unchanged for this long


@dataclass
class WatchReport:
    batches: int = 0
    queued: int = 0  # files whose content queued at least one change
    invalid: int = 0  # invalid files reported
    refreshes: int = 0
    syncs: int = 0
    failed_syncs: int = 0


class _PeriodicSync:
    """Sync every ``every`` seconds. A failing API gets one line when it starts failing
    and one when it answers again; nothing in between."""

    def __init__(
        self, store: Store, factory: Callable[[], Client], every: float, say: Callable[[str], None]
    ) -> None:
        self.store, self.factory, self.every, self.say = store, factory, every, say
        self.next_at = time.monotonic()  # first sync right away
        self.failing = False

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def run(self, report: WatchReport) -> bool:
        """One sync; True when it may have changed the store."""
        from localstore.sync.run import sync

        self.next_at = time.monotonic() + self.every
        result: SyncReport | None = None
        try:
            with self.factory() as client:
                done = sync(self.store, client)
        except SyncInProgressError:
            return False  # another process is syncing; its commits trigger a refresh
        except LocalstoreError as exc:
            error: str | None = str(exc)
        except Exception as exc:  # a long-running loop reports, it does not die
            error = f"{type(exc).__name__}: {exc}"
        else:
            result = done
            error = done.errors[0] if done.errors else None
        report.syncs += 1
        if error is not None:
            report.failed_syncs += 1
            if not self.failing:
                self.failing = True
                self.say(f"sync failed: {error} (retrying every {self.every:g}s; quiet until it works)")
            return result is not None
        if self.failing:
            self.failing = False
            self.say("sync: the API answers again")
        assert result is not None
        if result.pushed or result.new_conflicts or result.rejected:
            rejected = f", {result.rejected} rejected (`localstore log` says why)" if result.rejected else ""
            self.say(
                f"synced: pushed {result.pushed} (created {result.created}, updated {result.updated}, "
                f"deleted {result.deleted}){rejected}"
            )
        return True


def _data_version(store: Store) -> int:
    """Changes whenever another connection (another process: a CLI sync, resolve, set…)
    commits to the store."""
    return int(store.scalar("PRAGMA data_version"))


def _say_refresh(report: CheckoutReport, say: Callable[[str], None], said: set[str]) -> None:
    for old, new in report.renamed:
        say(f"renamed {old} -> {new} (created on the server)")
    for rel in report.conflicts_written:
        rid = Path(rel).name[: -len(CONFLICT_SUFFIX)]
        say(f"conflict on {rid}: see {rel}; `localstore resolve {rid} --ours|--theirs|--file F` settles it")
    for rel in report.conflicts_removed:
        say(f"conflict settled: removed {rel}")
    if report.written or report.removed:
        say(f"refreshed from the store: {report.written} file(s) written, {report.removed} removed")
    for line in report.skipped:
        _say_once(f"skipped {line}", say, said)  # a link stays a link: say it once


class _Settling:
    """Touched files wait until they stop changing: a file is ready once its size,
    modification time and inode are the same as ``settle`` seconds before."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.pending: dict[Path, tuple[tuple[int, int, int] | None, float]] = {}

    @staticmethod
    def _signature(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def touch(self, paths: Iterable[Path]) -> None:
        now = time.monotonic()
        for path in paths:
            self.pending[path] = (self._signature(path), now)

    def ready(self) -> list[Path]:
        now = time.monotonic()
        out: list[Path] = []
        for path, (signature, since) in list(self.pending.items()):
            current = self._signature(path)
            if current != signature:
                self.pending[path] = (current, now)  # still being written
            elif now - since >= self.settle:
                out.append(path)
                del self.pending[path]
        return sorted(out)


def _say_once(line: str, say: Callable[[str], None], said: set[str]) -> None:
    if line not in said:
        said.add(line)
        say(line)


def watch(
    store: Store,
    directory: str | os.PathLike[str],
    *,
    client_factory: Callable[[], Client] | None = None,
    sync_every: float | None = None,
    stop_event: threading.Event | None = None,
    on_message: Callable[[str], None] = print,
    ready: Callable[[], None] | None = None,
    debounce_ms: int = 800,
    tick_ms: int = 500,
    grace: float = GRACE,
    settle_ms: int = SETTLE_MS,
) -> WatchReport:
    """Watch a checkout folder until ``stop_event`` is set (or Ctrl-C when run in the main
    thread without one). ``ready`` is called once the first scan is done and edits are
    being watched. With ``sync_every`` (seconds) and ``client_factory``, sync periodically.
    Raises UsageError when the folder itself goes away."""
    import watchfiles

    if sync_every is not None and client_factory is None:
        raise LocalstoreError("watch(sync_every=…) needs a client_factory")
    co = Checkout.open(store, directory, grace=grace)
    stop = stop_event or threading.Event()
    report = WatchReport()
    syncer = _PeriodicSync(store, client_factory, sync_every, on_message) if client_factory and sync_every else None
    seen_version = _data_version(store)
    started = False
    said: set[str] = set()
    settling = _Settling(settle_ms / 1000)
    try:
        with co.locked():
            co.sweep()
            for batch in watchfiles.watch(
                co.root,
                watch_filter=co.wants,
                debounce=debounce_ms,
                step=50,
                stop_event=stop,
                rust_timeout=min(tick_ms, int(sync_every * 1000)) if syncer and sync_every else tick_ms,
                yield_on_timeout=True,
                raise_interrupt=False,
                ignore_permission_denied=True,
            ):
                _check_folder(co)
                touched = {Path(p) for _, p in batch}
                if not started or any(len(_parts(co, p)) <= 1 for p in touched):
                    touched |= {c.path for c in co.scan()}  # first pass, or a folder moved
                if started:
                    settling.touch(touched)
                    paths = settling.ready()
                else:
                    paths = sorted(touched)  # what changed while no watcher ran
                paths = sorted({*paths, *co.due_removals()})
                if paths:
                    report.batches += 1
                    _apply(co, paths, report, on_message, said)
                changed = co.needs_refresh
                if syncer is not None and syncer.due():
                    changed = syncer.run(report) or changed
                version = _data_version(store)
                if changed or version != seen_version or not started:
                    seen_version = version
                    report.refreshes += 1
                    try:
                        _say_refresh(co.refresh(), on_message, said)
                    except (OSError, LocalstoreError) as exc:  # e.g. a full disk: say it, keep watching
                        _check_folder(co)
                        _say_once(f"could not refresh the files: {exc}", on_message, said)
                    # refused and held files are merged again with what the store holds now
                    again = {*co.refused, *(rel for rel, entry in co.files.items() if entry.held)}
                    _apply(co, sorted(co.root / rel for rel in again), report, on_message, said, retry=True)
                co.save()
                if not started:
                    started = True
                    on_message(f"watching {co.root} ({len(co.files)} files); Ctrl-C stops")
                    if ready is not None:
                        ready()
            co.save()
    except FileNotFoundError:
        _check_folder(co)
        raise
    on_message(f"stopped watching {co.root}")
    return report


def _parts(co: Checkout, path: Path) -> tuple[str, ...]:
    try:
        return path.relative_to(co.root).parts
    except ValueError:
        return ()


def _check_folder(co: Checkout) -> None:
    if not os.path.isdir(co.root) or os.path.islink(co.root):
        raise UsageError(f"the checkout folder {co.root} is gone; stopped watching (nothing queued was lost)")


def _apply(
    co: Checkout,
    paths: Iterable[Path],
    report: WatchReport,
    say: Callable[[str], None],
    said: set[str],
    *,
    retry: bool = False,
) -> None:
    gone: Counter[str] = Counter()
    for path in paths:
        try:
            outcome: FileOutcome = co.apply(path, retry=retry)
        except OSError as exc:
            _check_folder(co)
            say(f"{path}: {exc.strerror or exc}; nothing queued")
            continue
        except LocalstoreError as exc:  # e.g. the store is busy: the file is read again later
            say(f"{path}: {exc}; nothing queued yet")
            continue
        if outcome.action in ("edited", "created", "deleted", "restored") and outcome.kinds:
            report.queued += 1
        elif outcome.action == "invalid" and outcome.message:
            report.invalid += 1
        elif outcome.action == "folder_gone":
            gone[path.parent.name] += 1
        if outcome.message:
            say(outcome.message)
    for ds, n in sorted(gone.items()):
        for line in [line for line in said if ds in line]:
            said.discard(line)  # a link that was there is reported again if it comes back
        say(
            f"{ds}/ was removed: its {n} record(s) are not deleted (remove single files to delete "
            "records); writing it again from the store"
        )
