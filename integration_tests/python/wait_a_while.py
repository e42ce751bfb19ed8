"""Tool wait_a_while (models/exposures.yml): an async Python endpoint that sleeps and reports progress."""

import asyncio

from dbt_mxcp import runtime


async def wait_a_while(seconds: float) -> float:
    for step in range(10):
        runtime.progress(step, 10, f"step {step + 1} of 10")
        await asyncio.sleep(seconds / 10)
    return seconds
