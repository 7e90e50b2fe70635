"""The report's document into one HTML page that needs nothing else: the style, plotly's
JavaScript, the document (as JSON) and the page's own script, all inline.

The page is drawn in the browser from the document (assets/page.js), not written out as HTML
here: 200 themes' firm tables as markup would be tens of megabytes, while drawn on demand, when
a theme or a firm is chosen, they cost nothing until looked at. The script is assets/base.js
(elements, tables, the firm search) followed by the view's own: page.js for themes, measure.js
for a measured subject (`ftm report --measure`).
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
_SLOT = re.compile(r"<!--ftm:(\w+)-->")
# A view: its template and script in ASSETS, and the page's title before the document's label.
VIEWS = {
    "themes": ("page.html", "page.js", "ftm report"),
    "measure": ("measure.html", "measure.js", "ftm measure"),
}


def render(document: dict[str, Any], view: str = "themes") -> bytes:
    """The page of a view (`VIEWS`), UTF-8."""
    template_name, script_name, heading = VIEWS[view]
    title = f"{heading} {document['provenance']['label']}"
    script = "\n".join((ASSETS / name).read_text(encoding="utf-8") for name in ("base.js", script_name))
    parts = {
        "title": html.escape(title),
        "style": (ASSETS / "page.css").read_text(encoding="utf-8"),
        "plotly": _code(_plotly()),
        "data": _data(document),
        "script": _code(script),
    }
    template = (ASSETS / template_name).read_text(encoding="utf-8")
    # One pass, so that a slot's text in an inserted part (plotly's code, a sentence) stays as it is.
    return _SLOT.sub(lambda match: parts[match.group(1)], template).encode("utf-8")


@cache
def _plotly() -> str:
    """plotly.js as the plotly package ships it (BERTopic's charts use the same package)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _data(document: dict[str, Any]) -> str:
    """The document as JSON that is safe inside a <script> element: a sentence may hold
    "</script>" or "<!--", so every "<" is written as the JSON escape \\u003c, which reads back
    as "<"."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")


def _code(text: str) -> str:
    """Script text for a <script> element, which must not hold what would end it early."""
    if re.search(r"</script|<!--", text, re.IGNORECASE):
        raise RuntimeError("a script inlined in the report holds </script or <!--")  # a bug, not input
    return text
