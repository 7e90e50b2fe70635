"""Preprocessing: what raw_text and cleaned_text keep and drop, which turns and sentences are left
out, long components, stable sentence keys, and `split_text`. Tiny synthetic calls only."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from ftm.prefetch.sources import Component
from ftm.prefetch.text import CallText, Preprocessor, distinct_keywords, split_text
from ftm.settings import FINANCE_STOP_WORDS, PreprocessSettings


@pytest.fixture(scope="module")
def preprocessor() -> Iterator[Preprocessor]:
    """One process, default rules; the spaCy model is loaded once for the module."""
    processor = Preprocessor(PreprocessSettings(workers=1))
    yield processor
    processor.close()


def _text(processor: Preprocessor, components: list[Component], firm_name: str | None = None) -> CallText:
    [(key, text)] = list(processor.process([("call", components)], firm_name=lambda key: firm_name))
    assert key == "call"
    return text


def _cleaned_words(text: CallText) -> set[str]:
    return {word for sentence in text.sentences for word in sentence.cleaned_text.split()}


# --- cleaned_text and raw_text ----------------------------------------------------------------


def test_cleaned_text_is_lower_cased_verb_lemmas_and_nouns_as_spoken_without_numbers_or_stop_words(
    preprocessor: Preprocessor,
) -> None:
    said = (
        "Apple reported record revenue of 5 billion dollars in 2016, and our customers were "
        "buying more subscriptions from Amazon."
    )
    [sentence] = _text(preprocessor, [Component(0, "presenter", said)], firm_name="Apple Inc.").sentences
    words = sentence.cleaned_text.split()
    assert sentence.raw_text == said
    assert sentence.cleaned_text == sentence.cleaned_text.lower()
    assert {"report", "buy"} <= set(words)  # verbs as lemmas
    assert not {"reported", "buying"} & set(words)
    assert {"revenue", "customers", "subscriptions"} <= set(words)  # nouns as spoken
    assert "apple" not in words  # the firm's own name
    assert "amazon" in words  # another firm's name is what the sentence is about
    assert not {"billion", "dollar", "dollars"} & set(words)  # MONEY
    assert all(word.isalpha() for word in words)  # no numbers, no punctuation
    assert not {"of", "in", "and", "our", "were", "more"} & set(words)  # spaCy's stop words


def test_cleaned_text_has_no_lemmatizer_artefacts_and_keeps_acronyms_and_hyphenated_words(
    preprocessor: Preprocessor,
) -> None:
    said = (
        "The COVID-19 pandemic and COVID cases hurt our data business, taxes rose, and "
        "monies from informatics grew."
    )
    words = _cleaned_words(_text(preprocessor, [Component(0, "answer", said)]))
    # spaCy's noun lemmas would be datum, taxis, monie and informatic.
    assert {"data", "taxes", "monies", "informatics"} <= words
    assert not {"datum", "taxis", "monie", "informatic"} & words
    # The small model tags COVID-19 as an organisation or a person; it is the subject here.
    assert {"covid-19", "covid", "pandemic"} <= words


def test_distinct_keywords_leave_out_a_plural_after_its_singular() -> None:
    ranked = ["cost", "supply chain", "costs", "companies", "supply chains", "company", "business", "sales"]
    assert distinct_keywords(ranked, 10) == ["cost", "supply chain", "companies", "business", "sales"]
    assert distinct_keywords(ranked, 2) == ["cost", "supply chain"]


def test_finance_stop_words_are_removed_from_cleaned_text(preprocessor: Preprocessor) -> None:
    said = "Obviously we basically think the pricing strategy really helped margins."
    with_list = _text(preprocessor, [Component(0, "answer", said)])
    assert {"pricing", "strategy", "help", "margins"} <= _cleaned_words(with_list)
    assert not set(FINANCE_STOP_WORDS) & _cleaned_words(with_list)

    without_list = Preprocessor(PreprocessSettings(workers=1, extra_stop_words=[]))
    try:
        plain = _text(without_list, [Component(0, "answer", said)])
    finally:
        without_list.close()
    # The same sentence keeps those words when the finance list is switched off.
    assert {"obviously", "basically", "think"} <= _cleaned_words(plain)


def test_raw_text_is_the_sentence_with_whitespace_normalised(preprocessor: Preprocessor) -> None:
    said = "Revenue   grew\n strongly\tacross   the\r\nsoftware segments , helped by pricing ."
    [sentence] = _text(preprocessor, [Component(0, "answer", said)]).sentences
    assert sentence.raw_text == "Revenue grew strongly across the software segments, helped by pricing."
    assert sentence.speaker_type == "answer"


def test_unk_masks_are_removed_from_raw_and_cleaned_text(preprocessor: Preprocessor) -> None:
    said = "Thanks, <UNK>. Our <UNK> team expanded the software platform to new customers."
    text = _text(preprocessor, [Component(0, "presenter", said)])
    assert [s.raw_text for s in text.sentences] == [
        "Our team expanded the software platform to new customers."
    ]
    assert "unk" not in _cleaned_words(text)
    assert all("<UNK>" not in s.raw_text and "UNK" not in s.cleaned_text for s in text.sentences)


# --- what is dropped, and what is counted -----------------------------------------------------


def test_boilerplate_sentences_are_dropped_by_the_minimum_token_rule(preprocessor: Preprocessor) -> None:
    text = _text(
        preprocessor,
        [
            Component(0, "presenter", "Thank you."),
            Component(1, "question", "Next question, please."),
            Component(2, "answer", "Thank you. Demand for cloud storage among hospitals doubled."),
        ],
    )
    assert [(s.key, s.raw_text) for s in text.sentences] == [
        ("2.1", "Demand for cloud storage among hospitals doubled.")
    ]
    assert (text.n_empty_components, text.n_dropped_components) == (0, 0)


def test_operator_turns_are_dropped_and_counted(preprocessor: Preprocessor) -> None:
    text = _text(
        preprocessor,
        [
            Component(0, "operator", "Our next question comes from analysts asking about pricing margins."),
            Component(1, "question", "How durable is the demand for cloud storage among hospitals?"),
            Component(2, "operator", "Participants may disconnect their telephones now."),
        ],
    )
    assert [s.raw_text for s in text.sentences] == [
        "How durable is the demand for cloud storage among hospitals?"
    ]
    assert {s.speaker_type for s in text.sentences} == {"question"}
    assert text.n_dropped_components == 2
    assert text.n_empty_components == 0


def test_blank_and_missing_components_are_counted_as_empty(preprocessor: Preprocessor) -> None:
    text = _text(
        preprocessor,
        [
            Component(0, "presenter", ""),
            Component(1, "presenter", "   \n\t "),
            Component(2, "answer", None),  # type: ignore[arg-type]  # a NULL text cell
            Component(3, "answer", "<UNK>"),  # nothing left once the mask is removed
            Component(4, "answer", "Subscription renewals improved gross margins."),
        ],
    )
    assert text.n_empty_components == 4
    assert text.n_dropped_components == 0
    assert [s.key for s in text.sentences] == ["4.0"]


def test_a_call_with_no_components_gives_no_sentences(preprocessor: Preprocessor) -> None:
    assert _text(preprocessor, []) == CallText([], 0, 0)


# --- long components --------------------------------------------------------------------------

SENTENCES = [
    "Our margins improved because customers bought more software subscriptions.",
    "Freight costs weighed on the industrial segment during the period.",
    "Hospitals continued to adopt the imaging platform at a steady pace.",
    "Pricing actions offset most of the inflation in raw materials.",
]


def _long_text(n_chars: int, marker: str) -> tuple[str, int]:
    """Paragraphs of distinct-enough sentences, `marker` in the last one: (text, sentence count)."""
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < n_chars:
        sentences.append(SENTENCES[len(sentences) % len(SENTENCES)])
    sentences.append(f"The {marker} division finally delivered strong growth.")
    paragraphs = [" ".join(sentences[i : i + 12]) for i in range(0, len(sentences), 12)]
    return "\n\n".join(paragraphs), len(sentences)


def test_a_component_longer_than_max_chars_is_split_never_truncated() -> None:
    text, n_sentences = _long_text(20_000, "zeppelin")
    processor = Preprocessor(PreprocessSettings(workers=1, max_chars=1_000))
    try:
        result = _text(
            processor,
            [
                Component(0, "presenter", text),
                Component(1, "answer", "Pricing held up well in every region."),
            ],
        )
    finally:
        processor.close()
    long_part = [s for s in result.sentences if s.key.startswith("0.")]
    assert len(text) > 20 * processor.settings.max_chars
    # Every sentence survives, in order, with its text whole; keys run on across the pieces.
    assert " ".join(s.raw_text for s in long_part) == " ".join(text.split())
    assert [s.key for s in long_part] == [f"0.{i}" for i in range(n_sentences)]
    assert long_part[-1].raw_text == "The zeppelin division finally delivered strong growth."
    assert "zeppelin" in long_part[-1].cleaned_text
    assert [s.key for s in result.sentences if s.key.startswith("1.")] == ["1.0"]


# --- split_text -------------------------------------------------------------------------------


def test_split_text_returns_short_text_unchanged() -> None:
    text = "First paragraph.\n\nSecond paragraph."
    assert split_text(text, 1_000) == [text]


def test_split_text_cuts_at_paragraph_ends_first() -> None:
    first = "Alpha sentence one. " * 30  # 600 characters, two sentence ends per line of text
    second = "Beta sentence two. " * 30
    pieces = split_text(f"{first.strip()}\n\n{second.strip()}", 1_000)
    assert pieces == [first.strip(), second.strip()]


def test_split_text_packs_small_paragraphs_together_up_to_max_chars() -> None:
    paragraphs = [f"Paragraph {i} talks about margins and pricing." for i in range(100)]
    pieces = split_text("\n\n".join(paragraphs), 1_000)
    assert 1 < len(pieces) < len(paragraphs)
    assert all(len(piece) <= 1_000 for piece in pieces)
    assert " ".join(pieces) == " ".join(paragraphs)


def test_split_text_cuts_at_sentence_ends_when_there_are_no_paragraphs() -> None:
    sentences = [f"Sentence {i} is about demand for storage in the hospital market." for i in range(60)]
    text = " ".join(sentences)
    pieces = split_text(text, 1_000)
    assert len(pieces) > 1
    assert all(len(piece) <= 1_000 and piece.endswith(".") for piece in pieces)
    assert " ".join(pieces) == text


def test_split_text_splits_a_long_paragraph_at_sentences_and_keeps_short_ones_whole() -> None:
    short = "A short opening paragraph."
    long = " ".join(f"Long sentence {i} covers the freight business." for i in range(80))
    pieces = split_text(f"{short}\n\n{long}\n\n{short}", 1_000)
    assert all(len(piece) <= 1_000 for piece in pieces)
    assert pieces[0].startswith(short)
    assert " ".join(pieces).split() == f"{short} {long} {short}".split()


def test_split_text_cuts_at_spaces_when_there_are_no_sentence_ends() -> None:
    words = [f"word{i}" for i in range(1_000)]
    pieces = split_text(" ".join(words), 1_000)
    assert len(pieces) > 1
    assert all(len(piece) <= 1_000 for piece in pieces)
    assert [word for piece in pieces for word in piece.split()] == words  # no word is cut


def test_split_text_cuts_text_without_any_whitespace_into_max_chars_pieces() -> None:
    text = "x" * 2_500
    assert split_text(text, 1_000) == ["x" * 1_000, "x" * 1_000, "x" * 500]


def test_split_text_keeps_every_word_of_random_text_in_order() -> None:
    rng = random.Random(7)
    separators = [" ", " ", " ", ". ", "\n", "\n\n", "! ", "?\n"]
    for _ in range(50):
        words = ["".join(rng.choices("abcdefghij", k=rng.choice([1, 5, 30, 900]))) for _ in range(200)]
        text = "".join(word + rng.choice(separators) for word in words).strip()
        max_chars = rng.choice([1_000, 2_000, 5_000])
        pieces = split_text(text, max_chars)
        assert all(0 < len(piece) <= max_chars for piece in pieces)
        assert " ".join(pieces).split() == text.split()


def test_split_text_keeps_every_character_of_a_word_longer_than_max_chars() -> None:
    text = "Short words first. " + "y" * 2_500 + " and short words after."
    pieces = split_text(text, 1_000)
    assert all(len(piece) <= 1_000 for piece in pieces)
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


# --- stability and workers --------------------------------------------------------------------

CALLS = [
    (
        "T1",
        [
            Component(5, "presenter", "Revenue grew in the software segment. Margins expanded on pricing."),
            Component(9, "answer", "Demand for cloud storage among hospitals doubled."),
        ],
    ),
    (
        "T2",
        [Component(0, "operator", "Welcome."), Component(1, "question", "How durable is freight demand?")],
    ),
    (
        "T3",
        [Component(0, "presenter", "Thank you."), Component(3, "answer", "Input costs eased across plants.")],
    ),
]


def test_sentence_keys_are_component_order_and_sentence_number_and_stable_across_runs(
    preprocessor: Preprocessor,
) -> None:
    first = list(preprocessor.process(iter(CALLS)))
    second = list(preprocessor.process(iter(CALLS)))
    assert first == second
    keys = {call: [s.key for s in text.sentences] for call, text in first}
    assert keys == {"T1": ["5.0", "5.1", "9.0"], "T2": ["1.0"], "T3": ["3.0"]}
    # A key depends only on its own component: dropping another component changes no key.
    alone = _text(preprocessor, [CALLS[0][1][1]])
    assert [(s.key, s.raw_text) for s in alone.sentences] == [
        (s.key, s.raw_text) for s in first[0][1].sentences if s.key.startswith("9.")
    ]


def test_two_workers_give_the_same_output_as_one(preprocessor: Preprocessor) -> None:
    one = list(preprocessor.process(iter(CALLS)))
    two_workers = Preprocessor(PreprocessSettings(workers=2))
    try:
        two = list(two_workers.process(iter(CALLS)))
    finally:
        two_workers.close()
    assert [call for call, _ in two] == ["T1", "T2", "T3"]
    assert two == one
    assert sum(len(text.sentences) for _, text in two) == 5
