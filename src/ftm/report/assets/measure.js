// ftm report --measure: draws a measured subject's page from the JSON document inlined beside this
// script (see report/measure.py for its shape) with base.js's tables, numbers and firm search.
// Nothing is fetched; a quarter's ranking and a firm's sentences are drawn when chosen.
(function () {
  "use strict";
  const { byId, PLOT_CONFIG, el, percent, tone, table } = ftmPage;
  const data = JSON.parse(byId("ftm-data").textContent);
  const firms = data.firms;
  const subject = data.subject;
  const quarters = data.quarters;
  const firmLabel = (index) => ftmPage.firmLabel(firms, index);
  // The series' numbers are plain fractions (a few a quarter), the firms' in ten-thousandths.
  const fraction = (value, digits) => (value === null ? "–" : (value * 100).toFixed(digits) + "%");
  const share = (value) => percent(value, 2); // a firm's share is often under 1%

  // --- each quarter's lookups, built once, when first needed -----------------------------------
  const prepared = new Map();
  function quarter(index) {
    if (prepared.has(index)) return prepared.get(index);
    const page = quarters[index];
    const rowOf = new Map(page.firms.firm.map((firm, at) => [firm, at]));
    const said = new Map();
    page.evidence.firm.forEach((firm, at) => {
      if (!said.has(firm)) said.set(firm, []);
      said.get(firm).push(at);
    });
    const made = { page, rowOf, said };
    prepared.set(index, made);
    return made;
  }

  let current = quarters.length - 1;
  let chosenFirm = null;

  // --- the page's parts ----------------------------------------------------------------------
  function drawHeader() {
    byId("description").textContent = `“${subject.description}”`;
    const made = data.provenance;
    byId("provenance").textContent =
      `Measure ${subject.name} · quarters ${made.quarters.join(", ")} · measured by ftm ${subject.ftm_version}` +
      ` · page by ftm ${made.ftm_version}, settings ${made.settings_hash} · made ${made.made} · from ${made.root}`;
    if (quarters.length > 1) {
      const select = byId("quarter-select");
      quarters.forEach((page, at) => select.append(el("option", { value: String(at) }, page.quarter)));
      select.value = String(current);
      select.addEventListener("change", () => showQuarter(Number(select.value)));
      byId("quarter-nav").hidden = false;
    }
  }

  function drawSeries() {
    const x = quarters.map((page) => page.quarter);
    const chart = byId("series-chart");
    Plotly.newPlot(
      chart,
      [
        {
          type: "scatter",
          mode: "lines+markers",
          name: "firms exposed (% of the quarter's firms)",
          x,
          y: quarters.map((page) => (page.exposed_share === null ? null : page.exposed_share * 100)),
          hovertemplate: "%{x}: %{y:.1f}% of firms exposed<extra></extra>",
          line: { color: "#2f6db5" },
        },
        {
          type: "scatter",
          mode: "lines+markers",
          name: "mean share (% of a firm's sentences)",
          x,
          y: quarters.map((page) => (page.mean_share === null ? null : page.mean_share * 100)),
          yaxis: "y2",
          hovertemplate: "%{x}: %{y:.2f}% of a firm's sentences<extra></extra>",
          line: { color: "#b3261e", dash: "dot" },
        },
      ],
      {
        height: 300,
        margin: { l: 60, r: 60, t: 10, b: 40 },
        xaxis: { type: "category" },
        yaxis: { title: { text: "% of firms exposed" }, rangemode: "tozero" },
        yaxis2: { title: { text: "mean % of sentences" }, rangemode: "tozero", overlaying: "y", side: "right" },
        legend: { orientation: "h", y: -0.25 },
      },
      PLOT_CONFIG
    );
    chart.on("plotly_click", (event) => showQuarter(event.points[0].pointIndex));
  }

  // Each quarter's numbers and threshold: what a citation of the measure needs, one row a quarter.
  function drawQuarterTable() {
    byId("quarter-table").replaceChildren(
      table(
        [
          { label: "Quarter", value: (at) => quarters[at].quarter, show: (at) => quarters[at].quarter },
          { label: "Threshold", num: true, value: (at) => quarters[at].threshold, show: (at) => quarters[at].threshold.toFixed(3) },
          { label: "Sentences about it", num: true, value: (at) => quarters[at].n_selected, show: (at) => `${quarters[at].n_selected.toLocaleString()} of ${quarters[at].n_sentences.toLocaleString()}` },
          { label: "Firms", num: true, value: (at) => quarters[at].n_firms, show: (at) => quarters[at].n_firms.toLocaleString() },
          { label: "Exposed", num: true, value: (at) => quarters[at].n_firms_exposed, show: (at) => quarters[at].n_firms_exposed.toLocaleString() },
          { label: "% exposed", num: true, value: (at) => quarters[at].exposed_share, show: (at) => fraction(quarters[at].exposed_share, 1) },
          { label: "Mean share", num: true, value: (at) => quarters[at].mean_share, show: (at) => fraction(quarters[at].mean_share, 2) },
        ],
        quarters.map((_, at) => at),
        { onPick: showQuarter, chosen: (at) => at === current }
      )
    );
  }

  function drawRanking() {
    const { page } = quarter(current);
    const rows = page.firms.firm.map((_, at) => at).filter((at) => page.firms.n[at] > 0);
    byId("ranking-count").textContent =
      `${page.quarter}: ${rows.length.toLocaleString()} of ${page.n_firms.toLocaleString()} firms with a sentence about it, ` +
      `${page.n_firms_exposed.toLocaleString()} with two or more`;
    if (rows.length === 0) {
      byId("ranking-table").replaceChildren(el("p", { class: "quiet" }, `No firm said anything about it in ${page.quarter}.`));
      return;
    }
    const firm = (at) => page.firms.firm[at];
    byId("ranking-table").replaceChildren(
      table(
        [
          { label: "#", num: true, value: (at) => at, show: (at) => at + 1 },
          { label: "Firm", value: (at) => firms.id[firm(at)], show: (at) => firmLabel(firm(at)) },
          { label: "PERMNO", value: (at) => firms.permno[firm(at)], show: (at) => firms.permno[firm(at)] ?? "–" },
          { label: "GVKEY", value: (at) => firms.gvkey[firm(at)], show: (at) => firms.gvkey[firm(at)] ?? "–" },
          { label: "Call date", value: (at) => page.firms.date[at], show: (at) => page.firms.date[at] ?? "–" },
          { label: "Sentences", num: true, value: (at) => page.firms.n[at], show: (at) => page.firms.n[at] },
          { label: "Exposure", num: true, value: (at) => page.firms.share[at], show: (at) => share(page.firms.share[at]) },
          { label: "Net tone", num: true, value: (at) => page.firms.tone[at], show: (at) => tone(page.firms.tone[at]) },
        ],
        rows,
        { onPick: (at) => { showFirm(firm(at)); byId("firm-section").scrollIntoView(); } }
      )
    );
  }

  function showFirm(index) {
    chosenFirm = index;
    const parts = [
      el("h2", {}, firmLabel(index)),
      el("p", { class: "quiet" }, `PERMNO ${firms.permno[index] ?? "–"} · GVKEY ${firms.gvkey[index] ?? "–"}`),
    ];
    // Latest quarter first: a firm's page reads as a history, most recent on top.
    const history = [];
    for (let qi = quarters.length - 1; qi >= 0; qi--) {
      const at = quarter(qi).rowOf.get(index);
      if (at !== undefined) history.push([qi, at]);
    }
    const row = (qi, at, column) => quarters[qi].firms[column][at];
    parts.push(
      table(
        [
          { label: "Quarter", value: ([qi]) => quarters[qi].quarter, show: ([qi]) => quarters[qi].quarter },
          { label: "Call date", value: ([qi, at]) => row(qi, at, "date"), show: ([qi, at]) => row(qi, at, "date") ?? "–" },
          { label: "Rank", num: true, value: ([qi, at]) => (row(qi, at, "n") > 0 ? at : null), show: ([qi, at]) => (row(qi, at, "n") > 0 ? `${at + 1} of ${quarters[qi].n_firms}` : "–") },
          { label: "Sentences", num: true, value: ([qi, at]) => row(qi, at, "n"), show: ([qi, at]) => row(qi, at, "n") },
          { label: "Exposure", num: true, value: ([qi, at]) => row(qi, at, "share"), show: ([qi, at]) => share(row(qi, at, "share")) },
          { label: "Net tone", num: true, value: ([qi, at]) => row(qi, at, "tone"), show: ([qi, at]) => tone(row(qi, at, "tone")) },
        ],
        history,
        { onPick: ([qi]) => showQuarter(qi) }
      )
    );
    let quoted = 0;
    for (const [qi, at] of history) {
      const { page, said } = quarter(qi);
      const mine = said.get(index) || [];
      if (mine.length === 0) continue;
      quoted += mine.length;
      const total = page.firms.n[at];
      parts.push(
        el("h3", {}, `What it said in ${page.quarter}`, " ",
          el("span", { class: "quiet" }, mine.length < total ? `(the ${mine.length} closest of its ${total} sentences about it)` : `(its ${total} sentences about it)`)),
        ...mine.map((e) =>
          el("blockquote", {}, page.evidence.text[e],
            el("cite", {}, `${firmLabel(index)}${page.firms.date[at] ? ", call of " + page.firms.date[at] : ""} · similarity ${page.evidence.similarity[e].toFixed(3)}`))
        )
      );
    }
    if (quoted === 0) {
      parts.push(el("p", { class: "quiet" }, "No sentence about the subject in these quarters: a measured zero."));
    }
    byId("firm-detail").replaceChildren(...parts);
  }

  function drawMethod() {
    const path = subject.embedding;
    const rule = subject.rule;
    const items = [
      ["Description", subject.description],
      ["Example sentences", subject.examples.length ? subject.examples.join(" · ") : "none"],
      ["Embedding model", subject.model],
      ["Embedding path", Object.keys(path).sort().map((key) => `${key} ${path[key]}`).join(", ")],
      ["Rule", `${rule.name}: the query re-centred on the ${rule.pseudo_relevant} sentences of the quarter nearest the description; a sentence counts when its cosine to that query is at least ${rule.relative} × their median (each quarter's threshold is in the table above)`],
      ["Subject hash", subject.subject_hash],
      ["Measured by", `ftm ${subject.ftm_version}: ftm measure --name ${subject.name}`],
      ["Files", `measures/${subject.name}/: firm_quarter.parquet (every firm and quarter), sentences.parquet (every sentence counted), subject.json`],
    ];
    byId("method").replaceChildren(
      el("table", {}, el("tbody", {}, items.map(([label, text]) => el("tr", {}, el("th", {}, label), el("td", {}, text)))))
    );
  }

  function showQuarter(index) {
    current = index;
    if (quarters.length > 1) byId("quarter-select").value = String(index);
    drawQuarterTable();
    drawRanking();
  }

  drawHeader();
  drawSeries();
  drawMethod();
  showQuarter(current);
  const latest = quarter(current).page.firms;
  if (latest.n.length && latest.n[0] > 0) showFirm(latest.firm[0]); // the most exposed firm's sentences
  ftmPage.firmSearch(firms, showFirm);
  ftmPage.ready({ chosenFirm: () => chosenFirm, quarter: () => quarters[current].quarter });
})();
