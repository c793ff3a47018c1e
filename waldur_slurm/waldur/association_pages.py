"""Reading the 2024 server's whole association list exactly, although it pages unstably (pure logic, no I/O).

``/api/slurm-associations/`` is ordered by username only, so PostgreSQL breaks ties anew in every
LIMIT/OFFSET query: rows that share a username and straddle a page boundary are skipped or repeated.
What does not move between queries is where each username's rows are: the rows of username U always fill
the positions [a, e), where a is the number of rows with a smaller username. So

- a username whose rows lie inside one page is read exactly by that page;
- a username whose rows straddle a boundary (it is then the last row of one page and the first of the
  next) was read exactly when its pages show e - a distinct rows; otherwise it is read again with one
  request whose window (``page``, ``page_size``) holds all of [a, e): one query returns every row of the run;
- a run longer than any window (a login in more than 300 allocations of the server) stays uncertain: the
  rows seen exist, but an allocation where it was not seen must be read on its own;
- anything that contradicts this (the count changed between requests, a username in two runs, a short
  page, a window that does not show its run where the pages did) means the table changed or the server is
  not the one modelled: the caller then reads per allocation instead.

Measured on the Oct 2024 server: the same (page, page_size) returns the same order again, so re-reading
pages does not recover the rows a long run lost (3,220 rows: 2,739 distinct in pages of 300; four more
passes with other page sizes reached 2,931).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Run:
    """The rows of one username: positions [start, end) of the server's order."""

    username: str
    start: int
    end: int


@dataclass(frozen=True)
class Window:
    """One extra request that re-reads a run whole: ``GET ?page=page&page_size=page_size``."""

    run: Run
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def page_count(total: int, page_size: int) -> int:
    return max(1, -(-total // page_size))


# What a request for a page of 300 associations costs the Oct 2024 server, in reads of one allocation's
# associations: 1.2-1.7 s against 0.13 s (bench/run --mastermind, N=500, 8 in flight on 3 workers): it renders
# every row with its allocation's URL.
PAGE_COST = 10


def worth_reading_whole(total: int, page_size: int, allocations: int) -> bool:
    """Whole list (its pages, plus at most one window per page boundary) against one read per allocation, by
    what they cost the server. (Uncertain logins can add reads of single allocations.)"""
    pages = page_count(total, page_size)
    weight = PAGE_COST * min(page_size, total) / 300 if total else 1
    return (pages + (pages - 1)) * max(1.0, weight) < 1 + allocations


def _username(row: Row) -> str | None:
    name = row.get("username")
    return name if isinstance(name, str) else None


def runs_of(pages: Sequence[Sequence[Row]], total: int, page_size: int) -> list[Run] | None:
    """The username runs of the concatenated pages, or None when the pages cannot be one ordering of
    ``total`` rows (a short or long page, a username that appears in two separate runs)."""
    if len(pages) != page_count(total, page_size):
        return None
    for index, page in enumerate(pages):
        if len(page) != min(page_size, max(0, total - index * page_size)):
            return None
    names = [_username(row) for page in pages for row in page]
    if any(n is None for n in names):
        return None
    runs: list[Run] = []
    seen: set[str] = set()
    start = 0
    for pos in range(1, len(names) + 1):
        if pos == len(names) or names[pos] != names[start]:
            name = names[start]
            assert name is not None
            if name in seen:
                return None
            seen.add(name)
            runs.append(Run(name, start, pos))
            start = pos
    return runs


def straddling(runs: Sequence[Run], page_size: int) -> list[Run]:
    """The runs that cross a page boundary: only these can have been read wrongly."""
    return [r for r in runs if r.start // page_size != (r.end - 1) // page_size]


def window_for(run: Run, max_page_size: int) -> Window | None:
    """The largest page size whose one page holds all of the run, or None when no page of at most
    ``max_page_size`` rows does (a run longer than that, or one no page size aligns with)."""
    for size in range(max_page_size, run.end - run.start - 1, -1):
        page = run.start // size + 1
        if page * size >= run.end:
            return Window(run, page, size)
    return None


def run_rows(window: Window, rows: Sequence[Row], total: int) -> list[Row] | None:
    """The run's rows out of the window's answer, or None when the answer does not fit the first reading
    (the window is short, or the run's positions hold another username, or a neighbour holds the same)."""
    expected = min(window.page_size, max(0, total - window.offset))
    if len(rows) != expected:
        return None
    lo, hi = window.run.start - window.offset, window.run.end - window.offset
    names = [_username(r) for r in rows]
    if any(n != window.run.username for n in names[lo:hi]):
        return None
    if (lo > 0 and names[lo - 1] == window.run.username) or (hi < len(names) and names[hi] == window.run.username):
        return None
    return list(rows[lo:hi])


def row_key(row: Row) -> Any:
    """A row's identity: its uuid, or (username, allocation) where the server sends no uuid."""
    return row.get("uuid") or (row.get("username"), row.get("allocation"), row.get("allocation_uuid"))


@dataclass(frozen=True)
class Reading:
    """What the pages leave to do: the windows to read, and the logins whose runs stay uncertain."""

    windows: tuple[Window, ...]
    uncertain: frozenset[str]


def resolve(pages: Sequence[Sequence[Row]], total: int, page_size: int) -> Reading | None:
    """The windows and uncertain logins after the pages, or None when the pages are not one ordering."""
    runs = runs_of(pages, total, page_size)
    if runs is None:
        return None
    distinct: dict[str, set[Any]] = {}
    for page in pages:
        for row in page:
            distinct.setdefault(_username(row) or "", set()).add(row_key(row))
    windows: list[Window] = []
    uncertain: set[str] = set()
    for run in straddling(runs, page_size):
        if len(distinct.get(run.username, ())) == run.end - run.start:
            continue  # every row of the run was seen: nothing was skipped
        window = window_for(run, page_size)
        if window is None:
            uncertain.add(run.username)
        else:
            windows.append(window)
    return Reading(tuple(windows), frozenset(uncertain))


def merge(pages: Sequence[Sequence[Row]], fixed: Mapping[str, Sequence[Row]]) -> list[Row]:
    """Every row of the pages once, with the rows of each re-read username replaced by its window's."""
    out: dict[Any, Row] = {}
    for page in pages:
        for row in page:
            if _username(row) not in fixed:
                out.setdefault(row_key(row), row)
    for rows in fixed.values():
        for row in rows:
            out.setdefault(row_key(row), row)
    return list(out.values())


def needs_own_read(held: frozenset[str], uncertain: frozenset[str]) -> bool:
    """An allocation must be read on its own when an uncertain login was not seen in it: the login's row for
    it may be one the pages skipped."""
    return bool(uncertain - held)


def usernames_by_allocation(rows: Iterable[Row], allocation_of: Any) -> dict[str, frozenset[str]]:
    """allocation uuid -> its usernames; ``allocation_of(row)`` names a row's allocation (or None)."""
    out: dict[str, set[str]] = {}
    for item in rows:
        alloc = allocation_of(item)
        username = _username(item)
        if alloc and username:
            out.setdefault(alloc, set()).add(username)
    return {k: frozenset(v) for k, v in out.items()}
