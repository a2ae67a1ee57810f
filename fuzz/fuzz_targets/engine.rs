//! Structure-aware: generates experiments that look valid (catalog models and GPUs, every
//! strategy with its roles, small workloads with every distribution, engine knobs, horizons) and
//! runs the simulator on each one that validates. A panic, an assertion (time backwards, KV over
//! capacity) or an internal error (exit 70) is a crash; an `InputError` is a fine answer.
#![no_main]

use arbitrary::Arbitrary;
use hetsim_sim::error::Error;
use libfuzzer_sys::fuzz_target;

const MODELS: [&str; 5] = [
    "llava-1.5-7b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "llama-3.1-8b",
    "vicuna-7b-v1.5",
];
const GPUS: [&str; 6] = [
    "H100-SXM",
    "A100-SXM-80GB",
    "L40S",
    "RTX-4090",
    "H200-SXM",
    "A100-PCIe-80GB",
];
const STRATEGIES: [(&str, &[&str]); 4] = [
    ("colocated", &["all"]),
    ("stage", &["prefill", "decode"]),
    ("modality", &["encoder", "llm"]),
    ("epd", &["encoder", "prefill", "decode"]),
];
const DTYPES: [&str; 4] = ["bf16", "fp16", "fp8", "fp32"];

/// A distribution with small integer parameters, so runs stay short.
#[derive(Arbitrary, Debug)]
enum Dist {
    Fixed(u16),
    Uniform(u16, u16),
    Normal(u16, u8, u16, u16),
    LogNormal(u16, u8, u16, u16),
    Choice(Vec<(u16, u8)>),
}

impl Dist {
    fn yaml(&self, cap: u16) -> String {
        let c = |v: u16| v % cap;
        match self {
            Dist::Fixed(v) => c(*v).to_string(),
            Dist::Uniform(a, b) => format!("{{dist: uniform, min: {}, max: {}}}", c(*a), c(*b)),
            Dist::Normal(m, s, lo, hi) => format!(
                "{{dist: normal, mean: {}, std: {}, min: {}, max: {}}}",
                c(*m),
                s,
                c(*lo),
                c(*hi)
            ),
            Dist::LogNormal(m, s, lo, hi) => format!(
                "{{dist: lognormal, median: {}, sigma: {}, min: {}, max: {}}}",
                c(*m),
                f64::from(*s) / 64.0,
                c(*lo),
                c(*hi)
            ),
            Dist::Choice(vw) => {
                let values: Vec<String> =
                    vw.iter().take(4).map(|(v, _)| c(*v).to_string()).collect();
                let weights: Vec<String> = vw.iter().take(4).map(|(_, w)| w.to_string()).collect();
                format!(
                    "{{dist: choice, values: [{}], weights: [{}]}}",
                    values.join(", "),
                    weights.join(", ")
                )
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Case {
    model: u8,
    dtype: u8,
    strategy: u8,
    /// Per role: GPU type, instance count, log2 tp.
    pools: [(u8, u8, u8); 3],
    requests: u8,
    rate_tenths: u16,
    gamma_cv_tenths: Option<u8>,
    prompt: Dist,
    output: Dist,
    images: Option<(Dist, Dist, Dist)>,
    token_budget: u16,
    max_batch: u8,
    block_tokens: u8,
    encoder_batch: u8,
    chunked_prefill: bool,
    prefill_first: bool,
    memory_percent: u8,
    horizon_ms: Option<u16>,
    layerwise: bool,
    round_robin: bool,
    work_stealing: bool,
    fifo: bool,
    seed: u64,
}

impl Case {
    fn yaml(&self) -> String {
        let pick = |list: &[&'static str], i: u8| list[usize::from(i) % list.len()];
        let (strategy, roles) = STRATEGIES[usize::from(self.strategy) % STRATEGIES.len()];
        let mut node_gpus: Vec<(&str, u32)> = Vec::new();
        let mut instances = String::new();
        for (role, &(g, count, tp_log)) in roles.iter().zip(&self.pools) {
            let gpu = pick(&GPUS, g);
            let count = u32::from(count % 2) + 1;
            let tp = 1u32 << (tp_log % 3);
            match node_gpus.iter_mut().find(|(n, _)| *n == gpu) {
                Some(e) => e.1 += count * tp,
                None => node_gpus.push((gpu, count * tp)),
            }
            instances +=
                &format!("        - {{role: {role}, gpu: {gpu}, tp: {tp}, count: {count}}}\n");
        }
        let gpus: Vec<String> = node_gpus
            .iter()
            .map(|(g, n)| format!("{{gpu: {g}, count: {n}}}"))
            .collect();
        let arrival = match self.gamma_cv_tenths {
            Some(cv) => format!(
                "{{process: gamma, rate: {}, cv: {}}}",
                f64::from(self.rate_tenths % 2000 + 1) / 10.0,
                f64::from(cv % 100 + 1) / 10.0
            ),
            None => format!(
                "{{process: poisson, rate: {}}}",
                f64::from(self.rate_tenths % 2000 + 1) / 10.0
            ),
        };
        let images = match &self.images {
            Some((n, w, h)) => format!(
                "      images: {{count: {}, width: {}, height: {}}}\n",
                n.yaml(4),
                w.yaml(4096),
                h.yaml(4096)
            ),
            None => "      images: {count: 0}\n".to_string(),
        };
        let horizon = match self.horizon_ms {
            Some(ms) => format!("    run: {{horizon_s: {}}}\n", f64::from(ms) / 1000.0),
            None => String::new(),
        };
        format!(
            "scenarios:\n  - name: s\n    model: {model}\n    dtype: {dtype}\n    cluster:\n      link_sharing: {sharing}\n      nodes:\n        - {{name: box, gpus: [{gpus}]}}\n    deployment:\n      strategy: {strategy}\n      routing: {routing}\n      kv_transfer: {kv}\n      work_stealing: {steal}\n      instances:\n{instances}    engine: {{token_budget: {budget}, max_batch: {batch}, block_tokens: {block}, encoder_batch_images: {enc}, chunked_prefill: {chunked}, schedule: {schedule}, memory_utilization: {mem}}}\n    workload:\n      requests: {requests}\n      arrival: {arrival}\n      prompt_tokens: {prompt}\n      output_tokens: {output}\n{images}{horizon}",
            model = pick(&MODELS, self.model),
            dtype = pick(&DTYPES, self.dtype),
            sharing = if self.fifo { "fifo" } else { "fair" },
            gpus = gpus.join(", "),
            routing = if self.round_robin {
                "round_robin"
            } else {
                "least_loaded"
            },
            kv = if self.layerwise {
                "layerwise"
            } else {
                "after_prefill"
            },
            steal = self.work_stealing && strategy == "modality",
            budget = self.token_budget % 16384,
            batch = self.max_batch,
            block = self.block_tokens % 64,
            enc = self.encoder_batch % 64,
            chunked = self.chunked_prefill,
            schedule = if self.prefill_first {
                "prefill_first"
            } else {
                "mixed"
            },
            mem = f64::from(self.memory_percent % 100 + 1) / 100.0,
            requests = self.requests % 24 + 1,
            prompt = self.prompt.yaml(8192),
            output = self.output.yaml(512),
        )
    }
}

fuzz_target!(|case: Case| {
    let yaml = case.yaml();
    let path = std::path::Path::new("/nonexistent-fuzz-dir/exp.yaml");
    let Ok(exp) = hetsim_sim::experiment::parse_experiment(&yaml, path, Some(case.seed)) else {
        return;
    };
    let mut quiet = hetsim_sim::run::NoProgress;
    if let Err(Error::Internal(e)) = hetsim_sim::run::run_experiment(&exp, None, None, &mut quiet) {
        panic!("internal error on\n{yaml}\n{e}");
    }
});
