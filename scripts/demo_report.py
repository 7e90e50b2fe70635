"""Prints what `make demo` made: the quarter's first investment themes in the default order (by
salience: how far above its ordinary level the attention to each is) with their names, how many
firms talk about each, the firms that talk about it most, and where the firm x theme panel is;
then how many themes of routine and reporting language were set apart."""

from __future__ import annotations

import sys

from ftm import layout, read_names
from ftm.quarters import Quarter
from ftm.schemas import THEME_SENTENCES, THEMES
from ftm.storage import Store


def main(root: str, quarter_label: str, top: int = 8) -> None:
    store, quarter = Store(root), Quarter.parse(quarter_label)
    themes = store.read_table(layout.themes(quarter), THEMES).to_pandas()
    members = store.read_table(layout.theme_sentences(quarter), THEME_SENTENCES).to_pandas()
    names = read_names(store, quarter, "theme").to_pandas().set_index("theme_id")
    investment = themes[themes.kind == "theme"]  # numbered first, by salience
    print(
        f"{len(investment)} themes in {quarter}; the first {min(top, len(investment))} by salience "
        "(attention over its ordinary level):"
    )
    for theme in investment.head(top).itertuples():
        name = names.loc[theme.theme_id]
        firms = members[members.theme_id == theme.theme_id].firm_id.value_counts().index[:2]
        unusual = "" if theme.salience != theme.salience else f"salience {theme.salience:+.2f}  "
        example = ", ".join(firms)
        print(f"  {name['name']:<40} {unusual}{theme.n_firms:>3} firms  e.g. {example}  ({name['source']})")
    kinds = themes.kind.value_counts()
    print(
        f"{kinds.get('routine', 0)} more of routine business language at its ordinary level "
        f"(kind = routine) and {kinds.get('reporting', 0)} of reporting language (results, outlook, "
        "boilerplate: kind = reporting)"
    )
    print(f"The firm x theme panel: {store.uri(layout.firm_theme_exposure(quarter))}")
    print(f"The evidence, sentence by sentence: {store.uri(layout.theme_sentences(quarter))}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
