//! Back-pressure for the two-GPU replay (`replay::replay_split`), as plain data: no GPU here, so
//! `exec/tests/landing_backpressure.rs` drives it on the CPU.
//!
//! Under overload the downstream engine (LLM or decode worker) takes requests more slowly than
//! the upstream one hands them over. Each handed-over request holds a landing buffer on the
//! downstream GPU (its embeddings or packed KV) until the downstream engine has read it, so
//! without a bound those buffers grow with the backlog until cuMemAlloc fails. Two bounds stop
//! that:
//!
//! * [`Window`]: bytes handed to the link and not yet given back by the downstream engine. The
//!   upstream reserves a request's bytes before handing it over and waits while they do not fit;
//!   the downstream releases them when it is done with the buffer. The backlog then waits
//!   upstream, where a prefill worker's KV pool (or the encoder's queue of arrivals) bounds it.
//! * [`Pool`]: the landing buffers themselves, reused between shipments (an allocation per
//!   shipment would put cuMemAlloc into every transfer's time). It keeps its total within the
//!   window, freeing reusable buffers of other sizes to make room.
//!
//! One payload larger than the window goes alone: waiting for room that can never exist would
//! stop the replay.

use std::sync::{Condvar, Mutex};

/// The window's size at least; a deployment whose payloads are large gets [`WINDOW_PAYLOADS`] of
/// them (a 7B model's KV of a 700-token prompt is 352 MiB).
pub const MIN_WINDOW_BYTES: u64 = 384 << 20;
/// Payloads of the largest size the window holds at least: enough that at the loads the
/// simulator is checked at, no shipment waits for the window.
pub const WINDOW_PAYLOADS: u64 = 4;

/// The window for a deployment whose largest payload is `largest` bytes.
pub fn window_bytes(largest: u64) -> u64 {
    MIN_WINDOW_BYTES.max(WINDOW_PAYLOADS.saturating_mul(largest))
}

/// Bytes handed over and not yet given back, within `limit`.
#[derive(Debug, Clone)]
pub struct Window {
    limit: u64,
    reserved: u64,
    peak: u64,
}

impl Window {
    pub fn new(limit: u64) -> Window {
        Window {
            limit,
            reserved: 0,
            peak: 0,
        }
    }

    /// Reserves `bytes` if they fit beside what is reserved, or if nothing is (one payload
    /// larger than the window goes alone).
    pub fn try_reserve(&mut self, bytes: u64) -> bool {
        let fits = self.reserved == 0 || self.reserved.saturating_add(bytes) <= self.limit;
        if fits {
            self.reserved += bytes;
            self.peak = self.peak.max(self.reserved);
        }
        fits
    }

    /// Gives back `bytes` reserved before.
    pub fn release(&mut self, bytes: u64) {
        debug_assert!(
            bytes <= self.reserved,
            "{bytes} released, {} reserved",
            self.reserved
        );
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The most bytes reserved at once.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// A [`Window`] shared by the replay's threads: the upstream waits in `reserve` until the
/// downstream's `release` makes room, or until the downstream has stopped (`close`).
pub struct SharedWindow {
    state: Mutex<(Window, bool)>,
    room: Condvar,
}

impl SharedWindow {
    pub fn new(limit: u64) -> SharedWindow {
        SharedWindow {
            state: Mutex::new((Window::new(limit), false)),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Window, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` fit and reserves them; false when the downstream has stopped (nothing
    /// will be given back, and nothing should be handed over).
    pub fn reserve(&self, bytes: u64) -> bool {
        let mut s = self.lock();
        loop {
            if s.1 {
                return false;
            }
            if s.0.try_reserve(bytes) {
                return true;
            }
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn release(&self, bytes: u64) {
        self.lock().0.release(bytes);
        self.room.notify_all();
    }

    /// The downstream has stopped: every waiting and later `reserve` returns false.
    pub fn close(&self) {
        self.lock().1 = true;
        self.room.notify_all();
    }

    /// The window as it is now (its peak, for the replay's log).
    pub fn snapshot(&self) -> Window {
        self.lock().0.clone()
    }
}

/// What a landing buffer is to the pool: its size.
pub trait Landed {
    fn bytes(&self) -> u64;
}

/// Landing buffers kept for reuse, their total (in use and free) within `limit`.
pub struct Pool<B: Landed> {
    free: Vec<B>,
    limit: u64,
    allocated: u64,
    peak: u64,
}

impl<B: Landed> Pool<B> {
    pub fn new(limit: u64) -> Pool<B> {
        Pool {
            free: Vec::new(),
            limit,
            allocated: 0,
            peak: 0,
        }
    }

    /// A buffer of at least `bytes` (exactly `bytes` when `exact`): a free one that fits, else a
    /// new one from `alloc`, after freeing (dropping) free buffers while the total would pass
    /// the limit.
    pub fn get<E>(
        &mut self,
        bytes: u64,
        exact: bool,
        alloc: impl FnOnce(u64) -> Result<B, E>,
    ) -> Result<B, E> {
        let fits = |b: &B| {
            if exact {
                b.bytes() == bytes
            } else {
                b.bytes() >= bytes
            }
        };
        if let Some(i) = self.free.iter().position(fits) {
            return Ok(self.free.swap_remove(i));
        }
        while self.allocated.saturating_add(bytes) > self.limit {
            let Some(largest) = (0..self.free.len()).max_by_key(|&i| self.free[i].bytes()) else {
                break;
            };
            self.allocated -= self.free.swap_remove(largest).bytes();
        }
        let b = alloc(bytes)?;
        self.allocated += b.bytes();
        self.peak = self.peak.max(self.allocated);
        Ok(b)
    }

    /// A buffer back from the downstream engine, free for the next shipment.
    pub fn put(&mut self, b: B) {
        self.free.push(b);
    }

    /// Bytes of every landing buffer that exists, in use or free.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The most bytes allocated at once.
    pub fn peak(&self) -> u64 {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Buf(u64);
    impl Landed for Buf {
        fn bytes(&self) -> u64 {
            self.0
        }
    }

    fn alloc(n: u64) -> Result<Buf, ()> {
        Ok(Buf(n))
    }

    #[test]
    fn the_window_holds_what_fits_and_one_oversized_payload_alone() {
        let mut w = Window::new(100);
        assert!(w.try_reserve(60));
        assert!(!w.try_reserve(50), "60 + 50 > 100");
        assert!(w.try_reserve(40));
        w.release(100);
        assert!(w.try_reserve(500), "alone, though larger than the window");
        assert!(!w.try_reserve(1));
        assert_eq!((w.reserved(), w.peak()), (500, 500));
    }

    #[test]
    fn the_pool_reuses_and_frees_other_sizes_to_stay_within_its_limit() {
        let mut p: Pool<Buf> = Pool::new(100);
        let a = p.get(40, true, alloc).unwrap();
        let b = p.get(40, true, alloc).unwrap();
        p.put(a);
        p.put(b);
        // Reused, no allocation.
        let a = p.get(40, true, alloc).unwrap();
        assert_eq!(p.allocated(), 80);
        // 80 + 50 > 100: the free 40 goes first.
        let c = p.get(50, true, alloc).unwrap();
        assert_eq!(p.allocated(), 90);
        assert_eq!((a.0, c.0), (40, 50));
        assert_eq!(p.peak(), 90);
    }

    #[test]
    fn a_closed_window_stops_a_waiting_reserve() {
        let w = SharedWindow::new(10);
        assert!(w.reserve(10));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| w.reserve(5));
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.release(10);
            assert!(waiter.join().unwrap(), "room made: reserved");
            let waiter = s.spawn(|| w.reserve(10));
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.close();
            assert!(!waiter.join().unwrap(), "closed: gives up");
        });
    }
}
