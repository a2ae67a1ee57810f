//! Result rows: the public schema shared by the simulator (`source = sim`) and the GPU harness
//! (`source = exec`). Each table is a row type that lists its columns with a description;
//! `docs/schema.md` is generated from these lists (`hetsim schema`), so doc and files agree.

/// Arrow/parquet type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Utf8,
    UInt64,
    Float64,
}

pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

/// One value of a row, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Str(Option<&'a str>),
    U64(Option<u64>),
    F64(Option<f64>),
}

pub trait Row {
    const TABLE: &'static str;
    const COLUMNS: &'static [Column];
    fn cells(&self) -> Vec<Cell<'_>>;
}

use Cell::*;
use ColumnType::*;

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub scenario: String,
    pub strategy: &'static str,
    pub request_id: u64,
    /// `finished`, or `dropped:<reason>`.
    pub status: String,
    pub arrival_s: f64,
    pub n_images: u64,
    pub visual_tokens: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub emb_bytes: u64,
    pub kv_bytes: u64,
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
    pub encode_start_s: Option<f64>,
    pub encode_end_s: Option<f64>,
    pub emb_transfer_start_s: Option<f64>,
    pub emb_transfer_end_s: Option<f64>,
    pub prefill_start_s: Option<f64>,
    pub prefill_end_s: Option<f64>,
    pub kv_transfer_start_s: Option<f64>,
    pub kv_transfer_end_s: Option<f64>,
    pub decode_start_s: Option<f64>,
    pub finish_s: Option<f64>,
    pub encoder_instance: Option<u64>,
    pub prefill_instance: Option<u64>,
    pub decode_instance: Option<u64>,
    pub preemptions: u64,
    pub source: &'static str,
}

impl Row for RequestRecord {
    const TABLE: &'static str = "requests";
    const COLUMNS: &'static [Column] = &[
        col(
            "scenario",
            Utf8,
            false,
            "scenario name (with matrix values in brackets)",
        ),
        col(
            "strategy",
            Utf8,
            false,
            "colocated | stage | modality | epd",
        ),
        col("request_id", UInt64, false, "0-based, in arrival order"),
        col(
            "status",
            Utf8,
            false,
            "`finished`, or `dropped:<reason>` (kv_capacity: can never fit an instance's KV; horizon: not done when the clock stopped)",
        ),
        col(
            "arrival_s",
            Float64,
            false,
            "arrival time, s from the run's start",
        ),
        col("n_images", UInt64, false, "images in the request"),
        col(
            "visual_tokens",
            UInt64,
            false,
            "LLM tokens the images become (the model's own rule)",
        ),
        col(
            "prompt_tokens",
            UInt64,
            false,
            "text tokens of the prompt (visual tokens not included)",
        ),
        col("output_tokens", UInt64, false, "tokens generated"),
        col(
            "emb_bytes",
            UInt64,
            false,
            "embedding bytes shipped between instances (N_v · d · b; 0 when encoder and LLM are one instance)",
        ),
        col(
            "kv_bytes",
            UInt64,
            false,
            "KV-cache bytes shipped prefill → decode (2 · L · n_kv · d_head · s · b with s = visual + prompt tokens; 0 when not shipped)",
        ),
        col(
            "ttft_s",
            Float64,
            true,
            "time to first token: first token − arrival",
        ),
        col(
            "tpot_s",
            Float64,
            true,
            "time per output token after the first: (finish − first token) / (output_tokens − 1)",
        ),
        col("e2e_s", Float64, true, "finish − arrival"),
        col("encode_start_s", Float64, true, "vision encoding began"),
        col("encode_end_s", Float64, true, "vision encoding ended"),
        col(
            "emb_transfer_start_s",
            Float64,
            true,
            "embedding transfer began",
        ),
        col(
            "emb_transfer_end_s",
            Float64,
            true,
            "embedding transfer ended",
        ),
        col("prefill_start_s", Float64, true, "first prefill step began"),
        col(
            "prefill_end_s",
            Float64,
            true,
            "prefill ended (= first token)",
        ),
        col("kv_transfer_start_s", Float64, true, "KV transfer began"),
        col("kv_transfer_end_s", Float64, true, "KV transfer ended"),
        col(
            "decode_start_s",
            Float64,
            true,
            "request joined a decoding batch",
        ),
        col("finish_s", Float64, true, "last token"),
        col(
            "encoder_instance",
            UInt64,
            true,
            "instance that encoded the images",
        ),
        col(
            "prefill_instance",
            UInt64,
            true,
            "instance that ran prefill",
        ),
        col("decode_instance", UInt64, true, "instance that decoded"),
        col(
            "preemptions",
            UInt64,
            false,
            "times the request lost its KV blocks and was recomputed",
        ),
        col(
            "source",
            Utf8,
            false,
            "`sim` (simulator) or `exec` (measured on GPUs)",
        ),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Str(Some(&self.scenario)),
            Str(Some(self.strategy)),
            U64(Some(self.request_id)),
            Str(Some(&self.status)),
            F64(Some(self.arrival_s)),
            U64(Some(self.n_images)),
            U64(Some(self.visual_tokens)),
            U64(Some(self.prompt_tokens)),
            U64(Some(self.output_tokens)),
            U64(Some(self.emb_bytes)),
            U64(Some(self.kv_bytes)),
            F64(self.ttft_s),
            F64(self.tpot_s),
            F64(self.e2e_s),
            F64(self.encode_start_s),
            F64(self.encode_end_s),
            F64(self.emb_transfer_start_s),
            F64(self.emb_transfer_end_s),
            F64(self.prefill_start_s),
            F64(self.prefill_end_s),
            F64(self.kv_transfer_start_s),
            F64(self.kv_transfer_end_s),
            F64(self.decode_start_s),
            F64(self.finish_s),
            U64(self.encoder_instance),
            U64(self.prefill_instance),
            U64(self.decode_instance),
            U64(Some(self.preemptions)),
            Str(Some(self.source)),
        ]
    }
}

/// One shipment of a request's embeddings or KV cache.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRecord {
    pub scenario: String,
    pub request_id: u64,
    /// `embedding` or `kv`.
    pub kind: &'static str,
    pub src_instance: u64,
    pub dst_instance: u64,
    pub link: &'static str,
    pub bytes: u64,
    /// Parallel flows (one per tensor-parallel shard).
    pub flows: u64,
    /// When the data was ready to leave (the transfer may wait for room at the destination).
    pub ready_s: f64,
    pub start_s: f64,
    pub end_s: f64,
    pub source: &'static str,
}

impl Row for TransferRecord {
    const TABLE: &'static str = "transfers";
    const COLUMNS: &'static [Column] = &[
        col("scenario", Utf8, false, "scenario name"),
        col("request_id", UInt64, false, "request shipped"),
        col(
            "kind",
            Utf8,
            false,
            "`embedding` (encoder → LLM) or `kv` (prefill → decode)",
        ),
        col("src_instance", UInt64, false, "sending instance"),
        col("dst_instance", UInt64, false, "receiving instance"),
        col(
            "link",
            Utf8,
            false,
            "catalog link the route runs on (the node fabric, or the network between nodes)",
        ),
        col("bytes", UInt64, false, "bytes sent (= bytes received)"),
        col(
            "flows",
            UInt64,
            false,
            "parallel flows (one per tensor-parallel shard)",
        ),
        col("ready_s", Float64, false, "data ready to leave"),
        col(
            "start_s",
            Float64,
            false,
            "first byte left (after any wait for KV room at the destination)",
        ),
        col("end_s", Float64, false, "last byte arrived"),
        col("source", Utf8, false, "`sim` or `exec`"),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Str(Some(&self.scenario)),
            U64(Some(self.request_id)),
            Str(Some(self.kind)),
            U64(Some(self.src_instance)),
            U64(Some(self.dst_instance)),
            Str(Some(self.link)),
            U64(Some(self.bytes)),
            U64(Some(self.flows)),
            F64(Some(self.ready_s)),
            F64(Some(self.start_s)),
            F64(Some(self.end_s)),
            Str(Some(self.source)),
        ]
    }
}

/// What an instance did over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub scenario: String,
    pub instance_id: u64,
    pub role: &'static str,
    pub gpu: &'static str,
    pub tp: u64,
    pub node: String,
    pub busy_s: f64,
    pub utilization: f64,
    pub steps: u64,
    pub images_encoded: u64,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    pub kv_capacity_tokens: u64,
    pub peak_kv_tokens: u64,
    pub preemptions: u64,
    pub weight_gib_per_gpu: f64,
    pub cost_usd: f64,
    pub source: &'static str,
}

impl Row for InstanceRecord {
    const TABLE: &'static str = "instances";
    const COLUMNS: &'static [Column] = &[
        col("scenario", Utf8, false, "scenario name"),
        col("instance_id", UInt64, false, "0-based, in deployment order"),
        col(
            "role",
            Utf8,
            false,
            "encoder | llm | prefill | decode | all",
        ),
        col("gpu", Utf8, false, "catalog GPU"),
        col("tp", UInt64, false, "tensor-parallel degree"),
        col("node", Utf8, false, "node name"),
        col("busy_s", Float64, false, "time spent computing"),
        col("utilization", Float64, false, "busy_s / run duration"),
        col(
            "steps",
            UInt64,
            false,
            "engine steps (encoder batches or LLM iterations)",
        ),
        col(
            "images_encoded",
            UInt64,
            false,
            "images through the vision encoder",
        ),
        col(
            "prefill_tokens",
            UInt64,
            false,
            "prompt tokens prefilled (recomputation included)",
        ),
        col(
            "decode_tokens",
            UInt64,
            false,
            "tokens generated by decode steps",
        ),
        col(
            "kv_capacity_tokens",
            UInt64,
            false,
            "KV blocks × block size (0 for encoders)",
        ),
        col(
            "peak_kv_tokens",
            UInt64,
            false,
            "most KV tokens held at once (in blocks × block size)",
        ),
        col(
            "preemptions",
            UInt64,
            false,
            "requests preempted for KV room",
        ),
        col(
            "weight_gib_per_gpu",
            Float64,
            false,
            "weights held per GPU, GiB",
        ),
        col(
            "cost_usd",
            Float64,
            false,
            "this instance's GPUs over the run duration",
        ),
        col("source", Utf8, false, "`sim` or `exec`"),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Str(Some(&self.scenario)),
            U64(Some(self.instance_id)),
            Str(Some(self.role)),
            Str(Some(self.gpu)),
            U64(Some(self.tp)),
            Str(Some(&self.node)),
            F64(Some(self.busy_s)),
            F64(Some(self.utilization)),
            U64(Some(self.steps)),
            U64(Some(self.images_encoded)),
            U64(Some(self.prefill_tokens)),
            U64(Some(self.decode_tokens)),
            U64(Some(self.kv_capacity_tokens)),
            U64(Some(self.peak_kv_tokens)),
            U64(Some(self.preemptions)),
            F64(Some(self.weight_gib_per_gpu)),
            F64(Some(self.cost_usd)),
            Str(Some(self.source)),
        ]
    }
}

/// Traffic on one port (a direction of a GPU's PCIe or NVLink port, or a node's NIC).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub scenario: String,
    pub port: String,
    pub link: &'static str,
    pub bytes: u64,
    pub busy_s: f64,
    pub utilization: f64,
    pub source: &'static str,
}

impl Row for LinkRecord {
    const TABLE: &'static str = "links";
    const COLUMNS: &'static [Column] = &[
        col("scenario", Utf8, false, "scenario name"),
        col(
            "port",
            Utf8,
            false,
            "node/gpuN/<link>-<direction> or node/nic/<link>-<direction>",
        ),
        col("link", Utf8, false, "catalog link"),
        col("bytes", UInt64, false, "bytes that crossed the port"),
        col(
            "busy_s",
            Float64,
            false,
            "time with at least one transfer on the port",
        ),
        col(
            "utilization",
            Float64,
            false,
            "bytes / (port bandwidth × run duration): the share of its capacity used",
        ),
        col("source", Utf8, false, "`sim` or `exec`"),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Str(Some(&self.scenario)),
            Str(Some(&self.port)),
            Str(Some(self.link)),
            U64(Some(self.bytes)),
            F64(Some(self.busy_s)),
            F64(Some(self.utilization)),
            Str(Some(self.source)),
        ]
    }
}

/// One scenario's totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SummaryRecord {
    pub scenario: String,
    pub strategy: &'static str,
    pub model: String,
    pub gpus: String,
    pub gpu_count: u64,
    pub rate_rps: Option<f64>,
    pub seed: u64,
    pub requests: u64,
    pub finished: u64,
    pub dropped: u64,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    pub goodput_rps: f64,
    pub slo_attainment: f64,
    pub slo_ttft_s: f64,
    pub slo_tpot_s: f64,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub tpot_p50_s: Option<f64>,
    pub tpot_p90_s: Option<f64>,
    pub tpot_p99_s: Option<f64>,
    pub e2e_p50_s: Option<f64>,
    pub e2e_p90_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    pub emb_bytes: u64,
    pub kv_bytes: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub busiest_link: Option<String>,
    pub busiest_link_utilization: f64,
    pub pricing: &'static str,
    pub usd_per_hour: f64,
    pub cost_usd: f64,
    pub tokens_per_dollar: f64,
    pub source: &'static str,
}

impl Row for SummaryRecord {
    const TABLE: &'static str = "summary";
    const COLUMNS: &'static [Column] = &[
        col("scenario", Utf8, false, "scenario name"),
        col(
            "strategy",
            Utf8,
            false,
            "colocated | stage | modality | epd",
        ),
        col("model", Utf8, false, "model name"),
        col(
            "gpus",
            Utf8,
            false,
            "GPU mix, e.g. `2×RTX-4090 + 2×A100-PCIe-80GB` (GPUs used by instances)",
        ),
        col("gpu_count", UInt64, false, "GPUs used by instances"),
        col(
            "rate_rps",
            Float64,
            true,
            "offered arrival rate (synthetic workloads)",
        ),
        col("seed", UInt64, false, "RNG seed"),
        col("requests", UInt64, false, "requests that arrived"),
        col("finished", UInt64, false, "requests finished"),
        col(
            "dropped",
            UInt64,
            false,
            "requests dropped (see requests.status)",
        ),
        col("duration_s", Float64, false, "first arrival to last event"),
        col("throughput_rps", Float64, false, "finished / duration"),
        col(
            "output_tokens",
            UInt64,
            false,
            "tokens generated by finished requests",
        ),
        col(
            "output_tokens_per_s",
            Float64,
            false,
            "output_tokens / duration",
        ),
        col(
            "goodput_rps",
            Float64,
            false,
            "requests meeting both SLOs / duration",
        ),
        col(
            "slo_attainment",
            Float64,
            false,
            "share of arrived requests meeting both SLOs",
        ),
        col(
            "slo_ttft_s",
            Float64,
            false,
            "the TTFT target goodput counts against",
        ),
        col(
            "slo_tpot_s",
            Float64,
            false,
            "the TPOT target goodput counts against",
        ),
        col("ttft_p50_s", Float64, true, "TTFT median"),
        col("ttft_p90_s", Float64, true, "TTFT p90"),
        col("ttft_p99_s", Float64, true, "TTFT p99"),
        col(
            "tpot_p50_s",
            Float64,
            true,
            "TPOT median (requests with ≥ 2 output tokens)",
        ),
        col("tpot_p90_s", Float64, true, "TPOT p90"),
        col("tpot_p99_s", Float64, true, "TPOT p99"),
        col("e2e_p50_s", Float64, true, "end-to-end median"),
        col("e2e_p90_s", Float64, true, "end-to-end p90"),
        col("e2e_p99_s", Float64, true, "end-to-end p99"),
        col("emb_bytes", UInt64, false, "embedding bytes shipped"),
        col("kv_bytes", UInt64, false, "KV bytes shipped"),
        col("bytes_sent", UInt64, false, "bytes put on links"),
        col(
            "bytes_received",
            UInt64,
            false,
            "bytes delivered (= bytes_sent once all transfers end)",
        ),
        col(
            "busiest_link",
            Utf8,
            true,
            "port with the highest utilization",
        ),
        col(
            "busiest_link_utilization",
            Float64,
            false,
            "its busy share of the run",
        ),
        col(
            "pricing",
            Utf8,
            false,
            "`capex` (amortised price + energy) or `rental`",
        ),
        col("usd_per_hour", Float64, false, "cost of the GPUs per hour"),
        col("cost_usd", Float64, false, "usd_per_hour × duration"),
        col(
            "tokens_per_dollar",
            Float64,
            false,
            "output_tokens / cost_usd",
        ),
        col("source", Utf8, false, "`sim` or `exec`"),
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Str(Some(&self.scenario)),
            Str(Some(self.strategy)),
            Str(Some(&self.model)),
            Str(Some(&self.gpus)),
            U64(Some(self.gpu_count)),
            F64(self.rate_rps),
            U64(Some(self.seed)),
            U64(Some(self.requests)),
            U64(Some(self.finished)),
            U64(Some(self.dropped)),
            F64(Some(self.duration_s)),
            F64(Some(self.throughput_rps)),
            U64(Some(self.output_tokens)),
            F64(Some(self.output_tokens_per_s)),
            F64(Some(self.goodput_rps)),
            F64(Some(self.slo_attainment)),
            F64(Some(self.slo_ttft_s)),
            F64(Some(self.slo_tpot_s)),
            F64(self.ttft_p50_s),
            F64(self.ttft_p90_s),
            F64(self.ttft_p99_s),
            F64(self.tpot_p50_s),
            F64(self.tpot_p90_s),
            F64(self.tpot_p99_s),
            F64(self.e2e_p50_s),
            F64(self.e2e_p90_s),
            F64(self.e2e_p99_s),
            U64(Some(self.emb_bytes)),
            U64(Some(self.kv_bytes)),
            U64(Some(self.bytes_sent)),
            U64(Some(self.bytes_received)),
            Str(self.busiest_link.as_deref()),
            F64(Some(self.busiest_link_utilization)),
            Str(Some(self.pricing)),
            F64(Some(self.usd_per_hour)),
            F64(Some(self.cost_usd)),
            F64(Some(self.tokens_per_dollar)),
            Str(Some(self.source)),
        ]
    }
}

/// Where the engine streams rows while it runs.
pub trait RecordSink {
    fn request(&mut self, r: &RequestRecord) -> Result<(), crate::error::Error>;
    fn transfer(&mut self, t: &TransferRecord) -> Result<(), crate::error::Error>;
}

/// Keeps everything in memory: for tests and for callers that score runs (the planner).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub requests: Vec<RequestRecord>,
    pub transfers: Vec<TransferRecord>,
}

impl RecordSink for MemorySink {
    fn request(&mut self, r: &RequestRecord) -> Result<(), crate::error::Error> {
        self.requests.push(r.clone());
        Ok(())
    }
    fn transfer(&mut self, t: &TransferRecord) -> Result<(), crate::error::Error> {
        self.transfers.push(t.clone());
        Ok(())
    }
}

/// Discards rows (only the summary is wanted).
pub struct NullSink;

impl RecordSink for NullSink {
    fn request(&mut self, _: &RequestRecord) -> Result<(), crate::error::Error> {
        Ok(())
    }
    fn transfer(&mut self, _: &TransferRecord) -> Result<(), crate::error::Error> {
        Ok(())
    }
}

/// The schema as markdown, for `docs/schema.md` and `hetsim schema`.
pub fn schema_markdown() -> String {
    fn table<R: Row>(out: &mut String) {
        out.push_str(&format!(
            "\n## `{}.parquet`\n\n| column | type | null | meaning |\n|---|---|---|---|\n",
            R::TABLE
        ));
        for c in R::COLUMNS {
            let ty = match c.ty {
                Utf8 => "string",
                UInt64 => "uint64",
                Float64 => "float64",
            };
            out.push_str(&format!(
                "| `{}` | {ty} | {} | {} |\n",
                c.name,
                if c.nullable { "yes" } else { "" },
                c.doc
            ));
        }
    }
    let mut out = String::from(
        "# Result schema\n\nGenerated by `hetsim schema` from `sim/src/records.rs`; do not edit by hand.\n\
         `hetsim run --out DIR` writes one file per table in DIR, each holding every scenario of the run\n\
         (the `scenario` column tells them apart). Times are seconds; bytes are bytes.\n",
    );
    table::<SummaryRecord>(&mut out);
    table::<RequestRecord>(&mut out);
    table::<TransferRecord>(&mut out);
    table::<InstanceRecord>(&mut out);
    table::<LinkRecord>(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<R: Row>(r: &R) {
        let cells = r.cells();
        assert_eq!(cells.len(), R::COLUMNS.len(), "{}", R::TABLE);
        for (c, v) in R::COLUMNS.iter().zip(&cells) {
            let ok = matches!(
                (c.ty, v),
                (Utf8, Str(_)) | (UInt64, U64(_)) | (Float64, F64(_))
            );
            assert!(ok, "{}.{} type", R::TABLE, c.name);
            let null = matches!(v, Str(None) | U64(None) | F64(None));
            assert!(
                !null || c.nullable,
                "{}.{} is null but not nullable",
                R::TABLE,
                c.name
            );
        }
    }

    #[test]
    fn rows_match_their_columns() {
        let summary = SummaryRecord {
            scenario: "s".into(),
            strategy: "stage",
            model: "m".into(),
            gpus: "1×H200-SXM".into(),
            gpu_count: 1,
            requests: 1,
            finished: 1,
            duration_s: 1.0,
            throughput_rps: 1.0,
            output_tokens: 1,
            output_tokens_per_s: 1.0,
            goodput_rps: 1.0,
            slo_attainment: 1.0,
            slo_ttft_s: 1.0,
            slo_tpot_s: 0.1,
            pricing: "capex",
            usd_per_hour: 1.0,
            cost_usd: 1.0,
            tokens_per_dollar: 1.0,
            source: "sim",
            ..Default::default()
        };
        check(&summary);
        check(&LinkRecord {
            scenario: "s".into(),
            port: "p".into(),
            link: "l",
            bytes: 1,
            busy_s: 0.0,
            utilization: 0.0,
            source: "sim",
        });
        check(&TransferRecord {
            scenario: "s".into(),
            request_id: 0,
            kind: "kv",
            src_instance: 0,
            dst_instance: 1,
            link: "nvlink3",
            bytes: 1,
            flows: 1,
            ready_s: 0.0,
            start_s: 0.0,
            end_s: 1.0,
            source: "sim",
        });
        let md = schema_markdown();
        for name in [
            "scenario",
            "strategy",
            "request_id",
            "arrival_s",
            "n_images",
            "visual_tokens",
            "prompt_tokens",
            "output_tokens",
            "emb_bytes",
            "kv_bytes",
            "ttft_s",
            "tpot_s",
            "e2e_s",
            "source",
            "tokens_per_dollar",
        ] {
            assert!(md.contains(&format!("`{name}`")), "{name}");
        }
    }
}
