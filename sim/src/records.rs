//! Result rows: the public schema shared by the simulator (`source = sim`) and the GPU harness
//! (`source = exec`). Each table is declared once, with `result_table!`: its fields, their
//! column types and nullability (from the Rust type: `Option` is nullable) and their docs.
//! `docs/schema.md` is generated from these declarations (`hetsim schema`), so doc and files agree.

use crate::experiment::Strategy;

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
    /// Every value a closed-vocabulary column can hold, with its meaning; empty otherwise.
    pub vocabulary: fn() -> Vec<(&'static str, &'static str)>,
}

/// One value of a row, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Str(Option<&'a str>),
    U64(Option<u64>),
    F64(Option<f64>),
}

impl Cell<'_> {
    fn null(ty: ColumnType) -> Cell<'static> {
        match ty {
            ColumnType::Utf8 => Cell::Str(None),
            ColumnType::UInt64 => Cell::U64(None),
            ColumnType::Float64 => Cell::F64(None),
        }
    }
}

/// A Rust type a column can be declared with.
pub trait CellValue {
    const TYPE: ColumnType;
    const NULLABLE: bool = false;
    fn cell(&self) -> Cell<'_>;
    /// Every value of a closed vocabulary, with its meaning (empty for an open one).
    fn vocabulary() -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
}

impl CellValue for String {
    const TYPE: ColumnType = ColumnType::Utf8;
    fn cell(&self) -> Cell<'_> {
        Cell::Str(Some(self))
    }
}

impl CellValue for &'static str {
    const TYPE: ColumnType = ColumnType::Utf8;
    fn cell(&self) -> Cell<'_> {
        Cell::Str(Some(self))
    }
}

impl CellValue for u64 {
    const TYPE: ColumnType = ColumnType::UInt64;
    fn cell(&self) -> Cell<'_> {
        Cell::U64(Some(*self))
    }
}

impl CellValue for f64 {
    const TYPE: ColumnType = ColumnType::Float64;
    fn cell(&self) -> Cell<'_> {
        Cell::F64(Some(*self))
    }
}

impl<T: CellValue> CellValue for Option<T> {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = true;
    fn cell(&self) -> Cell<'_> {
        match self {
            Some(v) => v.cell(),
            None => Cell::null(T::TYPE),
        }
    }
    fn vocabulary() -> Vec<(&'static str, &'static str)> {
        T::vocabulary()
    }
}

pub trait Row {
    const TABLE: &'static str;
    const COLUMNS: &'static [Column];
    fn cells(&self) -> Vec<Cell<'_>>;
}

/// Declares a closed vocabulary: an enum whose values are written to files as fixed strings.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($variant:ident = $text:literal: $meaning:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $(#[doc = $meaning] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string written to result files.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub const fn meaning(self) -> &'static str {
                match self {
                    $($name::$variant => $meaning,)+
                }
            }
        }

        impl CellValue for $name {
            const TYPE: ColumnType = ColumnType::Utf8;
            fn cell(&self) -> Cell<'_> {
                Cell::Str(Some(self.as_str()))
            }
            fn vocabulary() -> Vec<(&'static str, &'static str)> {
                $name::ALL.iter().map(|v| (v.as_str(), v.meaning())).collect()
            }
        }
    };
}

/// Declares a result table once: the struct, its `COLUMNS` (name, type, nullability, doc) and
/// its `cells()`, from one list of documented fields.
macro_rules! result_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:literal {
            $($(#[doc = $doc:literal])+ pub $field:ident: $ty:ty,)+
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[doc = $doc])+ pub $field: $ty,)+
        }

        impl Row for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [Column] = &[$(Column {
                name: stringify!($field),
                ty: <$ty as CellValue>::TYPE,
                nullable: <$ty as CellValue>::NULLABLE,
                doc: concat!($($doc),+),
                vocabulary: <$ty as CellValue>::vocabulary,
            },)+];

            fn cells(&self) -> Vec<Cell<'_>> {
                vec![$(CellValue::cell(&self.$field),)+]
            }
        }
    };
}

vocabulary! {
    /// Which side of the comparison a row comes from.
    pub enum Source {
        Sim = "sim": "the simulator",
        Exec = "exec": "measured on GPUs by the harness",
    }
}

vocabulary! {
    /// What a transfer ships.
    pub enum TransferKind {
        Embedding = "embedding": "vision embeddings, encoder → LLM",
        Kv = "kv": "the KV cache, prefill → decode",
    }
}

vocabulary! {
    /// Why a request was dropped; its status is written `dropped:<reason>`.
    pub enum DropReason {
        KvCapacity = "dropped:kv_capacity":
            "its KV cache can never fit an instance of the pool it needs",
        PromptOverTokenBudget = "dropped:prompt_over_token_budget":
            "its context exceeds the step's token budget and chunked prefill is off",
        Horizon = "dropped:horizon": "not done when the clock stopped at the horizon",
        Stalled = "dropped:stalled":
            "not done with nothing left to happen: a simulator bug, counted as stalled",
        Engine = "dropped:engine": "the GPU engine did not finish it during the replay",
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Finished,
    Dropped(DropReason),
}

impl RequestStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Finished => "finished",
            RequestStatus::Dropped(reason) => reason.as_str(),
        }
    }
}

impl CellValue for RequestStatus {
    const TYPE: ColumnType = ColumnType::Utf8;
    fn cell(&self) -> Cell<'_> {
        Cell::Str(Some(self.as_str()))
    }
    fn vocabulary() -> Vec<(&'static str, &'static str)> {
        let finished = RequestStatus::Finished.as_str();
        std::iter::once((finished, "every output token generated"))
            .chain(DropReason::vocabulary())
            .collect()
    }
}

impl CellValue for Strategy {
    const TYPE: ColumnType = ColumnType::Utf8;
    fn cell(&self) -> Cell<'_> {
        Cell::Str(Some(self.name()))
    }
    fn vocabulary() -> Vec<(&'static str, &'static str)> {
        // The strategies are documented with `Strategy` (docs/experiment.md); the schema lists names.
        Strategy::ALL.iter().map(|s| (s.name(), "")).collect()
    }
}

result_table! {
    /// What became of a request.
    #[derive(Debug, Clone, PartialEq)]
    pub struct RequestRecord in "requests" {
        /// scenario name (with matrix values in brackets)
        pub scenario: String,
        /// deployment strategy
        pub strategy: Strategy,
        /// 0-based, in arrival order
        pub request_id: u64,
        /// what became of the request
        pub status: RequestStatus,
        /// arrival time, s from the run's start
        pub arrival_s: f64,
        /// images in the request
        pub n_images: u64,
        /// LLM tokens the images become (the model's own rule)
        pub visual_tokens: u64,
        /// text tokens of the prompt (visual tokens not included)
        pub prompt_tokens: u64,
        /// tokens generated
        pub output_tokens: u64,
        /// embedding bytes shipped between instances (N_v · d · b; 0 when encoder and LLM are
        /// one instance)
        pub emb_bytes: u64,
        /// KV-cache bytes shipped prefill → decode (2 · L · n_kv · d_head · s · b with s = visual
        /// + prompt tokens; 0 when not shipped)
        pub kv_bytes: u64,
        /// time to first token: first token − arrival
        pub ttft_s: Option<f64>,
        /// time per output token after the first: (finish − first token) / (output_tokens − 1)
        pub tpot_s: Option<f64>,
        /// finish − arrival
        pub e2e_s: Option<f64>,
        /// vision encoding began
        pub encode_start_s: Option<f64>,
        /// vision encoding ended
        pub encode_end_s: Option<f64>,
        /// embedding transfer began
        pub emb_transfer_start_s: Option<f64>,
        /// embedding transfer ended
        pub emb_transfer_end_s: Option<f64>,
        /// first prefill step began
        pub prefill_start_s: Option<f64>,
        /// prefill ended (= first token)
        pub prefill_end_s: Option<f64>,
        /// KV transfer's first bytes could leave: after prefill, once the decode instance had room; `layerwise`, when the last prefill step's first layer had written its KV
        pub kv_transfer_start_s: Option<f64>,
        /// KV transfer's last byte arrived (`layerwise`: the latency it adds is kv_transfer_end_s − prefill_end_s)
        pub kv_transfer_end_s: Option<f64>,
        /// request joined a decoding batch
        pub decode_start_s: Option<f64>,
        /// last token
        pub finish_s: Option<f64>,
        /// instance that encoded the images
        pub encoder_instance: Option<u64>,
        /// instance that ran prefill
        pub prefill_instance: Option<u64>,
        /// instance that decoded
        pub decode_instance: Option<u64>,
        /// times the request lost its KV blocks and was recomputed
        pub preemptions: u64,
        /// where the row comes from
        pub source: Source,
    }
}

result_table! {
    /// One shipment of a request's embeddings or KV cache.
    #[derive(Debug, Clone, PartialEq)]
    pub struct TransferRecord in "transfers" {
        /// scenario name
        pub scenario: String,
        /// request shipped
        pub request_id: u64,
        /// what was shipped
        pub kind: TransferKind,
        /// sending instance
        pub src_instance: u64,
        /// receiving instance
        pub dst_instance: u64,
        /// catalog link the route runs on (the node fabric, or the network between nodes)
        pub link: &'static str,
        /// bytes sent (= bytes received)
        pub bytes: u64,
        /// parallel flows (one per tensor-parallel shard)
        pub flows: u64,
        /// data ready to leave
        pub ready_s: f64,
        /// first byte left (after any wait for KV room at the destination)
        pub start_s: f64,
        /// last byte arrived
        pub end_s: f64,
        /// where the row comes from
        pub source: Source,
    }
}

result_table! {
    /// What an instance did over the run.
    #[derive(Debug, Clone, PartialEq)]
    pub struct InstanceRecord in "instances" {
        /// scenario name
        pub scenario: String,
        /// 0-based, in deployment order
        pub instance_id: u64,
        /// encoder, llm, prefill, decode or all
        pub role: &'static str,
        /// catalog GPU
        pub gpu: &'static str,
        /// tensor-parallel degree
        pub tp: u64,
        /// node name
        pub node: String,
        /// time spent computing
        pub busy_s: f64,
        /// busy_s / run duration
        pub utilization: f64,
        /// model FLOP utilisation while busy: FLOPs per GPU of the steps / (GPU's dense peak FLOP/s for the dtype × busy_s); recomputation after preemption counts
        pub mfu: f64,
        /// memory-bandwidth utilisation while busy: HBM bytes per GPU the steps moved (weights, KV, activations) / (HBM bandwidth × busy_s)
        pub mbu: f64,
        /// share of the batch the steps filled (sequences / max_batch; an encoder's own step: images / encoder_batch_images), weighted by step time
        pub batch_occupancy: f64,
        /// engine steps (encoder batches or LLM iterations)
        pub steps: u64,
        /// images through the vision encoder
        pub images_encoded: u64,
        /// prompt tokens prefilled (recomputation included)
        pub prefill_tokens: u64,
        /// tokens generated by decode steps
        pub decode_tokens: u64,
        /// KV blocks × block size (0 for encoders)
        pub kv_capacity_tokens: u64,
        /// most KV tokens held at once (in blocks × block size)
        pub peak_kv_tokens: u64,
        /// requests preempted for KV room
        pub preemptions: u64,
        /// weights held per GPU, GiB
        pub weight_gib_per_gpu: f64,
        /// this instance's GPUs over the run duration
        pub cost_usd: f64,
        /// where the row comes from
        pub source: Source,
    }
}

result_table! {
    /// Traffic on one port (a direction of a GPU's PCIe or NVLink port, or a node's NIC).
    #[derive(Debug, Clone, PartialEq)]
    pub struct LinkRecord in "links" {
        /// scenario name
        pub scenario: String,
        /// node/gpuN/<link>-<direction> or node/nic/<link>-<direction>
        pub port: String,
        /// catalog link
        pub link: &'static str,
        /// bytes that crossed the port
        pub bytes: u64,
        /// time with at least one transfer on the port
        pub busy_s: f64,
        /// bytes / (port bandwidth × run duration): the share of its capacity used
        pub utilization: f64,
        /// where the row comes from
        pub source: Source,
    }
}

result_table! {
    /// One scenario's totals.
    #[derive(Debug, Clone, PartialEq)]
    pub struct SummaryRecord in "summary" {
        /// scenario name
        pub scenario: String,
        /// deployment strategy
        pub strategy: Strategy,
        /// model name
        pub model: String,
        /// GPU mix, e.g. `2×RTX-4090 + 2×A100-PCIe-80GB` (GPUs used by instances)
        pub gpus: String,
        /// GPUs used by instances
        pub gpu_count: u64,
        /// GPUs of the cluster, used by an instance or not (every one is paid for in usd_per_hour)
        pub cluster_gpu_count: u64,
        /// offered arrival rate (synthetic workloads)
        pub rate_rps: Option<f64>,
        /// RNG seed
        pub seed: u64,
        /// requests that arrived
        pub requests: u64,
        /// requests finished
        pub finished: u64,
        /// requests dropped (see requests.status)
        pub dropped: u64,
        /// first arrival to last event
        pub duration_s: f64,
        /// finished / duration
        pub throughput_rps: f64,
        /// tokens generated by finished requests
        pub output_tokens: u64,
        /// output_tokens / duration
        pub output_tokens_per_s: f64,
        /// requests meeting both SLOs (TTFT ≤ slo_ttft_s, TPOT ≤ slo_tpot_s) / duration
        pub goodput_rps: f64,
        /// share of arrived requests meeting both SLOs
        pub slo_attainment: f64,
        /// output tokens of the requests meeting both SLOs
        pub good_output_tokens: u64,
        /// the TTFT target goodput counts against
        pub slo_ttft_s: f64,
        /// the TPOT target goodput counts against
        pub slo_tpot_s: f64,
        /// TTFT median of finished requests (sim: from a log histogram, within 0.05 % of the nearest-rank value; exec: nearest rank)
        pub ttft_p50_s: Option<f64>,
        /// TTFT p90 (as ttft_p50_s)
        pub ttft_p90_s: Option<f64>,
        /// TTFT p99 (as ttft_p50_s)
        pub ttft_p99_s: Option<f64>,
        /// TPOT median of finished requests with ≥ 2 output tokens (as ttft_p50_s)
        pub tpot_p50_s: Option<f64>,
        /// TPOT p90 (as ttft_p50_s)
        pub tpot_p90_s: Option<f64>,
        /// TPOT p99 (as ttft_p50_s)
        pub tpot_p99_s: Option<f64>,
        /// end-to-end median (as ttft_p50_s)
        pub e2e_p50_s: Option<f64>,
        /// end-to-end p90 (as ttft_p50_s)
        pub e2e_p90_s: Option<f64>,
        /// end-to-end p99 (as ttft_p50_s)
        pub e2e_p99_s: Option<f64>,
        /// embedding bytes shipped
        pub emb_bytes: u64,
        /// KV bytes shipped
        pub kv_bytes: u64,
        /// bytes put on links
        pub bytes_sent: u64,
        /// bytes delivered (= bytes_sent once all transfers end)
        pub bytes_received: u64,
        /// port with the highest utilization
        pub busiest_link: Option<String>,
        /// its busy share of the run
        pub busiest_link_utilization: f64,
        /// `capex` (amortised price + energy) or `rental`
        pub pricing: &'static str,
        /// cost of the GPUs per hour
        pub usd_per_hour: f64,
        /// usd_per_hour × duration
        pub cost_usd: f64,
        /// output_tokens / cost_usd
        pub tokens_per_dollar: f64,
        /// good_output_tokens / cost_usd: SLO-meeting output tokens per dollar, what `hetsim run` ranks by
        pub good_tokens_per_dollar: f64,
        /// busy GPU-time of the instances / (gpu_count × duration) (null for measured rows)
        pub utilization: Option<f64>,
        /// model FLOP utilisation: FLOPs the instances' steps did / (peak FLOP/s × busy GPU-time), over all instances (null for measured rows)
        pub mfu: Option<f64>,
        /// memory-bandwidth utilisation: HBM bytes the steps moved / (HBM bandwidth × busy GPU-time), over all instances (null for measured rows)
        pub mbu: Option<f64>,
        /// share of the batch the steps filled, weighted by step time, over all instances (null for measured rows)
        pub batch_occupancy: Option<f64>,
        /// where the least certain instance's performance model came from: `measured` (its own phase table), `same-arch` (fitted on another GPU of its architecture), `other-arch` (sim/src/trust.rs)
        pub prediction_basis: &'static str,
        /// half-width of the interval around the predicted latencies and throughput, percent, that covers ~80 % of the recorded replays of that basis (null for measured rows)
        pub prediction_error_pct: Option<f64>,
        /// where the row comes from
        pub source: Source,
    }
}

/// Where the engine streams rows while it runs.
pub trait RecordSink {
    fn request(&mut self, r: &RequestRecord) -> Result<(), crate::error::Error>;
    fn transfer(&mut self, t: &TransferRecord) -> Result<(), crate::error::Error>;
    /// An engine step ended (drawn on timelines; not a table).
    fn step(&mut self, _: &crate::timeline::StepSpan) -> Result<(), crate::error::Error> {
        Ok(())
    }
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
                ColumnType::Utf8 => "string",
                ColumnType::UInt64 => "uint64",
                ColumnType::Float64 => "float64",
            };
            out.push_str(&format!(
                "| `{}` | {ty} | {} | {}{} |\n",
                c.name,
                if c.nullable { "yes" } else { "" },
                c.doc.trim(),
                values_markdown(&(c.vocabulary)())
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

/// ": `a` (meaning); `b` (meaning)" for a closed vocabulary, nothing for an open column.
fn values_markdown(values: &[(&str, &str)]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let each: Vec<String> = values
        .iter()
        .map(|(v, meaning)| match *meaning {
            "" => format!("`{v}`"),
            m => format!("`{v}` ({m})"),
        })
        .collect();
    format!(": {}", each.join("; "))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A summary row with every field set, for tests that change a few.
    pub(crate) fn summary() -> SummaryRecord {
        SummaryRecord {
            scenario: "s".into(),
            strategy: Strategy::Stage,
            model: "m".into(),
            gpus: "1×H200-SXM".into(),
            gpu_count: 1,
            cluster_gpu_count: 1,
            rate_rps: None,
            seed: 0,
            requests: 1,
            finished: 1,
            dropped: 0,
            duration_s: 1.0,
            throughput_rps: 1.0,
            output_tokens: 1,
            output_tokens_per_s: 1.0,
            goodput_rps: 1.0,
            slo_attainment: 1.0,
            good_output_tokens: 1,
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
            usd_per_hour: 1.0,
            cost_usd: 1.0,
            tokens_per_dollar: 1.0,
            good_tokens_per_dollar: 1.0,
            utilization: Some(1.0),
            mfu: Some(0.5),
            mbu: Some(0.5),
            batch_occupancy: Some(0.5),
            prediction_basis: "measured",
            prediction_error_pct: Some(2.3),
            source: Source::Sim,
        }
    }

    fn check<R: Row>(r: &R) {
        let cells = r.cells();
        assert_eq!(cells.len(), R::COLUMNS.len(), "{}", R::TABLE);
        for (c, v) in R::COLUMNS.iter().zip(&cells) {
            let ok = matches!(
                (c.ty, v),
                (ColumnType::Utf8, Cell::Str(_))
                    | (ColumnType::UInt64, Cell::U64(_))
                    | (ColumnType::Float64, Cell::F64(_))
            );
            assert!(ok, "{}.{} type", R::TABLE, c.name);
            let null = matches!(v, Cell::Str(None) | Cell::U64(None) | Cell::F64(None));
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
        check(&summary());
        check(&LinkRecord {
            scenario: "s".into(),
            port: "p".into(),
            link: "l",
            bytes: 1,
            busy_s: 0.0,
            utilization: 0.0,
            source: Source::Sim,
        });
        check(&TransferRecord {
            scenario: "s".into(),
            request_id: 0,
            kind: TransferKind::Kv,
            src_instance: 0,
            dst_instance: 1,
            link: "nvlink3",
            bytes: 1,
            flows: 1,
            ready_s: 0.0,
            start_s: 0.0,
            end_s: 1.0,
            source: Source::Exec,
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

    /// The parquet schema is a public contract: the declarations must give exactly these columns.
    #[test]
    fn columns_are_the_published_ones() {
        fn shape<R: Row>() -> Vec<String> {
            R::COLUMNS
                .iter()
                .map(|c| format!("{} {:?}{}", c.name, c.ty, if c.nullable { "?" } else { "" }))
                .collect()
        }
        assert_eq!(
            shape::<TransferRecord>(),
            [
                "scenario Utf8",
                "request_id UInt64",
                "kind Utf8",
                "src_instance UInt64",
                "dst_instance UInt64",
                "link Utf8",
                "bytes UInt64",
                "flows UInt64",
                "ready_s Float64",
                "start_s Float64",
                "end_s Float64",
                "source Utf8",
            ]
        );
        let requests = shape::<RequestRecord>();
        assert_eq!(requests.len(), 29);
        assert_eq!(requests[3], "status Utf8");
        assert_eq!(requests[11], "ttft_s Float64?");
        assert_eq!(requests[26], "decode_instance UInt64?");
        let summary = shape::<SummaryRecord>();
        assert_eq!(summary.len(), 47);
        assert_eq!(summary[5], "cluster_gpu_count UInt64");
        assert_eq!(summary[6], "rate_rps Float64?");
        assert_eq!(summary[17], "good_output_tokens UInt64");
        assert_eq!(summary[33], "busiest_link Utf8?");
        assert_eq!(
            summary[39..44],
            [
                "good_tokens_per_dollar Float64",
                "utilization Float64?",
                "mfu Float64?",
                "mbu Float64?",
                "batch_occupancy Float64?",
            ]
        );
        let instances = shape::<InstanceRecord>();
        assert_eq!(
            instances[7..11],
            [
                "utilization Float64",
                "mfu Float64",
                "mbu Float64",
                "batch_occupancy Float64",
            ]
        );
    }

    /// Files keep today's strings, and the schema names every value a status can take.
    #[test]
    fn vocabularies_write_their_strings() {
        assert_eq!(RequestStatus::Finished.cell(), Cell::Str(Some("finished")));
        let dropped = RequestStatus::Dropped(DropReason::KvCapacity);
        assert_eq!(dropped.cell(), Cell::Str(Some("dropped:kv_capacity")));
        assert_eq!(Source::Exec.as_str(), "exec");
        assert_eq!(TransferKind::Embedding.as_str(), "embedding");
        assert_eq!(Strategy::Epd.cell(), Cell::Str(Some("epd")));
        let md = schema_markdown();
        for reason in DropReason::ALL {
            assert!(
                md.contains(&format!("`{}` (", reason.as_str())),
                "{reason:?}"
            );
            assert!(reason.as_str().starts_with("dropped:"), "{reason:?}");
        }
        assert!(
            md.contains("`colocated`; `stage`; `modality`; `epd`"),
            "{md}"
        );
    }
}
