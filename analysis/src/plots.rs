//! Figures for a paper: each drawn once per backend, as SVG (vector, for LaTeX) and PNG.
//!
//! Size: 3.5 in wide (one column of a two-column paper) at 300 dpi = 1050 px; fonts are sized in
//! those pixels so that text prints at 7–9 pt. No titles (the caption says what a figure is);
//! axis labels carry units; the legend sits under the plot so it never hides data. Series differ
//! by colour (Okabe–Ito first, readable with colour-blindness, then four more) *and* marker, so a
//! grey print still works: 11 colours × 4 markers repeat no pair before 44 series. The line
//! pattern tells result sets apart (a second directory, measured rows); measured markers are
//! hollow. Markers of series that fall on the same spot (several at 100 %) are spread sideways,
//! and reference lines (an SLO) are grey and named in the legend.
//!
//! Text is laid out with DejaVu Sans from the `dejavu` crate, registered with plotters' `ab_glyph`
//! backend, and PNG text is rasterised from the same font by `png::Png` (plotters' own drawing
//! misplaces glyphs): no system font or fontconfig is needed, so a headless CI machine draws the
//! same PNG as a laptop.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::png::Png;

type Res = Result<(), Box<dyn Error>>;

/// Pixels per inch of the PNG; also the unit in which sizes below are chosen.
const DPI: f64 = 300.0;
pub const WIDTH: u32 = (3.5 * DPI) as u32;
/// Plot area height (the legend adds rows below).
const PLOT_HEIGHT: u32 = (2.3 * DPI) as u32;
const FONT: &str = "sans-serif";
/// Points → pixels at `DPI`.
const fn pt(points: f64) -> f64 {
    points * DPI / 72.0
}
const TICK_PT: f64 = 7.0;
const LABEL_PT: f64 = 8.0;
const LEGEND_PT: f64 = 7.0;

/// Okabe–Ito's seven (less its yellow, too pale on white), then Paul Tol's wine, olive, indigo
/// and a grey. Eleven is prime to the four markers, so (colour, marker) pairs repeat only after 44.
const PALETTE: [RGBColor; 11] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(136, 34, 85),   // wine
    RGBColor(153, 153, 51),  // olive
    RGBColor(51, 34, 136),   // indigo
    RGBColor(119, 119, 119), // grey
];

/// Line patterns in order: solid, dashed, dotted, long dash (dash and gap in pt).
const PATTERNS: [Option<(f64, f64)>; 4] =
    [None, Some((4.0, 2.5)), Some((1.2, 1.6)), Some((8.0, 3.0))];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

static FONTS: Once = Once::new();

pub(crate) fn register_fonts() {
    FONTS.call_once(|| {
        // DejaVu Sans covers the characters our labels use (×, µ, –, ≤) in one font.
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            unreachable!("the bundled DejaVu Sans parses");
        }
    });
}

/// One series of a line or scatter chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Colour and marker index.
    pub style: usize,
    /// Line pattern index (solid, dashed, dotted, long dash, then again).
    pub pattern: usize,
    /// Measured on GPUs: hollow markers.
    pub measured: bool,
    /// Markers only (a scatter), no line.
    pub markers_only: bool,
    /// A marker on every n-th point (1: all; dense curves such as a CDF: fewer).
    pub marker_every: usize,
    /// What each point is (the offered rate, the scenario), shown on hover in the HTML report:
    /// one per point, or empty.
    pub notes: Vec<String>,
}

/// A horizontal reference line (an SLO), grey, named in the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub y: f64,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    /// Start the y axis at zero (shares, utilisation) instead of fitting the data.
    pub y_from_zero: bool,
    /// Upper bound of the y axis, if the quantity has one (100 %).
    pub y_max: Option<f64>,
    pub series: Vec<Series>,
    /// Draw y = x and a ±band (as a fraction) around it: predicted against measured.
    pub identity_band: Option<f64>,
    /// Horizontal lines to read the series against; the y axis always shows them.
    pub references: Vec<Reference>,
}

/// Horizontal bars: one band per category (top to bottom), one bar per key inside it, side by
/// side, or one bar with the keys stacked.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub x_label: String,
    pub categories: Vec<String>,
    pub keys: Vec<String>,
    /// values[category][key]
    pub values: Vec<Vec<f64>>,
    pub stacked: bool,
    pub x_log: bool,
    /// Unit written after each bar's value label (" MB"); bars are labelled with their value
    /// (stacked: the total) because a bar on a log axis has no meaningful length.
    pub value_suffix: String,
}

pub enum Figure {
    Line(LineChart),
    Bar(BarChart),
}

/// Writes `dir/stem.svg` and `dir/stem.png`; returns the two paths.
pub fn render(fig: &Figure, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    register_fonts();
    let legend = legend_entries(fig);
    let height = PLOT_HEIGHT + legend_height(&legend);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let what = |p: &Path, e: Box<dyn Error>| format!("{}: {e}", p.display());
    {
        let root = SVGBackend::new(&svg, (WIDTH, height)).into_drawing_area();
        draw(fig, &legend, &root).map_err(|e| what(&svg, e))?;
        root.present().map_err(|e| what(&svg, e.into()))?;
    }
    {
        let root = Png(BitMapBackend::new(&png, (WIDTH, height))).into_drawing_area();
        draw(fig, &legend, &root).map_err(|e| what(&png, e))?;
        root.present().map_err(|e| what(&png, e.into()))?;
    }
    Ok(vec![svg, png])
}

fn draw<DB: DrawingBackend>(fig: &Figure, legend: &[Entry], root: &DrawingArea<DB, Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (plot, below) = root.split_vertically(PLOT_HEIGHT);
    match fig {
        Figure::Line(c) => line_chart(c, &plot)?,
        Figure::Bar(c) => bar_chart(c, &plot)?,
    }
    draw_legend(legend, &below)
}

/// Text whose em is `points` pt in print: plotters' font size is a line height, 1.24 em.
fn font(points: f64) -> TextStyle<'static> {
    (FONT, pt(points) * 1.24).into_font().color(&BLACK)
}

/// Tick label: as few digits as the value needs (0.05, 1, 20, 1.5k).
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        return format!("{}M", trim(v / 1e6));
    }
    if a >= 1e4 {
        return format!("{}k", trim(v / 1e3));
    }
    trim(v)
}

/// A value label: three significant digits (4.72, 312, 0.0472).
pub fn tick3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    format!("{:.*}", (2 - mag).clamp(0, 9) as usize, v)
}

fn trim(v: f64) -> String {
    // Ticks are "nice" numbers; 4 significant digits show them exactly without float noise.
    let s = format!("{:.*}", decimals_for(v), v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn decimals_for(v: f64) -> usize {
    if v == 0.0 {
        return 0;
    }
    let mag = v.abs().log10().floor() as i32;
    (3 - mag).clamp(0, 9) as usize
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// An axis with the ticks we choose: plotters' own log axis labels only whole decades and
/// leaves the space below the first one bare, so the mapping and the ticks are ours.
#[derive(Debug, Clone)]
pub struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// Labelled ticks with a grid line.
    bold: Vec<f64>,
    /// Unlabelled minor grid lines (log axes: 3, 4, 6 … × 10^k).
    light: Vec<f64>,
}

/// The 1-2-5 numbers around `v`: (largest ≤ v, smallest ≥ v).
fn one_two_five(v: f64) -> (f64, f64) {
    let decade = 10f64.powf(v.log10().floor());
    let steps = [1.0, 2.0, 5.0, 10.0];
    let mut below = decade;
    let mut above = decade * 10.0;
    for s in steps {
        let x = s * decade;
        if x <= v * (1.0 + 1e-9) {
            below = x;
        }
        if x >= v * (1.0 - 1e-9) && x < above {
            above = x;
        }
    }
    (below, above)
}

impl Axis {
    /// Fits `lo..hi` (data bounds). Log axes snap to 1-2-5 numbers; linear axes get a nice step
    /// and a little room, starting at zero when `from_zero`.
    pub fn fit(lo: f64, hi: f64, log: bool, from_zero: bool, max: Option<f64>) -> Axis {
        if log {
            // A little room in log space so end markers are not cut; widened to the 1-2-5
            // numbers around the data when it spans too little to show two ticks.
            let (dlo, dhi) = (lo.max(1e-12), hi.max(lo.max(1e-12) * 1.0001));
            let pad = (dhi / dlo).powf(0.04);
            let (mut lo, mut hi) = (dlo / pad, dhi * pad);
            if hi / lo < 4.0 {
                lo = lo.min(one_two_five(dlo).0);
                hi = hi.max(one_two_five(dhi).1);
            }
            let decades = (hi / lo).log10();
            // Up to 3 decades there is room to label 1, 2 and 5; beyond, decades only.
            let labelled: &[f64] = if decades <= 3.0 + 1e-9 {
                &[1.0, 2.0, 5.0]
            } else {
                &[1.0]
            };
            let (mut bold, mut light) = (Vec::new(), Vec::new());
            let mut decade = 10f64.powf(lo.log10().floor());
            while decade <= hi * 1.0001 {
                for m in 1..10 {
                    let v = decade * m as f64;
                    if v < lo * 0.9999 || v > hi * 1.0001 {
                        continue;
                    }
                    if labelled.contains(&(m as f64)) {
                        bold.push(v);
                    } else if decades <= 3.0 + 1e-9 || m == 2 || m == 5 {
                        // Over many decades a line at every digit is a grey wash: 2 and 5 only.
                        light.push(v);
                    }
                }
                decade *= 10.0;
            }
            return Axis {
                lo,
                hi,
                log: true,
                bold,
                light,
            };
        }
        let (lo, hi) = if from_zero {
            (lo.min(0.0), hi.max(0.0))
        } else {
            (lo, hi)
        };
        let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
        let step = nice_step(span / 6.0);
        // The axis ends a little past the data, not at the next tick: no empty band.
        let a = if from_zero && lo >= 0.0 {
            0.0
        } else {
            lo - 0.04 * span
        };
        let mut b = hi + 0.04 * span;
        if let Some(m) = max {
            // A capped quantity (100 %) keeps room for markers at the cap, no more.
            b = b.min(m + step * 0.15);
        }
        let first = (a / step - 1e-9).ceil() as i64;
        let last = (b / step + 1e-9).floor() as i64;
        let bold = (first..=last).map(|k| k as f64 * step).collect();
        Axis {
            lo: a,
            hi: b,
            log: false,
            bold,
            light: Vec::new(),
        }
    }

    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.max(f64::MIN_POSITIVE).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// Points from `self.lo` to `self.hi`, evenly spaced on the axis.
    fn sweep(&self, n: usize) -> Vec<f64> {
        (0..=n)
            .map(|i| {
                let t = i as f64 / n as f64;
                if self.log {
                    self.lo * (self.hi / self.lo).powf(t)
                } else {
                    self.lo + (self.hi - self.lo) * t
                }
            })
            .collect()
    }
}

/// 1, 2, 2.5 or 5 × 10^k, the smallest at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let decade = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * decade)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade)
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = self.unit(*value);
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(value: &f64) -> String {
        tick(*value)
    }
}

fn line_chart<DB: DrawingBackend>(c: &LineChart, area: &DrawingArea<DB, Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    let xs = bounds(c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let ys = bounds(
        c.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(c.references.iter().map(|r| r.y)),
    );
    let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
        return Ok(());
    };
    let (x, y) = if c.identity_band.is_some() {
        // Predicted against measured: the same range on both axes, so y = x is the diagonal.
        let (lo, hi) = (x0.min(y0), x1.max(y1));
        (
            Axis::fit(lo, hi, c.x_log, false, None),
            Axis::fit(lo, hi, c.y_log, false, None),
        )
    } else {
        (
            Axis::fit(x0, x1, c.x_log, false, None),
            Axis::fit(y0, y1, c.y_log, c.y_from_zero, c.y_max),
        )
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(pt(7.0) as i32)
        .margin_right(pt(10.0) as i32)
        .margin_left(pt(3.0) as i32)
        .x_label_area_size(pt(27.0) as i32)
        .y_label_area_size(pt(38.0) as i32)
        .build_cartesian_2d(x.clone(), y)?;
    mesh(&mut chart, &c.x_label, Some(&c.y_label))?;
    if let Some(band) = c.identity_band {
        // y = x and y = f·x are straight on any axes where x and y share a scale: two points.
        let diag = x.sweep(1);
        chart.draw_series(LineSeries::new(
            diag.iter().map(|&v| (v, v)),
            BLACK.mix(0.7).stroke_width(3),
        ))?;
        for f in [1.0 + band, 1.0 - band] {
            chart.draw_series(DashedLineSeries::new(
                diag.iter().map(|&v| (v, v * f)),
                pt(3.0) as i32,
                pt(2.0) as i32,
                BLACK.mix(0.45).stroke_width(2),
            ))?;
        }
    }
    let x_ends = x.sweep(1);
    for r in &c.references {
        chart.draw_series(DashedLineSeries::new(
            x_ends.iter().map(|&v| (v, r.y)),
            pt(REFERENCE_DASH.0) as i32,
            pt(REFERENCE_DASH.1) as i32,
            BLACK.mix(0.5).stroke_width(3),
        ))?;
    }
    for s in &c.series {
        if !s.markers_only && s.points.len() > 1 {
            let style = color(s.style).stroke_width(pt(1.1) as u32);
            match PATTERNS[s.pattern % PATTERNS.len()] {
                None => {
                    chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?;
                }
                Some((dash, gap)) => {
                    chart.draw_series(DashedLineSeries::new(
                        s.points.iter().copied(),
                        pt(dash) as i32,
                        pt(gap) as i32,
                        style,
                    ))?;
                }
            }
        }
    }
    // Markers last, over every line; markers on one spot are spread sideways.
    let size = pt(2.6) as i32;
    let pixels: Vec<Vec<(i32, i32)>> = c
        .series
        .iter()
        .map(|s| s.points.iter().map(|p| chart.backend_coord(p)).collect())
        .collect();
    for (k, s) in c.series.iter().enumerate() {
        for (i, &at) in pixels[k].iter().enumerate() {
            if i % s.marker_every.max(1) != 0 {
                continue;
            }
            let shift = dodge(&pixels, k, i, size);
            marker(
                chart.plotting_area().strip_coord_spec(),
                (at.0 + shift, at.1),
                s.style,
                size,
                !s.measured,
            )?;
        }
    }
    Ok(())
}

const REFERENCE_DASH: (f64, f64) = (2.0, 2.0);

/// Sideways shift of series `k`'s marker `i` so that markers on one spot (within a marker
/// radius) sit side by side, centred on it, in series order.
pub fn dodge(pixels: &[Vec<(i32, i32)>], k: usize, i: usize, radius: i32) -> i32 {
    let at = pixels[k][i];
    let near =
        |p: &(i32, i32)| (p.0 - at.0).abs() <= radius / 2 && (p.1 - at.1).abs() <= radius / 2;
    let on_spot: Vec<usize> = (0..pixels.len())
        .filter(|&j| pixels[j].iter().any(near))
        .collect();
    if on_spot.len() < 2 {
        return 0;
    }
    let rank = on_spot.iter().position(|&j| j == k).unwrap_or(0) as f64;
    let step = 2.2 * radius as f64;
    ((rank - (on_spot.len() - 1) as f64 / 2.0) * step).round() as i32
}

/// Axes, ticks, grid and axis labels in the house style.
fn mesh<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<Axis, Y>>,
    x_label: &str,
    y_label: Option<&str>,
) -> Res
where
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut m = chart.configure_mesh();
    m.x_desc(x_label)
        .axis_desc_style(font(LABEL_PT))
        .label_style(font(TICK_PT))
        .x_labels(64)
        .y_labels(64)
        .bold_line_style(BLACK.mix(0.14).stroke_width(2))
        .light_line_style(BLACK.mix(0.06).stroke_width(2))
        .axis_style(BLACK.stroke_width(3))
        .set_all_tick_mark_size(pt(2.5) as i32);
    match y_label {
        Some(l) => {
            m.y_desc(l);
        }
        None => {
            m.disable_y_mesh().y_labels(0);
        }
    }
    m.draw()?;
    Ok(())
}

/// Draws marker `kind` centred at pixel `at` of `area` (root coordinates). Filled for simulated
/// series, hollow for measured ones.
fn marker<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    at: (i32, i32),
    kind: usize,
    r: i32,
    filled: bool,
) -> Res
where
    DB::ErrorType: 'static,
{
    // `strip_coord_spec` keeps the plotting area's pixel offset; draw in root pixels.
    let (ox, oy) = area.get_base_pixel();
    let (x, y) = (at.0 - ox, at.1 - oy);
    let col = color(kind);
    // Hollow markers (measured series) are white inside, so a line through them does not show.
    let fill = if filled { col.filled() } else { WHITE.filled() };
    let outline = col.stroke_width(pt(0.6) as u32);
    let k = r + r / 6;
    let outline_of = |pts: &[(i32, i32)]| {
        let mut closed = pts.to_vec();
        closed.push(pts[0]);
        PathElement::new(closed, outline)
    };
    match kind % 4 {
        0 => {
            area.draw(&Circle::new((x, y), r, fill))?;
            if !filled {
                area.draw(&Circle::new((x, y), r, outline))?;
            }
        }
        1 => {
            let s = r * 9 / 10;
            area.draw(&Rectangle::new([(x - s, y - s), (x + s, y + s)], fill))?;
            if !filled {
                area.draw(&Rectangle::new([(x - s, y - s), (x + s, y + s)], outline))?;
            }
        }
        shape => {
            let pts = if shape == 2 {
                vec![(x, y - k), (x + r, y + r * 3 / 4), (x - r, y + r * 3 / 4)]
            } else {
                vec![(x, y - k), (x + k, y), (x, y + k), (x - k, y)]
            };
            area.draw(&Polygon::new(pts.clone(), fill))?;
            if !filled {
                area.draw(&outline_of(&pts))?;
            }
        }
    }
    Ok(())
}

fn bar_chart<DB: DrawingBackend>(c: &BarChart, area: &DrawingArea<DB, Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    let totals: Vec<f64> = c
        .values
        .iter()
        .map(|v| {
            if c.stacked {
                v.iter().sum()
            } else {
                v.iter().copied().fold(0.0, f64::max)
            }
        })
        .collect();
    let positive = c.values.iter().flatten().copied().filter(|v| *v > 0.0);
    let Some((lo, _)) = bounds(positive) else {
        return Ok(());
    };
    let hi = totals.iter().copied().fold(0.0, f64::max);
    // Room right of the longest bar for its value label; on a log axis, a decade below the
    // smallest value so the shortest bar is still visible.
    let x = if c.x_log {
        let span = hi / (lo / 10.0);
        Axis::fit(lo / 10.0, hi * span.powf(0.22), true, false, None)
    } else {
        Axis::fit(0.0, hi * 1.22, false, true, None)
    };
    // Category labels go left of the axis; the label area is as wide as the longest one.
    let label_font = font(TICK_PT);
    let widest = c
        .categories
        .iter()
        .map(|s| area.estimate_text_size(s, &label_font).map(|(w, _)| w))
        .collect::<Result<Vec<u32>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let n = c.categories.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .margin_top(pt(6.0) as i32)
        .margin_right(pt(12.0) as i32)
        .x_label_area_size(pt(27.0) as i32)
        .y_label_area_size(widest as i32 + pt(11.0) as i32)
        .build_cartesian_2d(x, -0.5..n - 0.5)?;
    mesh(&mut chart, &c.x_label, None)?;
    let x_base = chart.x_range().start;
    let band = 0.72;
    let k = c.keys.len().max(1) as f64;
    let root = chart.plotting_area().strip_coord_spec();
    let (ox, oy) = root.get_base_pixel();
    let value_style = font(TICK_PT).pos(Pos::new(HPos::Left, VPos::Center));
    let gap = pt(2.5) as i32;
    let label = |at: (f64, f64), text: String| -> Res {
        let (px, py) = chart.backend_coord(&at);
        root.draw(&Text::new(
            text,
            (px - ox + gap, py - oy),
            value_style.clone(),
        ))?;
        Ok(())
    };
    for (i, vals) in c.values.iter().enumerate() {
        // First category at the top.
        let center = (c.categories.len() - 1 - i) as f64;
        if vals.iter().all(|v| *v <= 0.0) {
            label((x_base, center), "none".to_string())?;
        } else if c.stacked {
            let total: f64 = vals.iter().sum();
            label(
                (x_base + total, center),
                format!("{}{}", tick3(total), c.value_suffix),
            )?;
        }
        let mut acc = x_base;
        for (j, &v) in vals.iter().enumerate() {
            if v <= 0.0 {
                continue;
            }
            let (y0, y1, x0, x1) = if c.stacked {
                let r = (center - band / 2.0, center + band / 2.0, acc, acc + v);
                acc += v;
                r
            } else {
                let h = band / k;
                let top = center + band / 2.0 - h * j as f64;
                (top - h * 0.92, top, x_base, v)
            };
            chart
                .plotting_area()
                .draw(&Rectangle::new([(x0, y0), (x1, y1)], color(j).filled()))?;
            if !c.stacked {
                label(
                    (v, (y0 + y1) / 2.0),
                    format!("{}{}", tick3(v), c.value_suffix),
                )?;
            }
        }
    }
    // Category names, right-aligned against the axis, centred on their band.
    let style = font(TICK_PT).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in c.categories.iter().enumerate() {
        let center = (c.categories.len() - 1 - i) as f64;
        let (px, py) = chart.backend_coord(&(x_base, center));
        // Drawn on the whole chart area: a drawing area clamps positions into itself, so a
        // label left of the plotting area would be pushed onto the axis.
        let (ax, ay) = area.get_base_pixel();
        area.draw(&Text::new(
            name.clone(),
            (px - ax - pt(8.0) as i32, py - ay),
            style.clone(),
        ))?;
    }
    Ok(())
}

/// A legend row: a line or box sample, a marker, the label.
#[derive(Debug, Clone)]
pub struct Entry {
    label: String,
    style: usize,
    pattern: usize,
    measured: bool,
    line: bool,
    marker: bool,
    bar: bool,
    /// A reference line (y = x, the band, an SLO) in grey, not a data series: its dash pattern.
    reference: Option<Option<(f64, f64)>>,
}

fn legend_entries(fig: &Figure) -> Vec<Entry> {
    match fig {
        Figure::Line(c) => {
            let mut v: Vec<Entry> = c
                .series
                .iter()
                .map(|s| Entry {
                    label: s.label.clone(),
                    style: s.style,
                    pattern: s.pattern,
                    measured: s.measured,
                    line: !s.markers_only,
                    marker: true,
                    bar: false,
                    reference: None,
                })
                .collect();
            let reference = |label: String, dash: Option<(f64, f64)>| Entry {
                label,
                style: 0,
                pattern: 0,
                measured: false,
                line: true,
                marker: false,
                bar: false,
                reference: Some(dash),
            };
            if let Some(band) = c.identity_band {
                // The reference lines need saying too, or a reader has to guess the band.
                v.push(reference("measured = predicted".into(), None));
                v.push(reference(
                    format!("±{:.0} %", band * 100.0),
                    Some((3.0, 2.0)),
                ));
            }
            for r in &c.references {
                v.push(reference(r.label.clone(), Some(REFERENCE_DASH)));
            }
            v
        }
        // One key needs no legend: the axis label says what the bars are.
        Figure::Bar(c) if c.keys.len() > 1 => c
            .keys
            .iter()
            .enumerate()
            .map(|(j, k)| Entry {
                label: k.clone(),
                style: j,
                pattern: 0,
                measured: false,
                line: false,
                marker: false,
                bar: true,
                reference: None,
            })
            .collect(),
        Figure::Bar(_) => Vec::new(),
    }
}

const LEGEND_ROW: f64 = LEGEND_PT * 1.6;
const SAMPLE: f64 = 16.0;

fn legend_columns(entries: &[Entry]) -> usize {
    // A rough width per character of DejaVu Sans at the legend size (≈0.6 em, with room to spare): two columns
    // when every label fits half the width.
    let longest = entries
        .iter()
        .map(|e| e.label.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let entry_w = pt(SAMPLE + 4.0) + longest * pt(LEGEND_PT) * 0.66;
    if entries.len() > 1 && entry_w * 2.0 < WIDTH as f64 - pt(12.0) {
        2
    } else {
        1
    }
}

fn legend_height(entries: &[Entry]) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let rows = entries.len().div_ceil(legend_columns(entries));
    (pt(LEGEND_ROW) * rows as f64 + pt(4.0)) as u32
}

fn draw_legend<DB: DrawingBackend>(entries: &[Entry], area: &DrawingArea<DB, Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    if entries.is_empty() {
        return Ok(());
    }
    let cols = legend_columns(entries);
    let rows = entries.len().div_ceil(cols);
    let left = pt(12.0) as i32;
    let col_w = (WIDTH as i32 - left) / cols as i32;
    let style = font(LEGEND_PT).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        // Column-major, so a sweep's series read top to bottom.
        let (r, c) = (i % rows, i / rows);
        let x = left + c as i32 * col_w;
        let y = (pt(2.0) + pt(LEGEND_ROW) * (r as f64 + 0.5)) as i32;
        let w = pt(SAMPLE) as i32;
        let col = color(e.style);
        if e.bar {
            let h = pt(LEGEND_PT * 0.8) as i32;
            area.draw(&Rectangle::new(
                [(x, y - h / 2), (x + w / 2, y + h / 2)],
                col.filled(),
            ))?;
        }
        if e.line {
            let (s, pattern) = match e.reference {
                Some(dash) => (
                    BLACK
                        .mix(if dash.is_some() { 0.5 } else { 0.7 })
                        .stroke_width(3),
                    dash,
                ),
                None => (
                    col.stroke_width(pt(1.1) as u32),
                    PATTERNS[e.pattern % PATTERNS.len()],
                ),
            };
            match pattern {
                Some((dash, gap)) => {
                    let (dash, gap) = (pt(dash) as i32, pt(gap) as i32);
                    let mut a = x;
                    while a < x + w {
                        let b = (a + dash).min(x + w);
                        area.draw(&PathElement::new(vec![(a, y), (b, y)], s))?;
                        a = b + gap;
                    }
                }
                None => {
                    area.draw(&PathElement::new(vec![(x, y), (x + w, y)], s))?;
                }
            }
        }
        // A scatter series has no line sample: its marker sits where the line would start.
        let marker_x = if e.line { x + w / 2 } else { x + w / 4 };
        if e.marker {
            let (ox, oy) = area.get_base_pixel();
            marker(
                area.clone(),
                (marker_x + ox, y + oy),
                e.style,
                pt(2.6) as i32,
                !e.measured,
            )?;
        }
        let text_x = if e.bar || !e.line { x + w / 2 } else { x + w };
        area.draw(&Text::new(
            e.label.clone(),
            (text_x + pt(4.0) as i32, y),
            style.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(0.05), "0.05");
        assert_eq!(tick(2_500_000.0), "2.5M");
        assert_eq!(tick(15_000.0), "15k");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick3(4.718592), "4.72");
        assert_eq!(tick3(312.5), "312");
        assert_eq!(tick3(0.04718), "0.0472");
    }

    #[test]
    fn log_axes_snap_to_one_two_five_and_label_them() {
        let a = Axis::fit(0.045, 9.8, true, false, None);
        assert!(
            a.lo < 0.045 && a.lo > 0.03 && a.hi > 9.8 && a.hi < 13.0,
            "{a:?}"
        );
        assert_eq!(a.bold, vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert!(a.light.contains(&0.04) && a.light.contains(&9.0));
        // A narrow range widens to the 1-2-5 numbers around it.
        let n = Axis::fit(0.039, 0.045, true, false, None);
        assert_eq!(n.bold, vec![0.02, 0.05]);
        // Four decades: label decades only.
        let b = Axis::fit(0.001, 10.0, true, false, None);
        assert_eq!(b.bold, vec![0.001, 0.01, 0.1, 1.0, 10.0]);
    }

    #[test]
    fn forty_four_series_before_a_colour_and_marker_repeat() {
        let look = |i: usize| (color(i), i % 4);
        for i in 0..44 {
            for j in 0..i {
                assert_ne!(look(i), look(j), "series {j} and {i}");
            }
        }
        // The first eleven differ in colour alone.
        for i in 0..PALETTE.len() {
            for j in 0..i {
                assert_ne!(color(i), color(j));
            }
        }
        assert_eq!(look(44), look(0));
    }

    #[test]
    fn markers_on_one_spot_spread_and_others_stay() {
        // Three series at 100 % at the same rate, one elsewhere.
        let px = vec![
            vec![(100, 10), (200, 50)],
            vec![(100, 10)],
            vec![(101, 11)],
            vec![(300, 90)],
        ];
        let shifts: Vec<i32> = (0..3).map(|k| dodge(&px, k, 0, 10)).collect();
        assert_eq!(shifts, vec![-22, 0, 22]);
        assert_eq!(dodge(&px, 0, 1, 10), 0);
        assert_eq!(dodge(&px, 3, 0, 10), 0);
    }

    #[test]
    fn linear_axes_get_nice_steps() {
        let a = Axis::fit(4.3, 43.2, false, false, None);
        assert_eq!(a.bold, vec![10.0, 20.0, 30.0, 40.0]);
        assert!(a.hi > 43.2 && a.hi < 45.0 && a.lo < 4.3 && a.lo > 2.0);
        let pct = Axis::fit(9.0, 100.0, false, true, Some(100.0));
        assert_eq!(pct.lo, 0.0);
        assert!(pct.hi > 100.0 && pct.hi < 110.0);
        assert_eq!(pct.bold.last(), Some(&100.0));
    }
}
