"""Prints what `make demo` made: the quarter's top themes with their names, how many firms talk
about each, two example firms, and where the firm x theme panel is."""

from __future__ import annotations

import sys

from ftm import layout, read_names
from ftm.quarters import Quarter
from ftm.schemas import THEME_TOPICS, THEMES
from ftm.storage import Store


def main(root: str, quarter_label: str, top: int = 8) -> None:
    store, quarter = Store(root), Quarter.parse(quarter_label)
    themes = store.read_table(layout.themes(quarter), THEMES).to_pandas()
    members = store.read_table(layout.theme_topics(quarter), THEME_TOPICS).to_pandas()
    names = read_names(store, quarter, "theme").to_pandas().set_index("theme_id")
    print(f"{len(themes)} themes in {quarter}; the {min(top, len(themes))} that most firms talk about:")
    for theme in themes.sort_values(["n_firms", "theme_id"], ascending=[False, True]).head(top).itertuples():
        name = names.loc[theme.theme_id]
        firms = sorted(members.loc[members.theme_id == theme.theme_id, "firm_id"].unique())[:2]
        print(f"  {name['name']:<40} {theme.n_firms:>3} firms  e.g. {', '.join(firms)}  ({name['source']})")
    print(f"The firm x theme panel: {store.uri(layout.firm_theme_exposure(quarter))}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
