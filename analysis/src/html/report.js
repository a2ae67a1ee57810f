// `hetsim analyze --html`: draws the figures (their JSON is in #hetsim-figures), sorts the
// tables, shows and hides scenarios, and writes what it drew into #hetsim-check, which a headless
// browser's --dump-dom reads back. Opened as report.html#hetsim-check it also clicks a sort
// header and a scenario box and records what they did.
(function () {
  'use strict';
  const errors = window.hetsimErrors;

  // A click on a header sorts by that column, a second click reverses: numbers by their raw
  // value (data-v), text naturally ("rate=4" before "rate=16"); empty cells last either way.
  function sortBy(th) {
    const table = th.closest('table');
    const body = table.tBodies[0];
    const col = th.cellIndex;
    const num = th.dataset.type === 'num';
    const asc = th.getAttribute('aria-sort') !== 'ascending';
    for (const h of table.tHead.rows[0].cells) h.removeAttribute('aria-sort');
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    const key = (row) => {
      const td = row.cells[col];
      if (num) return td.dataset.v === undefined ? null : Number(td.dataset.v);
      return td.textContent;
    };
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      const c = num ? x - y : x.localeCompare(y, undefined, { numeric: true });
      return asc ? c : -c;
    });
    for (const r of rows) body.appendChild(r);
  }
  for (const th of document.querySelectorAll('table.sortable th')) {
    th.tabIndex = 0;
    th.addEventListener('click', () => sortBy(th));
    th.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        sortBy(th);
      }
    });
  }
  // "all columns": the columns the terminal leaves out.
  for (const box of document.querySelectorAll('input[data-table]')) {
    const table = document.querySelector('table[data-name="' + box.dataset.table + '"]');
    box.addEventListener('change', () => table.classList.toggle('compact', !box.checked));
  }

  const figures = JSON.parse(document.getElementById('hetsim-figures').textContent);
  const drawn = figures.map(([id, fig]) => {
    try {
      return Plotly.newPlot(id, fig.data, fig.layout, fig.config);
    } catch (e) {
      errors.push(id + ': ' + e);
      return Promise.resolve();
    }
  });

  // A scenario box shows or hides that scenario's traces in every chart (a legend entry does
  // the same in its own chart).
  function showScenario(group, on) {
    const done = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
      const idx = [];
      gd.data.forEach((t, i) => {
        if (t.legendgroup === group) idx.push(i);
      });
      if (idx.length) done.push(Plotly.restyle(gd, { visible: on ? true : 'legendonly' }, idx));
    }
    return Promise.all(done);
  }
  const boxes = Array.from(document.querySelectorAll('input[data-group]'));
  for (const box of boxes) {
    box.addEventListener('change', () => showScenario(box.dataset.group, box.checked));
  }

  // What a person would see: each chart's traces, legend entries and drawn traces.
  function summary() {
    const plots = Array.from(document.querySelectorAll('.js-plotly-plot')).map((gd) => ({
      id: gd.id,
      traces: gd.data.map((t) => (t.name === undefined ? null : t.name)),
      legend: Array.from(gd.querySelectorAll('.legendtext')).map((e) => e.textContent),
      points: gd.data.map((t) => (t.x ? t.x.length : 0)),
      drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
      svg: gd.querySelectorAll('svg.main-svg').length,
    }));
    const tables = Array.from(document.querySelectorAll('table.sortable')).map((t) => ({
      name: t.dataset.name,
      rows: t.tBodies[0].rows.length,
      columns: t.tHead.rows[0].cells.length,
    }));
    return { plots, tables, errors };
  }

  // The self-test: sort the comparison by its first numeric column with two values, both ways;
  // hide the first scenario everywhere and show it again.
  async function selfTest(out) {
    const table = document.querySelector('table[data-name="comparison"]');
    const ths = table ? Array.from(table.tHead.rows[0].cells) : [];
    const column = (i) =>
      Array.from(table.tBodies[0].rows)
        .map((r) => r.cells[i].dataset.v)
        .filter((v) => v !== undefined)
        .map(Number);
    const th = ths.find((h) => h.dataset.type === 'num' && new Set(column(h.cellIndex)).size > 1);
    if (th) {
      const ordered = (v, sign) => v.every((x, k) => k === 0 || sign * (x - v[k - 1]) >= 0);
      th.click();
      const up = ordered(column(th.cellIndex), 1);
      th.click();
      const down = ordered(column(th.cellIndex), -1);
      out.sort = { column: th.title, ascending: up, descending: down };
    }
    if (boxes.length) {
      const group = boxes[0].dataset.group;
      const state = () =>
        Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap((gd) =>
          gd.data.filter((t) => t.legendgroup === group).map((t) => t.visible),
        );
      await showScenario(group, false);
      const hidden = state();
      await showScenario(group, true);
      const shown = state();
      out.toggle = {
        scenario: group,
        traces: hidden.length,
        hidden: hidden.every((v) => v === 'legendonly'),
        shown: shown.every((v) => v === true),
      };
    }
  }

  function write(out) {
    document.getElementById('hetsim-check').textContent = JSON.stringify(out);
  }
  Promise.all(drawn)
    .then(async () => {
      const out = summary();
      if (location.hash === '#hetsim-check') await selfTest(out);
      write(out);
    })
    .catch((e) => {
      errors.push('drawing: ' + e);
      write(summary());
    });
})();
