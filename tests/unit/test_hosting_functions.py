"""The Lambda invoker's routes (hosting/functions.py): a function deleted through the API is never
invoked again, though its route stays until the control loop's next pass stops its fleet."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from modelhost.backends.handle import FleetHandle
from modelhost.hosting.functions import FunctionInvoker, FunctionNotReady, FunctionRoute


def route(name: str, revision: int = 1) -> FunctionRoute:
    # The fleet is never reached: a retired route fails before it is used.
    return FunctionRoute(
        name, f"arn:aws:lambda:us-east-1:123456789012:function:{name}", cast(FleetHandle, None), 3.0, (revision,)
    )


def test_a_retired_route_is_not_live_and_is_not_invoked_until_published_again() -> None:
    invoker = FunctionInvoker()
    invoker.publish(route("Fn"))
    assert invoker.live("fn")
    invoker.retire("FN")
    assert not invoker.live("Fn") and "fn" in invoker.routes  # still there for the control loop to stop
    with pytest.raises(FunctionNotReady):
        asyncio.run(invoker.invoke("Fn", b"{}", "rid"))
    invoker.publish(route("Fn", 2))  # re-created
    assert invoker.live("Fn")
    invoker.retire("Fn")
    gone: Any = invoker.withdraw("fn")
    assert gone is not None and not invoker.live("Fn") and not invoker.retired


def test_retiring_an_unrouted_function_marks_nothing() -> None:
    invoker = FunctionInvoker()
    invoker.retire("never-deployed")
    assert not invoker.retired
