"""DBOS, the durable-workflow library on PostgreSQL, as a peer: ``python -m bench.dbos_peer URL STEPS FLOWS REPEATS``.

A ``@DBOS.workflow`` calling ``STEPS`` ``@DBOS.step`` functions in a row, each merging its input
(``{"x": 1}``) as our chain's nodes do; DBOS checkpoints every step's output in its system
database (``URL``, an empty database: DBOS makes its tables at launch). Plain ``def`` workflow and
steps: on this machine they ran faster than ``async def`` ones (36 against 53 ms per workflow),
so DBOS is measured at its best. One untimed workflow first, then ``REPEATS`` runs of ``FLOWS``
workflows one after another; prints ``{"ms_per_flow": [...]}`` on the last line of stdout.

Run in its own process: DBOS is a process-wide singleton with background threads (queues,
recovery), which must not share a process with what it is compared to.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from dbos import DBOS


@DBOS.step()
def node(value: dict[str, Any]) -> dict[str, Any]:
    return dict(value)


@DBOS.workflow()
def chain(steps: int) -> dict[str, Any]:
    value = {"x": 1}
    for _ in range(steps):
        value = node(value)
    return value


def main(argv: list[str]) -> int:
    url, steps, flows, repeats = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "graph-runtime-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        if chain(steps) != {"x": 1}:
            raise AssertionError("the DBOS workflow computed something else")
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(flows):
                chain(steps)
            samples.append((time.perf_counter() - started) / flows * 1e3)
    finally:
        DBOS.destroy()
    print(json.dumps({"ms_per_flow": samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
