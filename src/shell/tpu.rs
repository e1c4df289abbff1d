//! TPU slice shapes (Iris's `TPU_TOPOLOGIES` in `iris/cluster/tpu_topology.py`): how many VMs
//! a variant spans and how many chips each VM holds. The controller schedules a TPU job one
//! task per VM; the worker advertises its VM's chips and tells a multislice job its shape.

/// One TPU variant's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub name: &'static str,
    pub vm_count: u32,
    pub chips_per_vm: u32,
}

const TOPOLOGIES: &[Topology] = &[
    Topology {
        name: "v4-8",
        vm_count: 1,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-16",
        vm_count: 2,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-32",
        vm_count: 4,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-64",
        vm_count: 8,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-128",
        vm_count: 16,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-256",
        vm_count: 32,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-512",
        vm_count: 64,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-1024",
        vm_count: 128,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-2048",
        vm_count: 256,
        chips_per_vm: 4,
    },
    Topology {
        name: "v4-4096",
        vm_count: 512,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-1",
        vm_count: 1,
        chips_per_vm: 1,
    },
    Topology {
        name: "v5litepod-2",
        vm_count: 1,
        chips_per_vm: 2,
    },
    Topology {
        name: "v5litepod-4",
        vm_count: 1,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-8",
        vm_count: 1,
        chips_per_vm: 8,
    },
    Topology {
        name: "v5litepod-16",
        vm_count: 4,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-32",
        vm_count: 8,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-64",
        vm_count: 16,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-128",
        vm_count: 32,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5litepod-256",
        vm_count: 64,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-8",
        vm_count: 1,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-16",
        vm_count: 2,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-32",
        vm_count: 4,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-64",
        vm_count: 8,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-128",
        vm_count: 16,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-256",
        vm_count: 32,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-512",
        vm_count: 64,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-1024",
        vm_count: 128,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-2048",
        vm_count: 256,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-4096",
        vm_count: 512,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-8192",
        vm_count: 1024,
        chips_per_vm: 4,
    },
    Topology {
        name: "v5p-12288",
        vm_count: 1536,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-1",
        vm_count: 1,
        chips_per_vm: 1,
    },
    Topology {
        name: "v6e-4",
        vm_count: 1,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-8",
        vm_count: 1,
        chips_per_vm: 8,
    },
    Topology {
        name: "v6e-16",
        vm_count: 4,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-32",
        vm_count: 8,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-64",
        vm_count: 16,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-128",
        vm_count: 32,
        chips_per_vm: 4,
    },
    Topology {
        name: "v6e-256",
        vm_count: 64,
        chips_per_vm: 4,
    },
];

/// The shape of `variant` (`v5litepod-16`), if Iris knows it.
pub fn topology(variant: &str) -> Option<Topology> {
    TOPOLOGIES.iter().find(|t| t.name == variant).copied()
}

/// Iris's TPU bad-node signatures (`iris/cluster/worker/tpu_health.py`): a failed task whose
/// stderr shows one failed because of the machine.
pub const BAD_NODE_PATTERNS: &[&str] = &[
    "Couldn't open iommu group",
    "open(/dev/vfio",
    "Failed to initialize TPU system",
    "TPU initialization failed",
    "No accelerator found",
];

/// How many of a failed task's last stderr lines are searched (Iris's 200).
pub const STDERR_TAIL_LINES: usize = 200;

/// The machine-fault reason for the first stderr line, oldest first, showing a bad-node
/// signature: the line itself, so the controller's error says what the chip said.
pub fn bad_node(stderr_tail: &[String]) -> Option<String> {
    let line = stderr_tail
        .iter()
        .find(|l| BAD_NODE_PATTERNS.iter().any(|p| l.contains(p)))?;
    Some(format!("TPU init failure (the machine's): {}", line.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_node_lines_are_found_as_irises() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(bad_node(&lines(&["Traceback", "ValueError: x"])), None);
        let found = bad_node(&lines(&[
            "I0000 start",
            "RuntimeError: TPU initialization failed: open(/dev/vfio/0): Device or resource busy",
            "No accelerator found",
        ]))
        .unwrap();
        assert!(found.contains("open(/dev/vfio/0)"), "{found}");
    }

    #[test]
    fn shapes_are_iriss() {
        let v5 = topology("v5litepod-16").unwrap();
        assert_eq!((v5.vm_count, v5.chips_per_vm), (4, 4));
        assert_eq!(topology("v6e-8").map(|t| t.vm_count), Some(1));
        assert_eq!(topology("v4-2048").map(|t| t.vm_count), Some(256));
        assert_eq!(topology("v9-1"), None);
    }
}
