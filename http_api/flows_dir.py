"""Loading the flows directory at start-up: changed files become new revisions."""

from __future__ import annotations

import logging
from pathlib import Path

from graph_runtime import errors, validation
from graph_runtime import flow as flow_model
from nodes.registry import Registry
from storage.repository import Repository

log = logging.getLogger(__name__)


def flow_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in flow_model.FLOW_SUFFIXES and p.is_file())


def check_file(path: Path, registry: Registry) -> flow_model.Flow:
    """Parse and validate one file. Raises errors.FlowInvalid listing every problem."""
    return validation.validate(flow_model.read_file(path), registry)


async def load_flows_dir(directory: Path, repo: Repository, registry: Registry) -> dict[str, int]:
    """Store every valid flow file whose definition changed; log and skip invalid ones.

    Returns a count of files per outcome: ``new_revision``, ``unchanged``, ``invalid``.
    """
    counts = {"new_revision": 0, "unchanged": 0, "invalid": 0}
    if not directory.is_dir():
        log.warning("flows directory %s does not exist", directory, extra={"action": "flows_dir_missing"})
        return counts
    for path in flow_files(directory):
        try:
            flow = check_file(path, registry)
        except errors.FlowInvalid as exc:
            counts["invalid"] += 1
            log.warning("skipping invalid flow file %s: %s", path, "; ".join(exc.problems),
                        extra={"action": "flow_invalid", "path": str(path)})
            continue
        revision, created = await repo.save_flow(flow)
        counts["new_revision" if created else "unchanged"] += 1
        log.info("flow %s revision %d%s", flow.id, revision, " (new)" if created else "",
                 extra={"action": "flow_loaded", "flow_id": flow.id, "revision": revision})
    return counts
