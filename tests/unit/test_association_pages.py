"""The exact read of an unstably paged association list (waldur/association_pages.py), without I/O.

A list ordered by username only is modelled as the 2024 server's PostgreSQL does it: every query (page,
page_size) breaks ties between rows of one username in its own order. Whatever the ties, the pages plus one
window per straddling username give every row exactly once; a changed list is noticed or costs at most what a
per-allocation read would have seen at a different moment.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from waldur_slurm.waldur import association_pages as pages

Row = dict[str, str]


def server_page(rows: list[Row], page: int, size: int, seed: int) -> list[Row]:
    """One LIMIT/OFFSET query: username order, ties broken by this query's own shuffle."""
    tie = random.Random(f"{seed}/{page}/{size}")
    keyed = [(r["username"], tie.random(), r) for r in rows]
    ordered = [r for _, _, r in sorted(keyed, key=lambda k: (k[0], k[1]))]
    return ordered[(page - 1) * size: page * size]


def read_whole(rows: list[Row], size: int, seed: int) -> tuple[list[Row], frozenset[str], int]:
    """The client's sequence over the pure functions: (rows, uncertain logins, requests)."""
    total = len(rows)
    got = [server_page(rows, n, size, seed) for n in range(1, pages.page_count(total, size) + 1)]
    reading = pages.resolve(got, total, size)
    assert reading is not None
    fixed = {}
    for w in reading.windows:
        part = pages.run_rows(w, server_page(rows, w.page, w.page_size, seed), total)
        assert part is not None
        fixed[w.run.username] = part
    return pages.merge(got, fixed), reading.uncertain, len(got) + len(reading.windows)


table = st.lists(
    st.tuples(st.sampled_from(["alice", "bob", "carol", "dave", "ops", "a_b", "Zed"]), st.integers(0, 400)),
    max_size=700, unique=True,
)


@settings(max_examples=300, deadline=None)
@given(table, st.integers(2, 40), st.integers(0, 10_000), st.sets(st.integers(0, 400), max_size=30))
def test_every_allocation_is_known_exactly_or_read_on_its_own(
    pairs: list[tuple[str, int]], size: int, seed: int, wanted: set[int]
) -> None:
    rows = [{"username": u, "allocation_uuid": f"{a:032x}", "uuid": f"{i:032x}"} for i, (u, a) in enumerate(pairs)]
    out, uncertain, requests = read_whole(rows, size, seed)
    assert len({r["uuid"] for r in out}) == len(out)  # no row twice
    truth: dict[str, set[str]] = {}
    for u, a in pairs:
        truth.setdefault(f"{a:032x}", set()).add(u)
    held: dict[str, set[str]] = {}
    for r in out:
        held.setdefault(r["allocation_uuid"], set()).add(r["username"])
    for a in (f"{x:032x}" for x in wanted):
        seen = frozenset(held.get(a, set()))
        assert seen <= truth.get(a, set())  # a row seen exists
        if not pages.needs_own_read(seen, uncertain):
            assert seen == truth.get(a, set())  # and an allocation taken from the pages is exact
    # only a login with more rows than a page can hold, or that no page size aligns with, stays uncertain
    lengths: dict[str, int] = {}
    for u, _ in pairs:
        lengths[u] = lengths.get(u, 0) + 1
    starts: dict[str, int] = {}
    for pos, u in enumerate(sorted(u for u, _ in pairs)):
        starts.setdefault(u, pos)
    for u in uncertain:
        assert all(starts[u] // s != (starts[u] + lengths[u] - 1) // s for s in range(1, size + 1))
    n_pages = pages.page_count(len(rows), size)
    assert n_pages <= requests <= 2 * n_pages - 1 if n_pages > 1 else requests == 1


def test_the_unstable_order_alone_loses_and_repeats_rows() -> None:
    """Why the windows exist: two plain pages of 320 rows of two usernames miss some rows and repeat others."""
    rows = [{"username": u, "allocation_uuid": f"{a:032x}", "uuid": f"{u}{a}"} for u in ("alice", "bob") for a in range(160)]
    plain = server_page(rows, 1, 300, 7) + server_page(rows, 2, 300, 7)
    assert len(plain) == 320 and len({r["uuid"] for r in plain}) < 320
    out, uncertain, requests = read_whole(rows, 300, 7)
    assert uncertain == frozenset() and len({r["uuid"] for r in out}) == 320 == len(out)
    assert requests == 3  # two pages, one window for bob's 160 rows across the boundary at 300


def test_a_login_in_more_rows_than_a_page_holds_is_uncertain() -> None:
    """ops in 400 allocations: no window holds its run; the rows seen are kept, the others are read alone."""
    rows = [{"username": "ops", "allocation_uuid": f"{a:032x}", "uuid": f"o{a}"} for a in range(400)]
    rows += [{"username": "zed", "allocation_uuid": f"{a:032x}", "uuid": f"z{a}"} for a in range(3)]
    out, uncertain, requests = read_whole(rows, 300, 3)
    assert uncertain == frozenset({"ops"}) and requests == 2
    held = {r["allocation_uuid"] for r in out if r["username"] == "ops"}
    assert len(held) < 400  # the pages skipped some (and repeated others)
    assert pages.needs_own_read(frozenset({"zed"}), uncertain) and not pages.needs_own_read(frozenset({"ops"}), uncertain)


def test_a_window_is_the_largest_page_that_holds_the_run() -> None:
    assert pages.window_for(pages.Run("bob", 160, 320), 300) == pages.Window(pages.Run("bob", 160, 320), 2, 160)
    assert pages.window_for(pages.Run("x", 299, 302), 300) == pages.Window(pages.Run("x", 299, 302), 2, 299)
    assert pages.window_for(pages.Run("x", 0, 301), 300) is None  # longer than any page
    assert pages.window_for(pages.Run("x", 1, 3), 2) is None  # as long as a page, but no page of 2 or less holds it
    assert pages.straddling([pages.Run("a", 0, 300), pages.Run("b", 300, 301)], 300) == []


def test_pages_that_cannot_be_one_ordering_are_refused() -> None:
    def r(u: str) -> Row:
        return {"username": u}

    assert pages.runs_of([[r("a"), r("b")], [r("a")]], 3, 2) is None  # a username in two runs: the list changed
    assert pages.runs_of([[r("a"), r("b")], [r("c")]], 4, 2) is None  # a short page
    assert pages.runs_of([[r("a")]], 3, 2) is None  # a page missing
    assert pages.runs_of([[r("a"), {"username": None}]], 2, 2) is None
    assert pages.runs_of([[r("a"), r("a")], [r("b")]], 3, 2) == [pages.Run("a", 0, 2), pages.Run("b", 2, 3)]
    w = pages.Window(pages.Run("b", 1, 3), 1, 4)
    assert pages.run_rows(w, [r("a"), r("b"), r("b"), r("c")], 4) == [r("b"), r("b")]
    assert pages.run_rows(w, [r("a"), r("b"), r("c"), r("c")], 4) is None  # the run moved
    assert pages.run_rows(w, [r("b"), r("b"), r("b"), r("c")], 4) is None  # the run grew
    assert pages.run_rows(w, [r("a"), r("b"), r("b")], 4) is None  # the window came back short


def test_whole_or_per_allocation_is_chosen_by_what_it_costs_the_server() -> None:
    # a page of 300 rows costs about ten reads of one allocation
    assert pages.worth_reading_whole(3128, 300, 500)  # (11 pages + at most 10 windows) x 10 < 1 + 500
    assert not pages.worth_reading_whole(3128, 300, 209)
    assert pages.worth_reading_whole(301, 300, 30)  # (2 pages + 1 window) x 10 < 1 + 30 allocations
    assert not pages.worth_reading_whole(301, 300, 29)
    assert pages.worth_reading_whole(320, 40, 40)  # small pages cost less: (8 + 7) x 1.33 < 41
