"""The watcher: a watchfiles loop over a checkout folder that queues file edits as
changes, refreshes the files after every sync (its own, or one another process ran),
and, with ``sync_every``, syncs periodically — quietly while the API does not answer.

Each event batch is handled by reading each touched file as it is *now* and comparing
it with the manifest, so editors' atomic saves (temp file + rename, vim's backup dance)
and bursts of saves count once, and an unchanged content queues nothing.
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

from .errors import LocalstoreError, SyncInProgressError
from .files import Checkout, CheckoutReport, Outcome
from .files_fs import CONFLICT_SUFFIX
from .store import Store

if TYPE_CHECKING:
    from .api import Client


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
        from .sync import sync

        self.next_at = time.monotonic() + self.every
        try:
            with self.factory() as client:
                result = sync(self.store, client)
        except SyncInProgressError:
            return False  # another process is syncing; its commits trigger a refresh
        except LocalstoreError as exc:
            error: str | None = str(exc)
            result = None
        except Exception as exc:  # a long-running loop reports, it does not die
            error = f"{type(exc).__name__}: {exc}"
            result = None
        else:
            error = result.errors[0] if result.errors else None
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
) -> WatchReport:
    """Watch a checkout folder until ``stop_event`` is set (or Ctrl-C when run in the main
    thread without one). ``ready`` is called once the first scan is done and edits are
    being watched. With ``sync_every`` (seconds) and ``client_factory``, sync periodically."""
    import watchfiles

    if sync_every is not None and client_factory is None:
        raise LocalstoreError("watch(sync_every=…) needs a client_factory")
    co = Checkout.open(store, directory)
    stop = stop_event or threading.Event()
    report = WatchReport()
    syncer = _PeriodicSync(store, client_factory, sync_every, on_message) if client_factory and sync_every else None
    seen_version = _data_version(store)
    started = False
    said: set[str] = set()
    with co.folder.lock():
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
            paths = sorted({Path(p) for _, p in batch})
            if not started or any(len(p.relative_to(co.root).parts) == 1 for p in paths):
                paths = sorted({*paths, *(c.path for c in co.scan())})  # first pass, or a folder moved
            if paths:
                report.batches += 1
                _apply(co, paths, report, on_message)
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
                    _say_once(f"could not refresh the files: {exc}", on_message, said)
                _apply(co, sorted(co.root / rel for rel in co.refused), report, on_message, retry=True)
            co.save()
            if not started:
                started = True
                on_message(f"watching {co.root} ({len(co.files)} files); Ctrl-C stops")
                if ready is not None:
                    ready()
    co.save()
    on_message(f"stopped watching {co.root}")
    return report


def _apply(
    co: Checkout,
    paths: Iterable[Path],
    report: WatchReport,
    say: Callable[[str], None],
    *,
    retry: bool = False,
) -> None:
    gone: Counter[str] = Counter()
    for path in paths:
        try:
            outcome: Outcome = co.apply(path, retry=retry)
        except OSError as exc:
            say(f"{path}: {exc.strerror or exc}; nothing queued")
            continue
        if outcome.action in ("edited", "created", "deleted", "restored", "held") and outcome.kinds:
            report.queued += 1
        elif outcome.action == "invalid":
            report.invalid += 1
        elif outcome.action == "folder_gone":
            gone[path.parent.name] += 1
        if outcome.message:
            say(outcome.message)
    for ds, n in sorted(gone.items()):
        say(
            f"{ds}/ was removed: its {n} record(s) are not deleted (remove single files to delete "
            "records); writing it again from the store"
        )
