"""The fast path of the ``next`` link check accepts only what the full check accepts: over
generated links near the common form (hosts, ports, prefixes, paths, pages and sizes, each
right or subtly wrong), the two checks agree on every one."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localstore.api._pagination import _plain_next_link, check_next_link, check_next_link_fully
from localstore.errors import ProtocolError

DS = "6f1d2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"
PATH = f"/v1/observability/datasets/{DS}/records"
PAGE = 7

# each part: its good value first, then values near it
ORIGINS = ["http://127.0.0.1", "", "https://api.mistral.ai", "http://localhost", "http://a-b.test", "ftp://x.test",
           "http://-x.test", "http://x-.test", "http://[::1]", "http://ex ample", "HTTP://x.test", "http://x..y"]
PORTS = [":5000", "", ":0", ":1", ":65535", ":65536", ":99999", ":"]
PREFIXES = ["", "/prefix", "/a/b", "/.", "/..", "/%2F", "/x/..", "//"]
PATHS = [PATH, PATH + "/", PATH.upper(), "/v1/other/records", PATH[:-1], PATH + "x"]
PAGES = [str(PAGE + 1), str(PAGE), str(PAGE + 2), "0" + str(PAGE + 1), "+8", "8.0", "", "0", "-8", "99999999999"]
SIZES = ["100", "10", "0100", "", "1000", "-100"]
QUERIES = [
    *(f"?page={p}&page_size={s}" for p in PAGES for s in SIZES),
    *(f"?page_size={s}&page={p}" for p in PAGES for s in SIZES),
    *(f"?page={p}" for p in PAGES),
    "?page=8&page_size=100#f", "?page=8&page=8&page_size=100", " ?page=8&page_size=100", "", "?page=8&page_size=100 ",
]
PARTS = [ORIGINS, PORTS, PREFIXES, PATHS, QUERIES]


def _accepted(check: object, link: object, url: httpx.URL) -> bool:
    try:
        check(link, url, PAGE)  # type: ignore[operator]
    except ProtocolError:
        return False
    return True


def _agree(origin: str, port: str, prefix: str, path: str, query: str, asked_size: str | None) -> None:
    params = {"page": PAGE} | ({"page_size": asked_size} if asked_size else {})
    url = httpx.URL(f"http://127.0.0.1:5000{PATH}", params=params)
    link = (origin + port if origin else "") + prefix + path + query
    fast = _plain_next_link(link, url, PAGE)
    full = _accepted(check_next_link_fully, link, url)
    assert not fast or full, f"the fast path accepts {link!r}, the full check refuses it"
    assert _accepted(check_next_link, link, url) == full


@pytest.mark.parametrize("asked_size", ["100", None])
@pytest.mark.parametrize("part", range(len(PARTS)))
def test_each_part_off_by_one_thing_is_judged_alike(part: int, asked_size: str | None) -> None:
    """Every value of one part, the others good (a fast path's slip is usually one part)."""
    for value in PARTS[part]:
        parts = [values[0] for values in PARTS]
        parts[part] = value
        _agree(*parts, asked_size)


@settings(max_examples=300)
@given(parts=st.tuples(*(st.sampled_from(values) for values in PARTS)), asked_size=st.sampled_from(["100", None]))
def test_any_mix_of_parts_is_judged_alike(parts: tuple[str, ...], asked_size: str | None) -> None:
    _agree(*parts, asked_size)


@pytest.mark.parametrize("link", [
    f"http://127.0.0.1:5000{PATH}?page=8&page_size=100",  # what the bundled emulator sends
    f"https://api.example.test/prefix{PATH}?page=8&page_size=100",
    f"{PATH}?page=8&page_size=100",
])
def test_the_common_forms_take_the_fast_path(link: str) -> None:
    url = httpx.URL(f"http://127.0.0.1:5000{PATH}", params={"page": PAGE, "page_size": 100})
    assert _plain_next_link(link, url, PAGE)
