//! Bandwidth sharing among concurrent transfers: max-min fairness over the ports each flow
//! crosses (progressive filling), recomputed whenever a flow starts, ends or changes its cap.
//!
//! A flow may carry a rate cap: a KV cache streamed layer by layer cannot leave faster than the
//! prefill produces it. Bytes are tracked as f64 between events; completion is exact in integer
//! bytes (a flow that completes delivered exactly the bytes it was started with).

/// Index of a flow in the network's slab.
pub type FlowId = usize;

/// How concurrent transfers on a port divide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Max-min fair: every flow gets an equal share of its bottleneck (network flows, NCCL).
    #[default]
    Fair,
    /// First come, first served: the oldest flow takes what it can, later ones the rest. What
    /// concurrent `cudaMemcpyAsync`s on one copy path do (measured on 2×H200, exec/REPORT.md).
    Fifo,
}

#[derive(Debug, Clone)]
struct Flow {
    ports: Vec<usize>,
    bytes: u64,
    remaining: f64,
    rate: f64,
    cap: f64,
    /// Start order, for first-come-first-served sharing.
    order: u64,
    /// Set from the network's counter on every reallocation: completion events carry it, stale
    /// ones are ignored. Unique across flows, so a reused slot never matches an old event.
    version: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PortUsage {
    pub bytes: u64,
    pub busy_ns: u64,
    active: usize,
    busy_since: u64,
}

/// A completion the engine must schedule: flow `id` ends at `at_ns` unless `version` is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub id: FlowId,
    pub at_ns: u64,
    pub version: u64,
}

pub struct Network {
    capacity: Vec<f64>,
    sharing: Sharing,
    started: u64,
    pub usage: Vec<PortUsage>,
    flows: Vec<Option<Flow>>,
    free: Vec<FlowId>,
    last_ns: u64,
    next_version: u64,
    /// Bytes of every flow started.
    pub bytes_sent: u64,
    /// Bytes moved for the flows that completed, from their rates (what they were started with
    /// less what was left to move at completion, rounded).
    pub bytes_received: u64,
    /// Most bytes any flow had left to move when it completed (≈ 0 if completion times are right).
    pub max_remaining_at_completion: f64,
}

impl Network {
    pub fn new(port_bytes_per_s: Vec<f64>, sharing: Sharing) -> Network {
        let n = port_bytes_per_s.len();
        Network {
            capacity: port_bytes_per_s,
            sharing,
            started: 0,
            usage: vec![PortUsage::default(); n],
            flows: Vec::new(),
            free: Vec::new(),
            last_ns: 0,
            next_version: 0,
            bytes_sent: 0,
            bytes_received: 0,
            max_remaining_at_completion: 0.0,
        }
    }

    pub fn active_flows(&self) -> usize {
        self.flows.iter().filter(|f| f.is_some()).count()
    }

    /// Starts a flow of `bytes` across `ports`, optionally capped at `cap` bytes/s.
    pub fn start(
        &mut self,
        now: u64,
        ports: Vec<usize>,
        bytes: u64,
        cap: Option<f64>,
    ) -> (FlowId, Vec<Completion>) {
        self.advance(now);
        for &p in &ports {
            let u = &mut self.usage[p];
            if u.active == 0 {
                u.busy_since = now;
            }
            u.active += 1;
        }
        self.bytes_sent += bytes;
        self.started += 1;
        let flow = Flow {
            ports,
            bytes,
            remaining: bytes as f64,
            rate: 0.0,
            cap: cap.unwrap_or(f64::INFINITY),
            order: self.started,
            version: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.flows[id] = Some(flow);
                id
            }
            None => {
                self.flows.push(Some(flow));
                self.flows.len() - 1
            }
        };
        (id, self.reallocate(now))
    }

    /// Changes (or lifts, with `None`) a flow's cap.
    pub fn set_cap(&mut self, now: u64, id: FlowId, cap: Option<f64>) -> Vec<Completion> {
        self.advance(now);
        if let Some(f) = self.flows[id].as_mut() {
            f.cap = cap.unwrap_or(f64::INFINITY);
        }
        self.reallocate(now)
    }

    /// Whether a completion event is still current.
    pub fn is_current(&self, c: &Completion) -> bool {
        self.flows
            .get(c.id)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.version == c.version)
    }

    /// Ends a flow at its completion event; returns its bytes and the new completions of the rest.
    pub fn complete(&mut self, now: u64, id: FlowId) -> (u64, Vec<Completion>) {
        self.advance(now);
        let flow = self.flows[id].take().expect("completion of a live flow");
        self.free.push(id);
        for &p in &flow.ports {
            let u = &mut self.usage[p];
            u.bytes += flow.bytes;
            u.active -= 1;
            if u.active == 0 {
                u.busy_ns += now - u.busy_since;
            }
        }
        self.max_remaining_at_completion = self.max_remaining_at_completion.max(flow.remaining);
        self.bytes_received += (flow.bytes as f64 - flow.remaining).round() as u64;
        (flow.bytes, self.reallocate(now))
    }

    /// Moves every flow forward to `now` at its current rate.
    fn advance(&mut self, now: u64) {
        assert!(
            now >= self.last_ns,
            "network time ran backwards: {now} < {}",
            self.last_ns
        );
        let dt = (now - self.last_ns) as f64 * 1e-9;
        for f in self.flows.iter_mut().flatten() {
            f.remaining = (f.remaining - f.rate * dt).max(0.0);
        }
        self.last_ns = now;
    }

    /// New rates for every flow, then each flow's completion time (flows left with no bandwidth
    /// under FIFO get theirs when an earlier flow ends).
    fn reallocate(&mut self, now: u64) -> Vec<Completion> {
        match self.sharing {
            Sharing::Fair => self.fill_fairly(),
            Sharing::Fifo => self.fill_in_order(),
        }
        let mut out = Vec::new();
        for (id, slot) in self.flows.iter_mut().enumerate() {
            if let Some(f) = slot {
                self.next_version += 1;
                f.version = self.next_version;
                if f.rate > 0.0 {
                    let secs = f.remaining / f.rate;
                    out.push(Completion {
                        id,
                        // Capped like the engine's durations: the engine refuses times past it.
                        at_ns: now
                            + (secs * 1e9).ceil().min(crate::engine::MAX_SIM_NS as f64) as u64,
                        version: f.version,
                    });
                }
            }
        }
        out
    }

    /// Oldest flow first: each takes the least residual capacity along its ports (up to its cap).
    fn fill_in_order(&mut self) {
        let mut residual = self.capacity.clone();
        let mut order: Vec<usize> = (0..self.flows.len())
            .filter(|i| self.flows[*i].is_some())
            .collect();
        order.sort_by_key(|i| self.flows[*i].as_ref().map_or(0, |f| f.order));
        for i in order {
            let f = self.flows[i].as_mut().expect("filtered live");
            let free = f
                .ports
                .iter()
                .map(|p| residual[*p])
                .fold(f64::INFINITY, f64::min)
                .max(0.0);
            f.rate = free.min(f.cap);
            for p in &f.ports {
                residual[*p] -= f.rate;
            }
        }
    }

    /// Max-min fair rates by progressive filling.
    fn fill_fairly(&mut self) {
        let mut residual = self.capacity.clone();
        let mut frozen: Vec<bool> = self.flows.iter().map(Option::is_none).collect();
        for f in self.flows.iter_mut().flatten() {
            f.rate = 0.0;
        }
        let mut unfrozen_on = vec![0usize; residual.len()];
        for f in self.flows.iter().flatten() {
            for &p in &f.ports {
                unfrozen_on[p] += 1;
            }
        }
        while frozen.iter().any(|z| !z) {
            let mut delta = f64::INFINITY;
            for (p, &n) in unfrozen_on.iter().enumerate() {
                if n > 0 {
                    delta = delta.min(residual[p] / n as f64);
                }
            }
            for (i, f) in self.flows.iter().enumerate() {
                if let (Some(f), false) = (f, frozen[i]) {
                    delta = delta.min(f.cap - f.rate);
                }
            }
            let delta = delta.max(0.0);
            for (i, slot) in self.flows.iter_mut().enumerate() {
                if let (Some(f), false) = (slot, frozen[i]) {
                    f.rate += delta;
                    for &p in &f.ports {
                        residual[p] -= delta;
                    }
                }
            }
            // Freeze flows at their cap or on a saturated port.
            let saturated: Vec<bool> = residual
                .iter()
                .zip(&self.capacity)
                .map(|(r, c)| *r <= c * 1e-12)
                .collect();
            for (i, slot) in self.flows.iter().enumerate() {
                if let (Some(f), false) = (slot, frozen[i])
                    && (f.rate >= f.cap * (1.0 - 1e-12) || f.ports.iter().any(|&p| saturated[p]))
                {
                    frozen[i] = true;
                    for &p in &f.ports {
                        unfrozen_on[p] -= 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: f64 = 1e9;

    #[test]
    fn one_flow_runs_at_its_bottleneck() {
        let mut n = Network::new(vec![10.0 * GB, 5.0 * GB], Sharing::Fair);
        let (_, c) = n.start(0, vec![0, 1], 5_000_000_000, None);
        assert_eq!(c[0].at_ns, 1_000_000_000);
    }

    #[test]
    fn two_flows_share_a_port_fairly_then_the_survivor_speeds_up() {
        let mut n = Network::new(vec![10.0 * GB], Sharing::Fair);
        let (a, _) = n.start(0, vec![0], 10_000_000_000, None);
        let (_b, c) = n.start(0, vec![0], 5_000_000_000, None);
        // Both at 5 GB/s: b ends at 1 s; a has 5 GB left, then alone at 10 GB/s: ends at 1.5 s.
        let cb = c.iter().find(|x| x.id != a).unwrap();
        assert_eq!(cb.at_ns, 1_000_000_000);
        let (bytes, c) = n.complete(cb.at_ns, cb.id);
        assert_eq!(bytes, 5_000_000_000);
        assert_eq!(c[0].at_ns, 1_500_000_000);
        n.complete(c[0].at_ns, a);
        assert_eq!(n.bytes_sent, n.bytes_received);
        assert_eq!(n.usage[0].busy_ns, 1_500_000_000);
        assert_eq!(n.usage[0].bytes, 15_000_000_000);
    }

    #[test]
    fn max_min_gives_leftover_to_unconstrained_flows() {
        // Flow x crosses ports 0 and 1; y only port 1; port 0 is narrow.
        let mut n = Network::new(vec![2.0 * GB, 10.0 * GB], Sharing::Fair);
        let (x, _) = n.start(0, vec![0, 1], 2_000_000_000, None);
        let (_, c) = n.start(0, vec![1], 8_000_000_000, None);
        // x gets 2 GB/s (port 0), y the remaining 8 GB/s: both end at 1 s.
        assert!(
            c.iter().all(|c| c.at_ns == 1_000_000_000),
            "{c:?} (x = {x})"
        );
    }

    #[test]
    fn a_cap_holds_a_flow_back_until_lifted() {
        let mut n = Network::new(vec![10.0 * GB], Sharing::Fair);
        let (f, c) = n.start(0, vec![0], 10_000_000_000, Some(1.0 * GB));
        assert_eq!(c[0].at_ns, 10_000_000_000);
        let c = n.set_cap(1_000_000_000, f, None);
        // 1 GB sent in the first second; 9 GB at 10 GB/s.
        assert_eq!(c[0].at_ns, 1_900_000_000);
        assert!(!n.is_current(&Completion {
            id: f,
            at_ns: 10_000_000_000,
            version: 1
        }));
    }
}
