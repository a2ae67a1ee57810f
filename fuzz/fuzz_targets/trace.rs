//! Trace rows in every format (the first byte picks it: JSONL, hetsim CSV, Splitwise, Azure, or
//! detection from the header): each row is read or refused with its row number, never a panic.
#![no_main]

use std::path::Path;

use hetsim_sim::trace::{TraceFormat, TraceReader};
use libfuzzer_sys::fuzz_target;

const FORMATS: [(TraceFormat, &str); 5] = [
    (TraceFormat::Jsonl, "t.jsonl"),
    (TraceFormat::Csv, "t.csv"),
    (TraceFormat::Splitwise, "t.csv"),
    (TraceFormat::Azure, "t.csv"),
    (TraceFormat::Auto, "t.csv"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rows)) = data.split_first() else {
        return;
    };
    let (format, name) = FORMATS[usize::from(pick) % FORMATS.len()];
    let reader = std::io::Cursor::new(rows.to_vec());
    let Ok(mut trace) = TraceReader::from_reader(Path::new(name), reader, format) else {
        return;
    };
    while let Ok(Some(_)) = trace.next_row() {}
});
