//! Named device scratch buffers of the forward pass.
//!
//! A buffer grows on demand and never shrinks. A CUDA graph holds the addresses it was captured
//! with, so the engine freezes the scratch its decode graphs use once it has reserved it for the
//! largest batch: after that, a request that would (re)allocate is a broken invariant (a replayed
//! graph would write freed memory) and panics with the buffer's name.

use crate::cuda::device::{DeviceBuffer, Gpu, Stream};
use crate::error::Result;
use std::collections::HashMap;

pub struct Scratch {
    bufs: HashMap<&'static str, DeviceBuffer>,
    frozen: bool,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            bufs: HashMap::new(),
            frozen: false,
        }
    }

    /// From now on every request must fit a buffer already here (see the module doc).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    pub fn get(&mut self, gpu: &Gpu, name: &'static str, bytes: usize) -> Result<u64> {
        self.get_with(gpu, name, bytes, |_| Ok(()))
    }

    /// As `get`, with a new buffer zeroed on `s` (for counters that kernels leave at zero).
    pub fn get_zeroed(
        &mut self,
        gpu: &Gpu,
        name: &'static str,
        bytes: usize,
        s: &Stream,
    ) -> Result<u64> {
        self.get_with(gpu, name, bytes, |b| b.memset_async(0, s))
    }

    /// The buffer `name` of at least `bytes`; a new one (the old is freed first) goes through
    /// `init`.
    fn get_with(
        &mut self,
        gpu: &Gpu,
        name: &'static str,
        bytes: usize,
        init: impl FnOnce(&DeviceBuffer) -> Result<()>,
    ) -> Result<u64> {
        let held = self.bufs.get(name).map(|b| b.bytes);
        if must_allocate(name, held, bytes, self.frozen) {
            self.bufs.remove(name);
            let b = gpu.alloc(bytes)?;
            init(&b)?;
            self.bufs.insert(name, b);
        }
        Ok(self.bufs[name].ptr)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Does a request for `bytes` of buffer `name`, of which `held` bytes are allocated, need a new
/// allocation? Panics where it would and the scratch is frozen.
fn must_allocate(name: &str, held: Option<usize>, bytes: usize, frozen: bool) -> bool {
    let grow = held.is_none_or(|h| h < bytes);
    assert!(
        !(grow && frozen),
        "scratch buffer {name}: {bytes} bytes asked of a frozen scratch holding {held:?} \
         (decode graphs hold its addresses; it must be reserved for the largest batch first)"
    );
    grow
}

#[cfg(test)]
mod tests {
    use super::must_allocate;

    #[test]
    fn an_open_scratch_allocates_what_it_lacks_and_reuses_what_fits() {
        assert!(must_allocate("x", None, 16, false));
        assert!(must_allocate("x", Some(8), 16, false));
        assert!(!must_allocate("x", Some(16), 16, false));
        assert!(!must_allocate("x", Some(32), 16, false));
    }

    #[test]
    fn a_frozen_scratch_reuses_what_fits() {
        assert!(!must_allocate("x", Some(16), 16, true));
        assert!(!must_allocate("x", Some(32), 8, true));
    }

    #[test]
    #[should_panic(expected = "scratch buffer d_h: 32 bytes asked of a frozen scratch")]
    fn a_frozen_scratch_refuses_to_grow() {
        must_allocate("d_h", Some(16), 32, true);
    }

    #[test]
    #[should_panic(expected = "scratch buffer d_new")]
    fn a_frozen_scratch_refuses_a_new_buffer() {
        must_allocate("d_new", None, 1, true);
    }
}
