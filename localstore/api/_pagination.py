"""Listing every page of a dataset's records, concurrently, without trusting the
server's pagination blindly.

Page 1 tells the ``count``; pages 2..ceil(count/page_size) are fetched with
bounded concurrency and yielded as they arrive (in completion order, not page
order) — with one more when ``count`` fills its last page, since a full last page
must be followed by an empty or short one. If that page is full too, the listing
goes on one page at a time until an empty or short page, up to a hard cap.
``Listing.complete`` says whether the pages add up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import SimpleQueue
from types import TracebackType

import httpx

from localstore.api._decode import short
from localstore.api._models import RecordPage
from localstore.errors import ProtocolError

# pages tried past the expected last one before the listing is declared broken
EXTRA_PAGES_CAP = 1000
PREFETCH = 4  # pages queued per connection: the pool keeps fetching while a batch is written


@dataclass
class Listing:
    """What a whole-dataset listing found.

    ``complete`` is True only when the distinct record ids seen equal ``count``,
    every page reported that same ``count`` and no page failed; only then may a
    caller conclude that a record absent from the listing is gone from the server.
    """

    dataset_id: str
    count: int
    complete: bool = False
    pages: int = 0
    records: int = 0
    distinct: int = 0
    page_size: int = 100
    counts: tuple[int, ...] = ()
    failed: bool = False
    problems: list[str] = field(default_factory=list)
    record_ids: frozenset[str] = field(default=frozenset(), repr=False)


def check_next_link(next_link: object, request_url: httpx.URL, page: int) -> None:
    """``next`` must be null or a link (absolute or relative) to this listing with
    ``page`` = this page + 1; anything else is a ProtocolError. The host is not compared
    (a server may name itself differently from how it was reached, and the link is never
    followed), and a path may carry a prefix (a server mounted under one)."""
    if next_link is None or _plain_next_link(next_link, request_url, page):
        return
    check_next_link_fully(next_link, request_url, page)


def check_next_link_fully(next_link: object, request_url: httpx.URL, page: int) -> None:
    """:func:`check_next_link` without its fast path for the common form."""

    def broken(why: str) -> ProtocolError:
        return ProtocolError(
            f"server sent an inconsistent next link on page {page}: {short(next_link)} ({why})"
        )

    if not isinstance(next_link, str):
        raise broken("not a string")
    try:
        target = request_url.join(next_link.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise broken(f"not a URL: {exc}") from None
    if not target.path.rstrip("/").endswith(request_url.path.rstrip("/")):
        raise broken("another path")
    pages = target.params.get_list("page")
    if len(pages) != 1:
        raise broken("no single page parameter")
    try:
        target_page = int(pages[0])
    except ValueError:
        raise broken("page is not a number") from None
    if target_page <= page:
        raise broken("loops back to an earlier page")
    if target_page != page + 1:
        raise broken(f"skips to page {target_page}")
    sizes = target.params.get_list("page_size")
    wanted = request_url.params.get("page_size")
    if sizes and wanted is not None and sizes != [wanted]:
        raise broken("another page_size")


# The common form of a good ``next``: [scheme://host[:port]]path?page=N&page_size=M, in
# characters that parse to themselves (no dots, escapes or spaces), which the full check
# would accept when it holds what _plain_next_link compares; it parsed the URL three
# times, ~0.2 ms a page.
_PLAIN_NEXT = re.compile(
    r"(?:https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?)?"
    r"(/[A-Za-z0-9/_-]*)\?page=([1-9][0-9]{0,8})&page_size=([0-9]{1,9})",
    re.ASCII,
)


def _plain_next_link(next_link: object, request_url: httpx.URL, page: int) -> bool:
    """Whether ``next_link`` is, in its common form, the link to page ``page`` + 1 of
    this listing (False: let the full check decide)."""
    if type(next_link) is not str:
        return False
    match = _PLAIN_NEXT.fullmatch(next_link)
    if match is None:
        return False
    path, target_page, size = match.groups()
    return (
        path.rstrip("/").endswith(request_url.path.rstrip("/"))
        and int(target_page) == page + 1
        and size == request_url.params.get("page_size", size)
    )


class ListingIterator(Iterator["RecordPage"]):
    """Iterates the pages of one dataset; ``listing`` is filled when the iteration
    ends: exhausted, or failed (then ``listing.failed`` is True, ``complete`` False,
    and the iterator raised the error). It stays None if the caller stops early.
    Close it (or use ``with``) to stop early; in-flight requests are abandoned.

    Without ``track_ids`` the ids seen are not kept (a million of them weigh ~100 MB):
    ``complete`` then only says that the pages and counts add up, and the caller, which
    keeps the ids elsewhere, checks that the distinct ids equal ``count``."""

    def __init__(
        self,
        fetch: Callable[[int], RecordPage],
        dataset_id: str,
        *,
        page_size: int,
        concurrency: int,
        track_ids: bool = True,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._on_idle = on_idle
        self._track_ids = track_ids
        self._dataset_id = dataset_id
        self._page_size = page_size
        self._concurrency = concurrency
        self.listing: Listing | None = None
        self._ids: set[str] = set()
        self._counts: list[int] = []
        self._records = 0
        self._pages = 0
        self._problems: list[str] = []
        self._canonical_dataset: str | None = None
        self._gen = self._run()

    def __iter__(self) -> ListingIterator:
        return self

    def __next__(self) -> RecordPage:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> ListingIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- bookkeeping -------------------------------------------------------

    def _take(self, page: RecordPage, first_count: int) -> RecordPage:
        self._pages += 1
        if page.count != first_count:
            self._problems.append(
                f"page {page.page} reported count {page.count}, page 1 reported {first_count}"
            )
        if page.count not in self._counts:
            self._counts.append(page.count)
        for record in page.records:
            if self._canonical_dataset is None:
                self._canonical_dataset = record.dataset_id
            elif record.dataset_id != self._canonical_dataset:
                raise ProtocolError(
                    f"page {page.page} of dataset {self._dataset_id} holds record {record.id} "
                    f"of dataset {record.dataset_id}"
                )
            if self._track_ids:
                self._ids.add(record.id)
        self._records += len(page.records)
        return page

    def _check_not_repeated(self, page: RecordPage, ids_before: int) -> None:
        """A page past ``count`` holding only records seen already: a server that ignores
        ``page`` would go on forever."""
        if self._track_ids and page.records and len(self._ids) == ids_before:
            raise ProtocolError(
                f"server repeats records on page {page.page} of dataset {self._dataset_id}"
            )

    def _finish(self, count: int, *, failed: bool) -> None:
        problems = list(self._problems)
        distinct = len(self._ids) if self._track_ids else self._records
        if not failed and self._track_ids and distinct != count:
            problems.append(f"saw {distinct} distinct records, count is {count}")
        if failed:
            problems.append("a page failed")
        complete = not failed and (distinct == count or not self._track_ids) and set(self._counts) == {count}
        self.listing = Listing(
            dataset_id=self._canonical_dataset or self._dataset_id,
            count=count,
            complete=complete,
            pages=self._pages,
            records=self._records,
            distinct=distinct,
            page_size=self._page_size,
            counts=tuple(self._counts),
            failed=failed,
            problems=problems,
            record_ids=frozenset(self._ids),
        )

    # -- the walk ----------------------------------------------------------

    def _run(self) -> Generator[RecordPage, None, None]:
        count = 0
        try:
            first = self._fetch(1)
            count = first.count
            yield self._take(first, count)
            expected = max(1, math.ceil(count / self._page_size))
            # a full last page is followed by one more request, which can only say the
            # listing is over (or that it grew): it goes with the others, not after them
            last = expected + (count > 0 and count % self._page_size == 0)
            last_full = last == 1 and len(first.records) >= self._page_size
            if last > 1:
                last_full = yield from self._middle(last, count, after_count=last > expected)
            page_no = last
            cap = expected + EXTRA_PAGES_CAP
            while last_full:
                page_no += 1
                if page_no > cap:
                    raise ProtocolError(
                        f"dataset {self._dataset_id} still had full pages after page {cap} "
                        f"(count {count}, page_size {self._page_size}): giving up"
                    )
                before = len(self._ids)
                page = self._take(self._fetch(page_no), count)
                self._check_not_repeated(page, before)
                yield page
                last_full = len(page.records) >= self._page_size
        except GeneratorExit:
            raise
        except BaseException:
            self._finish(count, failed=True)
            raise
        self._finish(count, failed=False)

    def _middle(self, expected: int, count: int, *, after_count: bool) -> Generator[RecordPage, None, bool]:
        """Pages 2..expected with at most ``concurrency`` in flight; returns whether
        page ``expected`` was full (``after_count``: that page is past ``count``)."""
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(self._concurrency, expected - 1)),
            thread_name_prefix="localstore-pages",
        )
        pending: dict[Future[RecordPage], int] = {}
        # finished futures arrive here (a done-callback puts them): taking one is O(1),
        # where wait() over every pending future took each one's lock, twice per page
        finished: SimpleQueue[Future[RecordPage]] = SimpleQueue()
        todo = iter(range(2, expected + 1))
        last_full = False

        # PREFETCH times as many pages queued as fetched at once: the pool keeps
        # `concurrency` requests in flight while the consumer writes a batch (a batch of
        # 2,500 records takes ~100 ms to write, four round trips at 30 ms).
        def refill() -> None:
            while len(pending) < PREFETCH * self._concurrency:
                number = next(todo, None)
                if number is None:
                    return
                future = pool.submit(self._fetch, number)
                pending[future] = number
                future.add_done_callback(finished.put)

        try:
            refill()
            while pending:
                if self._on_idle is not None and finished.empty():
                    self._on_idle()  # the consumer's work, done while pages are on the wire
                future = finished.get()
                number = pending.pop(future)
                before = len(self._ids)
                page = self._take(future.result(), count)
                if number == expected and after_count:
                    self._check_not_repeated(page, before)
                if number == expected:
                    last_full = len(page.records) >= self._page_size
                yield page
                refill()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        return last_full
