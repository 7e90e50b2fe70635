"""The references shipped beside the reduce's modules (`ordinary_language.npz`,
`ordinary_attention.npz`), each written by its script in scripts/ and read here."""

from __future__ import annotations

import io
from importlib import resources

import numpy as np


def shipped(name: str) -> dict[str, np.ndarray] | None:
    """The arrays of the reference `name`, or None if the file is missing (a stripped install)."""
    try:
        data = resources.files(__package__).joinpath(name).read_bytes()
    except FileNotFoundError:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}
