"""Account naming: the original rules, collisions, ownership markers, hostile names."""

from __future__ import annotations

import re
import uuid

import pytest

from waldur_slurm.domain import naming
from waldur_slurm.domain.naming import NamingError, NamingRules

RULES = NamingRules()
RES = "0d6b5e4c3b2a41f0a9e8d7c6b5a49382"
VALID = re.compile(r"^[a-z0-9_-]+$")


def test_original_rule_matches_the_original_tests() -> None:
    name = naming.allocation_account(RULES, RES, "test-allocation-01")
    assert name == ("hpc_" + RES[:5] + "_test-allocation-01")[:34]


def test_sanitised_lower_cased_and_cut_after_sanitising() -> None:
    assert naming.allocation_account(RULES, RES, "My Alloc (GPU) #1") == f"hpc_{RES[:5]}_myallocgpu1"
    assert naming.allocation_account(RULES, RES, "Ääkköset") == f"hpc_{RES[:5]}_kkset"
    long = naming.allocation_account(RULES, RES, "a" * 10 + "!" * 40 + "b" * 40)
    assert long == (f"hpc_{RES[:5]}_" + "a" * 10 + "b" * 40)[:34]
    assert len(long) == 34


def test_customer_and_project_use_full_uuid_and_accept_dashed_form() -> None:
    cust = uuid.UUID("12345678123456781234567812345678")
    assert naming.customer_account(RULES, str(cust)) == "hpc_12345678123456781234567812345678"
    assert naming.project_account(NamingRules(project_prefix="p-"), cust.hex.upper()) == "p-" + cust.hex
    with pytest.raises(NamingError, match="customer_uuid"):
        naming.customer_account(RULES, "not-a-uuid")
    with pytest.raises(NamingError, match="project_uuid"):
        naming.project_account(RULES, None)


def test_the_marketplace_resource_uuid_is_validated() -> None:
    with pytest.raises(NamingError, match="marketplace_resource_uuid"):
        naming.allocation_account(RULES, "", "x")
    with pytest.raises(NamingError, match="marketplace_resource_uuid 'x; drop'"):
        naming.allocation_account(RULES, "x; drop", "x")


@pytest.mark.parametrize(
    "hostile",
    [
        'a"b\'c',
        "name=root",
        "x where name=root",
        "a; remove account root",
        "line1\nline2\r\n",
        "Привет мир",
        "名前",
        "x" * 500,
        "",
        "   ",
        "!!!",
        None,
        "-leading-dash",
        "\x00\x1b[31m",
    ],
)
def test_hostile_names_give_a_valid_bounded_name(hostile: object) -> None:
    name = naming.allocation_account(RULES, RES, hostile)
    assert VALID.match(name), name
    assert name.startswith(f"hpc_{RES[:5]}_")
    assert len(name) <= RULES.allocation_name_max_len
    # no separators survive, so a name can never be read as an extra sacctmgr clause
    assert not set(name) & set(" =;'\"\n\r,")


def test_empty_prefix_and_empty_name_still_give_a_name() -> None:
    rules = NamingRules(allocation_prefix="", allocation_name_max_len=8)
    assert naming.allocation_account(rules, RES, "") == RES[:5] + "_"
    assert naming.allocation_account(rules, RES, "abcdef") == RES[:5] + "_ab"


def test_max_len_too_small_for_prefix_is_a_clear_error() -> None:
    rules = NamingRules(allocation_prefix="verylongprefix_", allocation_name_max_len=16)
    with pytest.raises(NamingError, match="SLURM_ALLOCATION_NAME_MAX_LEN 16"):
        naming.allocation_account(rules, RES, "x")


def test_collision_lengthens_the_uuid_part_deterministically() -> None:
    first = naming.allocation_account(RULES, RES, "alloc")
    second = naming.allocation_account(RULES, RES, "alloc", {first})
    third = naming.allocation_account(RULES, RES, "alloc", {first, second})
    assert second == f"hpc_{RES[:6]}_alloc"
    assert third == f"hpc_{RES[:7]}_alloc"
    # deterministic: the same taken set gives the same answer
    assert naming.allocation_account(RULES, RES, "alloc", {first, second}) == third
    # a callable works the same as a container
    assert naming.allocation_account(RULES, RES, "alloc", lambda n: n in {first}) == second


def test_two_resources_sharing_five_hex_digits_and_a_name_do_not_collide() -> None:
    other = RES[:5] + "ffffffffffffffffffffffffffa"
    a = naming.allocation_account(RULES, RES, "same")
    b = naming.allocation_account(RULES, other, "same", {a})
    assert a != b and b == f"hpc_{other[:6]}_same"


def test_suffix_when_the_length_limit_leaves_no_room_for_more_uuid() -> None:
    rules = NamingRules(allocation_prefix="hpc_", allocation_name_max_len=10)  # "hpc_" + 5 + "_"
    candidates = naming.allocation_candidates(rules, RES, "name")
    assert candidates[0] == f"hpc_{RES[:5]}_"
    assert candidates[1] == f"hpc_{RES[:4]}-2"
    taken = set(candidates[:3])
    name = naming.allocation_account(rules, RES, "name", taken)
    assert name == candidates[3] and len(name) <= 10 and name not in taken
    assert len(set(candidates)) == len(candidates)


def test_every_candidate_taken_is_an_error() -> None:
    with pytest.raises(NamingError, match="no free account name"):
        naming.allocation_account(RULES, RES, "x", lambda _n: True)


def test_markers_round_trip_through_sacctmgr_lower_casing() -> None:
    marker = naming.resource_marker(RES.upper())
    assert marker == f"waldur resource {RES}"
    assert naming.resource_owner(marker.upper()) == RES
    # the op layer turns "_" into " "; sacctmgr lower-cases: both spellings are recognised
    assert naming.resource_owner(f"waldur_resource_{RES}") == RES
    assert naming.resource_owner(f"x waldur resource {RES}x") is None
    assert naming.owner_of(naming.project_marker(RES)) == ("project", RES)
    assert naming.owner_of(naming.customer_marker(RES)) == ("customer", RES)
    assert naming.resource_owner(naming.project_marker(RES)) is None
    assert naming.resource_owner("someone else's account") is None
    assert naming.resource_owner("waldur resource " + RES[:31]) is None
    assert naming.resource_owner("") is None


def test_sanitise_keeps_only_the_allowed_characters() -> None:
    assert naming.sanitise("a-b_c.D/e f=g'h\"i;j\nk") == "a-b_cDefghijk"


def test_names_stay_within_what_the_op_layer_accepts() -> None:
    from waldur_slurm.slurm.ops import validate_account

    rules = NamingRules(allocation_name_max_len=200)
    name = naming.allocation_account(rules, RES, "y" * 500)
    assert len(name) == naming.MAX_ACCOUNT_LEN
    assert validate_account(name) == name
    for hostile in ("", "Ж", "a b", "x" * 500):
        validate_account(naming.allocation_account(RULES, RES, hostile))
    with pytest.raises(NamingError, match="SLURM_CUSTOMER_PREFIX"):
        naming.customer_account(NamingRules(customer_prefix="c" * 40), RES)
    with pytest.raises(NamingError, match="start with '-'"):
        naming.allocation_account(NamingRules(allocation_prefix="-x"), RES, "a")
