//! Where one pass through the model spends its GPU time, operation by operation
//! (`hetsim exec bench --breakdown`). While a timeline is open on this thread, every kernel
//! launch and cuBLASLt product first records an event on its stream; the time between one
//! operation's event and the next is that operation's. Launched kernel by kernel (no CUDA
//! graphs), so a host slower than the GPU shows as time of the operation after the gap.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::device::{Event, Stream};
use crate::error::Result;

thread_local! {
    static OPEN: RefCell<Option<Vec<(String, Event)>>> = const { RefCell::new(None) };
}

/// Start recording on this thread.
pub fn open() {
    OPEN.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Mark the start of an operation about to be queued on `s` (nothing when no timeline is open).
pub fn mark(s: &Stream, label: impl FnOnce() -> String) -> Result<()> {
    if OPEN.with(|t| t.borrow().is_none()) {
        return Ok(());
    }
    let e = Event::timing_on(s)?;
    e.record(s)?;
    OPEN.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push((label(), e));
        }
    });
    Ok(())
}

/// One operation's share of the recorded passes.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub label: String,
    pub calls: usize,
    pub ms: f64,
}

/// Stop recording: per label, calls and milliseconds, largest first.
pub fn close(s: &Stream) -> Result<Vec<OpTime>> {
    let Some(marks) = OPEN.with(|t| t.borrow_mut().take()) else {
        return Ok(Vec::new());
    };
    let end = Event::timing_on(s)?;
    end.record(s)?;
    let mut times = Vec::with_capacity(marks.len());
    for (i, (label, e)) in marks.iter().enumerate() {
        let next = marks.get(i + 1).map_or(&end, |m| &m.1);
        times.push((label.clone(), e.elapsed_ms(next)?));
    }
    Ok(summarize(times))
}

fn summarize(times: Vec<(String, f64)>) -> Vec<OpTime> {
    let mut by: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (label, ms) in times {
        let e = by.entry(label).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    let mut out: Vec<OpTime> = by
        .into_iter()
        .map(|(label, (calls, ms))| OpTime { label, calls, ms })
        .collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.label.cmp(&b.label)));
    out
}

/// Markdown table of one pass: `passes` passes were recorded, so times are divided by it.
pub fn table(title: &str, ops: &[OpTime], passes: usize) -> String {
    let total: f64 = ops.iter().map(|o| o.ms).sum();
    let p = passes.max(1) as f64;
    let mut s = format!(
        "{title}: {:.3} ms per pass\n\n| operation | calls per pass | ms per pass | share |\n|---|---|---|---|\n",
        total / p
    );
    for o in ops {
        s += &format!(
            "| {} | {} | {:.3} | {:.1} % |\n",
            o.label,
            o.calls as f64 / p,
            o.ms / p,
            100.0 * o.ms / total.max(f64::MIN_POSITIVE)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_summed_by_label_largest_first() {
        let ops = summarize(vec![
            ("a".into(), 1.0),
            ("b".into(), 5.0),
            ("a".into(), 2.0),
        ]);
        assert_eq!(
            ops,
            vec![
                OpTime {
                    label: "b".into(),
                    calls: 1,
                    ms: 5.0
                },
                OpTime {
                    label: "a".into(),
                    calls: 2,
                    ms: 3.0
                },
            ]
        );
        let t = table("x", &ops, 2);
        assert!(t.starts_with("x: 4.000 ms per pass"), "{t}");
        assert!(t.contains("| a | 1 | 1.500 | 37.5 % |"), "{t}");
    }
}
