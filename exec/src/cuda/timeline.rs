//! Where one pass through the model spends its GPU time, operation by operation
//! (`hetsim exec bench --breakdown`). While a timeline is open on this thread, every kernel
//! launch and cuBLASLt product first records an event on its stream; the time between one
//! operation's event and the next is that operation's. Launched kernel by kernel (no CUDA
//! graphs), so a host slower than the GPU shows as time of the operation after the gap.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::cuda::device::{Event, Stream};
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
    }
}
