//! Experiment files: YAML in, validated `Scenario`s out.
//!
//! Every check happens here, before anything is simulated or written, and every error names the
//! file, the line and column where serde-saphyr could give them, the field path, the value and
//! what is allowed. `docs/experiment.md` documents every field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::bounds::{Bound, MAX_SIM_SECONDS};
use crate::catalog::{
    Dtype, GpuSpec, LinkKind, LinkSpec, ModelSpec, resolve_gpu, resolve_link, resolve_model_in,
};
use crate::cluster::{Cluster, Gpu, InstanceSpec, Node, Role};
use crate::cost::PricingSpec;
use crate::engine_spec::EngineSpec;
use crate::error::{InputError, unknown_name};
use crate::kv::MemoryPlan;
use crate::perf::{Efficiency, PhaseModel, Roofline};
use crate::profile::HardwareProfile;
use crate::work::{MAX_REQUESTS, MAX_SCENARIOS};
use crate::workload::{RATE, WorkloadCheck, WorkloadSpec};

/// Tokens in one LLM step: far past any engine's budget, and small enough that activation sizes
/// (tokens × hidden × bytes) stay exact.
const MAX_TOKEN_BUDGET: u64 = 1 << 24;
/// Sequences in one step, images in one encoder step.
const MAX_BATCH: u64 = 1 << 20;
/// Tokens per KV block (vLLM uses 16 to 256); blocks × block tokens stays inside u64.
const MAX_BLOCK_TOKENS: u64 = 1 << 16;
/// GPUs of one cluster, over all its nodes.
const MAX_CLUSTER_GPUS: usize = 65_536;
/// Efficiencies and shares of memory.
const SHARE: Bound = Bound::above(0.0, 1.0, "");
/// Latency targets.
const SLO_S: Bound = Bound::above(0.0, 1e6, "s");

/// Where modality and stage boundaries cut the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every instance runs every phase.
    Colocated,
    /// Prefill (with encoding) and decode apart: the KV cache is shipped.
    Stage,
    /// Vision encoder apart from the LLM: embeddings are shipped.
    Modality,
    /// Encoder, prefill and decode apart: embeddings, then KV, are shipped.
    Epd,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Colocated,
        Strategy::Stage,
        Strategy::Modality,
        Strategy::Epd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Colocated => "colocated",
            Strategy::Stage => "stage",
            Strategy::Modality => "modality",
            Strategy::Epd => "epd",
        }
    }

    /// The roles a deployment of this strategy consists of.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Strategy::Colocated => &[Role::All],
            Strategy::Stage => &[Role::Prefill, Role::Decode],
            Strategy::Modality => &[Role::Encoder, Role::Llm],
            Strategy::Epd => &[Role::Encoder, Role::Prefill, Role::Decode],
        }
    }

    pub fn has_encoder_pool(self) -> bool {
        self.roles().contains(&Role::Encoder)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvTransferMode {
    /// Ship the whole KV cache when prefill ends.
    #[default]
    AfterPrefill,
    /// Stream each layer's KV while the last prefill step computes the next layer.
    Layerwise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    RoundRobin,
    /// Fewest requests assigned and not yet done (ties: lowest instance id).
    #[default]
    LeastLoaded,
}

/// Latency targets a request must meet to count towards goodput.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    pub ttft_s: f64,
    pub tpot_s: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            ttft_s: 2.0,
            tpot_s: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Stop the simulated clock here; requests not done are reported dropped.
    #[serde(default)]
    pub horizon_s: Option<f64>,
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // free text for the reader of the file
    description: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    profile: Option<Spanned<PathBuf>>,
    #[serde(default)]
    defaults: ScenarioFields,
    scenarios: Vec<ScenarioFields>,
    #[serde(default)]
    matrix: Matrix,
    #[serde(default)]
    compare: Option<CompareSpec>,
}

/// What `hetsim cost` sets each scenario against: a baseline scenario, and numbers a source
/// reported for the others (printed beside ours).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    /// Base name of the baseline scenario (before any `[matrix]` suffix); default the first.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Where the reported numbers come from.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub reported: std::collections::BTreeMap<String, Reported>,
}

/// A source's numbers for one scenario against the baseline (fractions: 0.81 = 81 %).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reported {
    #[serde(default)]
    pub capex_saving: Option<f64>,
    #[serde(default)]
    pub throughput_ratio: Option<f64>,
    #[serde(default)]
    pub tokens_per_dollar_gain: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFields {
    name: Option<String>,
    model: Option<Spanned<String>>,
    dtype: Option<Spanned<String>>,
    cluster: Option<ClusterFields>,
    deployment: Option<DeploymentFields>,
    engine: Option<EngineSpec>,
    workload: Option<WorkloadSpec>,
    slo: Option<Slo>,
    pricing: Option<PricingSpec>,
    run: Option<RunSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFields {
    nodes: Vec<NodeFields>,
    #[serde(default)]
    network: Option<Spanned<String>>,
    #[serde(default)]
    link_sharing: crate::network::Sharing,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFields {
    name: Spanned<String>,
    gpus: Vec<GpuCount>,
    #[serde(default)]
    fabric: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuCount {
    gpu: Spanned<String>,
    count: Spanned<u32>,
    /// SM counts of the partitions each of these GPUs is split into (green contexts).
    #[serde(default)]
    partitions: Option<Spanned<Vec<u32>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFields {
    strategy: Spanned<Strategy>,
    instances: Vec<InstanceFields>,
    #[serde(default)]
    routing: Routing,
    #[serde(default)]
    kv_transfer: KvTransferMode,
    /// Modality-level: encoder GPUs also hold the LLM and serve requests whenever no image waits
    /// (cross-type work stealing).
    #[serde(default)]
    work_stealing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFields {
    role: Spanned<Role>,
    gpu: Spanned<String>,
    #[serde(default)]
    node: Option<Spanned<String>>,
    #[serde(default = "one")]
    tp: Spanned<u32>,
    #[serde(default = "one")]
    count: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    Spanned::new(
        1,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// Axes every scenario is run across (their product).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matrix {
    /// Arrival rates, requests/s (synthetic workloads).
    #[serde(default)]
    rate: Vec<f64>,
    /// Intra-node fabric of every node.
    #[serde(default)]
    fabric: Vec<Spanned<String>>,
    /// Network between nodes.
    #[serde(default)]
    network: Vec<Spanned<String>>,
    #[serde(default)]
    seed: Vec<u64>,
}

// ---- the validated result ----

/// One fully resolved configuration, ready to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub strategy: Strategy,
    pub model: ModelSpec,
    pub dtype: Dtype,
    pub cluster: Cluster,
    /// Per instance: what its memory holds (by `cluster.instances` index).
    pub memory: Vec<MemoryPlan>,
    /// Per instance: η and overheads after any calibration profile.
    pub efficiency: Vec<Efficiency>,
    /// Per instance: measured phase times of this model on its GPU, where the profile has them.
    pub measured_phases: Vec<Option<crate::profile::PhaseProfile>>,
    /// Per instance: where its performance model came from, which sets how far to trust it.
    pub basis: Vec<crate::trust::Basis>,
    pub routing: Routing,
    pub kv_transfer: KvTransferMode,
    /// Encoder instances also serve LLM work when idle (modality-level only).
    pub work_stealing: bool,
    pub engine: EngineSpec,
    pub workload: WorkloadSpec,
    pub slo: Slo,
    pub pricing: PricingSpec,
    pub run: RunSpec,
    pub seed: u64,
    /// Requests the workload makes (`workload.requests`, or the trace rows replayed).
    pub requests: u64,
    /// Values of the matrix axes this scenario was expanded with, for the result tables.
    pub rate: Option<f64>,
}

impl Scenario {
    /// The performance model of instance `i`: the roofline, with this scenario's efficiencies and
    /// (for tensor parallelism) its node's fabric, calibrated where the profile measured it.
    pub fn phase_model(&self, i: usize) -> Box<dyn PhaseModel> {
        let spec = &self.cluster.instances[i];
        let fabric = self.cluster.nodes[spec.node].fabric;
        let tp_link = (spec.tp() > 1).then_some(fabric);
        let mut r = Roofline::new(
            &self.model,
            self.dtype,
            spec.gpu,
            self.efficiency[i],
            spec.tp(),
            tp_link,
        );
        if let Some(&(_, bw, lat)) = self.cluster.calibrated.iter().find(|c| c.0 == fabric.name)
            && spec.tp() > 1
        {
            r.tp_link = Some((bw, lat));
        }
        match &self.measured_phases[i] {
            Some(p) if spec.tp() == 1 => {
                Box::new(crate::measured::MeasuredPhases::new(&self.model, p, r))
            }
            _ => Box::new(r),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub scenarios: Vec<Scenario>,
    pub compare: Option<CompareSpec>,
}

impl Experiment {
    /// Requests all scenarios together make.
    pub fn requests(&self) -> u64 {
        self.scenarios
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.requests))
    }
}

/// A scenario's name without its matrix suffix: `a[rate=4]` → `a`.
pub fn base_name(name: &str) -> &str {
    name.split_once('[').map_or(name, |(b, _)| b)
}

/// A place in the file, for messages.
struct At<'a> {
    file: &'a str,
}

impl At<'_> {
    fn err<T>(&self, spanned: Option<&Spanned<T>>, field: &str, e: InputError) -> InputError {
        match spanned.map(|s| s.referenced) {
            Some(loc) if loc.line() > 0 => e.context(format!(
                "{}:{}:{}: {field}",
                self.file,
                loc.line(),
                loc.column()
            )),
            _ => e.context(format!("{}: {field}", self.file)),
        }
    }
}

/// Reads, checks and expands an experiment file. `seed` overrides the file's.
pub fn load_experiment(path: &Path, seed: Option<u64>) -> Result<Experiment, InputError> {
    load_experiment_with_profile(path, seed, None)
}

/// As `load_experiment`, with the hardware profile at `profile` (relative to the working
/// directory, as a command-line path is) in place of the file's `profile:`: a fresh calibration
/// checked against a shipped experiment without editing it.
pub fn load_experiment_with_profile(
    path: &Path,
    seed: Option<u64>,
    profile: Option<&Path>,
) -> Result<Experiment, InputError> {
    load_experiment_sized(path, seed, profile, false)
}

/// As `load_experiment_with_profile`; `allow_large` lifts the limit on the number of scenarios
/// (`work::MAX_SCENARIOS`) and on the requests they make together (`work::MAX_REQUESTS`).
pub fn load_experiment_sized(
    path: &Path,
    seed: Option<u64>,
    profile: Option<&Path>,
    allow_large: bool,
) -> Result<Experiment, InputError> {
    let profile = profile
        .map(|p| HardwareProfile::load(p).map_err(|e| e.context("--profile")))
        .transpose()?;
    load_experiment_on(path, seed, profile, allow_large)
}

/// As `load_experiment_sized`, with a profile already in memory (`hetsim fit` simulates with a
/// profile it built).
pub fn load_experiment_on(
    path: &Path,
    seed: Option<u64>,
    profile: Option<HardwareProfile>,
    allow_large: bool,
) -> Result<Experiment, InputError> {
    let text = crate::input::read_text(path, "experiment")?;
    let exp = parse(&text, path, seed, profile, allow_large)?;
    crate::work::within("requests", exp.requests(), MAX_REQUESTS, allow_large).map_err(|e| {
        e.context(format!(
            "{}: workload.requests over all scenarios",
            path.display()
        ))
    })?;
    Ok(exp)
}

pub fn parse_experiment(
    text: &str,
    path: &Path,
    seed_override: Option<u64>,
) -> Result<Experiment, InputError> {
    parse(text, path, seed_override, None, false)
}

/// `profile`, when given, replaces the file's `profile:` (which is then not read).
fn parse(
    text: &str,
    path: &Path,
    seed_override: Option<u64>,
    profile: Option<HardwareProfile>,
    allow_large: bool,
) -> Result<Experiment, InputError> {
    let file_name = path.display().to_string();
    let at = At { file: &file_name };
    let file: ExperimentFile = serde_saphyr::from_str(text)
        .map_err(|e| InputError::new(format!("{file_name}: invalid experiment: {e}")))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    if file.scenarios.is_empty() {
        return Err(InputError::new(format!(
            "{file_name}: `scenarios` is empty: give at least one"
        )));
    }
    let profile = match (profile, &file.profile) {
        (Some(given), _) => Some(given),
        (None, Some(p)) => Some(
            HardwareProfile::load(&base_dir.join(&p.value))
                .map_err(|e| at.err(Some(p), "profile", e))?,
        ),
        (None, None) => None,
    };
    let m = &file.matrix;
    for (i, r) in m.rate.iter().enumerate() {
        RATE.check(&format!("matrix.rate[{i}]"), *r)
            .map_err(|e| e.context(&file_name))?;
    }
    let seeds: Vec<Option<u64>> = if m.seed.is_empty() {
        vec![seed_override.or(file.seed)]
    } else {
        m.seed.iter().map(|s| Some(*s)).collect()
    };
    let rates: Vec<Option<f64>> = if m.rate.is_empty() {
        vec![None]
    } else {
        m.rate.iter().map(|r| Some(*r)).collect()
    };
    let fabrics: Vec<Option<&Spanned<String>>> = if m.fabric.is_empty() {
        vec![None]
    } else {
        m.fabric.iter().map(Some).collect()
    };
    let networks: Vec<Option<&Spanned<String>>> = if m.network.is_empty() {
        vec![None]
    } else {
        m.network.iter().map(Some).collect()
    };

    let expanded = [fabrics.len(), networks.len(), rates.len(), seeds.len()]
        .iter()
        .fold(file.scenarios.len() as u64, |n, axis| {
            n.saturating_mul(*axis as u64)
        });
    crate::work::within("scenarios", expanded, MAX_SCENARIOS, allow_large)
        .map_err(|e| e.context(format!("{file_name}: scenarios × matrix")))?;
    let mut scenarios = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, fields) in file.scenarios.iter().enumerate() {
        let merged = merge(&file.defaults, fields);
        let base_name = merged
            .name
            .clone()
            .unwrap_or_else(|| format!("scenario{i}"));
        for fabric in &fabrics {
            for network in &networks {
                for rate in &rates {
                    for seed in &seeds {
                        let mut name = base_name.clone();
                        let mut tags = Vec::new();
                        if let Some(f) = fabric {
                            tags.push(format!("fabric={}", f.value));
                        }
                        if let Some(n) = network {
                            tags.push(format!("network={}", n.value));
                        }
                        if let Some(r) = rate {
                            tags.push(format!("rate={r}"));
                        }
                        if m.seed.len() > 1 {
                            tags.push(format!("seed={}", seed.unwrap_or(0)));
                        }
                        if !tags.is_empty() {
                            name = format!("{name}[{}]", tags.join(","));
                        }
                        if !names.insert(name.clone()) {
                            return Err(InputError::new(format!(
                                "{file_name}: scenario name `{name}` is used twice: names must be unique"
                            )));
                        }
                        let s = resolve(
                            &at,
                            &format!("scenarios[{i}]"),
                            &merged,
                            name,
                            base_dir,
                            profile.as_ref(),
                            *fabric,
                            *network,
                            *rate,
                            seed.unwrap_or(0),
                        )?;
                        scenarios.push(s);
                    }
                }
            }
        }
    }
    let name = file.name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if let Some(c) = &file.compare {
        for b in c.baseline.iter().chain(c.reported.keys()) {
            if !scenarios.iter().any(|s| base_name(&s.name) == b) {
                let names: Vec<&str> = scenarios.iter().map(|s| base_name(&s.name)).collect();
                return Err(
                    unknown_name("scenario", b, names).context(format!("{file_name}: compare"))
                );
            }
        }
    }
    Ok(Experiment {
        name,
        scenarios,
        compare: file.compare,
    })
}

/// Checks that `tree` (a scenario's fields, as an experiment's `defaults` block holds them)
/// has the shape of an experiment's scenario: field names and types, nothing resolved yet.
pub fn check_scenario_tree(tree: &serde_json::Value) -> Result<(), InputError> {
    ScenarioFields::deserialize(tree)
        .map(drop)
        .map_err(|e| InputError::new(e.to_string()))
}

/// Resolves a scenario given as a tree of an experiment's scenario fields (what `hetsim sweep`
/// expands each point of its axes into), with every check an experiment's scenario gets. `file`
/// names the file it came from, `base_dir` is where its relative paths start.
pub fn resolve_scenario_tree(
    tree: &serde_json::Value,
    name: &str,
    file: &str,
    base_dir: &Path,
    profile: Option<&HardwareProfile>,
    seed: u64,
) -> Result<Scenario, InputError> {
    let fields = ScenarioFields::deserialize(tree)
        .map_err(|e| InputError::new(format!("{file}: {name}: {e}")))?;
    let at = At { file };
    resolve(
        &at,
        name,
        &fields,
        name.to_string(),
        base_dir,
        profile,
        None,
        None,
        None,
        seed,
    )
}

/// A scenario's own blocks win; a block it gives replaces the default block whole.
fn merge(d: &ScenarioFields, s: &ScenarioFields) -> ScenarioFields {
    ScenarioFields {
        name: s.name.clone().or_else(|| d.name.clone()),
        model: s.model.clone().or_else(|| d.model.clone()),
        dtype: s.dtype.clone().or_else(|| d.dtype.clone()),
        cluster: s.cluster.clone().or_else(|| d.cluster.clone()),
        deployment: s.deployment.clone().or_else(|| d.deployment.clone()),
        engine: s.engine.clone().or_else(|| d.engine.clone()),
        workload: s.workload.clone().or_else(|| d.workload.clone()),
        slo: s.slo.or(d.slo),
        pricing: s.pricing.clone().or_else(|| d.pricing.clone()),
        run: s.run.clone().or_else(|| d.run.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    at: &At,
    path: &str,
    f: &ScenarioFields,
    name: String,
    base_dir: &Path,
    profile: Option<&HardwareProfile>,
    fabric_override: Option<&Spanned<String>>,
    network_override: Option<&Spanned<String>>,
    rate: Option<f64>,
    seed: u64,
) -> Result<Scenario, InputError> {
    let need = |field: &str| {
        InputError::new(format!(
            "{}: {path}: missing `{field}` (give it in the scenario or in `defaults`)",
            at.file
        ))
    };
    let model_name = f.model.as_ref().ok_or_else(|| need("model"))?;
    let model = resolve_model_in(&model_name.value, base_dir)
        .map_err(|e| at.err(Some(model_name), &format!("{path}.model"), e))?;
    if model.llm.cross_attention.is_some() {
        // The engine ships an image as its LLM tokens' embeddings and a request's KV as the
        // context's: for a cross-attention model both would be silently wrong (one token per
        // image; no vision-state KV). `hetsim transfer` reads these models.
        return Err(at.err(
            Some(model_name),
            &format!("{path}.model"),
            InputError::new(format!(
                "`{}` feeds images through cross-attention layers, which the simulator does not model yet (their \
                 vision-state KV and the vision states a modality split ships); `hetsim transfer` reads it",
                model.name
            )),
        ));
    }
    let dtype = match &f.dtype {
        Some(d) => {
            Dtype::parse(&d.value).map_err(|e| at.err(Some(d), &format!("{path}.dtype"), e))?
        }
        None => Dtype::Bf16,
    };
    let engine = f.engine.clone().unwrap_or_default();
    validate_engine(&engine).map_err(|e| e.context(format!("{}: {path}.engine", at.file)))?;
    let slo = f.slo.unwrap_or_default();
    for (field, v) in [("slo.ttft_s", slo.ttft_s), ("slo.tpot_s", slo.tpot_s)] {
        SLO_S
            .check(field, v)
            .map_err(|e| e.context(format!("{}: {path}", at.file)))?;
    }
    let pricing = f.pricing.clone().unwrap_or_default();
    pricing
        .validate()
        .map_err(|e| e.context(format!("{}: {path}", at.file)))?;
    let run = f.run.clone().unwrap_or_default();
    if let Some(h) = run.horizon_s {
        Bound::above(0.0, MAX_SIM_SECONDS, "s")
            .check("run.horizon_s", h)
            .map_err(|e| e.context(format!("{}: {path}", at.file)))?;
    }

    let mut workload = f.workload.clone().ok_or_else(|| need("workload"))?;
    if let Some(t) = workload.trace.as_mut() {
        t.path = base_dir.join(&t.path);
    }
    if let Some(r) = rate {
        let a = workload.arrival.as_ref().ok_or_else(|| {
            InputError::new(format!("{}: matrix.rate needs a synthetic workload (`workload.arrival`), but {path} replays a trace", at.file))
        })?;
        workload.arrival = Some(a.with_rate(r));
    }
    let check = workload
        .validate()
        .map_err(|e| e.context(format!("{}: {path}", at.file)))?;
    if model.vision.is_none() {
        text_only(&workload, check).map_err(|e| {
            e.context(format!(
                "{}: {path}: model `{}` is text-only",
                at.file, model.name
            ))
        })?;
    } else {
        images_fit(&model, &workload, check)
            .map_err(|e| e.context(format!("{}: {path}", at.file)))?;
    }

    let deployment = f.deployment.as_ref().ok_or_else(|| need("deployment"))?;
    let strategy = deployment.strategy.value;
    let cluster_fields = f.cluster.as_ref().ok_or_else(|| need("cluster"))?;
    let (cluster, memory, efficiency) = build_cluster(
        at,
        path,
        cluster_fields,
        deployment,
        &model,
        dtype,
        &engine,
        profile,
        fabric_override,
        network_override,
    )?;
    // Every GPU needs a price in the chosen mode: the summary's dollars come from it.
    cluster
        .usd_per_second(&pricing)
        .map_err(|e| e.context(format!("{}: {path}.pricing", at.file)))?;
    if strategy.has_encoder_pool() && model.vision.is_none() {
        return Err(at.err(
            Some(&deployment.strategy),
            &format!("{path}.deployment.strategy"),
            InputError::new(format!(
                "`{}` needs a vision encoder, and model `{}` is text-only",
                strategy.name(),
                model.name
            )),
        ));
    }
    let mut measured_phases = Vec::new();
    for inst in &cluster.instances {
        let table = match profile {
            Some(p) => p
                .phases(&model.name, inst.gpu.name, dtype)
                .map_err(|e| e.context(format!("{}: {path}.dtype: profile", at.file)))?,
            None => None,
        };
        measured_phases.push(table.cloned());
    }
    let basis = cluster
        .instances
        .iter()
        .zip(&measured_phases)
        .map(|(inst, m)| {
            crate::trust::Basis::of(
                inst.gpu,
                inst.tp(),
                m.is_some(),
                profile.and_then(|p| p.operator_fit.as_ref()),
            )
        })
        .collect();
    Ok(Scenario {
        name,
        basis,
        strategy,
        model,
        dtype,
        cluster,
        memory,
        efficiency,
        measured_phases,
        routing: deployment.routing,
        kv_transfer: deployment.kv_transfer,
        work_stealing: deployment.work_stealing,
        engine,
        workload,
        slo,
        pricing,
        run,
        seed,
        requests: check.requests,
        rate,
    })
}

/// Every image the workload can make is one the model's preprocessor takes (Qwen2.5-VL refuses
/// an aspect ratio over 200): found here, with the field or trace row, not mid-run.
fn images_fit(model: &ModelSpec, w: &WorkloadSpec, check: WorkloadCheck) -> Result<(), InputError> {
    if let (Some(t), Some((row, width, height))) = (&w.trace, check.most_elongated_image) {
        model
            .image_tokens(u64::from(width), u64::from(height))
            .map_err(|e| e.context(format!("trace {} row {row}", t.path.display())))?;
    }
    let Some(rule) = w.image_rule() else {
        return Ok(());
    };
    if rule.count.range().1 < 0.5 {
        return Ok(());
    }
    let field = images_field(w);
    // Drawn sizes are rounded and at least 1 pixel (`ImageDist::sample`).
    let side = |v: f64| v.round().max(1.0) as u64;
    let (w_lo, w_hi) = rule.width.range();
    let (h_lo, h_hi) = rule.height.range();
    for (width, height) in [(w_hi, h_lo), (w_lo, h_hi)] {
        model.image_tokens(side(width), side(height)).map_err(|e| {
            e.context(format!(
                "`workload.{field}` can draw {}×{}",
                side(width),
                side(height)
            ))
        })?;
    }
    Ok(())
}

/// The field under `workload` that gives the images' rule.
fn images_field(w: &WorkloadSpec) -> &'static str {
    match &w.trace {
        Some(t) if t.attach_images.is_some() => "trace.attach_images",
        _ => "images",
    }
}

/// A text-only model accepts a workload only if no request can carry an image.
fn text_only(w: &WorkloadSpec, check: WorkloadCheck) -> Result<(), InputError> {
    if let (Some(t), Some(row)) = (&w.trace, check.first_row_with_images) {
        return Err(InputError::new(format!(
            "trace {} row {row} carries images: replay a text-only trace or use a vision model",
            t.path.display()
        )));
    }
    let field = images_field(w);
    match w.image_rule() {
        Some(rule) if rule.count.mean() > 0.0 => Err(InputError::new(format!(
            "the workload has images (`workload.{field}`); set `{field}: {{count: 0}}`{}",
            if w.trace.is_some() {
                " or remove it"
            } else {
                ""
            }
        ))),
        _ => Ok(()),
    }
}

fn validate_engine(e: &EngineSpec) -> Result<(), InputError> {
    for (field, v, max) in [
        ("token_budget", e.token_budget, MAX_TOKEN_BUDGET),
        ("max_batch", e.max_batch, MAX_BATCH),
        ("block_tokens", e.block_tokens, MAX_BLOCK_TOKENS),
        ("encoder_batch_images", e.encoder_batch_images, MAX_BATCH),
    ] {
        Bound::closed(1.0, max as f64, "").check_u64(field, v)?;
    }
    SHARE.check("memory_utilization", e.memory_utilization)?;
    e.efficiency.validate("efficiency")
}

/// The partitions one node's GPU entry splits its GPU into: one GPU, the node's only entry,
/// split into partitions whose SMs add up to at most the GPU's.
fn partitions_of(
    spec: &'static GpuSpec,
    node: &NodeFields,
    g: &GpuCount,
    p: &Spanned<Vec<u32>>,
) -> Result<Vec<&'static GpuSpec>, InputError> {
    if node.gpus.len() != 1 || g.count.value != 1 {
        return Err(InputError::new(
            "a node with a partitioned GPU holds that one GPU (count: 1) and nothing else: give other GPUs their own node",
        ));
    }
    if p.value.len() < 2 {
        return Err(InputError::new(format!(
            "{} partition(s): give the SM counts of at least two",
            p.value.len()
        )));
    }
    let total: u64 = p.value.iter().map(|&n| u64::from(n)).sum();
    if total > u64::from(spec.sm_count) {
        return Err(InputError::new(format!(
            "partitions of {total} SMs in all: {} has {}",
            spec.name, spec.sm_count
        )));
    }
    p.value
        .iter()
        .map(|&sms| crate::catalog::partition::partition(spec, sms))
        .collect()
}

/// The default fabric of a node: the NVLink all its GPUs share, else PCIe of the slowest
/// generation, staged through the host if any GPU lacks peer-to-peer.
fn default_fabric(gpus: &[&'static GpuSpec]) -> &'static LinkSpec {
    if let Some(nv) = gpus[0].nvlink
        && gpus.iter().all(|g| g.nvlink == Some(nv))
    {
        return resolve_link(nv).expect("catalog GPUs name catalog links");
    }
    let generation = gpus
        .iter()
        .map(|g| g.pcie_gen)
        .min()
        .expect("a node has GPUs");
    let staged = gpus.iter().any(|g| !g.pcie_p2p);
    LinkSpec::pcie(generation, staged).expect("PCIe 3–5 are in the catalog")
}

#[allow(clippy::too_many_arguments)]
fn build_cluster(
    at: &At,
    path: &str,
    c: &ClusterFields,
    d: &DeploymentFields,
    model: &ModelSpec,
    dtype: Dtype,
    engine: &EngineSpec,
    profile: Option<&HardwareProfile>,
    fabric_override: Option<&Spanned<String>>,
    network_override: Option<&Spanned<String>>,
) -> Result<(Cluster, Vec<MemoryPlan>, Vec<Efficiency>), InputError> {
    if c.nodes.is_empty() {
        return Err(InputError::new(format!(
            "{}: {path}.cluster.nodes is empty",
            at.file
        )));
    }
    let network = match network_override.or(c.network.as_ref()) {
        Some(n) => {
            let l = resolve_link(&n.value)
                .map_err(|e| at.err(Some(n), &format!("{path}.cluster.network"), e))?;
            if l.kind != LinkKind::Network {
                return Err(at.err(Some(n), &format!("{path}.cluster.network"), InputError::new(format!(
                    "`{}` is an intra-node link; between nodes use 10gbe, 25gbe, 100gbe, 200gbe, 400gbe, ib-hdr or ib-ndr",
                    l.name
                ))));
            }
            l
        }
        None => resolve_link("100gbe").expect("in catalog"),
    };
    let mut nodes = Vec::new();
    let mut gpus: Vec<Gpu> = Vec::new();
    for (ni, n) in c.nodes.iter().enumerate() {
        let np = format!("{path}.cluster.nodes[{ni}]");
        if nodes.iter().any(|x: &Node| x.name == n.name.value) {
            return Err(at.err(
                Some(&n.name),
                &format!("{np}.name"),
                InputError::new(format!("node name `{}` is used twice", n.name.value)),
            ));
        }
        let mut specs = Vec::new();
        for (gi, g) in n.gpus.iter().enumerate() {
            let spec = resolve_gpu(&g.gpu.value)
                .map_err(|e| at.err(Some(&g.gpu), &format!("{np}.gpus[{gi}].gpu"), e))?;
            if g.count.value == 0 || g.count.value > 1024 {
                return Err(at.err(
                    Some(&g.count),
                    &format!("{np}.gpus[{gi}].count"),
                    InputError::new(format!("{} GPUs: give 1 to 1024", g.count.value)),
                ));
            }
            match &g.partitions {
                None => specs.extend(std::iter::repeat_n(spec, g.count.value as usize)),
                Some(p) => {
                    let field = format!("{np}.gpus[{gi}].partitions");
                    let parts =
                        partitions_of(spec, n, g, p).map_err(|e| at.err(Some(p), &field, e))?;
                    specs.extend(parts);
                }
            }
            if gpus.len() + specs.len() > MAX_CLUSTER_GPUS {
                return Err(at.err(
                    Some(&g.count),
                    &format!("{np}.gpus[{gi}].count"),
                    InputError::new(format!(
                        "the cluster passes {MAX_CLUSTER_GPUS} GPUs here: allowed at most {MAX_CLUSTER_GPUS}"
                    )),
                ));
            }
        }
        if specs.is_empty() {
            return Err(InputError::new(format!("{}: {np}.gpus is empty", at.file)));
        }
        let partitioned = specs.iter().any(|g| g.partition_of.is_some());
        let fabric = match fabric_override.or(n.fabric.as_ref()) {
            Some(f) if partitioned => {
                return Err(at.err(
                    Some(f),
                    &format!("{np}.fabric"),
                    InputError::new(format!(
                        "`{}`: the partitions of one GPU reach each other through its memory; give no fabric for this node",
                        f.value
                    )),
                ));
            }
            None if partitioned => crate::catalog::partition::on_device_link(specs[0]),
            Some(f) => {
                let field = format!("{np}.fabric");
                let l = resolve_link(&f.value).map_err(|e| at.err(Some(f), &field, e))?;
                check_fabric(l, &specs).map_err(|e| at.err(Some(f), &field, e))?;
                l
            }
            None => default_fabric(&specs),
        };
        let first = gpus.len();
        for spec in specs {
            let pcie_link = LinkSpec::pcie(spec.pcie_gen, fabric.host_staged || !spec.pcie_p2p)
                .expect("PCIe 3–5 are in the catalog");
            // On a PCIe fabric, the GPUs' ports run at the fabric's generation.
            let pcie_link = if fabric.kind == LinkKind::Pcie {
                fabric
            } else {
                pcie_link
            };
            gpus.push(Gpu {
                spec,
                node: ni,
                pcie: pcie_link,
            });
        }
        nodes.push(Node {
            name: n.name.value.clone(),
            fabric,
            gpus: (first..gpus.len()).collect(),
        });
    }

    // Place instances on free GPUs, in file order.
    let mut free: Vec<bool> = vec![true; gpus.len()];
    let mut instances = Vec::new();
    let mut memory = Vec::new();
    let mut efficiency = Vec::new();
    let strategy = d.strategy.value;
    if d.work_stealing && strategy != Strategy::Modality {
        return Err(at.err(
            Some(&d.strategy),
            &format!("{path}.deployment.work_stealing"),
            InputError::new(format!(
                "work stealing lets encoder GPUs serve LLM requests in a `modality` deployment; strategy `{}` has no such split",
                strategy.name()
            )),
        ));
    }
    for (ii, inst) in d.instances.iter().enumerate() {
        let ip = format!("{path}.deployment.instances[{ii}]");
        let role = inst.role.value;
        if !strategy.roles().contains(&role) {
            let allowed: Vec<&str> = strategy.roles().iter().map(|r| r.name()).collect();
            return Err(at.err(
                Some(&inst.role),
                &format!("{ip}.role"),
                InputError::new(format!(
                    "role `{}` does not belong to strategy `{}`, whose roles are: {}",
                    role.name(),
                    strategy.name(),
                    allowed.join(", ")
                )),
            ));
        }
        let gpu = resolve_gpu(&inst.gpu.value)
            .map_err(|e| at.err(Some(&inst.gpu), &format!("{ip}.gpu"), e))?;
        let tp = inst.tp.value as usize;
        if tp == 0 || !tp.is_power_of_two() || tp > 64 {
            return Err(at.err(
                Some(&inst.tp),
                &format!("{ip}.tp"),
                InputError::new(format!("tp = {tp}: give a power of two from 1 to 64")),
            ));
        }
        if inst.count.value == 0 {
            return Err(at.err(
                Some(&inst.count),
                &format!("{ip}.count"),
                InputError::new("count = 0: give at least 1"),
            ));
        }
        let node_filter = match &inst.node {
            Some(n) => Some(
                nodes
                    .iter()
                    .position(|x| x.name == n.value)
                    .ok_or_else(|| {
                        at.err(
                            Some(n),
                            &format!("{ip}.node"),
                            unknown_name("node", &n.value, nodes.iter().map(|x| x.name.as_str())),
                        )
                    })?,
            ),
            None => None,
        };
        let (holds_vision, holds_llm) = holds(model, strategy, role, d.work_stealing);
        tp_splits_heads(model, tp as u64, holds_vision, holds_llm)
            .map_err(|e| at.err(Some(&inst.tp), &format!("{ip}.tp"), e))?;
        // An operator fit carries to every GPU; a GPU probe alone sets only GEMM and memory.
        let eff = match (
            profile.and_then(|p| p.operator_fit.as_ref()),
            profile.and_then(|p| p.gpu(gpu.name)),
        ) {
            (Some(fit), _) => fit.efficiency,
            (None, Some(gp)) => engine.efficiency.calibrated(gp),
            (None, None) => engine.efficiency,
        };
        let plan = MemoryPlan::new(
            model,
            dtype,
            gpu,
            tp as u64,
            holds_vision,
            holds_llm,
            engine,
        )
        .map_err(|e| at.err(Some(&inst.gpu), &ip, e))?;
        for _ in 0..inst.count.value {
            let node = nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| node_filter.is_none_or(|f| f == *i))
                .find_map(|(i, n)| {
                    let mine: Vec<usize> = n
                        .gpus
                        .iter()
                        .copied()
                        .filter(|g| free[*g] && gpus[*g].spec.name == gpu.name)
                        .take(tp)
                        .collect();
                    (mine.len() == tp).then_some((i, mine))
                });
            let Some((node, group)) = node else {
                let where_ = inst
                    .node
                    .as_ref()
                    .map_or("any node".to_string(), |n| format!("node `{}`", n.value));
                return Err(at.err(Some(&inst.count), &format!("{ip}.count"), InputError::new(format!(
                    "no {tp} free {} GPU(s) left on {where_} for instance {} of {}: the cluster has too few of that GPU",
                    gpu.name,
                    instances.iter().filter(|x: &&InstanceSpec| x.gpu.name == gpu.name).count() + 1,
                    inst.count.value
                ))));
            };
            for g in &group {
                free[*g] = false;
            }
            instances.push(InstanceSpec {
                id: instances.len(),
                role,
                gpu,
                node,
                gpus: group,
            });
            memory.push(plan.clone());
            efficiency.push(eff);
        }
    }
    for role in strategy.roles() {
        if !instances.iter().any(|i| i.role == *role) {
            return Err(at.err(
                Some(&d.strategy),
                &format!("{path}.deployment"),
                InputError::new(format!(
                    "strategy `{}` needs at least one `{}` instance",
                    strategy.name(),
                    role.name()
                )),
            ));
        }
    }
    let calibrated = crate::catalog::LINKS
        .iter()
        .filter_map(|l| {
            profile?
                .link(l.name)
                .map(|p| (l.name, p.bandwidth_gbs * 1e9, p.latency_us * 1e-6))
        })
        .collect();
    let mut cluster = Cluster::new(nodes, gpus, network, instances, calibrated);
    cluster.sharing = c.link_sharing;
    Ok((cluster, memory, efficiency))
}

/// What an instance of `role` holds in memory: (the vision encoder, the LLM).
pub(crate) fn holds(
    model: &ModelSpec,
    strategy: Strategy,
    role: Role,
    work_stealing: bool,
) -> (bool, bool) {
    let vision = match role {
        Role::Encoder | Role::All => true,
        Role::Prefill => !strategy.has_encoder_pool(),
        Role::Llm | Role::Decode => false,
    } && model.vision.is_some();
    (vision, role != Role::Encoder || work_stealing)
}

/// Tensor parallelism splits attention by heads (vLLM's rule): every GPU gets a whole number of
/// query heads, and the KV heads either split evenly or are replicated evenly.
pub(crate) fn tp_splits_heads(
    model: &ModelSpec,
    tp: u64,
    holds_vision: bool,
    holds_llm: bool,
) -> Result<(), InputError> {
    let l = &model.llm;
    if holds_llm && !l.heads.is_multiple_of(tp) {
        return Err(InputError::new(format!(
            "tp = {tp} does not divide the {} attention heads of `{}`",
            l.heads, model.name
        )));
    }
    if holds_llm && !l.kv_heads.is_multiple_of(tp) && !tp.is_multiple_of(l.kv_heads) {
        return Err(InputError::new(format!(
            "tp = {tp} neither divides nor is a multiple of the {} KV heads of `{}`",
            l.kv_heads, model.name
        )));
    }
    match &model.vision {
        Some(v) if holds_vision && !v.vit.heads.is_multiple_of(tp) => {
            Err(InputError::new(format!(
                "tp = {tp} does not divide the {} vision-encoder heads of `{}`",
                v.vit.heads, model.name
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn check_fabric(
    l: &'static LinkSpec,
    gpus: &[&'static GpuSpec],
) -> Result<(), InputError> {
    match l.kind {
        LinkKind::Network => Err(InputError::new(format!(
            "`{}` is a network link; inside a node use pcie3/4/5, pcie3/4/5-host-staged or nvlink2/3/4/5",
            l.name
        ))),
        // GPUs without NVLink sit on the node's PCIe; another NVLink generation cannot mix.
        LinkKind::NvLink => match gpus.iter().find(|g| g.nvlink.is_some_and(|n| n != l.name)) {
            Some(g) => Err(InputError::new(format!(
                "{} has {}, not {}: one node has one NVLink generation",
                g.name,
                g.nvlink.unwrap_or_default(),
                l.name
            ))),
            None if gpus.iter().all(|g| g.nvlink.is_none()) => Err(InputError::new(format!(
                "no GPU of this node has NVLink (`{}`); use a PCIe fabric (pcie3/4/5, or -host-staged for GeForce cards)",
                l.name
            ))),
            None => Ok(()),
        },
        LinkKind::Pcie => match gpus.iter().find(|g| !l.host_staged && !g.pcie_p2p) {
            Some(g) => Err(InputError::new(format!(
                "{} has no PCIe peer-to-peer: use `{}-host-staged`",
                g.name, l.name
            ))),
            None => Ok(()),
        },
        LinkKind::OnDevice => Err(InputError::new(format!(
            "`{}` is the copy between partitions of one GPU: give the node `partitions` instead",
            l.name
        ))),
    }
}

// ---- plan files (`hetsim plan`) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // free text for the reader of the file
    description: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    profile: Option<Spanned<PathBuf>>,
    /// Model, workload, SLO (the p99 targets), pricing and engine shared by every candidate.
    defaults: ScenarioFields,
    budget: Budget,
    search: SearchSpec,
    /// GPUs owned: at most this many of each listed type in any candidate.
    #[serde(default)]
    inventory: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    references: Vec<ReferenceFields>,
}

/// The most a plan may cost.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Purchase price of the GPUs (with any NVLink premium).
    #[serde(default)]
    pub capex_usd: Option<f64>,
    /// Cost per hour in the pricing mode of the plan.
    #[serde(default)]
    pub usd_per_hour: Option<f64>,
}

/// The space of clusters `hetsim plan` searches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    pub gpus: Vec<String>,
    pub max_gpus: u32,
    #[serde(default = "all_strategies")]
    pub strategies: Vec<Strategy>,
    /// The fabric of the (single) node, or a list of them to search over (link options); default:
    /// from the GPUs, as in experiments.
    #[serde(default)]
    pub fabric: Fabrics,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub kv_transfer: KvTransferMode,
    /// Tensor-parallel degrees a pool's instances may use (every instance of a pool the same).
    #[serde(default = "tp_one")]
    pub tp: Vec<u32>,
    /// Work stealing off and/or on, for `modality` candidates (encoder GPUs also serve the LLM).
    #[serde(default = "stealing_off")]
    pub work_stealing: Vec<bool>,
    /// GPUs a node holds: candidates larger than that span several nodes; default one node.
    #[serde(default)]
    pub gpus_per_node: Option<u32>,
    /// The network between nodes; default as in experiments (100gbe).
    #[serde(default)]
    pub network: Option<String>,
}

/// One fabric name or a list of them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(untagged)]
pub enum Fabrics {
    /// From the GPUs.
    #[default]
    Default,
    One(String),
    Many(Vec<String>),
}

impl Fabrics {
    /// Each fabric searched; `None` is the default from the GPUs.
    pub fn each(&self) -> Vec<Option<&str>> {
        match self {
            Fabrics::Default => vec![None],
            Fabrics::One(f) => vec![Some(f)],
            Fabrics::Many(list) => list.iter().map(|f| Some(f.as_str())).collect(),
        }
    }
}

fn tp_one() -> Vec<u32> {
    vec![1]
}

fn stealing_off() -> Vec<bool> {
    vec![false]
}

fn all_strategies() -> Vec<Strategy> {
    Strategy::ALL.to_vec()
}

/// A cluster given by hand (e.g. a paper's), scored beside the search.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFields {
    name: String,
    strategy: Strategy,
    instances: Vec<PoolSpec>,
    #[serde(default)]
    work_stealing: bool,
    /// The node's fabric; default: the search's where it gives one, else from the GPUs.
    #[serde(default)]
    fabric: Option<String>,
}

/// A pool of identical instances: `count` instances of `tp` GPUs each.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub role: Role,
    pub gpu: String,
    pub count: u32,
    #[serde(default = "one_gpu")]
    pub tp: u32,
}

fn one_gpu() -> u32 {
    1
}

impl PoolSpec {
    /// GPUs the pool takes.
    pub fn gpus(&self) -> u32 {
        self.count.saturating_mul(self.tp)
    }
}

const BUDGET_USD: Bound = Bound::above(0.0, 1e12, "USD");
const BUDGET_USD_PER_HOUR: Bound = Bound::above(0.0, 1e9, "USD/h");

/// A cluster given by hand in a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub name: String,
    pub strategy: Strategy,
    pub pools: Vec<PoolSpec>,
    pub work_stealing: bool,
    pub fabric: Option<String>,
}

/// A validated plan file: builds candidate scenarios on demand.
pub struct Plan {
    pub name: String,
    pub budget: Budget,
    pub search: SearchSpec,
    pub references: Vec<Reference>,
    /// At most this many GPUs of each listed type (catalog names); types not listed: no limit.
    pub inventory: Vec<(String, u32)>,
    file: String,
    base_dir: PathBuf,
    profile: Option<HardwareProfile>,
    defaults: ScenarioFields,
    seed: u64,
    /// A scenario built from the defaults, for the workload, SLO and pricing every candidate shares.
    template: Option<Scenario>,
}

pub fn load_plan(path: &Path, seed: Option<u64>) -> Result<Plan, InputError> {
    let text = crate::input::read_text(path, "plan")?;
    parse_plan(&text, path, seed)
}

/// A plan from its text, as if read from `path` (paths in it are relative to its directory).
pub fn parse_plan(text: &str, path: &Path, seed: Option<u64>) -> Result<Plan, InputError> {
    let file_name = path.display().to_string();
    let f: PlanFile = serde_saphyr::from_str(text)
        .map_err(|e| InputError::new(format!("{file_name}: invalid plan: {e}")))?;
    let at = At { file: &file_name };
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let profile = match &f.profile {
        Some(p) => Some(
            HardwareProfile::load(&base_dir.join(&p.value))
                .map_err(|e| at.err(Some(p), "profile", e))?,
        ),
        None => None,
    };
    for (field, v, bound) in [
        ("budget.capex_usd", f.budget.capex_usd, BUDGET_USD),
        (
            "budget.usd_per_hour",
            f.budget.usd_per_hour,
            BUDGET_USD_PER_HOUR,
        ),
    ] {
        if let Some(v) = v {
            bound.check(field, v).map_err(|e| e.context(&file_name))?;
        }
    }
    if f.budget.capex_usd.is_none() && f.budget.usd_per_hour.is_none() {
        return Err(InputError::new(format!(
            "{file_name}: budget: give capex_usd (purchase) or usd_per_hour"
        )));
    }
    if f.search.gpus.is_empty()
        || f.search.max_gpus == 0
        || f.search.max_gpus > f.search.gpus_per_node.map_or(16, |_| 64)
        || f.search.strategies.is_empty()
    {
        return Err(InputError::new(format!(
            "{file_name}: search: give at least one GPU type, max_gpus from 1 to 16 (to 64 with gpus_per_node) and at least one strategy"
        )));
    }
    for g in &f.search.gpus {
        resolve_gpu(g).map_err(|e| e.context(format!("{file_name}: search.gpus")))?;
    }
    let mut tps = f.search.tp.clone();
    tps.sort_unstable();
    tps.dedup();
    if tps.is_empty()
        || tps.len() != f.search.tp.len()
        || tps.iter().any(|t| {
            !t.is_power_of_two()
                || *t > f.search.max_gpus
                || f.search.gpus_per_node.is_some_and(|n| *t > n)
        })
    {
        return Err(InputError::new(format!(
            "{file_name}: search.tp {:?}: give distinct powers of two, at most max_gpus ({}) and \
             gpus_per_node (a TP group stays in one node)",
            f.search.tp, f.search.max_gpus
        )));
    }
    if f.search.gpus_per_node.is_some_and(|n| n == 0 || n > 64) {
        return Err(InputError::new(format!(
            "{file_name}: search.gpus_per_node {:?}: give 1 to 64",
            f.search.gpus_per_node
        )));
    }
    if let Some(net) = &f.search.network {
        let l = resolve_link(net).map_err(|e| e.context(format!("{file_name}: search.network")))?;
        if l.kind != LinkKind::Network {
            return Err(InputError::new(format!(
                "{file_name}: search.network: `{net}` is an intra-node link; between nodes use 10gbe, 25gbe, 100gbe, 200gbe, 400gbe, ib-hdr or ib-ndr"
            )));
        }
    }
    let mut stealing = f.search.work_stealing.clone();
    stealing.dedup();
    if stealing.is_empty() || stealing.len() != f.search.work_stealing.len() {
        return Err(InputError::new(format!(
            "{file_name}: search.work_stealing {:?}: give [false], [true] or [false, true]",
            f.search.work_stealing
        )));
    }
    let fabrics = f.search.fabric.each();
    let mut distinct = fabrics.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if fabrics.is_empty() || distinct.len() != fabrics.len() {
        return Err(InputError::new(format!(
            "{file_name}: search.fabric: give a link name or a list of distinct ones"
        )));
    }
    for fab in fabrics.into_iter().flatten() {
        let l = resolve_link(fab).map_err(|e| e.context(format!("{file_name}: search.fabric")))?;
        if l.kind == LinkKind::Network {
            return Err(InputError::new(format!(
                "{file_name}: search.fabric: `{fab}` is a network link; inside a node use pcie3/4/5, pcie3/4/5-host-staged or nvlink2/3/4/5"
            )));
        }
    }
    let mut inventory = Vec::new();
    for (g, n) in &f.inventory {
        let spec = resolve_gpu(g).map_err(|e| e.context(format!("{file_name}: inventory")))?;
        inventory.push((spec.name.to_string(), *n));
    }
    let seed = seed.or(f.seed).unwrap_or(0);
    let mut plan = Plan {
        name: f.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        budget: f.budget,
        search: f.search.clone(),
        references: f
            .references
            .iter()
            .map(|r| Reference {
                name: r.name.clone(),
                strategy: r.strategy,
                pools: r.instances.clone(),
                work_stealing: r.work_stealing,
                fabric: r.fabric.clone().or_else(|| match &f.search.fabric {
                    Fabrics::One(one) => Some(one.clone()),
                    Fabrics::Default | Fabrics::Many(_) => None,
                }),
            })
            .collect(),
        inventory,
        file: file_name.clone(),
        base_dir,
        profile,
        defaults: f.defaults.clone(),
        seed,
        template: None,
    };
    // The template: one GPU running everything, to resolve the blocks every candidate shares (the
    // first searched GPU type the model fits; else the first one's error says why).
    let mut first_err = None;
    for g in &f.search.gpus {
        match plan.scenario(
            "template",
            Strategy::Colocated,
            &[PoolSpec {
                role: Role::All,
                gpu: g.clone(),
                count: 1,
                tp: 1,
            }],
            false,
            None,
        ) {
            Ok(t) => {
                plan.template = Some(t);
                break;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if plan.template.is_none() {
        return Err(first_err.expect("at least one GPU type was tried"));
    }
    for r in &plan.references {
        let name = &r.name;
        for (i, p) in r.pools.iter().enumerate() {
            // As a node's GPU count in an experiment; the pools of one type are summed.
            Bound::closed(1.0, 1024.0, "GPUs")
                .check_u64(&format!("instances[{i}].count"), u64::from(p.gpus()))
                .map_err(|e| e.context(format!("{file_name}: references `{name}`")))?;
        }
        plan.scenario(
            name,
            r.strategy,
            &r.pools,
            r.work_stealing,
            r.fabric.as_deref(),
        )
        .map_err(|e| e.context(format!("references `{name}`")))?;
    }
    Ok(plan)
}

impl Plan {
    /// The plan file, as errors name it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The seed every candidate is simulated with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn template(&self) -> &Scenario {
        self.template.as_ref().expect("set by load_plan")
    }

    /// A candidate: pools of instances (`tp` GPUs each) on one node with `fabric` (None: from
    /// the GPUs).
    pub fn scenario(
        &self,
        name: &str,
        strategy: Strategy,
        pools: &[PoolSpec],
        work_stealing: bool,
        fabric: Option<&str>,
    ) -> Result<Scenario, InputError> {
        let sp = |v: String| {
            Spanned::new(
                v,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            )
        };
        let su = |v: u32| {
            Spanned::new(
                v,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            )
        };
        // Instances fill nodes of `gpus_per_node` in pool order, a TP group never split across
        // two (the placement in `build_cluster` then puts each instance where it was counted).
        let per_node = self.search.gpus_per_node.unwrap_or(u32::MAX);
        let mut nodes: Vec<(u32, Vec<GpuCount>)> = vec![(0, Vec::new())];
        for p in pools {
            for _ in 0..p.count {
                let (used, _) = nodes.last().expect("one node at least");
                if *used > 0 && used.saturating_add(p.tp) > per_node {
                    nodes.push((0, Vec::new()));
                }
                let (used, gpus) = nodes.last_mut().expect("one node at least");
                *used = used.saturating_add(p.tp);
                match gpus.iter_mut().find(|g| g.gpu.value == p.gpu) {
                    // Saturating: a sum past 1024 is refused as a node's GPU count.
                    Some(g) => g.count.value = g.count.value.saturating_add(p.tp),
                    None => gpus.push(GpuCount {
                        gpu: sp(p.gpu.clone()),
                        count: su(p.tp),
                        partitions: None,
                    }),
                }
            }
        }
        let single = nodes.len() == 1;
        let mut fields = self.defaults.clone();
        fields.name = Some(name.to_string());
        fields.cluster = Some(ClusterFields {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (_, gpus))| NodeFields {
                    name: sp(if single {
                        "box".into()
                    } else {
                        format!("node{i}")
                    }),
                    gpus,
                    fabric: fabric.map(|f| sp(f.to_string())),
                })
                .collect(),
            network: self.search.network.clone().map(sp),
            link_sharing: crate::network::Sharing::Fair,
        });
        fields.deployment = Some(DeploymentFields {
            strategy: Spanned::new(
                strategy,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            instances: pools
                .iter()
                .map(|p| InstanceFields {
                    role: Spanned::new(
                        p.role,
                        serde_saphyr::Location::UNKNOWN,
                        serde_saphyr::Location::UNKNOWN,
                    ),
                    gpu: sp(p.gpu.clone()),
                    node: None,
                    tp: su(p.tp),
                    count: su(p.count),
                })
                .collect(),
            routing: self.search.routing,
            kv_transfer: self.search.kv_transfer,
            work_stealing,
        });
        let at = At { file: &self.file };
        resolve(
            &at,
            "defaults",
            &fields,
            name.to_string(),
            &self.base_dir,
            self.profile.as_ref(),
            None,
            None,
            None,
            self.seed,
        )
    }
}
