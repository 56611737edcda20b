"""A request's read options: what the block sets, what it restores, and bad values."""

from __future__ import annotations

import asyncio

import pytest
from paca.db.v1 import db_types_pb2

from db_service.errors import BadStatement
from db_service.routing.readpref import ReadOptions, current, read_options
from paca_runtime.errors import InvalidArgument

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

UNSPECIFIED = db_types_pb2.READ_PREFERENCE_UNSPECIFIED
PRIMARY = db_types_pb2.READ_PREFERENCE_PRIMARY
ANY = db_types_pb2.READ_PREFERENCE_ANY


def test_the_default_options_hold_inside_and_after_a_default_block() -> None:
    assert current() == ReadOptions()
    with read_options(UNSPECIFIED, ""):
        assert current() == ReadOptions()
    assert current() == ReadOptions()


def test_an_inner_block_overrides_an_outer_one_until_it_ends() -> None:
    with read_options(PRIMARY):
        assert current() == ReadOptions(PRIMARY)
        with read_options(UNSPECIFIED):
            assert current() == ReadOptions()  # not the outer block's PRIMARY
            with read_options(ANY, "pg:0/10"):
                assert current() == ReadOptions(ANY, "pg:0/10")
            assert current() == ReadOptions()
        assert current() == ReadOptions(PRIMARY)
    assert current() == ReadOptions()


async def test_each_task_sees_only_its_own_options() -> None:
    seen: dict[str, ReadOptions] = {}
    both_inside = asyncio.Barrier(2)

    async def request(name: str, preference: int) -> None:
        with read_options(preference):
            await both_inside.wait()
            seen[name] = current()

    await asyncio.gather(request("primary", PRIMARY), request("default", UNSPECIFIED))
    assert seen == {"primary": ReadOptions(PRIMARY), "default": ReadOptions()}


def test_an_error_inside_the_block_restores_the_options() -> None:
    with read_options(PRIMARY):
        with pytest.raises(RuntimeError), read_options(ANY):
            raise RuntimeError("boom")
        assert current() == ReadOptions(PRIMARY)


def test_bad_values_name_their_field_and_change_nothing() -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_options(99)
    assert caught.value.field == "read_preference"
    with pytest.raises(BadStatement, match="consistency_token"):
        read_options(UNSPECIFIED, "not-a-token")
    assert current() == ReadOptions()
