// What every ftm page draws with (page.js: a quarter's or a range's themes; measure.js: a
// measured subject): elements, sortable tables, the document's scaled numbers as text, and the
// firm search. Inlined before the page's own script, which reads it as `ftmPage`.
const ftmPage = (function () {
  "use strict";
  const byId = (id) => document.getElementById(id);
  const PLOT_CONFIG = { displayModeBar: false, responsive: true };

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // The document's shares are in ten-thousandths and its tones in hundredths (content.py).
  const percent = (share, digits = 1) => (share === null ? "–" : (share / 100).toFixed(digits) + "%");
  const tone = (value) => (value === null ? "–" : (value / 100).toFixed(2));

  function clip(text, most) {
    return text.length <= most ? text : text.slice(0, most - 1) + "…";
  }

  // --- a sortable table ---------------------------------------------------------------------
  // columns: [{label, value(row) for sorting, show(row) for the cell, num}]; rows: any values.
  function table(columns, rows, options) {
    const settings = Object.assign({ onPick: null, chosen: null, sortBy: null, descending: true }, options);
    let sortBy = settings.sortBy;
    let descending = settings.descending;
    const body = el("tbody");
    const heads = columns.map((column, at) =>
      el("th", {
        class: "sortable" + (column.num ? " num" : ""),
        onclick: () => {
          descending = sortBy === at ? !descending : column.num === true;
          sortBy = at;
          draw();
        },
      }, column.label)
    );
    function draw() {
      const ordered = rows.slice();
      if (sortBy !== null) {
        const value = columns[sortBy].value;
        ordered.sort((a, b) => {
          const x = value(a), y = value(b);
          if (x === y) return 0;
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return (x < y ? -1 : 1) * (descending ? -1 : 1);
        });
      }
      heads.forEach((head, at) => {
        head.classList.toggle("sorted-asc", at === sortBy && !descending);
        head.classList.toggle("sorted-desc", at === sortBy && descending);
      });
      body.replaceChildren(
        ...ordered.map((item) => {
          const cells = columns.map((column) => el("td", { class: column.num ? "num" : "" }, column.show(item)));
          const line = el("tr", settings.onPick ? { class: "pick", onclick: () => settings.onPick(item) } : {}, cells);
          if (settings.chosen !== null && settings.chosen(item)) line.classList.add("chosen");
          return line;
        })
      );
    }
    draw();
    return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, heads)), body));
  }

  // --- firms --------------------------------------------------------------------------------
  // `firms` is the document's: every firm once, columnar (id, name, permno, gvkey).
  function firmLabel(firms, index) {
    const name = firms.name[index];
    return name && name !== firms.id[index] ? `${firms.id[index]} (${name})` : firms.id[index];
  }

  // #firm-search into #firm-results: an exact id first, then any firm whose id, name, PERMNO or
  // GVKEY holds the text; Enter shows the first found.
  function firmSearch(firms, showFirm) {
    const haystack = firms.id.map((id, at) =>
      [id, firms.name[at] || "", firms.permno[at] ?? "", firms.gvkey[at] || ""].join(" ").toLowerCase()
    );
    function search(text) {
      const wanted = text.trim().toLowerCase();
      const results = byId("firm-results");
      if (!wanted) {
        results.replaceChildren();
        return [];
      }
      const exact = [], partial = [];
      haystack.forEach((words, at) => {
        if (firms.id[at].toLowerCase() === wanted) exact.push(at);
        else if (words.includes(wanted)) partial.push(at);
      });
      const found = exact.concat(partial);
      const items = found.slice(0, 20).map((at) => el("li", {}, el("button", { type: "button", onclick: () => showFirm(at) }, firmLabel(firms, at))));
      if (found.length > 20) items.push(el("li", { class: "quiet" }, `and ${found.length - 20} more: type more of the name`));
      if (found.length === 0) items.push(el("li", { class: "quiet" }, "No firm matches."));
      results.replaceChildren(...items);
      return found;
    }
    const input = byId("firm-search");
    input.addEventListener("input", () => search(input.value));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        const found = search(input.value);
        if (found.length) showFirm(found[0]);
      }
    });
  }

  // For whoever measures or tests the page: drawn, and how long it took from navigation.
  function ready(state) {
    window.ftmReport = Object.assign({ ready: true, drawnMs: performance.now() }, state);
    document.body.dataset.ready = "true";
  }

  return { byId, PLOT_CONFIG, el, percent, tone, clip, table, firmLabel, firmSearch, ready };
})();
