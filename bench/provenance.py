"""Which product code a run measured: a digest of every source file, taken at the start and the end.

The server and the memory measures start processes during the run, and each imports the code as
it is then; if a file changed meanwhile, the figures mix versions and the report says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nodes", "graph_runtime", "storage", "http_api")


def source_files() -> dict[str, str]:
    """``{relative path: sha256}`` of every Python file of the product's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{p}:{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()[:16]


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files added, removed or edited between two snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
