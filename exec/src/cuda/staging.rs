//! Staged copies between two GPUs without peer access: GPU → pinned host → GPU, chunked and
//! double-buffered (k slots) on two streams (a D2H stream on the source, an H2D stream on the
//! destination) ordered by events, so the two PCIe hops overlap. The link probes time it; the
//! transfer validation and the trace replay ship KV caches and embeddings with it.

use crate::cuda::device::{self, Event, Gpu, PinnedBuffer, Stream};
use crate::error::{Error, Result};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
pub const GIB: usize = 1024 * 1024 * 1024;

/// Split `bytes` into chunks of at most `chunk` bytes: (offset, len) pairs covering it exactly.
pub fn plan_chunks(bytes: usize, chunk: usize) -> Vec<(usize, usize)> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(bytes.div_ceil(chunk));
    let mut off = 0;
    while off < bytes {
        let len = chunk.min(bytes - off);
        out.push((off, len));
        off += len;
    }
    out
}

/// Chunk size for a staged copy of `bytes`: the simulator's rule
/// (`hetsim_sim::catalog::link::staging_chunk_bytes`, about 4 chunks overlapping), so what is
/// measured is what is modelled; `max_chunk` (the staging slot size) caps it. The calibration's
/// chunk sweep sets other sizes on purpose, to show how the rate depends on them.
pub fn staged_chunk(bytes: usize, max_chunk: usize) -> usize {
    let chunk = hetsim_sim::catalog::link::staging_chunk_bytes(bytes as u64) as usize;
    chunk.min(max_chunk).max(1)
}

/// The staging machinery for GPU → pinned host → GPU copies: `slots` pinned slots, a D2H stream
/// on the source GPU, an H2D stream on the destination GPU, and per-slot events between them.
pub struct Stager {
    pub pinned: PinnedBuffer,
    pub slot_bytes: usize,
    pub d2h: Stream,
    pub h2d: Stream,
    d2h_done: Vec<Event>,
    h2d_done: Vec<Event>,
}

impl Stager {
    pub fn new(src: &Gpu, dst: &Gpu, slot_bytes: usize, slots: usize) -> Result<Stager> {
        if slots < 2 {
            return Err(Error::Invalid(
                "a pipelined staged copy needs at least 2 slots".into(),
            ));
        }
        let pinned = PinnedBuffer::new(src, slot_bytes * slots)?;
        let d2h = src.stream()?;
        let h2d = dst.stream()?;
        let d2h_done = (0..slots)
            .map(|_| Event::sync_only(src))
            .collect::<Result<Vec<_>>>()?;
        let h2d_done = (0..slots)
            .map(|_| Event::sync_only(dst))
            .collect::<Result<Vec<_>>>()?;
        Ok(Stager {
            pinned,
            slot_bytes,
            d2h,
            h2d,
            d2h_done,
            h2d_done,
        })
    }

    pub fn slots(&self) -> usize {
        self.d2h_done.len()
    }

    /// Queue the copy of `bytes` from `src` (device pointer on the source GPU) to `dst` (on the
    /// destination GPU). It starts after `start`; `self.h2d` is ordered after its last chunk.
    pub fn enqueue(
        &self,
        src: u64,
        dst: u64,
        bytes: usize,
        chunk: usize,
        start: &Event,
    ) -> Result<()> {
        if chunk > self.slot_bytes {
            return Err(Error::Invalid(format!(
                "chunk {chunk} larger than staging slot {}",
                self.slot_bytes
            )));
        }
        let k = self.slots();
        self.d2h.wait(start)?;
        for (i, (off, len)) in plan_chunks(bytes, chunk).into_iter().enumerate() {
            let slot = i % k;
            let host = slot * self.slot_bytes;
            if i >= k {
                // the slot is free once the H2D of chunk i-k has read it
                self.d2h.wait(&self.h2d_done[slot])?;
            }
            device::copy_dtoh_async(&self.pinned, host, src + off as u64, len, &self.d2h)?;
            self.d2h_done[slot].record(&self.d2h)?;
            self.h2d.wait(&self.d2h_done[slot])?;
            device::copy_htod_async(dst + off as u64, &self.pinned, host, len, &self.h2d)?;
            self.h2d_done[slot].record(&self.h2d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_exactly() {
        for (bytes, chunk) in [
            (0usize, 4usize),
            (1, 4),
            (10, 4),
            (12, 4),
            (GIB, 8 * MIB),
            (5 * MIB + 3, MIB),
        ] {
            let c = plan_chunks(bytes, chunk);
            assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), bytes);
            let mut off = 0;
            for &(o, l) in &c {
                assert_eq!(o, off);
                assert!(l > 0 && l <= chunk);
                off += l;
            }
        }
        assert_eq!(plan_chunks(GIB, 8 * MIB).len(), 128);
    }

    #[test]
    fn staged_chunk_sizes() {
        assert_eq!(staged_chunk(4 * KIB, 16 * MIB), 4 * KIB); // tiny: one chunk
        assert_eq!(staged_chunk(4 * MIB, 16 * MIB), MIB); // four chunks
        assert_eq!(staged_chunk(GIB, 16 * MIB), 16 * MIB); // capped by the slot
        assert_eq!(staged_chunk(512 * KIB, 16 * MIB), 256 * KIB); // floor
    }
}
