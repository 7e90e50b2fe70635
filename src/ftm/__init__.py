"""ftm: cross-firm investment themes from earnings calls, as a firm x theme panel.

The library's entry points; the `ftm` command (`ftm.cli`) is a thin layer over them.

The layout follows the pipeline. The spine, which every stage shares and which imports no stage:
`settings`, `storage`, `layout` (every path), `schemas` (every data contract), `quarters`,
`errors`, `plan` (the batch plan). One package per stage: `prefetch`, `map`, `reduce`, `name`,
`trends` (themes across quarters), and `aws` (the stack, the image, the code package); above
them `backends` and `runs`, then `commands`, one module per command. Imports go downward only,
and a package is used through the names its `__init__` exports (tests/test_layout_imports.py
checks both).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ftm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from ftm.errors import DataError, FtmError, PartialFailure, SchemaError, SettingsError, UsageError
from ftm.measures import Subject, measure
from ftm.name import read_names
from ftm.prefetch import PrefetchProgress, PrefetchResult, prefetch_quarter, read_manifest
from ftm.quarters import Quarter
from ftm.settings import FtmSettings, load_settings
from ftm.storage import Store

__all__ = [
    "DataError",
    "FtmError",
    "FtmSettings",
    "PartialFailure",
    "PrefetchProgress",
    "PrefetchResult",
    "Quarter",
    "SchemaError",
    "SettingsError",
    "Subject",
    "Store",
    "UsageError",
    "__version__",
    "load_settings",
    "measure",
    "prefetch_quarter",
    "read_manifest",
    "read_names",
]
