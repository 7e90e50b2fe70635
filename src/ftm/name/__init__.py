"""Name: a quarter's themes and firm topics in; short names out (`names/theme_names/quarter=Q/`
and `names/topic_names/quarter=Q/`), from an LLM behind an OpenAI-compatible endpoint, else from
their keywords. Start with `naming.py`; `llm_server.py` runs a vLLM server for the length of a
naming run (`llm.serve`) and says whether a model and its context fit a GPU (`serving_fit`, for
`ftm doctor`)."""

from ftm.name.llm_server import model_config, serving, serving_fit
from ftm.name.naming import (
    NamingProgress,
    NamingResult,
    longest_request_tokens,
    name_quarter,
    read_names,
    requests_to_send,
)

__all__ = [
    "NamingProgress",
    "NamingResult",
    "longest_request_tokens",
    "model_config",
    "name_quarter",
    "read_names",
    "requests_to_send",
    "serving",
    "serving_fit",
]
