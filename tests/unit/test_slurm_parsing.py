"""Pure tests of the SLURM parsers, op validation/rendering and state/job parsing.

Inputs are outputs captured from the local Slurm 22.05.8 cluster
(docs: /work/shared/docs/slurm-local-cluster.md and tests/slurm).
"""

from __future__ import annotations

from waldur_slurm.slurm.cli import render

from datetime import datetime
from decimal import Decimal

import pytest

from waldur_slurm.slurm.cli.client import SlurmClient
from waldur_slurm.slurm.cli.output import section_error as _section_error
from waldur_slurm.slurm.cli.parsing import parse_jobs, parse_state
from waldur_slurm.slurm.cli.render import chunk_names as _chunk_names
from waldur_slurm.slurm.cli.executor import NativeExecutor
from waldur_slurm.slurm.errors import (
    ActiveJobsError,
    InvalidValue,
    SlurmCommandError,
    SlurmUnavailable,
    is_transient_output,
)
from waldur_slurm.slurm.ops import format_limits
from waldur_slurm.slurm.ops import (
    AddAccounts,
    AddAccountsDescribed,
    AddAccountTree,
    LoadUser,
    AddUsers,
    CancelJobs,
    CreateHomedirs,
    RemoveAccounts,
    RemoveUsers,
    SetDefaultAccount,
    SetLimits,
    sanitize_text,
)
from waldur_slurm.slurm.cli.parsing import (
    SlurmParseError,
    echoed_count,
    is_already,
    parse_elapsed,
    parse_elapsed_raw,
    parse_limits,
    parse_sacct_time,
    parse_tree,
    parse_tres,
    parse_version,
    split_batch_output,
    split_rows,
)

D = Decimal


# ---------------------------------------------------------------------------- TRES
def test_tres_full_string() -> None:
    assert parse_tres("cpu=4,mem=100M,gres/gpu=1,billing=4") == {
        "cpu": D(4),
        "mem": D(100),
        "gres/gpu": D(1),
        "billing": D(4),
    }


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("mem=100M", D(100)),
        ("mem=1000", D(1000)),  # bare number is MB (sshare prints mem=100000)
        ("mem=2G", D(2048)),
        ("mem=1T", D(1024 * 1024)),
        ("mem=1P", D(1024**3)),
        ("mem=512K", D("0.5")),
        ("mem=1.5G", D(1536)),
    ],
)
def test_tres_mem_normalised_to_mb(text: str, mb: Decimal) -> None:
    assert parse_tres(text)["mem"] == mb


def test_tres_suffix_on_a_count_scales_by_1024() -> None:
    assert parse_tres("billing=2K")["billing"] == D(2048)


@pytest.mark.parametrize("text", ["", "   "])
def test_tres_empty(text: str) -> None:
    assert parse_tres(text) == {}


@pytest.mark.parametrize("text", ["cpu", "cpu=abc", "=4", "mem=1X", "cpu=-1"])
def test_tres_garbage_raises(text: str) -> None:
    with pytest.raises(SlurmParseError):
        parse_tres(text)


def test_limits_are_integers_in_mb() -> None:
    # P5 of the cluster doc: limits come back with mem suffixes
    assert parse_limits("cpu=100,gres/gpu=10,mem=1000M") == {"cpu": 100, "gres/gpu": 10, "mem": 1000}
    assert parse_limits("mem=2G") == {"mem": 2048}
    assert parse_limits("") == {}


def test_limits_reject_fractions() -> None:
    with pytest.raises(SlurmParseError):
        parse_limits("mem=512K")


def test_format_limits_sorted_and_clear() -> None:
    assert format_limits({"mem": 5, "cpu": 1, "gres/gpu": None}) == "cpu=1,gres/gpu=-1,mem=5"


# ------------------------------------------------------------------------- Elapsed
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:03", D(3)),
        ("01:02:03", D(3723)),
        ("2-01:00:00", D(2 * 86400 + 3600)),
        ("10:05", D(605)),
        ("00:01.500", D("1.500")),
        ("1-00:00:00.25", D("86400.25")),
    ],
)
def test_elapsed(text: str, seconds: Decimal) -> None:
    assert parse_elapsed(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1-10:05", "aa:bb:cc", "1:2:3:4"])
def test_elapsed_bad(text: str) -> None:
    with pytest.raises(SlurmParseError):
        parse_elapsed(text)


def test_elapsed_raw() -> None:
    assert parse_elapsed_raw("3") == 3
    assert parse_elapsed_raw("") == 0
    with pytest.raises(SlurmParseError):
        parse_elapsed_raw("00:03")


def test_sacct_time() -> None:
    assert parse_sacct_time("2026-11-25T05:55:28") == datetime(2026, 11, 25, 5, 55, 28)
    for empty in ("Unknown", "None", "", "N/A"):
        assert parse_sacct_time(empty) is None
    with pytest.raises(SlurmParseError):
        parse_sacct_time("25/11/2026")


# ---------------------------------------------------------------------- parsable2
def test_rows_keep_empty_fields() -> None:
    text = "proj_x||cpu=100,gres/gpu=10,mem=1000M\nproj_x|alice|\nproj_x|nobody|\n"
    assert split_rows(text, 3) == [
        ["proj_x", "", "cpu=100,gres/gpu=10,mem=1000M"],
        ["proj_x", "alice", ""],
        ["proj_x", "nobody", ""],
    ]


def test_rows_wrong_width_raises() -> None:
    with pytest.raises(SlurmParseError):
        split_rows("a|b|c\n", 2)


def test_rows_free_text_column_absorbs_pipes() -> None:
    assert split_rows("acct|a|b|c|x\n", 3, free_text_col=1) == [["acct", "a|b|c", "x"]]
    assert split_rows("acct|x|a|b\n", 3, free_text_col=2) == [["acct", "x", "a|b"]]


def test_tree_keeps_depth() -> None:
    # P9
    text = "root||\n root||root\n proj_y|root|\n  proj_y||carol\n  sub_y|proj_y|\n"
    rows = parse_tree(text, 3)
    assert [(r.depth, r.fields) for r in rows] == [
        (0, ["root", "", ""]),
        (1, ["root", "", "root"]),
        (1, ["proj_y", "root", ""]),
        (2, ["proj_y", "", "carol"]),
        (2, ["sub_y", "proj_y", ""]),
    ]


# -------------------------------------------------------------- stdin batch output
# Captured: merged stdout+stderr of `sacctmgr -i` with 6 commands on stdin.
BATCH_COMMANDS = [
    "add account tinvb1 parent=tinvp",
    "add account tz1 parent=nosuch",
    "modify account where name=nosuch set GrpTRESMins=cpu=1",
    "add user wsa_zz account=nosuchacct",
    "modify account where name=tinvb2 set GrpTRESMins=gres/foo=1",
    "remove account where name=nosuchx",
]
BATCH_OUTPUT = """sacctmgr: add account tinvb1 parent=tinvp
 Nothing new added.
sacctmgr: add account tz1 parent=nosuch
 Parent account 'nosuch' doesn't exist on cluster testcluster
        Contact your admin to add this account.
 No associations created.
sacctmgr: modify account where name=nosuch set GrpTRESMins=cpu=1
 Nothing modified
sacctmgr: add user wsa_zz account=nosuchacct
 This account 'nosuchacct' doesn't exist.
        Contact your admin to add this account.
 No associations or wckeys created.
sacctmgr: modify account where name=tinvb2 set GrpTRESMins=gres/foo=1
sacctmgr: error: slurmdb_format_tres_str: no TRES known by type gres/foo
 Unknown option: GrpTRESMins=gres/foo=1
 Use keyword 'where' to modify condition
sacctmgr: remove account where name=nosuchx
 Nothing deleted
sacctmgr: """


def test_batch_output_attribution() -> None:
    preamble, sections = split_batch_output(BATCH_OUTPUT, BATCH_COMMANDS)
    assert preamble == ""
    assert len(sections) == 6
    assert sections[0] == " Nothing new added."
    assert "doesn't exist on cluster" in sections[1]
    assert sections[2] == " Nothing modified"
    assert "nosuchacct" in sections[3] and "nosuchacct" not in sections[4]
    # the error line of command 5 stays with command 5, not taken for an echo
    assert sections[4].startswith("sacctmgr: error: slurmdb_format_tres_str")
    assert sections[5] == " Nothing deleted"
    assert echoed_count(BATCH_OUTPUT, 6) == 6


def test_batch_output_classification() -> None:
    _, sections = split_batch_output(BATCH_OUTPUT, BATCH_COMMANDS)
    errors = [_section_error(c, s, 1) for c, s in zip(BATCH_COMMANDS, sections)]
    assert errors[0] is None and is_already(sections[0])
    assert isinstance(errors[1], SlurmCommandError)
    assert errors[2] is None and is_already(sections[2])
    assert isinstance(errors[3], SlurmCommandError)
    assert isinstance(errors[4], SlurmCommandError)
    assert errors[5] is None and is_already(sections[5])


def test_batch_output_with_readline_redraw() -> None:
    # Seen without COLUMNS: readline redraws a long line with cursor movement codes.
    cmd = "remove user where name=wsa_carol account=tsyn1,set cluster=testcluster"
    mangled = f"sacctmgr: {cmd} \r\x1b[A" + "\x1b[C" * 40 + "\x1b[Kr"
    text = f"sacctmgr: list tres\ncpu||1\n{mangled}\n Deleting user associations...\nsacctmgr: "
    _, sections = split_batch_output(text, ["list tres", cmd])
    assert sections == ["cpu||1", " Deleting user associations..."]


def test_batch_output_startup_failure_goes_to_preamble() -> None:
    text = (
        "sacctmgr: error: slurm_persist_conn_open_without_init: failed to open persistent connection"
        " to host:localhost:6819: Connection refused\n"
        "sacctmgr: error: Sending PersistInit msg: Connection refused\n"
    )
    preamble, sections = split_batch_output(text, ["list tres"])
    assert "Connection refused" in preamble
    assert sections == [""]
    assert echoed_count(text, 1) == 0
    assert is_transient_output(preamble)


def test_batch_output_stopped_early() -> None:
    text = "sacctmgr: add account a parent=root\n Adding Account(s)\n  a\n"
    _, sections = split_batch_output(text, ["add account a parent=root", "add account b parent=root"])
    assert echoed_count(text, 2) == 1
    assert sections[1] == ""


def test_active_jobs_and_transient_sections() -> None:
    active = (
        " Error with request: Job(s) active, cancel job(s) before remove\n"
        "  JobID = 11         C = testcluster A = proj_x     U = alice    "
    )
    assert isinstance(_section_error("remove account where name=proj_x", active, 1), ActiveJobsError)
    hung = "sacctmgr: error: slurm_persist_conn_open: No response to persist_init"
    assert isinstance(_section_error("list tres", hung, 1), SlurmUnavailable)
    assert isinstance(_section_error("list tres", "something new", 0), SlurmCommandError)


@pytest.mark.parametrize(
    "text",
    [
        "sacct: error: Problem talking to the database: Connection refused",
        "sacctmgr: error: slurm_persist_conn_open: No response to persist_init",
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)",
    ],
)
def test_transient_markers(text: str) -> None:
    assert is_transient_output(text)


def test_version() -> None:
    assert parse_version("slurm 22.05.8\n") == "22.05.8"
    assert parse_version("slurm-wlm 22.05.8") == "22.05.8"


# --------------------------------------------------------------- state and jobs
ACCOUNTS_OUT = """root|||||root|default root account
root||root||testcluster|root|default root account
proj_x|root|||testcluster|org_x|project x
proj_x||alice||testcluster|org_x|project x
proj_x||bob||testcluster|org_x|project x
sub_y|proj_x||cpu=100,gres/gpu=10,mem=2G|testcluster|org y|uuid 1234|with pipe
orphan|||||orphan|left behind
other|root|||othercluster|o|elsewhere
"""
USERS_OUT = "root|root\nalice|proj_x\nbob|\n"


def test_parse_state() -> None:
    state = parse_state(ACCOUNTS_OUT, USERS_OUT, cluster="testcluster")
    assert set(state.accounts) == {"proj_x", "sub_y"}
    x = state.accounts["proj_x"]
    assert (x.parent, x.description, x.organization, x.limits, x.users) == (
        "root",
        "project x",
        "org_x",
        {},
        frozenset({"alice", "bob"}),
    )
    y = state.accounts["sub_y"]
    assert y.parent == "proj_x"
    assert y.description == "uuid 1234|with pipe"
    assert y.limits == {"cpu": 100, "gres/gpu": 10, "mem": 2048}
    assert state.default_account == {"root": "root", "alice": "proj_x", "bob": ""}


def test_parse_state_without_cluster_takes_every_cluster() -> None:
    state = parse_state(ACCOUNTS_OUT, USERS_OUT)
    assert set(state.accounts) == {"proj_x", "sub_y", "other"}


SACCT_OUT = (
    "1|proj_x|alice|COMPLETED|3|billing=1,cpu=1,gres/gpu=1,mem=100M,node=1|"
    "billing=1,cpu=1,gres/gpu=1,mem=100M,node=1|2026-11-25T05:55:28|2026-11-25T05:55:31\n"
    "7|proj_x|bob|CANCELLED by 0|0||billing=2,cpu=2,mem=1G,node=1|None|2026-11-25T06:00:00\n"
    "8_3|proj_x|bob|RUNNING|12|cpu=1,mem=10M|cpu=1,mem=10M|2026-11-25T06:00:00|Unknown\n"
)


def test_parse_jobs() -> None:
    jobs = parse_jobs(SACCT_OUT)
    assert [j.job_id for j in jobs] == ["1", "7", "8_3"]
    j = jobs[0]
    assert (j.account, j.user, j.state, j.elapsed_seconds) == ("proj_x", "alice", "COMPLETED", 3)
    assert j.alloc_tres == {"billing": D(1), "cpu": D(1), "gres/gpu": D(1), "mem": D(100), "node": D(1)}
    assert j.start is not None and j.start.tzinfo is not None
    assert j.start.replace(tzinfo=None) == datetime(2026, 11, 25, 5, 55, 28)
    # a terminal row may still have an empty ReqTRES
    assert jobs[1].state == "CANCELLED" and jobs[1].req_tres == {} and jobs[1].start is None
    assert jobs[1].alloc_tres["mem"] == D(1024)
    assert jobs[2].end is None


def test_chunk_names_respects_limit() -> None:
    names = [f"acct{i:04d}" for i in range(1000)]
    chunks = _chunk_names(names, 1000)
    assert [n for c in chunks for n in c] == names
    assert all(len(",".join(c)) <= 1000 for c in chunks)
    assert _chunk_names(["a", "b"], 100_000) == [["a", "b"]]


# ----------------------------------------------------------- ops: validation
@pytest.mark.parametrize("bad", ["", "Proj", "a b", "a,b", "a=b", "-x", "x;y", "a\nb", "é", "x" * 65, None, 5])
def test_account_names_refused(bad: object) -> None:
    with pytest.raises(InvalidValue) as exc:
        AddAccounts(names=(bad,), parent="root")  # type: ignore[arg-type]
    assert "account" in str(exc.value)


def test_invalid_value_names_field_and_value() -> None:
    with pytest.raises(InvalidValue) as exc:
        SetLimits(accounts=("a",), limits={"cpu": "abc"})  # type: ignore[dict-item]
    assert exc.value.field == "limits[cpu]" and exc.value.value == "abc"
    assert "limits[cpu]" in str(exc.value) and "'abc'" in str(exc.value)


@pytest.mark.parametrize("value", [-1, 1.5, "10", True])
def test_limits_must_be_non_negative_ints(value: object) -> None:
    with pytest.raises(InvalidValue):
        SetLimits(accounts=("a",), limits={"cpu": value})  # type: ignore[dict-item]


@pytest.mark.parametrize("key", ["CPU", "gres/", "cpu=1", "gres/gpu,mem", ""])
def test_limit_keys_checked(key: str) -> None:
    with pytest.raises(InvalidValue):
        SetLimits(accounts=("a",), limits={key: 1})


def test_users_allow_dots_but_not_spaces() -> None:
    assert AddUsers(users=("john.doe",), accounts=("a",)).users == ("john.doe",)
    for bad in ("John", "a b", "a,b", "-x", "a=b"):
        with pytest.raises(InvalidValue):
            AddUsers(users=(bad,), accounts=("a",))


def test_empty_lists_refused() -> None:
    for make in (
        lambda: AddAccounts(names=(), parent="root"),
        lambda: RemoveAccounts(names=()),
        lambda: AddUsers(users=(), accounts=("a",)),
        lambda: AddUsers(users=("u",), accounts=()),
        lambda: CancelJobs(accounts=()),
        lambda: SetLimits(accounts=("a",), limits={}),
        lambda: AddAccountsDescribed(entries=(), parent="root"),
    ):
        with pytest.raises(InvalidValue):
            make()


def test_root_is_never_removed() -> None:
    with pytest.raises(InvalidValue):
        RemoveAccounts(names=("a", "root"))


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Project X", "project x"),
        ('a" where name=root set GrpTRESMins=cpu=0 "', "a where name root set grptresmins cpu 0"),
        ("x'y:z", "x y z"),
        ("line1\nline2\tend", "line1 line2 end"),
        ("uuid 0123456789abcdef0123456789abcdef", "uuid 0123456789abcdef0123456789abcdef"),
        ("a,b;c|d`e$(f)", "a b c d e f"),
        (None, ""),
    ],
)
def test_sanitize_text(raw: object, clean: str) -> None:
    assert sanitize_text(raw) == clean


def test_description_cannot_inject_clauses() -> None:
    evil = 'x" where name=root set GrpTRESMins=cpu=0 organization="y'
    (line,) = render.sacctmgr_lines(AddAccounts(names=("a",), parent="root", description=evil, organization=evil), None)
    # exactly the three intended key=value pairs, values quoted, and no quote inside them
    assert line.count("=") == 3  # parent=, description=, organization=; none from the text
    assert line.count('"') == 4
    assert line == (
        'add account a parent=root description="x where name root set grptresmins cpu 0 organization y"'
        ' organization="x where name root set grptresmins cpu 0 organization y"'
    )
    load = render.load_file(AddAccountsDescribed(entries=(("a", "q' : Parent - 'root"),), parent="p"), "testcluster")
    assert load.splitlines()[2] == "Account - 'a':Description='q parent - root'"


# ----------------------------------------------------------- ops: rendering
def test_rendering() -> None:
    assert render.sacctmgr_lines(AddAccounts(("a", "b"), "root", "Desc", "Org", {"cpu": 5, "gres/gpu": 2}), "c1") == [
        'add account a,b cluster=c1 parent=root description="desc" organization="org" GrpTRESMins=cpu=5,gres/gpu=2'
    ]
    assert render.sacctmgr_lines(AddAccounts(("a",), "root"), None) == ["add account a parent=root"]
    assert render.sacctmgr_lines(RemoveAccounts(("a", "b", "a")), None) == ["remove account where name=a,b"]
    assert render.sacctmgr_lines(AddUsers(("u1", "u2"), ("a", "b"), "a"), None) == [
        "add user u1,u2 account=a,b DefaultAccount=a"
    ]
    assert render.sacctmgr_lines(RemoveUsers(("u1",), ("a",)), "c") == ["remove user where name=u1 account=a cluster=c"]
    assert render.sacctmgr_lines(SetLimits(("a", "b"), {"cpu": 1, "mem": None}), None) == [
        "modify account where name=a,b set GrpTRESMins=cpu=1,mem=-1"
    ]
    assert render.sacctmgr_lines(SetDefaultAccount(("u",), "a"), None) == ["modify user where name=u set DefaultAccount=a"]
    assert render.argv(CancelJobs(("a", "b"))) == ["scancel", "--account=a,b"]
    argv = render.argv(CreateHomedirs(("u1", "u2"), "0027"))
    assert argv[0] == "sh" and argv[-3:] == ["0027", "u1", "u2"]
    with pytest.raises(InvalidValue):
        CreateHomedirs(("u",), "999")


def test_load_file() -> None:
    op = AddAccountsDescribed(
        entries=(("a1", "UUID 1"), ("a2", "")), parent="p", organization="Org", limits={"cpu": 3}
    )
    assert op.names == ("a1", "a2")
    assert render.load_file(op, "testcluster") == (
        "Cluster - 'testcluster'\n"
        "Parent - 'p'\n"
        "Account - 'a1':Description='uuid 1':Organization='org':GrpTRESMins=cpu=3\n"
        "Account - 'a2':Organization='org':GrpTRESMins=cpu=3\n"
    )
    with pytest.raises(InvalidValue):
        AddAccountsDescribed(entries=(("a", "x"), ("a", "y")), parent="p")


def test_load_file_with_the_users_of_the_new_accounts() -> None:
    customer = AddAccountsDescribed(entries=(("c1", "cust"),), parent="root")
    allocations = AddAccountsDescribed(entries=(("a1", "r1"), ("a2", "r2")), parent="c1")
    users = (LoadUser("a2", "bob"), LoadUser("a1", "new", default_account="a1"), LoadUser("a2", "new"))
    op = AddAccountTree.of([customer, allocations], users)
    assert isinstance(op, AddAccountTree)
    assert render.load_file(op, "testcluster") == (
        "Cluster - 'testcluster'\n"
        "Parent - 'root'\n"
        "Account - 'c1':Description='cust'\n"
        "Parent - 'c1'\n"
        "Account - 'a1':Description='r1'\n"
        "Account - 'a2':Description='r2'\n"
        "Parent - 'a1'\n"
        "User - 'new':DefaultAccount='a1'\n"
        "Parent - 'a2'\n"
        "User - 'bob'\n"
        "User - 'new'\n"
    )
    assert op.describe().endswith("; add user(s) bob -> a2, new -> a1 (default), new -> a2")
    # one group with users is still a tree (the users need the load's user lines)
    assert isinstance(AddAccountTree.of([allocations], users), AddAccountTree)
    with pytest.raises(InvalidValue, match="only to the accounts it creates"):
        AddAccountTree.of([allocations], [LoadUser("elsewhere", "bob")])
    with pytest.raises(InvalidValue, match="two defaults"):
        AddAccountTree.of([allocations], [LoadUser("a1", "u", "a1"), LoadUser("a2", "u", "a2")])
    with pytest.raises(InvalidValue, match="user"):
        LoadUser("a1", "bad name'")


def test_describe_is_readable_and_short() -> None:
    op = AddAccounts(tuple(f"a{i}" for i in range(20)), "root")
    text = op.describe()
    assert "a0" in text and "(20 total)" in text and "a19" not in text
    assert "uuid 1" in AddAccountsDescribed(entries=(("a1", "UUID 1"),), parent="p").describe()


def test_client_refuses_bad_values_before_running_anything() -> None:
    executor = NativeExecutor()
    with pytest.raises(InvalidValue):
        SlurmClient(executor, timeout=0)
    with pytest.raises(InvalidValue):
        SlurmClient(executor, timeout=5, cluster="Bad Cluster")
    client = SlurmClient(executor, timeout=5)
    with pytest.raises(InvalidValue):
        client.read_usage([], datetime(2026, 1, 1), datetime(2026, 2, 1))
    with pytest.raises(InvalidValue):
        client.read_usage(["ok", "Not Ok"], datetime(2026, 1, 1), datetime(2026, 2, 1))
    with pytest.raises(InvalidValue):
        client.read_usage(["ok"], datetime(2026, 2, 1), datetime(2026, 1, 1))
    assert executor.process_count == 0
