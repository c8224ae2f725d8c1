"""The flows directory against the database, for the CLI.

Reading is never writing: ``flows list``, ``flows show`` and ``run`` compare the files with the
stored revisions and say what differs; ``flows push`` is the one command that publishes a file
as a new revision (``serve`` still loads the directory at start-up, SPEC §1).
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from pathlib import Path

from graph_runtime import errors
from graph_runtime.flow import Flow
from http_api.flows_dir import check_file, flow_files
from nodes.registry import Registry
from storage.repository import Repository


class FileState(enum.StrEnum):
    SAME = "same"  # the file is the latest stored revision
    EDITED = "edited"  # the file differs from the latest stored revision
    NEW = "new"  # no revision of this flow is stored


@dataclass(frozen=True)
class FlowFile:
    """A valid flow file and how it stands against the database."""

    path: Path
    flow: Flow
    state: FileState
    revision: int | None  # the latest stored revision, None when NEW


def read_files(paths: list[Path], registry: Registry) -> tuple[list[tuple[Path, Flow]], list[tuple[Path, list[str]]]]:
    """Each path parsed and validated: the valid flows, and the invalid files with every problem."""
    valid, invalid = [], []
    for path in paths:
        try:
            valid.append((path, check_file(path, registry)))
        except errors.FlowInvalid as exc:
            invalid.append((path, list(exc.problems)))
        except OSError as exc:
            invalid.append((path, [str(exc)]))
    return valid, invalid


def directory_files(directory: Path | None) -> list[Path]:
    return flow_files(directory) if directory is not None and directory.is_dir() else []


async def compare(repo: Repository, files: list[tuple[Path, Flow]]) -> dict[str, FlowFile]:
    """How each file stands against the stored flows, by flow id. Reads only."""
    states = {}
    for path, flow in files:
        try:
            stored, revision, _ = await repo.get_flow(flow.id)
        except errors.FlowNotFound:
            states[flow.id] = FlowFile(path, flow, FileState.NEW, None)
            continue
        state = FileState.SAME if stored.digest() == flow.digest() else FileState.EDITED
        states[flow.id] = FlowFile(path, flow, state, revision)
    return states


async def directory_states(repo: Repository, directory: Path | None, registry: Registry) -> dict[str, FlowFile]:
    """The flows directory against the database; an invalid file is one warning line on stderr."""
    valid, invalid = read_files(directory_files(directory), registry)
    for path, problems in invalid:
        print(f"warning: {path} is not a valid flow ({'; '.join(problems)})", file=sys.stderr)
    return await compare(repo, valid)


async def push(repo: Repository, paths: list[Path], registry: Registry) -> int:
    """``flows push``: store each valid file whose definition changed; a line per file; exit 1 if any is invalid."""
    valid, invalid = read_files(paths, registry)
    for path, flow in valid:
        revision, created = await repo.save_flow(flow)
        print(f"{flow.id}: revision {revision} {'(new)' if created else '(unchanged)'}  {path}")
    for path, problems in invalid:
        print(f"{path}: INVALID")
        for problem in problems:
            print(f"  - {problem}")
    return 1 if invalid else 0
