//! A run's numbers under the names and units of vLLM's `vllm bench serve --save-result`, so a
//! hetsim scenario and a real benchmark line up key by key (`bench_serve.json` in a result
//! directory; docs/bench_serve.md says where the definitions differ).
//!
//! As vLLM defines them: TPOT of a request = (latency − TTFT) / (output tokens − 1), for
//! requests of more than one output token; ITL = every gap between two consecutive tokens of a
//! request; E2EL = latency; percentiles are numpy's (linear between order statistics), std the
//! population's; throughputs divide by the run's duration. Here each latency distribution is
//! read from a [`LogHistogram`] (bounded memory, within 0.05 % of the exact value).

use crate::records::{RequestRecord, RequestStatus, Source, SummaryRecord};
use crate::stats::LogHistogram;

/// What vLLM reports of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub std: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Latency {
    fn of(h: &LogHistogram) -> Latency {
        let ms = |v: Option<f64>| v.map(|v| v * 1e3);
        Latency {
            mean: ms(h.mean()),
            median: ms(h.interpolated(0.5)),
            std: ms(h.std()),
            p90: ms(h.interpolated(0.9)),
            p99: ms(h.interpolated(0.99)),
        }
    }
}

/// The latency distributions of a run, in seconds.
#[derive(Debug, Default)]
pub struct Latencies {
    pub ttft: LogHistogram,
    pub tpot: LogHistogram,
    pub itl: LogHistogram,
    pub e2el: LogHistogram,
}

/// One scenario as `vllm bench serve` would report it.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchServe {
    pub scenario: String,
    pub source: Source,
    pub duration: f64,
    pub completed: u64,
    pub failed: u64,
    /// Text tokens of the completed prompts: vLLM counts the tokenised prompt text, not the
    /// image placeholders' expansion.
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    /// hetsim's addition: the visual tokens the completed prompts' images became.
    pub total_visual_tokens: u64,
    pub request_throughput: f64,
    /// Requests meeting both SLOs (TTFT and TPOT) per second; vLLM's `--goodput ttft:… tpot:…`.
    pub request_goodput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub goodput_slo_ms: (f64, f64),
    pub ttft: Latency,
    pub tpot: Latency,
    pub itl: Latency,
    pub e2el: Latency,
}

impl BenchServe {
    /// From a summary row, the completed prompts' token counts and the latency distributions.
    pub fn new(
        summary: &SummaryRecord,
        input_tokens: u64,
        visual_tokens: u64,
        lat: &Latencies,
    ) -> BenchServe {
        let d = summary.duration_s;
        let per_s = |x: f64| if d > 0.0 { x / d } else { 0.0 };
        BenchServe {
            scenario: summary.scenario.clone(),
            source: summary.source,
            duration: d,
            completed: summary.finished,
            failed: summary.dropped,
            total_input_tokens: input_tokens,
            total_output_tokens: summary.output_tokens,
            total_visual_tokens: visual_tokens,
            request_throughput: summary.throughput_rps,
            request_goodput: summary.goodput_rps,
            output_throughput: summary.output_tokens_per_s,
            total_token_throughput: per_s((input_tokens + summary.output_tokens) as f64),
            goodput_slo_ms: (summary.slo_ttft_s * 1e3, summary.slo_tpot_s * 1e3),
            ttft: Latency::of(&lat.ttft),
            tpot: Latency::of(&lat.tpot),
            itl: Latency::of(&lat.itl),
            e2el: Latency::of(&lat.e2el),
        }
    }

    /// From request rows (a real replay's) and the gaps between their consecutive tokens.
    pub fn from_requests(
        summary: &SummaryRecord,
        rows: &[&RequestRecord],
        itl_s: impl IntoIterator<Item = f64>,
    ) -> BenchServe {
        let mut lat = Latencies::default();
        let (mut input, mut visual) = (0, 0);
        for r in rows.iter().filter(|r| r.status == RequestStatus::Finished) {
            input += r.prompt_tokens;
            visual += r.visual_tokens;
            let record = |h: &mut LogHistogram, v: Option<f64>| {
                if let Some(v) = v.filter(|v| v.is_finite() && *v >= 0.0) {
                    h.record(v);
                }
            };
            record(&mut lat.ttft, r.ttft_s);
            record(&mut lat.tpot, r.tpot_s);
            record(&mut lat.e2el, r.e2e_s);
        }
        for g in itl_s.into_iter().filter(|g| g.is_finite() && *g >= 0.0) {
            lat.itl.record(g);
        }
        BenchServe::new(summary, input, visual, &lat)
    }

    /// vLLM's result keys (`mean_ttft_ms`, `p99_itl_ms`, …), with hetsim's `scenario` and
    /// `source` in front.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_string(), v);
        };
        put("scenario", self.scenario.clone().into());
        put("source", self.source.as_str().into());
        put("duration", self.duration.into());
        put("completed", self.completed.into());
        put("failed", self.failed.into());
        put("total_input_tokens", self.total_input_tokens.into());
        put("total_output_tokens", self.total_output_tokens.into());
        put("total_visual_tokens", self.total_visual_tokens.into());
        put("request_throughput", self.request_throughput.into());
        put("request_goodput", self.request_goodput.into());
        put("output_throughput", self.output_throughput.into());
        put("total_token_throughput", self.total_token_throughput.into());
        put(
            "goodput",
            serde_json::json!({"ttft": self.goodput_slo_ms.0, "tpot": self.goodput_slo_ms.1}),
        );
        for (name, l) in [
            ("ttft", &self.ttft),
            ("tpot", &self.tpot),
            ("itl", &self.itl),
            ("e2el", &self.e2el),
        ] {
            put(&format!("mean_{name}_ms"), l.mean.into());
            put(&format!("median_{name}_ms"), l.median.into());
            put(&format!("std_{name}_ms"), l.std.into());
            put(&format!("p90_{name}_ms"), l.p90.into());
            put(&format!("p99_{name}_ms"), l.p99.into());
        }
        serde_json::Value::Object(m)
    }
}

/// `bench_serve.json`: one object per scenario (and source), in run order.
pub fn file(rows: &[BenchServe]) -> String {
    let all: Vec<serde_json::Value> = rows.iter().map(BenchServe::to_json).collect();
    serde_json::to_string_pretty(&all).expect("plain JSON") + "\n"
}

pub const FILE: &str = "bench_serve.json";
