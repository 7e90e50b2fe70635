// ftm report: draws the page from the JSON document inlined beside this script (see content.py
// for its shape). Nothing is fetched: charts are plotly's, tables and text are built here, each
// when first looked at, so that a page of 5,000 firms and 200 themes opens at once. Tables,
// numbers and the firm search are base.js's (`ftmPage`), which measure.js draws with too.
(function () {
  "use strict";
  const { byId, PLOT_CONFIG, el, percent, tone, clip, table } = ftmPage;
  const data = JSON.parse(document.getElementById("ftm-data").textContent);
  const firms = data.firms;
  const lineages = data.lineages;
  const firmLabel = (index) => ftmPage.firmLabel(firms, index);

  // --- each quarter's lookups, built once, when the quarter is first shown -------------------
  const prepared = new Map();
  function quarter(index) {
    if (prepared.has(index)) return prepared.get(index);
    const page = data.quarters[index];
    const themes = page.themes;
    const row = new Map(themes.id.map((id, at) => [id, at]));
    // The cells come grouped by theme, each theme's firms as steps from the one before.
    const cells = page.cells;
    cells.theme = new Array(cells.n.length);
    cells.firm = new Array(cells.n.length);
    const cellsOfTheme = new Map();
    const cellsOfFirm = new Map();
    let at = 0;
    themes.id.forEach((theme, position) => {
      const mine = [];
      let firm = 0;
      for (let k = 0; k < cells.per_theme[position]; k++, at++) {
        firm = k === 0 ? cells.firm_step[at] : firm + cells.firm_step[at];
        cells.theme[at] = theme;
        cells.firm[at] = firm;
        mine.push(at);
        if (!cellsOfFirm.has(firm)) cellsOfFirm.set(firm, []);
        cellsOfFirm.get(firm).push(at);
      }
      cellsOfTheme.set(theme, mine);
    });
    const callDate = new Map(page.calls.firm.map((firm, k) => [firm, page.calls.date[k]]));
    const evidence = new Map();
    page.evidence.firm.forEach((firm, at) => {
      const key = `${firm}:${page.evidence.theme[at]}`;
      if (!evidence.has(key)) evidence.set(key, []);
      evidence.get(key).push(at);
    });
    // Theme ids are the default order (kind theme first, by salience); "firms" re-sorts by size.
    const investment = themes.id.filter((_, at) => themes.kind[at] === "theme").sort((a, b) => a - b);
    const reporting = themes.id.filter((_, at) => themes.kind[at] !== "theme");
    const made = { page, themes, row, cellsOfTheme, cellsOfFirm, callDate, evidence, investment, reporting };
    prepared.set(index, made);
    return made;
  }

  let current = data.quarters.length - 1;
  let themeOrder = "salience";
  let chosenTheme = null;
  let chosenFirm = null;

  const keywordList = (words) => el("span", { class: "keywords" }, words.map((word) => el("span", {}, word)));
  const quote = (firm, date, text) =>
    el("blockquote", {}, text, el("cite", {}, `${firmLabel(firm)}${date ? ", call of " + date : ""}`));

  // --- the page's parts ----------------------------------------------------------------------
  function drawProvenance() {
    const made = data.provenance;
    byId("provenance").textContent =
      `Quarters ${made.quarters.join(", ")} · ftm ${made.ftm_version} · settings ${made.settings_hash}` +
      ` · made ${made.made} · from ${made.root}`;
    if (data.quarters.length > 1) {
      const select = byId("quarter-select");
      data.quarters.forEach((page, at) => select.append(el("option", { value: String(at) }, page.quarter)));
      select.value = String(current);
      select.addEventListener("change", () => showQuarter(Number(select.value)));
      byId("quarter-nav").hidden = false;
    }
  }

  const salienceText = (value) => (value === null || value === undefined ? "–" : (value >= 0 ? "+" : "") + value.toFixed(2));

  function drawThemes() {
    const q = quarter(current);
    const { themes, row } = q;
    const investment = themeOrder === "firms"
      ? q.investment.slice().sort((a, b) => themes.n_firms[row.get(b)] - themes.n_firms[row.get(a)] || a - b)
      : q.investment;
    byId("themes-count").textContent =
      `${q.page.quarter}: ${investment.length} themes, ${q.page.n_firms.toLocaleString()} firms`;
    const chart = byId("theme-bars");
    if (investment.length === 0) {
      Plotly.purge(chart);
      chart.replaceChildren(el("p", { class: "quiet" }, "No investment themes in this quarter."));
      byId("theme-table").replaceChildren();
      return;
    }
    chart.replaceChildren();
    const labels = investment.map((id, rank) => `${rank + 1}. ${clip(themes.name[row.get(id)], 48)}`);
    Plotly.newPlot(
      chart,
      [{
        type: "bar",
        orientation: "h",
        x: investment.map((id) => themes.n_firms[row.get(id)]),
        y: labels,
        customdata: investment,
        text: investment.map((id) => themes.keywords[row.get(id)].slice(0, 6).join(", ")),
        textposition: "none",
        hovertemplate: "%{y}<br>%{x} firms<br>salience %{meta}<br>%{text}<extra></extra>",
        meta: investment.map((id) => salienceText(themes.salience[row.get(id)])),
        marker: { color: "#2f6db5" },
      }],
      {
        height: Math.max(220, 22 * investment.length + 70),
        margin: { l: 10, r: 20, t: 10, b: 40 },
        xaxis: { title: { text: "firms" }, rangemode: "tozero" },
        yaxis: { autorange: "reversed", automargin: true },
      },
      PLOT_CONFIG
    );
    chart.on("plotly_click", (event) => {
      showTheme(event.points[0].customdata);
      byId("theme-section").scrollIntoView();
    });
    byId("theme-table").replaceChildren(
      table(
        [
          { label: "#", num: true, value: (id) => investment.indexOf(id), show: (id) => investment.indexOf(id) + 1 },
          { label: "Name", value: (id) => themes.name[row.get(id)], show: (id) => themes.name[row.get(id)] },
          { label: "Keywords", value: (id) => themes.keywords[row.get(id)].join(" "), show: (id) => keywordList(themes.keywords[row.get(id)]) },
          { label: "Salience", num: true, value: (id) => themes.salience[row.get(id)], show: (id) => salienceText(themes.salience[row.get(id)]) },
          { label: "Firms", num: true, value: (id) => themes.n_firms[row.get(id)], show: (id) => themes.n_firms[row.get(id)] },
          { label: "Sentences", num: true, value: (id) => themes.n_sentences[row.get(id)], show: (id) => themes.n_sentences[row.get(id)] },
        ],
        investment,
        { onPick: (id) => { showTheme(id); byId("theme-section").scrollIntoView(); } }
      )
    );
  }

  function drawReporting() {
    const { themes, row, reporting } = quarter(current);
    byId("reporting-count").textContent = `${reporting.length} in ${data.quarters[current].quarter}`;
    byId("reporting-table").replaceChildren(
      table(
        [
          { label: "Name", value: (id) => themes.name[row.get(id)], show: (id) => themes.name[row.get(id)] },
          { label: "Kind", value: (id) => themes.kind[row.get(id)], show: (id) => themes.kind[row.get(id)] },
          { label: "Keywords", value: (id) => themes.keywords[row.get(id)].join(" "), show: (id) => keywordList(themes.keywords[row.get(id)]) },
          { label: "Salience", num: true, value: (id) => themes.salience[row.get(id)], show: (id) => salienceText(themes.salience[row.get(id)]) },
          { label: "Firms", num: true, value: (id) => themes.n_firms[row.get(id)], show: (id) => themes.n_firms[row.get(id)] },
          { label: "Sentences", num: true, value: (id) => themes.n_sentences[row.get(id)], show: (id) => themes.n_sentences[row.get(id)] },
        ],
        reporting,
        { onPick: showTheme }
      )
    );
  }

  function showTheme(id) {
    chosenTheme = id;
    const q = quarter(current);
    const { themes, row, page } = q;
    const at = row.get(id);
    const detail = byId("theme-detail");
    if (at === undefined) {
      detail.replaceChildren();
      return;
    }
    const parts = [
      el("h2", {}, themes.name[at], " ", el("span", { class: "quiet" }, `theme ${id} of ${page.quarter}, ${themes.kind[at]}`)),
      el("p", { class: "quiet" }, `Named by ${themes.source[at] || "keywords"}. Talked about by ${themes.n_firms[at]} firms (two sentences or more each), in ${themes.n_sentences[at]} sentences.`),
      el("p", {}, keywordList(themes.keywords[at])),
    ];
    if (lineages && themes.lineage[at] !== null) {
      parts.push(el("h3", {}, "Share of firms by quarter"), el("div", { id: "theme-line", class: "chart" }));
    }
    parts.push(el("h3", {}, "What firms said"), ...themes.examples[at].map(([firm, date, text]) => quote(firm, date, text)));
    const cells = q.cellsOfTheme.get(id) || [];
    parts.push(
      el("h3", {}, `Every firm with a sentence in it (${cells.length}; the panel's rows, ${themes.n_firms[at]} of them talk about it)`),
      table(
        [
          { label: "Firm", value: (c) => firms.id[page.cells.firm[c]], show: (c) => firmButton(page.cells.firm[c]) },
          { label: "PERMNO", value: (c) => firms.permno[page.cells.firm[c]], show: (c) => firms.permno[page.cells.firm[c]] ?? "–" },
          { label: "GVKEY", value: (c) => firms.gvkey[page.cells.firm[c]], show: (c) => firms.gvkey[page.cells.firm[c]] ?? "–" },
          { label: "Call date", value: (c) => q.callDate.get(page.cells.firm[c]), show: (c) => q.callDate.get(page.cells.firm[c]) ?? "–" },
          { label: "Sentences", num: true, value: (c) => page.cells.n[c], show: (c) => page.cells.n[c] },
          { label: "Exposure", num: true, value: (c) => page.cells.share[c], show: (c) => percent(page.cells.share[c]) },
          { label: "Net tone", num: true, value: (c) => page.cells.tone[c], show: (c) => tone(page.cells.tone[c]) },
        ],
        cells,
        { sortBy: 5 }
      )
    );
    detail.replaceChildren(...parts);
    if (lineages && themes.lineage[at] !== null) drawLineage(byId("theme-line"), themes.lineage[at]);
  }

  function drawLineage(target, lineage) {
    const at = lineages.id.indexOf(lineage);
    Plotly.newPlot(
      target,
      [{
        type: "scatter",
        mode: "lines+markers",
        x: lineages.quarters,
        y: lineages.share[at].map((share) => share / 100),
        text: lineages.trend[at].map((flag) => flag || ""),
        hovertemplate: "%{x}: %{y:.1f}% of firms %{text}<extra></extra>",
        line: { color: "#2f6db5" },
      }],
      {
        height: 260,
        margin: { l: 50, r: 20, t: 10, b: 40 },
        yaxis: { title: { text: "% of firms" }, rangemode: "tozero" },
        xaxis: { type: "category" },
      },
      PLOT_CONFIG
    );
  }

  function firmButton(index) {
    return el("button", { class: "link", type: "button", onclick: (event) => { event.stopPropagation(); showFirm(index); } }, firmLabel(index));
  }

  function showFirm(index) {
    chosenFirm = index;
    const parts = [
      el("h2", {}, firmLabel(index)),
      el("p", { class: "quiet" }, `PERMNO ${firms.permno[index] ?? "–"} · GVKEY ${firms.gvkey[index] ?? "–"}`),
    ];
    // Latest quarter first: a range's firm page reads as a history, most recent on top.
    for (let qi = data.quarters.length - 1; qi >= 0; qi--) {
      const q = quarter(qi);
      const { page, themes, row } = q;
      const cells = (q.cellsOfFirm.get(index) || []).slice();
      if (data.quarters.length > 1) parts.push(el("h3", {}, page.quarter));
      if (cells.length === 0) {
        parts.push(el("p", { class: "quiet" }, `No theme in ${page.quarter}.`));
        continue;
      }
      cells.sort((a, b) => (themes.kind[row.get(page.cells.theme[a])] === "theme" ? 0 : 1) - (themes.kind[row.get(page.cells.theme[b])] === "theme" ? 0 : 1) || page.cells.share[b] - page.cells.share[a]);
      parts.push(
        table(
          [
            { label: "Theme", value: (c) => themes.name[row.get(page.cells.theme[c])], show: (c) => themes.name[row.get(page.cells.theme[c])] },
            { label: "Kind", value: (c) => themes.kind[row.get(page.cells.theme[c])], show: (c) => themes.kind[row.get(page.cells.theme[c])] },
            { label: "Sentences", num: true, value: (c) => page.cells.n[c], show: (c) => page.cells.n[c] },
            { label: "Exposure", num: true, value: (c) => page.cells.share[c], show: (c) => percent(page.cells.share[c]) },
            { label: "Net tone", num: true, value: (c) => page.cells.tone[c], show: (c) => tone(page.cells.tone[c]) },
          ],
          cells,
          { onPick: (c) => { showQuarter(qi); showTheme(page.cells.theme[c]); byId("theme-section").scrollIntoView(); } }
        )
      );
      for (const c of cells) {
        const said = q.evidence.get(`${index}:${page.cells.theme[c]}`);
        if (!said) continue;
        parts.push(
          el("h3", { class: "quiet" }, `In “${themes.name[row.get(page.cells.theme[c])]}”`),
          ...said.map((e) => quote(index, page.evidence.date[e], page.evidence.text[e]))
        );
      }
    }
    byId("firm-detail").replaceChildren(...parts);
  }

  // --- over time (a range) --------------------------------------------------------------------
  function drawTrends() {
    if (!lineages) return;
    byId("trends-section").hidden = false;
    // In the document's order: investment themes rising most in the last quarter first.
    const order = lineages.id.map((_, at) => at);
    const top = order.filter((at) => lineages.kind[at] === "theme").slice(0, 10);
    const signed = (value, scale, digits) => (value === null ? "–" : (value > 0 ? "+" : "") + (value / scale).toFixed(digits));
    Plotly.newPlot(
      byId("trend-lines"),
      top.map((at) => ({
        type: "scatter",
        mode: "lines+markers",
        name: clip(lineages.name[at], 40),
        x: lineages.quarters,
        y: lineages.share[at].map((share) => share / 100),
      })),
      {
        height: 380,
        margin: { l: 50, r: 20, t: 10, b: 40 },
        yaxis: { title: { text: "% of firms" }, rangemode: "tozero" },
        xaxis: { type: "category" },
        legend: { orientation: "h", y: -0.2 },
      },
      PLOT_CONFIG
    );
    const flag = (at, qi) => {
      const value = lineages.trend[at][qi];
      const text = percent(lineages.share[at][qi]);
      if (value === "emerging") return el("span", { class: "emerging" }, "▲ " + text);
      if (value === "fading") return el("span", { class: "fading" }, "▼ " + text);
      return text;
    };
    byId("trend-table").replaceChildren(
      table(
        [
          { label: "Theme", value: (at) => lineages.name[at], show: (at) => lineages.name[at] },
          { label: "Kind", value: (at) => lineages.kind[at], show: (at) => lineages.kind[at] },
          { label: "Momentum", num: true, value: (at) => lineages.momentum[at], show: (at) => signed(lineages.momentum[at], 100, 1) + (lineages.momentum[at] === null ? "" : " pts") },
          { label: "Salience", num: true, value: (at) => lineages.salience[at], show: (at) => (lineages.salience[at] === null ? "–" : (lineages.salience[at] / 100).toFixed(2)) },
          { label: "Tone change", num: true, value: (at) => lineages.tone_change[at], show: (at) => signed(lineages.tone_change[at], 100, 2) },
          ...lineages.quarters.map((label, qi) => ({
            label, num: true, value: (at) => lineages.share[at][qi], show: (at) => flag(at, qi),
          })),
        ],
        order,
        { onPick: showLineage }
      )
    );
  }

  // A lineage's theme in the latest quarter that has one.
  function showLineage(at) {
    const lineage = lineages.id[at];
    for (let qi = data.quarters.length - 1; qi >= 0; qi--) {
      const themes = data.quarters[qi].themes;
      const position = themes.lineage.indexOf(lineage);
      if (position >= 0) {
        showQuarter(qi);
        showTheme(themes.id[position]);
        byId("theme-section").scrollIntoView();
        return;
      }
    }
  }

  function showQuarter(index) {
    if (index === current && prepared.has(index) && byId("theme-bars").childElementCount) return;
    current = index;
    byId("quarter-select").value = String(index);
    drawThemes();
    drawReporting();
    const q = quarter(current);
    showTheme(q.investment.length ? q.investment[0] : q.reporting[0]);
  }

  byId("theme-order").addEventListener("change", (event) => {
    themeOrder = event.target.value;
    drawThemes();
  });
  drawProvenance();
  showQuarter(current);
  drawTrends();
  ftmPage.firmSearch(firms, showFirm);
  ftmPage.ready({ chosenTheme: () => chosenTheme, chosenFirm: () => chosenFirm });
})();
