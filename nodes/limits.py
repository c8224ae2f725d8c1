"""Server-side ceilings on what one node run may consume (SPEC §4, issue 8).

A request can lower these through a node's settings, never raise them: every value a request
may influence is compared against the process's :class:`Limits`, built once from ``Settings``
and handed to each node in ``RunContext.limits``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Ceilings for one node run.

    Attributes:
        max_output_bytes: the largest node output (as JSON); larger fails ``output_too_large``.
            Files are the way to move big data.
        max_response_bytes: the most ``http_request`` reads of a (decoded) response body.
        template_memory_bytes: address space of a template renderer process.
        template_cpu_s: CPU seconds one template render may use, whatever its ``timeout_s``.
    """

    max_output_bytes: int = 16 * MIB
    max_response_bytes: int = 10 * MIB
    template_memory_bytes: int = 512 * MIB
    template_cpu_s: float = 10.0
