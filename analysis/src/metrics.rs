//! The polars queries: scenario identities from `summary`, and pooled metrics for any grouping of
//! (scenario, source) pairs — one scenario for the comparison table, every seed and run at one
//! rate for a latency–throughput curve point.
//!
//! Pooling rule: counts, bytes, durations and dollars are summed over the rows of a group and rates
//! are ratios of those sums (throughput = Σ finished / Σ duration, Tokens/$ = Σ output tokens /
//! Σ cost); latency percentiles are computed over all finished requests of the group. With one run
//! of one scenario this is exactly that run's numbers.

use std::collections::BTreeMap;

use hetsim_sim::error::InputError;
use hetsim_sim::records::RequestStatus;
use polars::prelude::*;

use crate::columns::{f64s, strs, texts, u64s};
use crate::load::Results;

/// Percentiles reported for TTFT, TPOT and end-to-end latency.
pub const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")];

/// The quantile rule: nearest rank (the smallest value with at least q·n values at or below it),
/// the rule the simulator's own summary uses, so the two agree up to its histogram resolution.
pub const QUANTILE_METHOD: QuantileMethod = QuantileMethod::Equiprobable;

/// What one (scenario, source) is: constant across the runs that hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub scenario: String,
    pub source: String,
    pub strategy: String,
    pub model: String,
    pub gpus: String,
    pub pricing: String,
    pub rate_rps: Option<f64>,
    /// The p99 targets the scenario was judged against.
    pub slo_ttft_s: Option<f64>,
    pub slo_tpot_s: Option<f64>,
    /// Result directories holding this scenario.
    pub runs: u64,
}

/// Pooled numbers of a group of (scenario, source) rows; see the module doc for the rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub rows: u64,
    pub requests: u64,
    pub finished: u64,
    pub dropped: u64,
    pub output_tokens: u64,
    pub emb_bytes: u64,
    pub kv_bytes: u64,
    /// Requests meeting both SLOs (slo_attainment × requests, summed).
    pub good: f64,
    pub duration_s: f64,
    pub cost_usd: f64,
    pub usd_per_hour: f64,
    /// p50, p90, p99 over finished requests.
    pub ttft: [Option<f64>; 3],
    pub tpot: [Option<f64>; 3],
    pub e2e: [Option<f64>; 3],
    /// Bytes shipped per catalog link (transfers table).
    pub link_bytes: BTreeMap<String, u64>,
    /// The port with the highest utilization (mean over the group's rows), and that utilization.
    pub busiest_port: Option<(String, f64)>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

impl Metrics {
    pub fn throughput_rps(&self) -> Option<f64> {
        ratio(self.finished as f64, self.duration_s)
    }
    pub fn output_tokens_per_s(&self) -> Option<f64> {
        ratio(self.output_tokens as f64, self.duration_s)
    }
    pub fn goodput_rps(&self) -> Option<f64> {
        ratio(self.good, self.duration_s)
    }
    pub fn slo_attainment(&self) -> Option<f64> {
        ratio(self.good, self.requests as f64)
    }
    pub fn tokens_per_dollar(&self) -> Option<f64> {
        ratio(self.output_tokens as f64, self.cost_usd)
    }
    /// Embedding + KV bytes per arrived request.
    pub fn bytes_per_request(&self) -> Option<f64> {
        ratio(
            (self.emb_bytes + self.kv_bytes) as f64,
            self.requests as f64,
        )
    }
}

pub fn input(what: &str) -> impl Fn(PolarsError) -> InputError + '_ {
    move |e| InputError::new(format!("reading results ({what}): {e}"))
}

fn keys() -> [Expr; 2] {
    [col("scenario"), col("source")]
}

/// One row per (scenario, source) of the summary tables, in name order. A scenario must describe
/// the same deployment in every directory that holds it; two different experiments that reuse a
/// name cannot be pooled, and saying so beats averaging them.
pub fn scenarios(r: &Results) -> Result<Vec<Scenario>, InputError> {
    let fixed = ["strategy", "model", "gpus", "pricing", "rate_rps"];
    let mut aggs: Vec<Expr> = Vec::new();
    for f in fixed {
        aggs.push(col(f).first().alias(f));
        aggs.push(col(f).n_unique().alias(format!("{f}_n")));
        aggs.push(
            col(f)
                .cast(DataType::String)
                .unique_stable()
                .first()
                .alias(format!("{f}_a")),
        );
        aggs.push(
            col(f)
                .cast(DataType::String)
                .unique_stable()
                .last()
                .alias(format!("{f}_b")),
        );
    }
    aggs.push(len().alias("rows"));
    aggs.push(col("run").n_unique().alias("runs"));
    aggs.push(col("slo_ttft_s").first().alias("slo_ttft_s"));
    aggs.push(col("slo_tpot_s").first().alias("slo_tpot_s"));
    let df = r
        .summary
        .clone()
        .group_by(keys())
        .agg(aggs)
        .sort(["scenario", "source"], SortMultipleOptions::default())
        .collect()
        .map_err(input("summary"))?;
    let get = || -> PolarsResult<_> {
        let scenario = texts(&df, "scenario")?;
        let source = texts(&df, "source")?;
        let rows = u64s(&df, "rows")?;
        let runs = u64s(&df, "runs")?;
        let mut out = Vec::new();
        for i in 0..df.height() {
            if rows[i] != runs[i] {
                return Ok(Err(InputError::new(format!(
                    "scenario `{}` ({}) appears {} times in the summary of one results directory",
                    scenario[i], source[i], rows[i]
                ))));
            }
            for f in fixed {
                if u64s(&df, &format!("{f}_n"))?[i] > 1 {
                    let a = strs(&df, &format!("{f}_a"))?[i].clone();
                    let b = strs(&df, &format!("{f}_b"))?[i].clone();
                    return Ok(Err(InputError::new(format!(
                        "scenario `{}` ({}) has {f} `{}` in one results directory and `{}` in \
                         another: rename one to compare them",
                        scenario[i],
                        source[i],
                        a.unwrap_or_else(|| "null".into()),
                        b.unwrap_or_else(|| "null".into()),
                    ))));
                }
            }
            out.push(Scenario {
                scenario: scenario[i].clone(),
                source: source[i].clone(),
                strategy: texts(&df, "strategy")?[i].clone(),
                model: texts(&df, "model")?[i].clone(),
                gpus: texts(&df, "gpus")?[i].clone(),
                pricing: texts(&df, "pricing")?[i].clone(),
                rate_rps: f64s(&df, "rate_rps")?[i],
                slo_ttft_s: f64s(&df, "slo_ttft_s")?[i],
                slo_tpot_s: f64s(&df, "slo_tpot_s")?[i],
                runs: runs[i],
            });
        }
        Ok(Ok(out))
    };
    get().map_err(input("summary"))?
}

/// Assigns (scenario, source) pairs to named groups, as a frame to join onto any table.
pub fn grouping(pairs: &[(String, String, String)]) -> Result<LazyFrame, InputError> {
    let scenario: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let source: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let group: Vec<&str> = pairs.iter().map(|p| p.2.as_str()).collect();
    let df = df!("scenario" => scenario, "source" => source, "group" => group)
        .map_err(input("grouping"))?;
    Ok(df.lazy())
}

fn with_group(table: &LazyFrame, groups: &LazyFrame) -> LazyFrame {
    table.clone().join(
        groups.clone(),
        keys(),
        keys(),
        JoinArgs::new(JoinType::Inner),
    )
}

/// Pooled metrics per (group, source). `pairs` lists (scenario, source, group).
pub fn aggregate(
    r: &Results,
    pairs: &[(String, String, String)],
) -> Result<BTreeMap<(String, String), Metrics>, InputError> {
    let groups = grouping(pairs)?;
    let by = [col("group"), col("source")];
    let sums = [
        "requests",
        "finished",
        "dropped",
        "output_tokens",
        "emb_bytes",
        "kv_bytes",
    ];
    let mut aggs: Vec<Expr> = sums.iter().map(|c| col(*c).sum().alias(*c)).collect();
    aggs.extend([
        len().alias("rows"),
        (col("slo_attainment") * col("requests").cast(DataType::Float64))
            .sum()
            .alias("good"),
        col("duration_s").sum().alias("duration_s"),
        col("cost_usd").sum().alias("cost_usd"),
        col("usd_per_hour").mean().alias("usd_per_hour"),
    ]);
    let summary = with_group(&r.summary, &groups)
        .group_by(by.clone())
        .agg(aggs)
        .collect()
        .map_err(input("summary"))?;

    let lat = ["ttft_s", "tpot_s", "e2e_s"];
    let mut qs = Vec::new();
    for c in lat {
        for (q, name) in QUANTILES {
            qs.push(
                col(c)
                    .quantile(lit(q), QUANTILE_METHOD)
                    .alias(format!("{c}_{name}")),
            );
        }
    }
    let latency = with_group(&r.requests, &groups)
        .filter(col("status").eq(lit(RequestStatus::Finished.as_str())))
        .group_by(by.clone())
        .agg(qs)
        .collect()
        .map_err(input("requests"))?;

    let link_bytes = with_group(&r.transfers, &groups)
        .group_by([col("group"), col("source"), col("link")])
        .agg([col("bytes").sum().alias("bytes")])
        .collect()
        .map_err(input("transfers"))?;

    let ports = with_group(&r.links, &groups)
        .group_by([col("group"), col("source"), col("port")])
        .agg([col("utilization").mean().alias("utilization")])
        // Ties go to the first port by name, so the answer is deterministic.
        .sort(["port"], SortMultipleOptions::default())
        .collect()
        .map_err(input("links"))?;

    let fill = || -> PolarsResult<BTreeMap<(String, String), Metrics>> {
        let mut out: BTreeMap<(String, String), Metrics> = BTreeMap::new();
        let g = texts(&summary, "group")?;
        let s = texts(&summary, "source")?;
        let u = |c: &str| u64s(&summary, c);
        let f = |c: &str| -> PolarsResult<Vec<f64>> {
            Ok(f64s(&summary, c)?
                .into_iter()
                .map(|v| v.unwrap_or(0.0))
                .collect())
        };
        let (rows, requests, finished, dropped) =
            (u("rows")?, u("requests")?, u("finished")?, u("dropped")?);
        let (output_tokens, emb_bytes, kv_bytes) =
            (u("output_tokens")?, u("emb_bytes")?, u("kv_bytes")?);
        let (good, duration, cost, per_hour) = (
            f("good")?,
            f("duration_s")?,
            f("cost_usd")?,
            f("usd_per_hour")?,
        );
        for i in 0..summary.height() {
            out.insert(
                (g[i].clone(), s[i].clone()),
                Metrics {
                    rows: rows[i],
                    requests: requests[i],
                    finished: finished[i],
                    dropped: dropped[i],
                    output_tokens: output_tokens[i],
                    emb_bytes: emb_bytes[i],
                    kv_bytes: kv_bytes[i],
                    // slo_attainment × requests is a whole number up to rounding.
                    good: good[i].round(),
                    duration_s: duration[i],
                    cost_usd: cost[i],
                    usd_per_hour: per_hour[i],
                    ..Metrics::default()
                },
            );
        }
        let g = texts(&latency, "group")?;
        let s = texts(&latency, "source")?;
        let mut cols = Vec::new();
        for c in lat {
            for (_, name) in QUANTILES {
                cols.push(f64s(&latency, &format!("{c}_{name}"))?);
            }
        }
        for i in 0..latency.height() {
            if let Some(m) = out.get_mut(&(g[i].clone(), s[i].clone())) {
                for k in 0..3 {
                    m.ttft[k] = cols[k][i];
                    m.tpot[k] = cols[3 + k][i];
                    m.e2e[k] = cols[6 + k][i];
                }
            }
        }
        let g = texts(&link_bytes, "group")?;
        let s = texts(&link_bytes, "source")?;
        let l = texts(&link_bytes, "link")?;
        let b = u64s(&link_bytes, "bytes")?;
        for i in 0..link_bytes.height() {
            if let Some(m) = out.get_mut(&(g[i].clone(), s[i].clone())) {
                m.link_bytes.insert(l[i].clone(), b[i]);
            }
        }
        let g = texts(&ports, "group")?;
        let s = texts(&ports, "source")?;
        let p = texts(&ports, "port")?;
        let util = f64s(&ports, "utilization")?;
        for i in 0..ports.height() {
            let u = util[i].unwrap_or(0.0);
            if let Some(m) = out.get_mut(&(g[i].clone(), s[i].clone()))
                && m.busiest_port.as_ref().is_none_or(|(_, best)| u > *best)
            {
                m.busiest_port = Some((p[i].clone(), u));
            }
        }
        Ok(out)
    };
    fill().map_err(input("pooling"))
}

/// The curve a scenario belongs to: its name without the `rate=` and `seed=` matrix values, so
/// `c[rate=4,fabric=pcie5,seed=2]` joins `c[fabric=pcie5]` and different fabrics stay apart.
pub fn curve_name(scenario: &str) -> String {
    let Some(open) = scenario.find('[') else {
        return scenario.to_string();
    };
    let Some(inner) = scenario[open + 1..].strip_suffix(']') else {
        return scenario.to_string();
    };
    let kept: Vec<&str> = inner
        .split(',')
        .filter(|kv| !kv.starts_with("rate=") && !kv.starts_with("seed="))
        .collect();
    if kept.is_empty() {
        scenario[..open].to_string()
    } else {
        format!("{}[{}]", &scenario[..open], kept.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_drop_rate_and_seed_only() {
        assert_eq!(curve_name("c-modality[rate=4]"), "c-modality");
        assert_eq!(
            curve_name("c[rate=4,fabric=pcie5,seed=2]"),
            "c[fabric=pcie5]"
        );
        assert_eq!(curve_name("plain"), "plain");
        assert_eq!(curve_name("odd[rate=4"), "odd[rate=4");
    }
}

/// Pooling checked on hand-made result files (written with the simulator's own writer), where
/// every expected number can be worked out on paper.
#[cfg(test)]
mod pooling {
    use std::path::{Path, PathBuf};

    use hetsim_sim::experiment::Strategy;
    use hetsim_sim::output::ResultWriter;
    use hetsim_sim::records::{
        DropReason, LinkRecord, RequestRecord, Source, SummaryRecord, TransferKind, TransferRecord,
    };

    use super::*;
    use crate::load::load;

    fn request(scenario: &str, id: u64, ttft: Option<f64>, tpot: Option<f64>) -> RequestRecord {
        RequestRecord {
            scenario: scenario.into(),
            strategy: Strategy::Modality,
            request_id: id,
            status: if ttft.is_some() {
                RequestStatus::Finished
            } else {
                RequestStatus::Dropped(DropReason::KvCapacity)
            },
            arrival_s: id as f64,
            n_images: 1,
            visual_tokens: 576,
            prompt_tokens: 20,
            output_tokens: 100,
            emb_bytes: 0,
            kv_bytes: 0,
            ttft_s: ttft,
            tpot_s: tpot,
            e2e_s: ttft.map(|t| t + 1.0),
            encode_start_s: None,
            encode_end_s: None,
            emb_transfer_start_s: None,
            emb_transfer_end_s: None,
            prefill_start_s: None,
            prefill_end_s: None,
            kv_transfer_start_s: None,
            kv_transfer_end_s: None,
            decode_start_s: None,
            finish_s: None,
            encoder_instance: None,
            prefill_instance: None,
            decode_instance: None,
            preemptions: 0,
            source: Source::Sim,
        }
    }

    /// requests, finished, duration, cost, slo_attainment
    fn summary(scenario: &str, n: (u64, u64), duration: f64, cost: f64, slo: f64) -> SummaryRecord {
        SummaryRecord {
            scenario: scenario.into(),
            strategy: Strategy::Modality,
            model: "llava-1.5-7b".into(),
            gpus: "2×RTX-4090 + 2×A100-PCIe-80GB".into(),
            gpu_count: 4,
            cluster_gpu_count: 4,
            rate_rps: Some(2.0),
            seed: 1,
            requests: n.0,
            finished: n.1,
            dropped: n.0 - n.1,
            duration_s: duration,
            throughput_rps: n.1 as f64 / duration,
            output_tokens: 100 * n.1,
            output_tokens_per_s: 100.0 * n.1 as f64 / duration,
            goodput_rps: 0.0,
            slo_attainment: slo,
            good_output_tokens: 0,
            slo_ttft_s: 1.0,
            slo_tpot_s: 0.1,
            ttft_p50_s: None,
            ttft_p90_s: None,
            ttft_p99_s: None,
            tpot_p50_s: None,
            tpot_p90_s: None,
            tpot_p99_s: None,
            e2e_p50_s: None,
            e2e_p90_s: None,
            e2e_p99_s: None,
            emb_bytes: 0,
            kv_bytes: 0,
            bytes_sent: 0,
            bytes_received: 0,
            busiest_link: None,
            busiest_link_utilization: 0.0,
            pricing: "capex",
            usd_per_hour: cost / duration * 3600.0,
            cost_usd: cost,
            tokens_per_dollar: 100.0 * n.1 as f64 / cost,
            good_tokens_per_dollar: 0.0,
            utilization: None,
            mfu: None,
            mbu: None,
            batch_occupancy: None,
            prediction_basis: "same-arch",
            prediction_error_pct: Some(12.0),
            source: Source::Sim,
        }
    }

    fn transfer(scenario: &str, id: u64, bytes: u64) -> TransferRecord {
        TransferRecord {
            scenario: scenario.into(),
            request_id: id,
            kind: TransferKind::Embedding,
            src_instance: 0,
            dst_instance: 1,
            link: "pcie4-host-staged",
            bytes,
            flows: 1,
            ready_s: 0.0,
            start_s: 0.0,
            end_s: 0.001,
            source: Source::Sim,
        }
    }

    fn port(scenario: &str, port: &str, utilization: f64) -> LinkRecord {
        LinkRecord {
            scenario: scenario.into(),
            port: port.into(),
            link: "pcie4-host-staged",
            bytes: 1,
            busy_s: 0.1,
            utilization,
            source: Source::Sim,
        }
    }

    fn write(
        dir: &Path,
        reqs: &[RequestRecord],
        sums: &[SummaryRecord],
        xfers: &[TransferRecord],
        ports: &[LinkRecord],
    ) {
        let mut w = ResultWriter::create(dir).unwrap();
        for r in reqs {
            w.requests.append(r).unwrap();
        }
        for s in sums {
            w.summary.append(s).unwrap();
        }
        for t in xfers {
            w.transfers.append(t).unwrap();
        }
        for p in ports {
            w.links.append(p).unwrap();
        }
        w.commit().unwrap();
    }

    pub fn two_runs(root: &Path) -> Vec<PathBuf> {
        let s = "s[rate=2]";
        let a = root.join("a");
        write(
            &a,
            &[
                request(s, 0, Some(0.4), Some(0.01)),
                request(s, 1, Some(0.1), None),
                request(s, 2, Some(0.3), Some(0.03)),
                request(s, 3, None, None),
                request(s, 4, Some(0.2), Some(0.02)),
            ],
            &[summary(s, (5, 4), 10.0, 2.0, 0.6)],
            &[transfer(s, 0, 100), transfer(s, 1, 100)],
            &[port(s, "box/gpu0/up", 0.1), port(s, "box/gpu1/up", 0.15)],
        );
        let b = root.join("b");
        write(
            &b,
            &[
                request(s, 0, Some(2.0), Some(0.05)),
                request(s, 1, Some(1.0), Some(0.04)),
            ],
            &[summary(s, (2, 2), 5.0, 1.0, 0.5)],
            &[transfer(s, 0, 50)],
            &[port(s, "box/gpu0/up", 0.3), port(s, "box/gpu1/up", 0.15)],
        );
        vec![a, b]
    }

    #[test]
    fn two_runs_pool_as_worked_out_by_hand() {
        let root = tempfile::tempdir().unwrap();
        let dirs = two_runs(root.path());
        let r = load(&dirs).unwrap();
        let sc = scenarios(&r).unwrap();
        assert_eq!(sc.len(), 1);
        assert_eq!((sc[0].runs, sc[0].rate_rps), (2, Some(2.0)));
        let pairs = vec![("s[rate=2]".to_string(), "sim".to_string(), "g".to_string())];
        let m = &aggregate(&r, &pairs).unwrap()[&("g".to_string(), "sim".to_string())];
        assert_eq!((m.requests, m.finished, m.dropped), (7, 6, 1));
        assert_eq!(m.throughput_rps(), Some(6.0 / 15.0));
        // 0.6 × 5 + 0.5 × 2 = 4 requests met the SLO, of 7.
        assert_eq!(m.goodput_rps(), Some(4.0 / 15.0));
        assert_eq!(m.slo_attainment(), Some(4.0 / 7.0));
        assert_eq!(m.tokens_per_dollar(), Some(600.0 / 3.0));
        // TTFTs 0.1 0.2 0.3 0.4 1.0 2.0 (the dropped request has none): nearest rank.
        assert_eq!(m.ttft, [Some(0.3), Some(2.0), Some(2.0)]);
        // TPOTs 0.01 0.02 0.03 0.04 0.05 (request 1 of run a has none).
        assert_eq!(m.tpot, [Some(0.03), Some(0.05), Some(0.05)]);
        assert_eq!(m.link_bytes["pcie4-host-staged"], 250);
        // gpu0: mean of 0.1 and 0.3 = 0.2 beats gpu1's 0.15.
        let (p, u) = m.busiest_port.clone().unwrap();
        assert_eq!(p, "box/gpu0/up");
        assert!((u - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_name_reused_for_another_deployment_is_kept_apart() {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = two_runs(root.path());
        let c = root.path().join("c");
        let mut other = summary("s[rate=2]", (1, 1), 1.0, 1.0, 1.0);
        other.gpus = "4×A100-PCIe-80GB".into();
        write(
            &c,
            &[request("s[rate=2]", 0, Some(9.0), None)],
            &[other],
            &[],
            &[],
        );
        dirs.push(c);
        let r = load(&dirs).unwrap();
        assert_eq!(r.renamed.len(), 1);
        let sc = scenarios(&r).unwrap();
        let names: Vec<(&str, u64)> = sc.iter().map(|s| (s.scenario.as_str(), s.runs)).collect();
        // a and b share a deployment and still pool; c is on its own.
        assert_eq!(names, vec![("a+b/s[rate=2]", 2), ("c/s[rate=2]", 1)]);
        let pairs: Vec<_> = sc
            .iter()
            .map(|s| (s.scenario.clone(), s.source.clone(), s.scenario.clone()))
            .collect();
        let m = aggregate(&r, &pairs).unwrap();
        let key = |n: &str| (n.to_string(), "sim".to_string());
        assert_eq!(m[&key("a+b/s[rate=2]")].finished, 6);
        assert_eq!(m[&key("c/s[rate=2]")].ttft[0], Some(9.0));
    }
}

#[cfg(test)]
pub use pooling::two_runs as pooling_fixture;

/// The query README.md shows, kept compiling and giving the numbers `aggregate` gives.
#[cfg(test)]
mod readme {
    use polars::prelude::*;

    #[test]
    fn the_readme_query_runs() -> PolarsResult<()> {
        let root = tempfile::tempdir().unwrap();
        let dirs = super::pooling_fixture(root.path());
        let path = dirs[0].join("requests.parquet");
        let path = path.to_str().unwrap();
        // --- as in README.md ---
        let requests = LazyFrame::scan_parquet(PlRefPath::new(path), ScanArgsParquet::default())?;
        let table = requests
            .filter(col("status").eq(lit("finished")))
            .group_by([col("scenario"), col("strategy")])
            .agg([
                col("ttft_s")
                    .quantile(lit(0.99), QuantileMethod::Equiprobable) // nearest rank, as hetsim
                    .alias("ttft_p99_s"),
                (col("emb_bytes") + col("kv_bytes"))
                    .mean()
                    .alias("bytes_per_request"),
            ])
            .sort(["ttft_p99_s"], SortMultipleOptions::default())
            .collect()?;
        // ---
        assert_eq!(super::f64s(&table, "ttft_p99_s")?, vec![Some(0.4)]);
        Ok(())
    }
}
