"""The node process's main task: what start-up built is frozen out of the garbage collector's walks."""

from __future__ import annotations

import gc
from typing import Any

import trio
from swapmeet.node.runtime import _main


class StartsThenStops:
    """Stands in for a Node: starts, reads the freeze count once _main has moved past start-up, returns."""

    def __init__(self) -> None:
        self.frozen_after_start = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.start_up = [[object()] for _ in range(100)]  # tracked containers start-up left behind
        task_status.started()
        await trio.sleep(0.01)
        self.frozen_after_start = gc.get_freeze_count()

    async def stop(self) -> None:
        raise AssertionError("no signal in this test")


async def test_the_heap_start_up_built_is_frozen_once_the_node_has_started() -> None:
    gc.unfreeze()
    node: Any = StartsThenStops()
    try:
        with trio.fail_after(10):
            await _main(node)
        # Everything alive when the node said it had started, its start-up objects among them.
        assert node.frozen_after_start >= len(node.start_up), node.frozen_after_start
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
