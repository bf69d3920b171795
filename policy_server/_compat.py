"""What the client and the policy server need from Python > 3.8, written for 3.8 (a lab laptop may run it)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

_Result = TypeVar("_Result")


async def to_thread(func: Callable[..., _Result], /, *args: Any, **kwargs: Any) -> _Result:
    """``asyncio.to_thread`` (Python 3.9+): ``func(*args, **kwargs)`` in the loop's default executor, with
    the caller's context variables."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await loop.run_in_executor(None, call)
