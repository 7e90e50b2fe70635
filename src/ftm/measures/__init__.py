"""Measure: subjects a researcher names in plain words in (a description, optionally example
sentences), with a range of mapped quarters (the sentence embeddings the map stored and the
prefetched firms); each firm's exposure to each subject per quarter, with Loughran-McDonald tone
and the sentences behind it, out (`measures/NAME/`). Start with `measure.py`; `calibration.py`
is the rule that says which sentences are about a subject, `subjects.py` reads what to measure."""

from ftm.measures.calibration import PSEUDO_RELEVANT, centred_similarities, nearest_median, threshold
from ftm.measures.measure import MeasureProgress, MeasureResult, measure, measure_subjects
from ftm.measures.subjects import Subject, name_from, read_subjects

__all__ = [
    "PSEUDO_RELEVANT",
    "MeasureProgress",
    "MeasureResult",
    "Subject",
    "centred_similarities",
    "measure",
    "measure_subjects",
    "name_from",
    "nearest_median",
    "read_subjects",
    "threshold",
]
