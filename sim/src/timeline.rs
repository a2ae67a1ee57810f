//! Timelines of a run in the Chrome Trace Event format (JSON), which Perfetto and
//! `chrome://tracing` open: what every instance did step by step, every transfer on its route,
//! and each request's path across instances. The simulator (`hetsim run --trace`) and the real
//! replay (`hetsim validate --trace`) write the same tracks from the same three kinds of record
//! ([`StepSpan`], [`TransferRecord`], [`RequestRecord`]), so the two timelines of one scenario can
//! be opened side by side and compared track by track.
//!
//! Layout (docs/timeline.md is the user's description):
//! - one process per instance (its GPUs in the name: tensor-parallel ranks run in lockstep), with
//!   threads `encode`, `prefill` and `decode`. A colocated step that encodes and then runs one
//!   forward over prefill chunks and decodes is an `encode` slice followed by a `prefill` and a
//!   `decode` slice over the same forward. One instance runs one step at a time, so slices on one
//!   thread never overlap (checked by [`check`]).
//! - counters per instance at each step's end, after its completions: `KV blocks` (in use, of
//!   the pool) and `requests` (queued: waiting to be encoded or prefilled; running: decoding).
//! - one process `links` holding one async track per route (`i0→i1 NVLink-4`): each transfer is
//!   a slice from its first byte to its last, with request, kind, bytes and rate; transfers on a
//!   route overlap (they share it), which async slices allow.
//! - one flow per request, from its encode slice to its prefill slice to its first decode step.
//!
//! Bounded size: `TraceOptions::window` keeps what overlaps a time range, `sample` keeps the flows
//! and transfers of one request in N (steps and counters are per instance, not per request, and
//! stay).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, InputError};
use crate::publish::out_err;
use crate::records::{RecordSink, RequestRecord, Source, TransferRecord};

/// One engine step of one instance, as both the simulator and the real replay see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpan {
    pub instance: u64,
    pub start_s: f64,
    /// The step's image encoding ends here and its forward starts (= `start_s` without images).
    pub encode_end_s: f64,
    pub end_s: f64,
    pub images: u64,
    pub prefill_seqs: u64,
    pub prefill_tokens: u64,
    pub decode_seqs: u64,
    /// Σ context tokens of the decoded sequences.
    pub decode_context_tokens: u64,
    /// After the step's completions: KV blocks in use, and the pool's size.
    pub kv_blocks_used: u64,
    pub kv_blocks: u64,
    /// After the step's completions: requests waiting to be encoded or prefilled here, and
    /// requests in the decode batch.
    pub queued: u64,
    pub running: u64,
}

/// What a timeline keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceOptions {
    /// Keep what overlaps [from, to] seconds of the run's clock.
    pub window: Option<(f64, f64)>,
    /// Keep the flows and transfers of requests whose id is a multiple of this (1: all).
    pub sample: u64,
}

impl Default for TraceOptions {
    fn default() -> TraceOptions {
        TraceOptions {
            window: None,
            sample: 1,
        }
    }
}

impl TraceOptions {
    /// Parses `--trace-window FROM:TO` (seconds) and `--trace-sample N`.
    pub fn parse(window: Option<&str>, sample: Option<u64>) -> Result<TraceOptions, InputError> {
        let window = match window {
            None => None,
            Some(w) => {
                let bad = || {
                    InputError::new(format!(
                        "--trace-window {}: expected FROM:TO in seconds of the run, 0 ≤ FROM < TO (e.g. 10:20)",
                        crate::bounds::excerpt(w)
                    ))
                };
                let (a, b) = w.split_once(':').ok_or_else(bad)?;
                let (a, b): (f64, f64) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if !(a.is_finite() && b.is_finite() && 0.0 <= a && a < b) {
                    return Err(bad());
                }
                Some((a, b))
            }
        };
        let sample = sample.unwrap_or(1);
        if sample == 0 {
            return Err(InputError::new(
                "--trace-sample 0: expected N ≥ 1 (keep one request in N; 1 keeps all)",
            ));
        }
        Ok(TraceOptions { window, sample })
    }

    fn overlaps(&self, from_s: f64, to_s: f64) -> bool {
        self.window.is_none_or(|(a, b)| to_s >= a && from_s <= b)
    }

    fn keeps_request(&self, id: u64) -> bool {
        id.is_multiple_of(self.sample)
    }
}

const ENCODE: u64 = 1;
const PREFILL: u64 = 2;
const DECODE: u64 = 3;
const THREADS: [(u64, &str); 3] = [(ENCODE, "encode"), (PREFILL, "prefill"), (DECODE, "decode")];

/// Microseconds, the format's unit, at nanosecond resolution.
fn us(s: f64) -> f64 {
    (s * 1e9).round() / 1e3
}

/// Streams one scenario's timeline into a JSON file; `finish` completes it.
pub struct TimelineWriter {
    path: PathBuf,
    out: BufWriter<File>,
    opts: TraceOptions,
    instances: u64,
    events: u64,
    /// Async track ids are per route name; transfers get unique ids.
    next_transfer: u64,
}

impl TimelineWriter {
    /// Starts `path`; `instances` names each instance (its role and GPUs), in instance order.
    pub fn create(
        path: &Path,
        scenario: &str,
        source: Source,
        instances: &[String],
        opts: TraceOptions,
    ) -> Result<TimelineWriter, Error> {
        let file = File::create(path).map_err(|e| out_err(path, e))?;
        let mut w = TimelineWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            opts,
            instances: instances.len() as u64,
            events: 0,
            next_transfer: 0,
        };
        let head = json!({
            "displayTimeUnit": "ms",
            "otherData": {
                "scenario": scenario,
                "source": source.as_str(),
                "hetsim": env!("CARGO_PKG_VERSION"),
                "window_s": opts.window.map(|(a, b)| vec![a, b]),
                "request_sample": opts.sample,
            },
        });
        // The object's last member is the event array, streamed.
        let head = serde_json::to_string(&head).expect("plain JSON");
        w.raw(&head[..head.len() - 1])?;
        w.raw(",\"traceEvents\":[")?;
        for (i, name) in instances.iter().enumerate() {
            let pid = i as u64 + 1;
            w.meta(pid, None, "process_name", name)?;
            w.event(json!({"ph": "M", "name": "process_sort_index", "pid": pid,
                "args": {"sort_index": pid}}))?;
            for (tid, t) in THREADS {
                w.meta(pid, Some(tid), "thread_name", t)?;
            }
        }
        w.meta(w.links_pid(), None, "process_name", "links")?;
        Ok(w)
    }

    fn links_pid(&self) -> u64 {
        self.instances + 1
    }

    fn raw(&mut self, s: &str) -> Result<(), Error> {
        self.out
            .write_all(s.as_bytes())
            .map_err(|e| out_err(&self.path, e))
    }

    fn event(&mut self, e: Value) -> Result<(), Error> {
        if self.events > 0 {
            self.raw(",\n")?;
        } else {
            self.raw("\n")?;
        }
        self.events += 1;
        serde_json::to_writer(&mut self.out, &e).map_err(|e| out_err(&self.path, e))
    }

    fn meta(&mut self, pid: u64, tid: Option<u64>, what: &str, name: &str) -> Result<(), Error> {
        let mut e = json!({"ph": "M", "name": what, "pid": pid, "args": {"name": name}});
        if let Some(t) = tid {
            e["tid"] = json!(t);
        }
        self.event(e)
    }

    fn slice(
        &mut self,
        pid: u64,
        tid: u64,
        name: &str,
        from: f64,
        to: f64,
        args: Value,
    ) -> Result<(), Error> {
        if !self.opts.overlaps(from, to) {
            return Ok(());
        }
        let dur = ((us(to) - us(from)) * 1e3).round() / 1e3;
        self.event(
            json!({"ph": "X", "name": name, "cat": "step", "pid": pid, "tid": tid,
            "ts": us(from), "dur": dur, "args": args}),
        )
    }

    pub fn step(&mut self, s: &StepSpan) -> Result<(), Error> {
        let pid = s.instance + 1;
        if s.images > 0 {
            self.slice(
                pid,
                ENCODE,
                "encode",
                s.start_s,
                s.encode_end_s,
                json!({"images": s.images}),
            )?;
        }
        if s.prefill_seqs > 0 {
            self.slice(
                pid,
                PREFILL,
                "prefill",
                s.encode_end_s,
                s.end_s,
                json!({"sequences": s.prefill_seqs, "tokens": s.prefill_tokens,
                    "batch_with_decodes": s.decode_seqs}),
            )?;
        }
        if s.decode_seqs > 0 {
            self.slice(
                pid,
                DECODE,
                "decode",
                s.encode_end_s,
                s.end_s,
                json!({"batch": s.decode_seqs, "context_tokens": s.decode_context_tokens,
                    "with_prefill_tokens": s.prefill_tokens}),
            )?;
        }
        if !self.opts.overlaps(s.end_s, s.end_s) {
            return Ok(());
        }
        let ts = us(s.end_s);
        self.event(json!({"ph": "C", "name": "KV blocks", "pid": pid, "ts": ts,
            "args": {"in use": s.kv_blocks_used, "free": s.kv_blocks.saturating_sub(s.kv_blocks_used)}}))?;
        self.event(json!({"ph": "C", "name": "requests", "pid": pid, "ts": ts,
            "args": {"queued": s.queued, "running": s.running}}))
    }

    pub fn transfer(&mut self, t: &TransferRecord) -> Result<(), Error> {
        if !self.opts.keeps_request(t.request_id) || !self.opts.overlaps(t.start_s, t.end_s) {
            return Ok(());
        }
        let id = format!("0x{:x}", self.next_transfer);
        self.next_transfer += 1;
        let route = format!("i{}→i{} {}", t.src_instance, t.dst_instance, t.link);
        let seconds = t.end_s - t.start_s;
        let rate = if seconds > 0.0 {
            t.bytes as f64 / seconds / 1e9
        } else {
            f64::INFINITY
        };
        let pid = self.links_pid();
        self.event(
            json!({"ph": "b", "cat": "transfer", "name": route, "id": id, "pid": pid,
            "tid": 0, "ts": us(t.start_s),
            "args": {"request": t.request_id, "kind": t.kind.as_str(), "bytes": t.bytes,
                "GB/s": if rate.is_finite() { json!(rate) } else { Value::Null },
                "flows": t.flows, "waited_ms": (t.start_s - t.ready_s) * 1e3}}),
        )?;
        self.event(
            json!({"ph": "e", "cat": "transfer", "name": route, "id": id, "pid": pid,
            "tid": 0, "ts": us(t.end_s)}),
        )
    }

    /// The request's flow: encode → prefill → first decode step (the stages it has).
    pub fn request(&mut self, r: &RequestRecord) -> Result<(), Error> {
        if !self.opts.keeps_request(r.request_id) {
            return Ok(());
        }
        let mut points: Vec<(u64, u64, f64)> = Vec::new();
        if let (Some(i), Some(t)) = (r.encoder_instance, r.encode_start_s) {
            points.push((i + 1, ENCODE, t));
        }
        if let (Some(i), Some(t)) = (r.prefill_instance, r.prefill_start_s) {
            points.push((i + 1, PREFILL, t));
        }
        if let (Some(i), Some(t)) = (r.decode_instance, r.decode_start_s)
            && r.output_tokens > 1
        {
            points.push((i + 1, DECODE, t));
        }
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(());
        };
        if points.len() < 2 || !self.opts.overlaps(first.2, last.2) {
            return Ok(());
        }
        let n = points.len();
        for (k, (pid, tid, t)) in points.into_iter().enumerate() {
            let ph = match k {
                0 => "s",
                k if k + 1 == n => "f",
                _ => "t",
            };
            // "s" and "t" bind to the slice enclosing them; "f" to the next slice that starts
            // (a request joins the decode batch at the step after the one that admitted it).
            let mut e = json!({"ph": ph, "cat": "request", "name": "request", "id": r.request_id,
                "pid": pid, "tid": tid, "ts": us(t)});
            if ph != "f" {
                e["bp"] = json!("e");
            }
            self.event(e)?;
        }
        Ok(())
    }

    /// Closes the JSON and flushes it to disk; returns the number of events.
    pub fn finish(mut self) -> Result<u64, Error> {
        self.raw("\n]}\n")?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| out_err(&self.path, e.error()))?;
        file.sync_all().map_err(|e| out_err(&self.path, e))?;
        Ok(self.events)
    }
}

/// A sink that passes every row on and draws it on a timeline too.
pub struct TimelineSink<'a> {
    pub rows: &'a mut dyn RecordSink,
    pub timeline: &'a mut TimelineWriter,
}

impl RecordSink for TimelineSink<'_> {
    fn request(&mut self, r: &RequestRecord) -> Result<(), Error> {
        self.timeline.request(r)?;
        self.rows.request(r)
    }
    fn transfer(&mut self, t: &TransferRecord) -> Result<(), Error> {
        self.timeline.transfer(t)?;
        self.rows.transfer(t)
    }
    fn step(&mut self, s: &StepSpan) -> Result<(), Error> {
        self.timeline.step(s)?;
        self.rows.step(s)
    }
}

/// Each instance's process name: `i0 encoder · A100-SXM4-80GB (GPU 2)`, `i1 all · 2×H100 (GPUs 0-1)`.
pub fn instance_names(s: &crate::experiment::Scenario) -> Vec<String> {
    s.cluster
        .instances
        .iter()
        .map(|x| {
            let gpus = match x.gpus.as_slice() {
                [g] => format!("GPU {g}"),
                g => format!(
                    "GPUs {}",
                    g.iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            let tp = if x.gpus.len() > 1 {
                format!("{}×", x.gpus.len())
            } else {
                String::new()
            };
            format!("i{} {} · {tp}{} ({gpus})", x.id, x.role.name(), x.gpu.name)
        })
        .collect()
}

/// The file name of scenario `index`'s timeline in a result directory.
pub fn file_name(index: usize, scenario: &str, source: Source) -> String {
    let slug: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(80).collect();
    format!("trace-{index:03}-{slug}.{}.json", source.as_str())
}

/// What a timeline holds, read back by [`check`].
#[derive(Debug, Default, PartialEq)]
pub struct TraceShape {
    pub scenario: String,
    /// Process names by pid.
    pub processes: BTreeMap<u64, String>,
    /// Complete slices per (process name, thread name).
    pub slices: BTreeMap<(String, String), u64>,
    /// Async slices per route.
    pub transfers: BTreeMap<String, u64>,
    /// Counter samples per (process name, counter).
    pub counters: BTreeMap<(String, String), u64>,
    /// Requests with a complete flow.
    pub flows: u64,
}

/// Reads a timeline back and checks it against the Trace Event format's rules as Perfetto
/// imports them: a JSON object with a `traceEvents` array; every event with a known phase and
/// the fields that phase needs (`ts`, `pid`, `tid`, `dur` ≥ 0 for `X`, `id` for async and flow
/// events, numeric counter args); async `b`/`e` paired by (cat, id) with `e` not before `b`;
/// flows starting with `s` and ending with `f`; and — this writer's own promise — complete slices
/// on one thread never overlapping, and every thread and process named.
pub fn check(text: &str) -> Result<TraceShape, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let events = doc
        .get("traceEvents")
        .and_then(Value::as_array)
        .ok_or("no traceEvents array")?;
    let mut shape = TraceShape {
        scenario: doc["otherData"]["scenario"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ..TraceShape::default()
    };
    let mut threads: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut spans: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    let mut open: BTreeMap<(String, String), (f64, String)> = BTreeMap::new();
    let mut flows: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut counters: Vec<(u64, String)> = Vec::new();
    let mut routes: Vec<String> = Vec::new();
    for (k, e) in events.iter().enumerate() {
        let at = |what: &str| format!("event {k} ({e}): {what}");
        let ph = e["ph"].as_str().ok_or_else(|| at("no ph"))?;
        let pid = e["pid"].as_u64().ok_or_else(|| at("no integer pid"))?;
        let name = e["name"].as_str().ok_or_else(|| at("no name"))?;
        let ts = || e["ts"].as_f64().ok_or_else(|| at("no numeric ts"));
        match ph {
            "M" => {
                let n = e["args"]["name"].as_str();
                match (name, n) {
                    ("process_name", Some(n)) => {
                        shape.processes.insert(pid, n.to_string());
                    }
                    ("thread_name", Some(n)) => {
                        let tid = e["tid"]
                            .as_u64()
                            .ok_or_else(|| at("thread_name without tid"))?;
                        threads.insert((pid, tid), n.to_string());
                    }
                    ("process_sort_index", _) => {}
                    _ => return Err(at("unknown metadata")),
                }
            }
            "X" => {
                let tid = e["tid"].as_u64().ok_or_else(|| at("no tid"))?;
                let dur = e["dur"].as_f64().ok_or_else(|| at("no dur"))?;
                if dur < 0.0 {
                    return Err(at("negative dur"));
                }
                let t = ts()?;
                spans.entry((pid, tid)).or_default().push((t, t + dur));
            }
            "b" | "e" => {
                let id = e["id"]
                    .as_str()
                    .ok_or_else(|| at("async event without id"))?;
                let cat = e["cat"]
                    .as_str()
                    .ok_or_else(|| at("async event without cat"))?;
                let key = (cat.to_string(), id.to_string());
                let t = ts()?;
                if ph == "b" {
                    if open.insert(key, (t, name.to_string())).is_some() {
                        return Err(at("async id begun twice"));
                    }
                } else {
                    let (t0, n) = open
                        .remove(&key)
                        .ok_or_else(|| at("async end without begin"))?;
                    if t < t0 || n != name {
                        return Err(at("async end before its begin or under another name"));
                    }
                    routes.push(n);
                }
            }
            "s" | "t" | "f" => {
                let id = e["id"]
                    .as_u64()
                    .ok_or_else(|| at("flow without integer id"))?;
                e["tid"].as_u64().ok_or_else(|| at("flow without tid"))?;
                ts()?;
                flows.entry(id).or_default().push(ph);
            }
            "C" => {
                ts()?;
                let args = e["args"]
                    .as_object()
                    .ok_or_else(|| at("counter without args"))?;
                if args.is_empty() || !args.values().all(Value::is_number) {
                    return Err(at("counter args must be numbers"));
                }
                counters.push((pid, name.to_string()));
            }
            other => return Err(at(&format!("phase {other:?} is not one this format uses"))),
        }
    }
    if let Some(((cat, id), _)) = open.iter().next() {
        return Err(format!("async slice {cat}/{id} never ends"));
    }
    let process = |pid: u64| {
        shape
            .processes
            .get(&pid)
            .cloned()
            .ok_or(format!("pid {pid} has no process_name"))
    };
    for ((pid, tid), mut v) in spans {
        let thread = threads
            .get(&(pid, tid))
            .ok_or(format!("pid {pid} tid {tid} has no thread_name"))?
            .clone();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in v.windows(2) {
            // Rounded to the format's microseconds at nanosecond resolution.
            if w[1].0 < w[0].1 - 1e-3 {
                return Err(format!(
                    "{} / {thread}: slices overlap at {} µs",
                    process(pid)?,
                    w[1].0
                ));
            }
        }
        shape.slices.insert((process(pid)?, thread), v.len() as u64);
    }
    for (id, f) in flows {
        let ok = f.len() >= 2
            && f[0] == "s"
            && f[f.len() - 1] == "f"
            && f[1..f.len() - 1].iter().all(|p| *p == "t");
        if !ok {
            return Err(format!("flow {id} is {f:?}: expected s, t…, f"));
        }
        shape.flows += 1;
    }
    for (pid, name) in counters {
        *shape.counters.entry((process(pid)?, name)).or_default() += 1;
    }
    for r in routes {
        *shape.transfers.entry(r).or_default() += 1;
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Strategy;
    use crate::records::{RequestStatus, TransferKind};

    fn span(instance: u64, start: f64, enc: f64, end: f64) -> StepSpan {
        StepSpan {
            instance,
            start_s: start,
            encode_end_s: enc,
            end_s: end,
            images: u64::from(enc > start),
            prefill_seqs: 1,
            prefill_tokens: 600,
            decode_seqs: 3,
            decode_context_tokens: 1800,
            kv_blocks_used: 40,
            kv_blocks: 100,
            queued: 2,
            running: 3,
        }
    }

    fn transfer(id: u64, start: f64, end: f64) -> TransferRecord {
        TransferRecord {
            scenario: "s".into(),
            request_id: id,
            kind: TransferKind::Kv,
            src_instance: 0,
            dst_instance: 1,
            link: "PCIe-Gen5",
            bytes: 1 << 20,
            flows: 1,
            ready_s: start,
            start_s: start,
            end_s: end,
            source: Source::Sim,
        }
    }

    fn write(opts: TraceOptions, f: impl FnOnce(&mut TimelineWriter)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let names = [
            "i0 prefill · H100".to_string(),
            "i1 decode · H100".to_string(),
        ];
        let mut w = TimelineWriter::create(&path, "s \"q\"", Source::Sim, &names, opts).unwrap();
        f(&mut w);
        w.finish().unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn a_step_is_an_encode_slice_then_prefill_and_decode_over_its_forward() {
        let text = write(TraceOptions::default(), |w| {
            w.step(&span(0, 0.0, 0.010, 0.050)).unwrap();
            w.step(&span(0, 0.050, 0.050, 0.070)).unwrap();
        });
        let shape = check(&text).unwrap();
        assert_eq!(shape.scenario, "s \"q\"");
        let n = |t: &str| shape.slices[&("i0 prefill · H100".to_string(), t.to_string())];
        assert_eq!((n("encode"), n("prefill"), n("decode")), (1, 2, 2));
        assert_eq!(
            shape.counters[&("i0 prefill · H100".to_string(), "KV blocks".to_string())],
            2
        );
        // 10 ms of encode, as microseconds.
        assert!(text.contains("\"dur\":10000.0"), "{text}");
    }

    #[test]
    fn overlapping_transfers_pair_up_and_flows_run_start_to_finish() {
        let text = write(TraceOptions::default(), |w| {
            w.transfer(&transfer(1, 0.1, 0.3)).unwrap();
            w.transfer(&transfer(2, 0.2, 0.4)).unwrap();
            w.request(&request(1)).unwrap();
        });
        let shape = check(&text).unwrap();
        assert_eq!(shape.transfers["i0→i1 PCIe-Gen5"], 2);
        assert_eq!(shape.flows, 1);
    }

    fn request(id: u64) -> RequestRecord {
        RequestRecord {
            scenario: "s".into(),
            strategy: Strategy::Stage,
            request_id: id,
            status: RequestStatus::Finished,
            arrival_s: 0.0,
            n_images: 1,
            visual_tokens: 576,
            prompt_tokens: 20,
            output_tokens: 8,
            emb_bytes: 0,
            kv_bytes: 1 << 20,
            ttft_s: Some(0.1),
            tpot_s: Some(0.01),
            e2e_s: Some(0.2),
            encode_start_s: Some(0.0),
            encode_end_s: Some(0.01),
            emb_transfer_start_s: None,
            emb_transfer_end_s: None,
            prefill_start_s: Some(0.01),
            prefill_end_s: Some(0.05),
            kv_transfer_start_s: Some(0.05),
            kv_transfer_end_s: Some(0.07),
            decode_start_s: Some(0.07),
            finish_s: Some(0.2),
            encoder_instance: Some(0),
            prefill_instance: Some(0),
            decode_instance: Some(1),
            preemptions: 0,
            source: Source::Sim,
        }
    }

    #[test]
    fn the_window_and_the_sample_bound_what_is_kept() {
        let opts = TraceOptions::parse(Some("1:2"), Some(2)).unwrap();
        let text = write(opts, |w| {
            w.step(&span(0, 0.0, 0.0, 0.5)).unwrap();
            w.step(&span(0, 1.5, 1.5, 1.7)).unwrap();
            w.transfer(&transfer(2, 1.2, 1.3)).unwrap();
            w.transfer(&transfer(3, 1.2, 1.3)).unwrap();
            w.transfer(&transfer(4, 5.0, 6.0)).unwrap();
        });
        let shape = check(&text).unwrap();
        assert_eq!(
            shape.slices[&("i0 prefill · H100".to_string(), "prefill".to_string())],
            1
        );
        assert_eq!(shape.transfers["i0→i1 PCIe-Gen5"], 1);
        for bad in ["2:1", "a:b", "1", "-1:2", "1:inf"] {
            let e = TraceOptions::parse(Some(bad), None).unwrap_err();
            assert!(e.to_string().contains("--trace-window"), "{e}");
        }
        assert!(TraceOptions::parse(None, Some(0)).is_err());
    }

    #[test]
    fn check_refuses_what_perfetto_would_misdraw() {
        let overlapping = write(TraceOptions::default(), |w| {
            w.step(&span(0, 0.0, 0.0, 0.5)).unwrap();
            w.step(&span(0, 0.4, 0.4, 0.6)).unwrap();
        });
        assert!(check(&overlapping).unwrap_err().contains("overlap"));
        let unpaired =
            r#"{"traceEvents":[{"ph":"b","cat":"c","id":"0x1","name":"n","pid":1,"ts":0}]}"#;
        assert!(check(unpaired).unwrap_err().contains("never ends"));
        assert!(check("[]").is_err());
        let unnamed = r#"{"traceEvents":[{"ph":"X","name":"n","pid":1,"tid":1,"ts":0,"dur":1}]}"#;
        assert!(check(unnamed).unwrap_err().contains("thread_name"));
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(
            file_name(3, "pcie [rate=8, cut=modality]/../x", Source::Exec),
            "trace-003-pcie-rate-8-cut-modality-x.exec.json"
        );
    }
}
