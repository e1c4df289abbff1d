//! `PortAllocator`: hands out host ports from a range, never the same port to two live owners.
//!
//! The allocator knows only its own bookkeeping. Whether a port can really be bound is the
//! runtime's to find out when it starts the attempt: a taken port fails the start with
//! `port_conflict`, and the core retries with fresh ports (`CoreConfig::start_tries_max`).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use super::ids::AttemptKey;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no free port: {wanted} wanted, {range_len} in range {first}-{last}, {held} held")]
pub struct PortsExhausted {
    pub wanted: usize,
    pub range_len: usize,
    pub held: usize,
    pub first: u16,
    pub last: u16,
}

#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    /// Where the next scan starts; moving on round-robin keeps a just-freed port (maybe still in
    /// TIME_WAIT) from being handed out again at once.
    cursor: u16,
    held: BTreeMap<u16, AttemptKey>,
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> PortAllocator {
        assert!(!range.is_empty(), "port range must not be empty");
        PortAllocator {
            cursor: *range.start(),
            range,
            held: BTreeMap::new(),
        }
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    fn range_len(&self) -> usize {
        usize::from(*self.range.end() - *self.range.start()) + 1
    }

    fn advance(&self, port: u16) -> u16 {
        if port >= *self.range.end() {
            *self.range.start()
        } else {
            port + 1
        }
    }

    /// Allocates `count` distinct ports to `owner`. On failure nothing is held.
    pub fn allocate(
        &mut self,
        owner: &AttemptKey,
        count: usize,
    ) -> Result<Vec<u16>, PortsExhausted> {
        let mut chosen = Vec::with_capacity(count);
        let mut port = self.cursor;
        for _ in 0..self.range_len() {
            if chosen.len() == count {
                break;
            }
            if !self.held.contains_key(&port) {
                chosen.push(port);
            }
            port = self.advance(port);
        }
        if chosen.len() < count {
            return Err(PortsExhausted {
                wanted: count,
                range_len: self.range_len(),
                held: self.held.len(),
                first: *self.range.start(),
                last: *self.range.end(),
            });
        }
        self.cursor = port;
        for &p in &chosen {
            self.held.insert(p, owner.clone());
        }
        Ok(chosen)
    }

    /// Frees every port `owner` holds.
    pub fn release(&mut self, owner: &AttemptKey) {
        self.held.retain(|_, holder| holder != owner);
    }

    /// Frees specific ports, whoever holds them.
    pub fn release_ports(&mut self, ports: &[u16]) {
        for port in ports {
            self.held.remove(port);
        }
    }

    /// Takes specific ports for `owner` (used when adopting a running container after a restart).
    /// Refuses, holding nothing, if any is outside the range or held by someone else.
    pub fn reserve(&mut self, owner: &AttemptKey, ports: &[u16]) -> bool {
        let free = ports
            .iter()
            .all(|p| self.held.get(p).is_none_or(|holder| holder == owner));
        if free {
            for &p in ports {
                self.held.insert(p, owner.clone());
            }
        }
        free
    }

    pub fn holder(&self, port: u16) -> Option<&AttemptKey> {
        self.held.get(&port)
    }

    pub fn held(&self) -> impl Iterator<Item = (u16, &AttemptKey)> {
        self.held.iter().map(|(p, k)| (*p, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;

    fn key(n: i32) -> AttemptKey {
        AttemptKey {
            task_id: TaskId::new(format!("job/task-{n}")).unwrap(),
            attempt_id: 0,
        }
    }

    #[test]
    fn never_hands_one_port_to_two_owners() {
        let mut ports = PortAllocator::new(30000..=30003);
        let a = ports.allocate(&key(1), 2).unwrap();
        let b = ports.allocate(&key(2), 2).unwrap();
        assert!(a.iter().all(|p| !b.contains(p)));
        let err = ports.allocate(&key(3), 1).unwrap_err();
        assert_eq!(err.held, 4);
        ports.release(&key(1));
        let c = ports.allocate(&key(3), 2).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn exhaustion_holds_nothing() {
        let mut ports = PortAllocator::new(30000..=30002);
        assert!(ports.allocate(&key(1), 4).is_err());
        assert_eq!(ports.held().count(), 0);
    }

    #[test]
    fn wraps_round_robin_at_range_end() {
        let mut ports = PortAllocator::new(65534..=65535);
        assert_eq!(ports.allocate(&key(1), 1).unwrap(), vec![65534]);
        assert_eq!(ports.allocate(&key(2), 1).unwrap(), vec![65535]);
        ports.release(&key(1));
        assert_eq!(ports.allocate(&key(3), 1).unwrap(), vec![65534]);
    }

    #[test]
    fn reserve_refuses_held_ports() {
        let mut ports = PortAllocator::new(30000..=30009);
        let a = ports.allocate(&key(1), 1).unwrap();
        assert!(!ports.reserve(&key(2), &a));
        assert!(ports.reserve(&key(2), &[30005]));
        assert_eq!(ports.holder(30005), Some(&key(2)));
    }
}
