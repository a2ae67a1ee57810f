//! Workloads: who arrives when, with which images and how many tokens.
//!
//! Requests are produced lazily (a synthetic generator or a streaming trace reader), so a run of
//! any length holds only the requests in flight. Shapes and arrival times come from two RNG
//! streams derived from the seed: changing the rate moves arrivals but keeps every request's shape.

use std::fmt;
use std::path::PathBuf;

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::bounds::{Bound, MAX_SIM_SECONDS, Num};
use crate::error::InputError;
use crate::trace::{TraceFormat, TraceReader};

/// Arrival rates: below 10⁻⁶ requests/s the gaps leave the simulated clock's range; above 10⁶ no
/// modelled cluster keeps up.
pub const RATE: Bound = Bound::closed(1e-6, 1e6, "requests/s");
/// Gamma burstiness: the shape 1/cv² stays within [10⁻⁴, 10⁴], where the sampler is exact.
const CV: Bound = Bound::closed(0.01, 100.0, "");
/// Choice weights: their sum stays finite.
const WEIGHT: Bound = Bound::closed(0.0, 1e12, "");
/// Location parameters of normal and lognormal draws (before clipping).
const LOCATION: Bound = Bound::closed(-1e12, 1e12, "");
/// A trace's clock multiplier.
const TIME_SCALE: Bound = Bound::closed(1e-6, 1e6, "");

/// One request as the workload describes it (before any model turns images into tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub arrival_ns: u64,
    /// (width, height) of each image, pixels.
    pub images: Vec<(u32, u32)>,
    /// Text tokens of the prompt (visual tokens are added by the model's rule).
    pub prompt_tokens: u32,
    pub output_tokens: u32,
}

/// A number drawn per request: a constant, or a distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Fixed(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    /// Normal, clipped to [min, max].
    Normal {
        mean: f64,
        std: f64,
        min: f64,
        max: f64,
    },
    /// Log-normal with the given median and σ of the log, clipped to [min, max].
    LogNormal {
        median: f64,
        sigma: f64,
        min: f64,
        max: f64,
    },
    /// One of `values`, with optional weights.
    Choice {
        values: Vec<f64>,
        weights: Vec<f64>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
enum DistMap {
    Fixed {
        value: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    Normal {
        mean: f64,
        std: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
    LogNormal {
        median: f64,
        sigma: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
    Choice {
        values: Vec<f64>,
        weights: Option<Vec<f64>>,
    },
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or a map with `dist: fixed|uniform|normal|lognormal|choice` and its parameters")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dist, E> {
                Ok(Dist::Fixed(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dist, E> {
                Ok(Dist::Fixed(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dist, E> {
                Ok(Dist::Fixed(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Dist, A::Error> {
                let m = DistMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match m {
                    DistMap::Fixed { value } => Dist::Fixed(value),
                    DistMap::Uniform { min, max } => Dist::Uniform { min, max },
                    DistMap::Normal {
                        mean,
                        std,
                        min,
                        max,
                    } => Dist::Normal {
                        mean,
                        std,
                        min: min.unwrap_or(f64::NEG_INFINITY),
                        max: max.unwrap_or(f64::INFINITY),
                    },
                    DistMap::LogNormal {
                        median,
                        sigma,
                        min,
                        max,
                    } => Dist::LogNormal {
                        median,
                        sigma,
                        min: min.unwrap_or(0.0),
                        max: max.unwrap_or(f64::INFINITY),
                    },
                    DistMap::Choice { values, weights } => {
                        let weights = weights.unwrap_or_else(|| vec![1.0; values.len()]);
                        Dist::Choice { values, weights }
                    }
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Dist {
    /// Checks the parameters and that every value it can produce lies in [lo, hi].
    pub fn validate(&self, field: &str, lo: f64, hi: f64) -> Result<(), InputError> {
        let bad = |what: String| Err(InputError::new(format!("`{field}`: {what}")));
        let in_range = |v: f64| v.is_finite() && v >= lo && v <= hi;
        let range = format!("[{lo}, {hi}]");
        match self {
            Dist::Fixed(v) if !in_range(*v) => {
                bad(format!("{v} is outside the allowed range {range}"))
            }
            Dist::Uniform { min, max } if !(in_range(*min) && in_range(*max) && min <= max) => bad(
                format!("uniform min {min}, max {max}: need min ≤ max, both in {range}"),
            ),
            Dist::Normal { std, min, max, .. }
            | Dist::LogNormal {
                sigma: std,
                min,
                max,
                ..
            } if !(*std >= 0.0 && std.is_finite())
                || min > max
                || (min.is_finite() && !in_range(*min))
                || *max < lo =>
            {
                bad(format!(
                    "spread {std} must be ≥ 0 and the clip range [{min}, {max}] must lie in {range}"
                ))
            }
            Dist::Normal { min, max, .. } | Dist::LogNormal { min, max, .. }
                if !min.is_finite() && lo.is_finite() || *max > hi =>
            {
                bad(format!(
                    "give `min` and `max` within {range} so every draw is allowed"
                ))
            }
            Dist::LogNormal { median, .. } if !(*median > 0.0 && LOCATION.contains(*median)) => {
                bad(format!(
                    "lognormal median {} must be in (0, {}]",
                    Num(*median),
                    Num(LOCATION.max)
                ))
            }
            Dist::Normal { mean, .. } => LOCATION.check(&format!("{field}.mean"), *mean).map(drop),
            Dist::Choice { values, weights } => {
                if values.is_empty() || values.len() != weights.len() {
                    return bad(format!(
                        "choice needs values and as many weights ({} values, {} weights)",
                        values.len(),
                        weights.len()
                    ));
                }
                if let Some(v) = values.iter().find(|v| !in_range(**v)) {
                    return bad(format!("choice value {v} is outside {range}"));
                }
                for (i, w) in weights.iter().enumerate() {
                    WEIGHT.check(&format!("{field}.weights[{i}]"), *w)?;
                }
                if weights.iter().sum::<f64>() <= 0.0 {
                    return bad("choice weights must have a positive sum".into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform { min, max } => {
                if min == max {
                    *min
                } else {
                    rng.random_range(*min..=*max)
                }
            }
            Dist::Normal {
                mean,
                std,
                min,
                max,
            } => Normal::new(*mean, *std)
                .expect("validated")
                .sample(rng)
                .clamp(*min, *max),
            Dist::LogNormal {
                median,
                sigma,
                min,
                max,
            } => LogNormal::new(median.ln(), *sigma)
                .expect("validated")
                .sample(rng)
                .clamp(*min, *max),
            Dist::Choice { values, weights } => {
                let total: f64 = weights.iter().sum();
                let mut x = rng.random_range(0.0..total);
                for (v, w) in values.iter().zip(weights) {
                    if x < *w {
                        return *v;
                    }
                    x -= w;
                }
                *values.last().expect("validated non-empty")
            }
        }
    }

    /// The least and the greatest value a draw can take.
    pub fn range(&self) -> (f64, f64) {
        match self {
            Dist::Fixed(v) => (*v, *v),
            Dist::Uniform { min, max }
            | Dist::Normal { min, max, .. }
            | Dist::LogNormal { min, max, .. } => (*min, *max),
            Dist::Choice { values, .. } => values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(*v), hi.max(*v))
                }),
        }
    }

    /// Integer draw (token and image counts, pixel sizes): rounded to nearest.
    pub fn sample_u32(&self, rng: &mut Xoshiro256PlusPlus) -> u32 {
        self.sample(rng).round().clamp(0.0, u32::MAX as f64) as u32
    }

    /// Mean of the distribution (for the closed-form cost model and summaries).
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform { min, max } => (min + max) / 2.0,
            // The clipped distributions' means are estimated by deterministic sampling.
            Dist::Normal { .. } | Dist::LogNormal { .. } => {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x6d65616e);
                (0..20_000).map(|_| self.sample(&mut rng)).sum::<f64>() / 20_000.0
            }
            Dist::Choice { values, weights } => {
                values.iter().zip(weights).map(|(v, w)| v * w).sum::<f64>()
                    / weights.iter().sum::<f64>()
            }
        }
    }
}

/// Request arrivals in time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "process", rename_all = "lowercase", deny_unknown_fields)]
pub enum Arrival {
    /// Exponential gaps, `rate` requests per second.
    Poisson { rate: f64 },
    /// Gamma gaps with mean 1/rate and coefficient of variation `cv` (> 1 is burstier than Poisson).
    Gamma { rate: f64, cv: f64 },
}

impl Arrival {
    pub fn rate(&self) -> f64 {
        match self {
            Arrival::Poisson { rate } | Arrival::Gamma { rate, .. } => *rate,
        }
    }

    pub fn with_rate(&self, rate: f64) -> Arrival {
        match self {
            Arrival::Poisson { .. } => Arrival::Poisson { rate },
            Arrival::Gamma { cv, .. } => Arrival::Gamma { rate, cv: *cv },
        }
    }

    pub fn validate(&self) -> Result<(), InputError> {
        RATE.check("arrival.rate", self.rate())?;
        if let Arrival::Gamma { cv, .. } = self {
            CV.check("arrival.cv", *cv)?;
        }
        Ok(())
    }

    fn gap_s(&self, rng: &mut Xoshiro256PlusPlus) -> f64 {
        match *self {
            Arrival::Poisson { rate } => Exp::new(rate).expect("validated").sample(rng),
            Arrival::Gamma { rate, cv } => {
                let shape = 1.0 / (cv * cv);
                Gamma::new(shape, 1.0 / (rate * shape))
                    .expect("validated")
                    .sample(rng)
            }
        }
    }
}

/// Images per request and their sizes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDist {
    #[serde(default = "one")]
    pub count: Dist,
    #[serde(default = "coco_width")]
    pub width: Dist,
    #[serde(default = "coco_height")]
    pub height: Dist,
}

fn one() -> Dist {
    Dist::Fixed(1.0)
}
fn coco_width() -> Dist {
    Dist::Fixed(640.0)
}
fn coco_height() -> Dist {
    Dist::Fixed(480.0)
}

impl Default for ImageDist {
    /// COCO-like: one 640×480 image.
    fn default() -> Self {
        ImageDist {
            count: one(),
            width: coco_width(),
            height: coco_height(),
        }
    }
}

impl ImageDist {
    pub fn validate(&self, at: &str) -> Result<(), InputError> {
        self.count.validate(&format!("{at}.count"), 0.0, 64.0)?;
        self.width.validate(&format!("{at}.width"), 1.0, 32768.0)?;
        self.height.validate(&format!("{at}.height"), 1.0, 32768.0)
    }

    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> Vec<(u32, u32)> {
        let n = self.count.sample_u32(rng);
        (0..n)
            .map(|_| {
                (
                    self.width.sample_u32(rng).max(1),
                    self.height.sample_u32(rng).max(1),
                )
            })
            .collect()
    }
}

/// A trace to replay instead of synthetic arrivals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// Relative paths are relative to the experiment file.
    pub path: PathBuf,
    #[serde(default)]
    pub format: TraceFormat,
    /// Multiplies inter-arrival times: 0.5 replays twice as fast.
    #[serde(default = "unit")]
    pub time_scale: f64,
    /// Images for rows of text-only formats (Splitwise, Azure); the same rule as
    /// `workload.images`, spelt inside the trace (give one of the two).
    #[serde(default)]
    pub attach_images: Option<ImageDist>,
}

fn unit() -> f64 {
    1.0
}

/// Where requests come from and how many.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Number of requests (with a trace: at most this many rows).
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub arrival: Option<Arrival>,
    /// Images of each request: synthetic workloads draw them (default: one 640×480 image); with
    /// a trace, rows of text-only formats get these (default: none; JSONL and CSV rows carry
    /// their own).
    #[serde(default)]
    pub images: Option<ImageDist>,
    #[serde(default = "default_prompt")]
    pub prompt_tokens: Dist,
    #[serde(default = "default_output")]
    pub output_tokens: Dist,
    #[serde(default)]
    pub trace: Option<TraceSpec>,
}

fn default_prompt() -> Dist {
    Dist::Fixed(20.0)
}
fn default_output() -> Dist {
    Dist::Fixed(128.0)
}

/// What reading a workload through once found out.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkloadCheck {
    /// Row (as trace errors number them) of the first replayed trace row that carries images.
    pub first_row_with_images: Option<u64>,
    /// Requests the workload makes: `requests`, or the trace rows replayed.
    pub requests: u64,
    /// The replayed trace row image farthest from square: (row, width, height).
    pub most_elongated_image: Option<(u64, u32, u32)>,
}

impl WorkloadSpec {
    /// The rule that gives requests their images: synthetic requests draw every image from it,
    /// trace rows only when their format has no image field (then `None` means no images).
    pub fn image_rule(&self) -> Option<ImageDist> {
        match &self.trace {
            Some(t) => t.attach_images.clone().or_else(|| self.images.clone()),
            None => Some(self.images.clone().unwrap_or_default()),
        }
    }

    /// Checks every parameter; for traces, reads the whole file once so a bad row stops the run
    /// before anything is simulated or written.
    pub fn validate(&self) -> Result<WorkloadCheck, InputError> {
        self.prompt_tokens
            .validate("workload.prompt_tokens", 0.0, 1e7)?;
        self.output_tokens
            .validate("workload.output_tokens", 1.0, 1e7)?;
        if let Some(img) = &self.images {
            img.validate("workload.images")?;
        }
        if self.requests == Some(0) {
            return Err(InputError::new(
                "`workload.requests` = 0: simulate at least one request",
            ));
        }
        match (&self.trace, &self.arrival) {
            (Some(_), Some(_)) => Err(InputError::new(
                "`workload`: give either `trace` (replay) or `arrival` (synthetic), not both",
            )),
            (None, None) => Err(InputError::new(
                "`workload`: give `arrival` (e.g. {process: poisson, rate: 4}) or `trace`",
            )),
            (None, Some(a)) => {
                if self.requests.is_none() {
                    return Err(InputError::new(
                        "`workload.requests`: how many requests to simulate (e.g. 1000)",
                    ));
                }
                a.validate()?;
                let requests = self.requests.unwrap_or(1);
                let span_s = requests.saturating_sub(1) as f64 / a.rate();
                if span_s > MAX_SIM_SECONDS {
                    return Err(InputError::new(format!(
                        "`workload.requests` = {requests} at `arrival.rate` = {} requests/s arrive over {} s: allowed at most {} s of simulated time",
                        Num(a.rate()),
                        Num(span_s),
                        Num(MAX_SIM_SECONDS)
                    )));
                }
                Ok(WorkloadCheck {
                    requests,
                    ..WorkloadCheck::default()
                })
            }
            (Some(t), None) => {
                TIME_SCALE.check("workload.trace.time_scale", t.time_scale)?;
                if let Some(img) = &t.attach_images {
                    if self.images.is_some() {
                        return Err(InputError::new(
                            "`workload`: give the images of trace rows once, as `images` or as `trace.attach_images`, not both",
                        ));
                    }
                    img.validate("workload.trace.attach_images")?;
                }
                let mut reader = TraceReader::open(&t.path, t.format)?;
                let mut check = WorkloadCheck::default();
                let mut first_s = None;
                while let Some(row) = reader.next_row()? {
                    let replayed = self.requests.is_none_or(|n| reader.rows_read() <= n);
                    let t0 = *first_s.get_or_insert(row.arrival_s);
                    let at_s = (row.arrival_s - t0) * t.time_scale;
                    if replayed && at_s > MAX_SIM_SECONDS {
                        return Err(InputError::new(format!(
                            "trace {} row {}: arrives {} s after the first row (× time_scale {}): allowed at most {} s of simulated time",
                            t.path.display(),
                            reader.line_no(),
                            Num(at_s),
                            Num(t.time_scale),
                            Num(MAX_SIM_SECONDS)
                        )));
                    }
                    let images = row.images.as_deref().unwrap_or_default();
                    if replayed && check.first_row_with_images.is_none() && !images.is_empty() {
                        check.first_row_with_images = Some(reader.line_no());
                    }
                    let aspect = |(w, h): (u32, u32)| f64::from(w.max(h)) / f64::from(w.min(h));
                    for &(w, h) in images.iter().filter(|_| replayed) {
                        if check
                            .most_elongated_image
                            .is_none_or(|(_, bw, bh)| aspect((w, h)) > aspect((bw, bh)))
                        {
                            check.most_elongated_image = Some((reader.line_no(), w, h));
                        }
                    }
                }
                if reader.rows_read() == 0 {
                    return Err(InputError::new(format!(
                        "trace {}: no rows",
                        t.path.display()
                    )));
                }
                check.requests = self
                    .requests
                    .map_or(reader.rows_read(), |n| n.min(reader.rows_read()));
                Ok(check)
            }
        }
    }

    /// The request stream for one scenario run.
    pub fn requests(&self, seed: u64) -> Result<RequestSource, InputError> {
        let shapes = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5348_4150_4553);
        let arrivals = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x4152_5249_5641);
        let kind = match &self.trace {
            Some(t) => SourceKind::Trace {
                reader: Box::new(TraceReader::open(&t.path, t.format)?),
                time_scale: t.time_scale,
                attach: self.image_rule(),
                first_arrival_s: None,
            },
            None => SourceKind::Synthetic {
                arrival: self.arrival.clone().expect("validated"),
                images: self.image_rule().unwrap_or_default(),
                clock_s: 0.0,
            },
        };
        Ok(RequestSource {
            spec: self.clone(),
            kind,
            shapes,
            arrivals,
            next_id: 0,
        })
    }
}

enum SourceKind {
    Synthetic {
        arrival: Arrival,
        images: ImageDist,
        clock_s: f64,
    },
    Trace {
        reader: Box<TraceReader>,
        time_scale: f64,
        attach: Option<ImageDist>,
        first_arrival_s: Option<f64>,
    },
}

/// Requests in arrival order, produced on demand.
pub struct RequestSource {
    spec: WorkloadSpec,
    kind: SourceKind,
    shapes: Xoshiro256PlusPlus,
    arrivals: Xoshiro256PlusPlus,
    next_id: u64,
}

impl RequestSource {
    /// The next request, `Ok(None)` at the end.
    pub fn next_request(&mut self) -> Result<Option<Request>, InputError> {
        if self.spec.requests.is_some_and(|n| self.next_id >= n) {
            return Ok(None);
        }
        let id = self.next_id;
        let req = match &mut self.kind {
            SourceKind::Synthetic {
                arrival,
                images,
                clock_s,
            } => {
                // The first request arrives at t = 0; the clock then advances by random gaps.
                if id > 0 {
                    *clock_s += arrival.gap_s(&mut self.arrivals);
                }
                // The expected span was checked; a freak run of long gaps is refused here.
                if *clock_s > MAX_SIM_SECONDS {
                    return Err(InputError::new(format!(
                        "request {id} would arrive at {} s: allowed at most {} s of simulated time; raise `arrival.rate` or lower `workload.requests`",
                        Num(*clock_s),
                        Num(MAX_SIM_SECONDS)
                    )));
                }
                Request {
                    id,
                    arrival_ns: seconds_to_ns(*clock_s),
                    images: images.sample(&mut self.shapes),
                    prompt_tokens: self.spec.prompt_tokens.sample_u32(&mut self.shapes),
                    output_tokens: self.spec.output_tokens.sample_u32(&mut self.shapes).max(1),
                }
            }
            SourceKind::Trace {
                reader,
                time_scale,
                attach,
                first_arrival_s,
            } => {
                let Some(row) = reader.next_row()? else {
                    return Ok(None);
                };
                let t0 = *first_arrival_s.get_or_insert(row.arrival_s);
                let images = match (&row.images, attach) {
                    (Some(imgs), _) => imgs.clone(),
                    (None, Some(dist)) => dist.sample(&mut self.shapes),
                    (None, None) => Vec::new(),
                };
                Request {
                    id,
                    arrival_ns: seconds_to_ns((row.arrival_s - t0) * *time_scale),
                    images,
                    prompt_tokens: row.prompt_tokens,
                    output_tokens: row.output_tokens.max(1),
                }
            }
        };
        self.next_id += 1;
        Ok(Some(req))
    }
}

pub fn seconds_to_ns(s: f64) -> u64 {
    (s * 1e9).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> WorkloadSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn poisson_rate_is_respected_and_shapes_do_not_depend_on_rate() {
        let w = spec(
            "requests: 20000\narrival: {process: poisson, rate: 5}\nprompt_tokens: {dist: uniform, min: 15, max: 25}\n",
        );
        w.validate().unwrap();
        let mut src = w.requests(7).unwrap();
        let mut last = None;
        let mut shapes = Vec::new();
        while let Some(r) = src.next_request().unwrap() {
            assert!(r.prompt_tokens >= 15 && r.prompt_tokens <= 25);
            assert_eq!(r.images, vec![(640, 480)]);
            shapes.push(r.prompt_tokens);
            last = Some(r);
        }
        let span_s = last.unwrap().arrival_ns as f64 / 1e9;
        let rate = 19999.0 / span_s;
        assert!((rate - 5.0).abs() < 0.15, "measured rate {rate}");
        let mut fast = WorkloadSpec {
            arrival: Some(Arrival::Poisson { rate: 50.0 }),
            ..w.clone()
        }
        .requests(7)
        .unwrap();
        let fast_shapes: Vec<u32> = std::iter::from_fn(|| fast.next_request().unwrap())
            .map(|r| r.prompt_tokens)
            .collect();
        assert_eq!(shapes, fast_shapes);
    }

    #[test]
    fn gamma_burstiness_matches_cv() {
        let w = spec("requests: 40000\narrival: {process: gamma, rate: 2, cv: 3}\n");
        let mut src = w.requests(1).unwrap();
        let times: Vec<f64> = std::iter::from_fn(|| src.next_request().unwrap())
            .map(|r| r.arrival_ns as f64 / 1e9)
            .collect();
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 3.0).abs() < 0.3,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = spec("requests: 10\narrival: {process: poisson, rate: 0}\n")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("arrival.rate"), "{e}");
        let e = spec("requests: 10\narrival: {process: poisson, rate: 1}\noutput_tokens: {dist: uniform, min: 5, max: 2}\n")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("workload.output_tokens"), "{e}");
        assert!(serde_saphyr::from_str::<WorkloadSpec>("prompt_tokens: {dist: zipf}\n").is_err());
    }

    #[test]
    fn same_seed_same_requests() {
        let w = spec(
            "requests: 100\narrival: {process: poisson, rate: 3}\nimages: {count: {dist: choice, values: [0, 1, 2]}, width: {dist: uniform, min: 200, max: 2000}}\n",
        );
        let run = |seed| {
            let mut s = w.requests(seed).unwrap();
            std::iter::from_fn(move || s.next_request().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
