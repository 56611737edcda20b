"""Which redirect policy applies: the call's fields where set, else the endpoint's, else 10."""

from __future__ import annotations

import pytest
from paca.api.v1 import api_types_pb2

from api_service.redirects import DEFAULT_MAX_REDIRECTS, RedirectRule, redirect_rule

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]

Policy = api_types_pb2.RedirectPolicy


def test_nothing_set_follows_up_to_the_default() -> None:
    assert redirect_rule(None, None) == RedirectRule(True, False, DEFAULT_MAX_REDIRECTS)


def test_the_call_wins_field_by_field_over_the_endpoint() -> None:
    endpoint = Policy(mode=api_types_pb2.REDIRECT_MODE_SAME_HOST, max_redirects=3)
    assert redirect_rule(None, endpoint) == RedirectRule(True, True, 3)
    call = Policy(mode=api_types_pb2.REDIRECT_MODE_OFF)
    assert redirect_rule(call, endpoint) == RedirectRule(False, False, 3)
    assert redirect_rule(Policy(max_redirects=1), endpoint) == RedirectRule(True, True, 1)
