"""Name: a quarter's themes and firm topics in; short names out (`names/quarter=Q/`), from an LLM
behind an OpenAI-compatible endpoint, else from their keywords. Start with `naming.py`;
`llm_server.py` runs a vLLM server for the length of a naming run (`llm.serve`)."""

from ftm.name.llm_server import serving
from ftm.name.naming import NamingProgress, NamingResult, name_quarter, read_names, requests_to_send

__all__ = ["NamingProgress", "NamingResult", "name_quarter", "read_names", "requests_to_send", "serving"]
