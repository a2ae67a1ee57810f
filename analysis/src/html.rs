//! `analyze --html`: one self-contained HTML file, built from the tables and figures `analyze`
//! already computed (nothing is computed again here): the comparison table (sortable), then
//! every drawn figure as an interactive plotly chart (hover for values, click a legend entry or a
//! scenario box to hide a scenario), then the other tables.
//!
//! Self-contained: plotly.js comes from the `plotly` crate's embedded copy (`plotly_embed_js`),
//! the data sits in the page as JSON, and the page's own script and style are inlined
//! (`html/report.js`, `html/report.css`), so the file opens with no network.
//!
//! Every text that reaches the page is escaped for where it goes: HTML text and attributes
//! (`esc`), plotly's labels, which read a little HTML of their own (`plotly_text`), and the JSON
//! inside a `<script>` element (`script_json`). Scenario names come from user YAML.
//!
//! After the charts are drawn the page writes what it drew (each chart's trace and legend names,
//! point counts, the errors it saw) as JSON into `<pre id="hetsim-check">`, which a headless
//! browser's `--dump-dom` reads back (tests/html_report.rs).

use std::fmt::Write as _;

use plotly::color::{Rgb, Rgba};
use plotly::common::{
    DashType, Fill, HoverInfo, Line, Marker, MarkerSymbol, Mode, Orientation, TextPosition,
};
use plotly::configuration::Configuration;
use plotly::layout::{
    Axis, AxisType, BarMode, CategoryOrder, HoverMode, Layout, Legend, Margin, RangeMode,
    TraceOrder,
};
use plotly::{Bar, Plot, Scatter};

use crate::figures::Figures;
use crate::plots::{self, BarChart, Figure, LineChart, Series};
use crate::table::{self, Table, Value};

/// The file name `analyze --html` writes beside the other outputs.
pub const FILE: &str = "report.html";

/// The id of the element the page writes its render summary into.
pub const CHECK_ID: &str = "hetsim-check";

const SCRIPT: &str = include_str!("html/report.js");
const STYLE: &str = include_str!("html/report.css");

/// Line charts' height in CSS pixels; bar charts grow with their bars.
const LINE_HEIGHT: usize = 430;

/// What the page shows, beside the tables and figures: the result directories.
pub struct Page<'a> {
    pub runs: &'a [String],
    pub tables: &'a [Table],
    pub figures: &'a Figures,
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a plotly label (trace name, axis title, category): plotly reads `<b>`, `<br>`, `<a>`
/// and entities in them, so `&`, `<` and `>` become entities, which it shows as the characters.
fn plotly_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// JSON that can stand inside a `<script>` element: no `<`, `>` or `&` at all (JSON has them
/// only inside strings, where `\u003c` means the same), so no `</script>` or `<!--` can close
/// or confuse the element.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// plotly.js alone, as one `<script>` element. The crate's offline sources also embed MathJax
/// (2 MB, for LaTeX labels, which the report has none of); plotly.js's own text has no
/// `</script>`, so its element ends at the first one.
fn plotly_js() -> String {
    let all = Plot::offline_js_sources();
    let end = "</script>";
    match all.find(end) {
        Some(i) => all[..i + end.len()].to_string(),
        None => all,
    }
}

/// A figure's heading and the sentence under it.
fn caption(stem: &str) -> (&'static str, &'static str) {
    match stem {
        "latency_throughput_ttft" => (
            "TTFT p99 against throughput",
            "One point per offered rate; where a deployment's latency takes off is its \
             capacity. Grey: the SLO.",
        ),
        "latency_throughput_tpot" => (
            "TPOT p99 against throughput",
            "One point per offered rate. Grey: the SLO.",
        ),
        "slo_attainment" => (
            "SLO attainment against offered load",
            "Share of arrived requests meeting both the TTFT and the TPOT target.",
        ),
        "tokens_per_dollar" => (
            "Tokens per dollar against offered load",
            "Output tokens per dollar the deployment cost over the run.",
        ),
        "link_utilization" => (
            "Link utilisation against offered load",
            "The busiest link's share of its capacity over the run.",
        ),
        "transfer_bytes" => (
            "Transfer bytes by cut",
            "Embeddings and KV cache shipped per request, by where the model is cut (strategy); \
             log scale.",
        ),
        "cost_breakdown" => (
            "Cost breakdown",
            "Dollars per hour of each deployment, by GPU type (and GPUs no instance used).",
        ),
        "predicted_vs_measured" => (
            "Predicted against measured",
            "Latency percentiles of every scenario run on both sides: hetsim's prediction (x) \
             against the GPU harness's measurement (y), with y = x and ±25 %.",
        ),
        "latency_cdf_ttft" => (
            "TTFT distribution of trace replays",
            "Share of requests at or below each TTFT.",
        ),
        "latency_over_time_ttft" => (
            "TTFT over trace replays",
            "p99 of the requests that arrived in each window. Grey: the SLO.",
        ),
        "latency_cdf_tpot" => (
            "TPOT distribution of trace replays",
            "Share of requests at or below each TPOT.",
        ),
        "latency_over_time_tpot" => (
            "TPOT over trace replays",
            "p99 of the requests that arrived in each window. Grey: the SLO.",
        ),
        _ => ("", ""),
    }
}

fn rgb(i: usize) -> Rgb {
    let c = plots::color(i);
    Rgb::new(c.0, c.1, c.2)
}

fn grey() -> Rgb {
    Rgb::new(119, 119, 119)
}

/// Marker shapes in the PNG's order (circle, square, triangle, diamond); hollow for measured.
fn symbol(style: usize, measured: bool) -> MarkerSymbol {
    match (style % 4, measured) {
        (0, false) => MarkerSymbol::Circle,
        (0, true) => MarkerSymbol::CircleOpen,
        (1, false) => MarkerSymbol::Square,
        (1, true) => MarkerSymbol::SquareOpen,
        (2, false) => MarkerSymbol::TriangleUp,
        (2, true) => MarkerSymbol::TriangleUpOpen,
        (_, false) => MarkerSymbol::Diamond,
        (_, true) => MarkerSymbol::DiamondOpen,
    }
}

/// Line patterns in the PNG's order: solid, dashed, dotted, long dash.
fn dash(pattern: usize) -> DashType {
    match pattern % 4 {
        0 => DashType::Solid,
        1 => DashType::Dash,
        2 => DashType::Dot,
        _ => DashType::LongDash,
    }
}

/// The unit in a label's last parentheses: "Cost ($/h)" → "$/h".
fn unit_of(label: &str) -> &str {
    match (label.rfind('('), label.ends_with(')')) {
        (Some(i), true) => &label[i + 1..label.len() - 1],
        _ => "",
    }
}

fn axis(title: &str, log: bool) -> Axis {
    let a = Axis::new()
        .title(plotly_text(title))
        .auto_margin(true)
        .zero_line(false);
    if log { a.type_(AxisType::Log) } else { a }
}

fn layout(height: usize) -> Layout {
    Layout::new()
        .height(height)
        .margin(Margin::new().left(70).right(20).top(20).bottom(60))
        .hover_mode(HoverMode::Closest)
}

fn series_trace(s: &Series, c: &LineChart) -> Box<Scatter<f64, f64>> {
    let (x, y): (Vec<f64>, Vec<f64>) = s.points.iter().copied().unzip();
    let mut hover = format!(
        "<b>%{{fullData.name}}</b><br>{}: %{{x:.4~g}}<br>{}: %{{y:.4~g}}",
        plotly_text(&c.x_label),
        plotly_text(&c.y_label)
    );
    let mode = if s.markers_only {
        Mode::Markers
    } else if s.marker_every > 1 {
        // A dense curve (a CDF): the PNG marks every n-th point to name it in grey print; here
        // colour and hover name it.
        Mode::Lines
    } else {
        Mode::LinesMarkers
    };
    let mut t = Scatter::new(x, y)
        .name(plotly_text(&s.label))
        // The scenario boxes above the charts find a scenario's traces by this.
        .legend_group(&s.label)
        .mode(mode)
        .line(
            Line::new()
                .color(rgb(s.style))
                .dash(dash(s.pattern))
                .width(2.0),
        )
        .marker(
            Marker::new()
                .symbol(symbol(s.style, s.measured))
                .color(rgb(s.style))
                .size(8),
        );
    if !s.notes.is_empty() {
        hover.push_str("<br>%{text}");
        t = t.text_array(s.notes.iter().map(|n| plotly_text(n)).collect());
    }
    hover.push_str("<extra></extra>");
    t.hover_template(hover)
}

fn line_plot(c: &LineChart) -> Plot {
    let mut plot = Plot::new();
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_span = xs.fold(None, |acc: Option<(f64, f64)>, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    });
    if let Some(band) = c.identity_band {
        let all = c
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.0, p.1]))
            .filter(|v| *v > 0.0);
        if let Some((lo, hi)) = all.fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        }) {
            let (lo, hi) = (lo / 1.5, hi * 1.5);
            let edge = |f: f64| Scatter::new(vec![lo, hi], vec![lo * f, hi * f]);
            plot.add_trace(
                edge(1.0 - band)
                    .mode(Mode::Lines)
                    .line(Line::new().width(0.0))
                    .show_legend(false)
                    .hover_info(HoverInfo::Skip),
            );
            plot.add_trace(
                edge(1.0 + band)
                    .name(format!("±{} %", plots::tick(band * 100.0)))
                    .mode(Mode::Lines)
                    .line(Line::new().width(0.0))
                    .fill(Fill::ToNextY)
                    .fill_color(Rgba::new(0, 0, 0, 0.08))
                    .hover_info(HoverInfo::Skip),
            );
            plot.add_trace(
                edge(1.0)
                    .name("y = x")
                    .mode(Mode::Lines)
                    .line(Line::new().color(grey()).dash(DashType::Dash).width(1.0))
                    .hover_info(HoverInfo::Skip),
            );
        }
    }
    for s in &c.series {
        plot.add_trace(series_trace(s, c));
    }
    if let Some((lo, hi)) = x_span {
        for r in &c.references {
            let label = plotly_text(&r.label);
            plot.add_trace(
                Scatter::new(vec![lo, hi], vec![r.y, r.y])
                    .name(&label)
                    .mode(Mode::Lines)
                    .line(Line::new().color(grey()).dash(DashType::Dot).width(1.5))
                    .hover_template(format!("{label}<extra></extra>")),
            );
        }
    }
    let mut y = axis(&c.y_label, c.y_log);
    if c.y_from_zero && !c.y_log {
        y = y.range_mode(RangeMode::ToZero);
        if let Some(max) = c.y_max {
            // Room for markers at 0 and at the cap (100 %), no more.
            y = y.range(vec![-0.02 * max, 1.04 * max]);
        }
    }
    plot.set_layout(
        layout(LINE_HEIGHT)
            .x_axis(axis(&c.x_label, c.x_log))
            .y_axis(y),
    );
    plot
}

fn bar_plot(c: &BarChart) -> Plot {
    let mut plot = Plot::new();
    let categories: Vec<String> = c.categories.iter().map(|s| plotly_text(s)).collect();
    let unit = if c.value_suffix.is_empty() {
        format!(" {}", unit_of(&c.x_label))
    } else {
        c.value_suffix.clone()
    };
    for (k, key) in c.keys.iter().enumerate() {
        let values: Vec<f64> = c.values.iter().map(|row| row[k]).collect();
        let mut bar = Bar::new(values.clone(), categories.clone())
            .orientation(Orientation::Horizontal)
            .name(plotly_text(key))
            .marker(Marker::new().color(rgb(k)))
            .hover_template(format!(
                "<b>%{{y}}</b><br>%{{fullData.name}}: %{{x:.4~g}}{}<extra></extra>",
                plotly_text(&unit)
            ));
        if !c.stacked {
            // As in the PNG: a bar on a log axis has no meaningful length, so it says its value.
            let labels = values
                .iter()
                .map(|v| {
                    if *v > 0.0 {
                        plotly_text(&format!("{}{}", plots::tick3(*v), unit))
                    } else {
                        String::new()
                    }
                })
                .collect();
            bar = bar
                .text_array(labels)
                .text_position(TextPosition::Outside)
                .clip_on_axis(false);
        }
        plot.add_trace(bar);
    }
    // Bars per band: side by side unless stacked.
    let per = if c.stacked { 1 } else { c.keys.len().max(1) };
    let height = (120 + 26 * c.categories.len() * per).max(300);
    // Top to bottom in the given order, as in the PNG (plotly starts at the bottom).
    let mut order = categories;
    order.reverse();
    plot.set_layout(
        layout(height)
            // Keys in their order (plotly reverses a stack's legend by default).
            .legend(Legend::new().trace_order(TraceOrder::Normal))
            .bar_mode(if c.stacked {
                BarMode::Stack
            } else {
                BarMode::Group
            })
            .x_axis(axis(&c.x_label, c.x_log))
            .y_axis(
                Axis::new()
                    .auto_margin(true)
                    .category_order(CategoryOrder::Array)
                    .category_array(order),
            ),
    );
    plot
}

/// The plotly figure of one `Figure`, with the page's settings.
pub fn plot(fig: &Figure) -> Plot {
    let mut p = match fig {
        Figure::Line(c) => line_plot(c),
        Figure::Bar(c) => bar_plot(c),
    };
    p.set_configuration(
        Configuration::new()
            .responsive(true)
            .display_logo(false)
            .typeset_math(false),
    );
    p
}

/// The figure as plotly's JSON ({data, layout, config}). Log axes label the 2 and 5 between
/// decades, not every digit (plotly's `dtick: "D2"`, which the crate's numeric `dtick` cannot
/// say).
fn figure_json(fig: &Figure) -> String {
    let mut v = serde_json::to_value(plot(fig)).expect("a plotly figure is JSON");
    for axis in ["xaxis", "yaxis"] {
        let a = &mut v["layout"][axis];
        if a["type"] == "log" {
            a["dtick"] = "D2".into();
        }
    }
    v.to_string()
}

/// A table as HTML: every column, those the terminal leaves out marked `more` (hidden until
/// "all columns" is ticked); each header sorts on click, numbers by their raw value (`data-v`).
fn table_html(t: &Table) -> String {
    let mut h = String::new();
    let more = t.columns.iter().any(|c| !c.terminal);
    let _ = writeln!(
        h,
        "<section id=\"table-{0}\" class=\"table\"><h2>{1}</h2>",
        t.name,
        esc(&t.title)
    );
    if !t.note.is_empty() {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(&t.note));
    }
    if more {
        let _ = writeln!(
            h,
            "<label class=\"more-toggle\"><input type=\"checkbox\" data-table=\"{}\"> all \
             columns</label>",
            t.name
        );
    }
    let numeric = |c: usize| !t.rows.iter().any(|r| matches!(r[c], Value::Text(_)));
    let _ = writeln!(
        h,
        "<div class=\"scroll\"><table class=\"sortable{}\" data-name=\"{}\">",
        if more { " compact" } else { "" },
        t.name
    );
    h.push_str("<thead><tr>");
    for (i, c) in t.columns.iter().enumerate() {
        let _ = write!(
            h,
            "<th data-type=\"{}\" title=\"{} (click to sort)\"{}>{}</th>",
            if numeric(i) { "num" } else { "text" },
            esc(&c.key),
            if c.terminal { "" } else { " class=\"more\"" },
            esc(&c.header)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for (v, c) in row.iter().zip(&t.columns) {
            let raw = match v {
                Value::Text(_) | Value::Int(None) | Value::Num(None) => String::new(),
                Value::Int(Some(i)) => format!(" data-v=\"{i}\""),
                Value::Num(Some(x)) => format!(" data-v=\"{x}\""),
            };
            let class = match (c.terminal, numeric_value(v)) {
                (true, false) => "",
                (true, true) => " class=\"n\"",
                (false, false) => " class=\"more\"",
                (false, true) => " class=\"more n\"",
            };
            let _ = write!(h, "<td{raw}{class}>{}</td>", esc(&table::show(v, c.show)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div></section>\n");
    h
}

fn numeric_value(v: &Value) -> bool {
    !matches!(v, Value::Text(_))
}

/// The scenarios the line charts show, in first-drawn order: one box each above the charts.
fn scenario_names(figures: &Figures) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (_, fig) in &figures.drawn {
        if let Figure::Line(c) = fig {
            for s in &c.series {
                if !out.contains(&s.label.as_str()) {
                    out.push(&s.label);
                }
            }
        }
    }
    out
}

/// The whole page.
pub fn page(p: &Page) -> String {
    let mut h = String::new();
    let title = format!("hetsim analysis: {}", p.runs.join(", "));
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n",
        esc(&title)
    );
    // First, so that it sees every error the rest of the page raises.
    h.push_str(
        "<script>window.hetsimErrors = [];\n\
         window.addEventListener('error', e => window.hetsimErrors.push(String(e.message)));\n\
         window.addEventListener('unhandledrejection', e => \
         window.hetsimErrors.push('unhandled rejection: ' + String(e.reason)));\n\
         (function () { const ce = console.error; console.error = function (...a) { \
         window.hetsimErrors.push(a.map(String).join(' ')); ce.apply(console, a); }; })();\n\
         </script>\n",
    );
    h.push_str(&plotly_js());
    h.push_str("\n</head>\n<body>\n");
    let _ = writeln!(
        h,
        "<header><h1>hetsim analysis</h1><p>Results: {} · hetsim {}</p></header>",
        p.runs
            .iter()
            .map(|r| format!("<code>{}</code>", esc(r)))
            .collect::<Vec<_>>()
            .join(", "),
        env!("CARGO_PKG_VERSION")
    );

    // Contents.
    h.push_str("<nav><a href=\"#table-comparison\">Comparison</a>");
    for (stem, _) in &p.figures.drawn {
        let (heading, _) = caption(stem);
        let _ = write!(
            h,
            " · <a href=\"#fig-{stem}\">{}</a>",
            esc(if heading.is_empty() { stem } else { heading })
        );
    }
    for t in p.tables.iter().filter(|t| t.name != "comparison") {
        let _ = write!(h, " · <a href=\"#table-{0}\">{0}</a>", t.name);
    }
    h.push_str("</nav>\n<main>\n");

    if let Some(t) = p.tables.iter().find(|t| t.name == "comparison") {
        h.push_str(&table_html(t));
    }

    let names = scenario_names(p.figures);
    if !names.is_empty() {
        h.push_str(
            "<section id=\"scenarios\" class=\"scenarios\"><h2>Figures</h2><p>Scenarios shown \
             (or click a legend entry; double-click one to show it alone):",
        );
        for n in names {
            let _ = write!(
                h,
                " <label><input type=\"checkbox\" checked data-group=\"{0}\"> {0}</label>",
                esc(n)
            );
        }
        h.push_str("</p></section>\n");
    }
    let mut data = Vec::new();
    for (stem, fig) in &p.figures.drawn {
        let (heading, sentence) = caption(stem);
        let _ = writeln!(
            h,
            "<section class=\"figure\"><h3>{}</h3><p class=\"note\">{}</p>\
             <div id=\"fig-{stem}\" class=\"plot\"></div></section>",
            esc(if heading.is_empty() { stem } else { heading }),
            esc(sentence)
        );
        data.push(format!("[\"fig-{stem}\",{}]", figure_json(fig)));
    }
    if !p.figures.skipped.is_empty() {
        h.push_str("<p class=\"note\">Figures left out: ");
        let why: Vec<String> = p
            .figures
            .skipped
            .iter()
            .map(|(stem, why)| format!("{} ({})", esc(stem), esc(why)))
            .collect();
        h.push_str(&why.join(", "));
        h.push_str(".</p>\n");
    }

    for t in p.tables.iter().filter(|t| t.name != "comparison") {
        h.push_str(&table_html(t));
    }
    let _ = write!(
        h,
        "</main>\n<pre id=\"{CHECK_ID}\" hidden></pre>\n\
         <script type=\"application/json\" id=\"hetsim-figures\">[{}]</script>\n\
         <script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        script_json(&data.join(","))
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::Reference;
    use crate::table::{Show, TableColumn};

    const NASTY: &str = "</script><b>x & 'y\"";

    fn series(label: &str, points: Vec<(f64, f64)>, notes: Vec<String>) -> Series {
        Series {
            label: label.into(),
            points,
            style: 0,
            pattern: 0,
            measured: false,
            markers_only: false,
            marker_every: 1,
            notes,
        }
    }

    fn line_chart(series: Vec<Series>) -> LineChart {
        LineChart {
            x_label: "Throughput (req/s)".into(),
            y_label: "TTFT p99 (s)".into(),
            x_log: false,
            y_log: true,
            y_from_zero: false,
            y_max: None,
            series,
            identity_band: None,
            references: vec![Reference {
                y: 1.0,
                label: "TTFT SLO (1 s)".into(),
            }],
        }
    }

    fn comparison() -> Table {
        let mut t = Table::new("comparison", "Scenario comparison", "A note.");
        t.columns = vec![
            TableColumn::new("scenario", "scenario", Show::Plain),
            TableColumn::new(
                "ttft_p99_s",
                "TTFT p99 ms",
                Show::Fixed {
                    scale: 1e3,
                    decimals: 1,
                },
            ),
            TableColumn::new("requests", "requests", Show::Plain).file_only(),
        ];
        t.push(vec![
            Value::Text(NASTY.into()),
            Value::Num(Some(0.0123)),
            Value::Int(Some(600)),
        ]);
        t.push(vec![
            Value::Text("b".into()),
            Value::Num(None),
            Value::Int(Some(12)),
        ]);
        t
    }

    /// Every figure `analyze` can draw, from small tables.
    fn figures() -> Figures {
        let mut f = Figures::default();
        let two = |a: &str, b: &str| {
            vec![
                series(
                    a,
                    vec![(1.0, 0.5), (2.0, 0.9)],
                    vec!["offered 1 req/s".into(); 2],
                ),
                series(b, vec![(1.0, 0.4), (2.0, 2.5)], Vec::new()),
            ]
        };
        for stem in [
            "latency_throughput_ttft",
            "latency_throughput_tpot",
            "slo_attainment",
            "tokens_per_dollar",
            "link_utilization",
        ] {
            f.drawn
                .push((stem, Figure::Line(line_chart(two(NASTY, "b-stage")))));
        }
        f.drawn.push((
            "transfer_bytes",
            Figure::Bar(BarChart {
                x_label: "Shipped per request (MB, log scale)".into(),
                categories: vec!["colocated".into(), "e-pd".into()],
                keys: vec!["embeddings".into(), "KV cache".into()],
                values: vec![vec![0.0, 0.0], vec![2.4, 160.0]],
                stacked: false,
                x_log: true,
                value_suffix: " MB".into(),
            }),
        ));
        f.drawn.push((
            "cost_breakdown",
            Figure::Bar(BarChart {
                x_label: "Cost ($/h)".into(),
                categories: vec![NASTY.into(), "b-stage".into()],
                keys: vec!["A100".into(), "RTX-4090".into()],
                values: vec![vec![2.0, 0.0], vec![1.0, 0.5]],
                stacked: true,
                x_log: false,
                value_suffix: String::new(),
            }),
        ));
        let mut pm = line_chart(vec![series(
            "TTFT p50",
            vec![(0.1, 0.11), (0.2, 0.19)],
            vec!["a".into(), NASTY.into()],
        )]);
        pm.series[0].markers_only = true;
        pm.identity_band = Some(0.25);
        pm.references.clear();
        f.drawn.push(("predicted_vs_measured", Figure::Line(pm)));
        f.skipped.push(("latency_cdf_ttft", "no trace replay"));
        f
    }

    fn render() -> String {
        let runs = vec![format!("out/{NASTY}")];
        let tables = vec![comparison()];
        let figs = figures();
        page(&Page {
            runs: &runs,
            tables: &tables,
            figures: &figs,
        })
    }

    /// The figures' JSON, parsed back: (div id, figure).
    fn figure_data(html: &str) -> Vec<(String, serde_json::Value)> {
        let open = "<script type=\"application/json\" id=\"hetsim-figures\">";
        let start = html.find(open).expect("figure data") + open.len();
        let end = start + html[start..].find("</script>").expect("end of figure data");
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).expect("JSON");
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_str().unwrap().to_string(), e[1].clone()))
            .collect()
    }

    #[test]
    fn names_from_yaml_are_escaped_everywhere() {
        let html = render();
        // Nothing a user wrote opens or closes an element: every `</script>` is one of ours
        // (the error catcher, plotly.js, the figure data, the page script).
        assert_eq!(html.matches("</script>").count(), 4, "stray </script>");
        assert!(!html.contains("<b>x"), "unescaped name");
        assert!(html.contains("&lt;/script&gt;&lt;b&gt;x &amp; &#39;y&quot;"));
        // In the figure data the name is plotly text (entities plotly shows as the characters),
        // and the raw name only as the legend group the scenario boxes match.
        let figs = figure_data(&html);
        let trace = &figs[0].1["data"][0];
        assert_eq!(trace["name"], "&lt;/script&gt;&lt;b&gt;x &amp; 'y\"");
        assert_eq!(trace["legendgroup"], NASTY);
        let pm = figs
            .iter()
            .find(|f| f.0 == "fig-predicted_vs_measured")
            .unwrap();
        let texts = &pm.1["data"][3]["text"];
        assert_eq!(texts[1], "&lt;/script&gt;&lt;b&gt;x &amp; 'y\"");
        let cost = figs.iter().find(|f| f.0 == "fig-cost_breakdown").unwrap();
        assert_eq!(
            cost.1["data"][0]["y"][0],
            "&lt;/script&gt;&lt;b&gt;x &amp; 'y\""
        );
    }

    #[test]
    fn every_figure_is_in_the_page_with_its_series() {
        let html = render();
        let figs = figure_data(&html);
        let ids: Vec<&str> = figs.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "fig-latency_throughput_ttft",
                "fig-latency_throughput_tpot",
                "fig-slo_attainment",
                "fig-tokens_per_dollar",
                "fig-link_utilization",
                "fig-transfer_bytes",
                "fig-cost_breakdown",
                "fig-predicted_vs_measured",
            ]
        );
        for id in &ids {
            assert!(
                html.contains(&format!("<div id=\"{id}\" class=\"plot\">")),
                "{id}"
            );
        }
        let names = |f: &serde_json::Value| -> Vec<String> {
            f["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let esc_nasty = plotly_text(NASTY);
        // A scenario is a trace named by it; the SLO a grey trace of its own.
        assert_eq!(
            names(&figs[0].1),
            [esc_nasty.as_str(), "b-stage", "TTFT SLO (1 s)"]
        );
        let hover = figs[0].1["data"][0]["hovertemplate"].as_str().unwrap();
        assert!(hover.contains("Throughput (req/s): %{x"), "{hover}");
        assert!(hover.contains("TTFT p99 (s): %{y"), "{hover}");
        assert!(hover.contains("%{text}"), "{hover}");
        assert_eq!(figs[0].1["layout"]["yaxis"]["type"], "log");
        assert_eq!(figs[0].1["layout"]["yaxis"]["dtick"], "D2");
        // Bars: one trace per key, stacked for the cost, grouped and log for the bytes.
        assert_eq!(names(&figs[5].1), ["embeddings", "KV cache"]);
        assert_eq!(figs[5].1["layout"]["barmode"], "group");
        assert_eq!(figs[5].1["layout"]["xaxis"]["type"], "log");
        assert_eq!(figs[6].1["layout"]["barmode"], "stack");
        let cost_hover = figs[6].1["data"][0]["hovertemplate"].as_str().unwrap();
        assert!(cost_hover.contains("%{x:.4~g} $/h"), "{cost_hover}");
        // Predicted against measured: the ±25 % band, y = x, then the points.
        assert_eq!(names(&figs[7].1), ["", "±25 %", "y = x", "TTFT p50"]);
        assert_eq!(figs[7].1["data"][3]["mode"], "markers");
        // Left-out figures are named with the reason.
        assert!(html.contains("Figures left out: latency_cdf_ttft (no trace replay)."));
        // One scenario box per scenario of the line charts.
        assert_eq!(html.matches("data-group=").count(), 3);
    }

    #[test]
    fn the_comparison_table_sorts() {
        let html = render();
        assert!(html.contains("<table class=\"sortable compact\" data-name=\"comparison\">"));
        assert!(html.contains(
            "<th data-type=\"num\" title=\"ttft_p99_s (click to sort)\">TTFT p99 ms</th>"
        ));
        assert!(html.contains("<th data-type=\"text\" title=\"scenario (click to sort)\">"));
        // The raw value for sorting, the shown one for reading; a missing value has none.
        assert!(html.contains("<td data-v=\"0.0123\" class=\"n\">12.3</td>"));
        assert!(html.contains("<td class=\"n\">-</td>"));
        // A column the terminal leaves out is hidden until "all columns".
        assert!(html.contains("<td data-v=\"600\" class=\"more n\">600</td>"));
        assert!(html.contains("data-table=\"comparison\"> all columns"));
        assert!(SCRIPT.contains("table.sortable th"));
    }

    #[test]
    fn the_page_needs_no_network() {
        let html = render();
        let js = plotly_js();
        assert!(html.contains(&js));
        // plotly.js names URLs it fetches only for maps; the rest of the page names none.
        let ours = html.replace(&js, "");
        for pattern in [
            "src=",
            "href=\"http",
            "href=\"//",
            "<link",
            "url(",
            "import",
        ] {
            assert!(!ours.contains(pattern), "{pattern}");
        }
        assert!(js.starts_with("<script") && js.ends_with("</script>"));
        assert_eq!(js.matches("</script>").count(), 1);
        assert!(js.contains("plotly.js v"), "plotly.js embedded");
        // MathJax left out.
        assert!(js.len() < Plot::offline_js_sources().len());
    }

    #[test]
    fn units_come_from_the_label() {
        assert_eq!(unit_of("Cost ($/h)"), "$/h");
        assert_eq!(
            unit_of("Shipped per request (MB, log scale)"),
            "MB, log scale"
        );
        assert_eq!(unit_of("no unit"), "");
        assert_eq!(
            script_json("\"</script>&\""),
            "\"\\u003c/script\\u003e\\u0026\""
        );
    }
}
