"""Pure parsers for sacctmgr / sacct output. No I/O; unit-tested on captured output.

Formats are those of Slurm 22.05 with `--parsable2 --noheader` (fields separated by
`|`, no trailing separator) as documented in docs/slurm-local-cluster.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from ..errors import SlurmError
from ..model import JobRecord, SlurmAccount, SlurmState


class SlurmParseError(SlurmError, ValueError):
    """Output did not have the expected shape."""


# ---------------------------------------------------------------------------- TRES
_UNIT_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_TRES_VALUE = re.compile(r"^(\d{1,30}(?:\.\d{1,30})?)([A-Za-z?*]?)$", re.ASCII)
# No TRES amount SLURM tracks comes near this (it stores 64-bit counts); larger text is refused unparsed.
MAX_TRES_VALUE = Decimal(2) ** 64


def is_size_tres(key: str) -> bool:
    """TRES whose amounts are sizes with MB as SLURM's base unit: printed with a K/M/G/T/P suffix
    (``mem=100M``, ``bb/cray=2G``, ``gres/gpumem=16G``), and counted in MB when bare."""
    return key in ("mem", "vmem") or key.startswith(("bb/", "fs/")) or key.endswith("mem")


def parse_tres(text: str) -> dict[str, Decimal]:
    """`cpu=4,mem=100M,gres/gpu=1,billing=4` -> {"cpu": 4, "mem": 100, ...}.

    Sizes (``is_size_tres``: mem, vmem, bb/*, fs/*, gres/gpumem) are normalised to MB by their suffix
    (a bare number is MB; K/G/T/P scale by 1024 from M). Other TRES are counts; a suffix scales them by
    1024 per step. Any other suffix (sacctmgr prints ``?`` past P) or a value of 2^64 or more raises
    SlurmParseError naming the TRES and the value. An empty string gives {}.
    """
    result: dict[str, Decimal] = {}
    text = text.strip()
    if not text:
        return result
    for item in text.split(","):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        raw = raw.strip()
        if not sep or not key:
            raise SlurmParseError(f"bad TRES item {item[:80]!r} in {text[:200]!r}")
        m = _TRES_VALUE.match(raw)
        if not m:
            raise SlurmParseError(f"bad TRES value {raw[:80]!r} for {key[:80]!r} in {text[:200]!r}")
        suffix = m.group(2).upper()
        if suffix not in _UNIT_POWER:
            raise SlurmParseError(f"TRES {key!r} = {raw!r}: unknown unit suffix {m.group(2)!r} (expected K, M, G, T or P)")
        number = Decimal(m.group(1))
        power = _UNIT_POWER[suffix]
        if is_size_tres(key):
            # base unit is M: mem=1024K -> 1 MB, bb/x=2G -> 2048 MB
            value = number * (Decimal(1024) ** (power - 2)) if suffix else number
        else:
            value = number * (Decimal(1024) ** power)
        if value >= MAX_TRES_VALUE:
            raise SlurmParseError(f"TRES {key!r} = {raw!r} is too large")
        result[key] = value
    return result


def parse_limits(text: str) -> dict[str, int]:
    """A GrpTRESMins string as integer TRES-minutes (mem in MB-minutes)."""
    limits: dict[str, int] = {}
    for key, value in parse_tres(text).items():
        if value != value.to_integral_value():
            raise SlurmParseError(f"non-integer limit {key}={value} in {text!r}")
        limits[key] = int(value)
    return limits




# ------------------------------------------------------------------------- Elapsed
_ELAPSED = re.compile(r"^(?:(\d{1,9})-)?(?:(\d{1,9}):)?(\d{1,9}):(\d{1,9})(\.\d{1,9})?$", re.ASCII)


def parse_elapsed(text: str) -> Decimal:
    """sacct Elapsed: `[D-]HH:MM:SS`, `MM:SS`, optionally with `.fraction` -> seconds."""
    text = text.strip()
    m = _ELAPSED.match(text)
    if not m:
        raise SlurmParseError(f"bad elapsed time {text!r}")
    days, hours, minutes, seconds, fraction = m.groups()
    if days is not None and hours is None:
        raise SlurmParseError(f"bad elapsed time {text!r}")
    total = Decimal(int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    if fraction:
        total += Decimal(fraction)
    return total


def parse_elapsed_raw(text: str) -> int:
    """sacct ElapsedRaw (whole seconds); empty -> 0."""
    text = text.strip()
    if not text:
        return 0
    # ASCII digits only ("¹".isdigit() is true), and no more than fits any real duration
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise SlurmParseError(f"bad ElapsedRaw {text[:40]!r}")
    return int(text)


def parse_sacct_time(text: str) -> datetime | None:
    """`2026-11-25T05:55:28` -> naive datetime in the SLURM host's local time.

    `Unknown` (running job's End), `None` (pending job's Start) and empty give None.
    """
    text = text.strip()
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise SlurmParseError(f"bad time {text!r}") from None


# ---------------------------------------------------------------------- parsable2
def split_rows(text: str, ncols: int, *, free_text_col: int | None = None) -> list[list[str]]:
    """Split `--parsable2 --noheader` output into rows of exactly `ncols` fields.

    Empty fields are kept (`proj_x||cpu=1` -> ["proj_x", "", "cpu=1"]). A free-text
    column (a description written by someone else) may itself contain `|`; surplus
    fields are joined back into it. Blank lines are ignored.
    """
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) > ncols and free_text_col is not None:
            extra = len(fields) - ncols
            fields = (
                fields[:free_text_col]
                + ["|".join(fields[free_text_col : free_text_col + extra + 1])]
                + fields[free_text_col + extra + 1 :]
            )
        if len(fields) != ncols:
            raise SlurmParseError(f"expected {ncols} fields, got {len(fields)}: {line!r}")
        rows.append(fields)
    return rows


@dataclass(frozen=True)
class TreeRow:
    depth: int
    fields: list[str]


def parse_tree(text: str, ncols: int) -> list[TreeRow]:
    """`list assoc tree` parsable output keeps one leading space per tree level."""
    rows: list[TreeRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        fields = line.lstrip(" ").split("|")
        if len(fields) != ncols:
            raise SlurmParseError(f"expected {ncols} fields, got {len(fields)}: {line!r}")
        rows.append(TreeRow(depth, fields))
    return rows


# -------------------------------------------------------------- stdin batch output
ECHO_PREFIX = "sacctmgr: "
# sacctmgr's own log lines share the echo prefix; they are never command echoes.
_LOG_LINE = re.compile(r"^sacctmgr: (error|fatal|debug\d?|info|verbose|warning)\b")
# readline may redraw a long input line with cursor movement sequences.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")

ALREADY_MARKERS: tuple[str, ...] = (" Nothing new added.", " Nothing deleted", " Nothing modified")


def split_batch_output(text: str, commands: list[str]) -> tuple[str, list[str]]:
    """Attribute the merged stdout+stderr of `sacctmgr -i` fed `commands` on stdin.

    sacctmgr echoes each input line as `sacctmgr: <command>` before that command's
    output and prints a bare `sacctmgr: ` prompt at EOF. Returns (preamble, sections):
    the text before the first echo (e.g. a start-up failure) and one output section per
    command. A command sacctmgr never reached (it died) gets an empty section; see
    `echoed_count`.

    Echoes are matched by order, not by text: readline sometimes redraws a long input
    line with cursor-movement sequences, and sacctmgr prints nothing else with this
    prefix except its log lines (`sacctmgr: error: ...`), which are excluded.
    """
    sections: list[list[str]] = [[] for _ in commands]
    preamble: list[str] = []
    trailer: list[str] = []
    current = preamble
    index = 0
    for line in text.split("\n"):  # not splitlines(): readline redraws contain \r
        if line.startswith(ECHO_PREFIX) and not _LOG_LINE.match(line):
            if index < len(commands):
                current = sections[index]
                index += 1
                continue
            if not _ANSI.sub("", line[len(ECHO_PREFIX) :]).strip():
                current = trailer  # the prompt at EOF
                continue
        current.append(line)
    return "\n".join(preamble), ["\n".join(s) for s in sections]


def echoed_count(text: str, ncommands: int) -> int:
    """How many of `ncommands` stdin commands sacctmgr got to (echo lines seen)."""
    count = 0
    for line in text.split("\n"):  # not splitlines(): readline redraws contain \r
        if line.startswith(ECHO_PREFIX) and not _LOG_LINE.match(line):
            count += 1
    return min(count, ncommands)


def is_already(section: str) -> bool:
    """sacctmgr's "already in that state" answers (rc 1, but not an error)."""
    return any(marker in section for marker in ALREADY_MARKERS)


def parse_version(text: str) -> str:
    """`slurm 22.05.8` / `slurm-wlm 22.05.8` -> `22.05.8`."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?(?:-\S+)?)", text)
    if not m:
        raise SlurmParseError(f"cannot find a version in {text!r}")
    return m.group(1)


def to_decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise SlurmParseError(f"not a number: {text!r}") from None


def parse_jobs(text: str) -> list[JobRecord]:
    """Parse sacct output in SACCT_FORMAT (pure)."""
    records = []
    for job_id, account, user, state, elapsed_raw, req, alloc, start, end in split_rows(text, 9):
        state = state.split(" ")[0]  # "CANCELLED by 0" -> "CANCELLED"
        try:
            record = JobRecord(
                job_id=job_id,
                account=account,
                user=user,
                state=state,
                elapsed_seconds=parse_elapsed_raw(elapsed_raw),
                req_tres=parse_tres(req),
                alloc_tres=parse_tres(alloc),
                start=_utc(parse_sacct_time(start)),
                end=_utc(parse_sacct_time(end)),
            )
        except SlurmParseError as exc:
            # one record SLURM printed oddly is not billed (and said so); the others are
            record = JobRecord(job_id, account, user, state, 0, {}, {}, None, None, problem=str(exc))
        records.append(record)
    return records


def _utc(dt: datetime | None) -> datetime | None:
    """A time sacct printed (it runs with TZ=UTC, see executor.COMMAND_ENV)."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None else None


def parse_state(accounts_out: str, users_out: str, *, cluster: str | None = None) -> SlurmState:
    """Build a SlurmState from `list account withassoc format=STATE_ACCOUNT_FORMAT` and
    `list user format=user,defaultaccount` parsable output (pure)."""
    info: dict[str, dict[str, object]] = {}
    for name, parent, user, grptresmins, row_cluster, org, desc in split_rows(accounts_out, 7, free_text_col=6):
        if not row_cluster or (cluster and row_cluster != cluster) or name == "root":
            continue  # orphan record, another cluster, or the root
        entry = info.setdefault(
            name, {"parent": "", "description": desc, "organization": org, "limits": {}, "users": set()}
        )
        if user:
            entry["users"].add(user)  # type: ignore[union-attr]
        else:
            entry["parent"] = parent
            try:
                entry["limits"] = parse_limits(grptresmins)
            except SlurmParseError as exc:
                entry["limits_problem"] = f"GrpTRESMins of account {name}: {exc}"
    accounts = {
        name: SlurmAccount(
            name=name,
            parent=str(e["parent"]),
            description=str(e["description"]),
            organization=str(e["organization"]),
            limits=dict(e["limits"]),  # type: ignore[arg-type]
            users=frozenset(e["users"]),  # type: ignore[arg-type]
            limits_problem=e.get("limits_problem"),  # type: ignore[arg-type]
        )
        for name, e in sorted(info.items())
    }
    defaults = {user: default for user, default in split_rows(users_out, 2)}
    return SlurmState(accounts=accounts, default_account=defaults)
