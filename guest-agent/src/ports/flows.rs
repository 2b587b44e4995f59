//! The UDP flows of one published binding: one socket towards the
//! container per client address, forgotten after 90 s without a datagram
//! either way (docker-proxy's `UDPConnTrackTimeout`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// docker-proxy's conntrack timeout.
pub const FLOW_IDLE: Duration = Duration::from_secs(90);

/// At most this many flows per binding: a flood of source addresses costs
/// sockets, not the agent's descriptor table (the oldest flow goes first).
pub const MAX_FLOWS: usize = 4096;

pub struct FlowTable<V> {
    flows: HashMap<SocketAddr, (V, Instant)>,
    idle: Duration,
    max: usize,
}

impl<V> FlowTable<V> {
    pub fn new(idle: Duration, max: usize) -> FlowTable<V> {
        FlowTable { flows: HashMap::new(), idle, max }
    }

    /// The flow of `peer`, marked active at `now`.
    pub fn touch(&mut self, peer: SocketAddr, now: Instant) -> Option<&V> {
        let (value, last) = self.flows.get_mut(&peer)?;
        *last = now;
        Some(value)
    }

    /// Adds `peer`'s flow; the evicted one, when the table was full.
    pub fn insert(&mut self, peer: SocketAddr, value: V, now: Instant) -> Option<V> {
        let mut evicted = None;
        if self.flows.len() >= self.max && !self.flows.contains_key(&peer) {
            let oldest = self.flows.iter().min_by_key(|(_, (_, last))| *last).map(|(peer, _)| *peer);
            evicted = oldest.and_then(|peer| self.flows.remove(&peer)).map(|(value, _)| value);
        }
        self.flows.insert(peer, (value, now));
        evicted
    }

    /// Removes and returns the flows idle for longer than the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<V> {
        let idle = self.idle;
        let expired: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, (_, last))| now.duration_since(*last) > idle)
            .map(|(peer, _)| *peer)
            .collect();
        expired.into_iter().filter_map(|peer| self.flows.remove(&peer)).map(|(value, _)| value).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn flows_expire_after_the_idle_time_unless_used() {
        let start = Instant::now();
        let mut table = FlowTable::new(FLOW_IDLE, MAX_FLOWS);
        table.insert(peer(1), "a", start);
        table.insert(peer(2), "b", start);
        // b is used at 60 s; at 91 s only a is idle past 90 s.
        assert_eq!(table.touch(peer(2), start + Duration::from_secs(60)), Some(&"b"));
        assert_eq!(table.expire(start + Duration::from_secs(91)), vec!["a"]);
        assert_eq!(table.len(), 1);
        assert!(table.touch(peer(1), start + Duration::from_secs(91)).is_none());
        assert_eq!(table.expire(start + Duration::from_secs(151)), vec!["b"]);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_full_table_evicts_its_oldest_flow() {
        let start = Instant::now();
        let mut table = FlowTable::new(FLOW_IDLE, 2);
        table.insert(peer(1), 1, start);
        table.insert(peer(2), 2, start + Duration::from_secs(1));
        table.touch(peer(1), start + Duration::from_secs(2));
        assert_eq!(table.insert(peer(3), 3, start + Duration::from_secs(3)), Some(2));
        assert_eq!(table.insert(peer(3), 33, start + Duration::from_secs(4)), None, "replacing is not evicting");
        assert_eq!(table.len(), 2);
        assert_eq!(table.touch(peer(3), start + Duration::from_secs(5)), Some(&33));
    }
}
