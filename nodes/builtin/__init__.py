"""The core node types every installation has (SPEC §5)."""

from __future__ import annotations

from nodes.builtin.basic import Constant, End, Guard, Merge, Pick, Start
from nodes.builtin.control import Switch
from nodes.builtin.delay import Delay
from nodes.builtin.fanout import Map, Subflow
from nodes.builtin.file_fetch import FileFetch
from nodes.builtin.http_request import HttpRequest, make_http_session
from nodes.builtin.image import IMAGE_TYPES
from nodes.builtin.llm import LLM_TYPES
from nodes.builtin.media import MEDIA_TYPES
from nodes.builtin.template import Template
from nodes.contract import NodeType

CORE_TYPES: tuple[type[NodeType], ...] = (
    Start,
    End,
    Constant,
    Template,
    Delay,
    Guard,
    Pick,
    Merge,
    Switch,
    Map,
    Subflow,
    HttpRequest,
    FileFetch,
    *LLM_TYPES,
    *IMAGE_TYPES,  # image.* and media.* need the media extra: "available": false without it
    *MEDIA_TYPES,
)

__all__ = [
    "CORE_TYPES",
    "Constant",
    "Delay",
    "End",
    "FileFetch",
    "Guard",
    "HttpRequest",
    "Map",
    "Merge",
    "Pick",
    "Start",
    "Subflow",
    "Switch",
    "Template",
    "make_http_session",
]
