//! The deterministic algorithm, `IPAllocAlgorithm = 0` (mirrors `ipalloc_deterministic.c`).
//!
//! Every address is first given to node `position % node count` (its "home"), then homes that
//! cannot host it lose it and it goes to the least loaded node that can. There is no
//! rebalancing step, so NoIPFailback has no effect beyond a warning.

use super::common::{Coverage, State};
use super::{ilog, LOG_NOTICE, LOG_WARNING};

pub(super) fn run(state: &mut State<'_>) {
    ilog!(
        state.log,
        LOG_NOTICE,
        "Deterministic IPs enabled. Resetting all ip allocations"
    );
    let nodes = state.num_nodes;
    for (position, holder) in state.pnn.iter_mut().enumerate() {
        // ipalloc() never gets here with addresses but no nodes: addresses come from nodes.
        *holder = (position % nodes.max(1)) as u32;
    }
    if state.no_ip_failback {
        // The missing quote is stock's.
        ilog!(
            state.log,
            LOG_WARNING,
            "WARNING: 'NoIPFailback' set but ignored - incompatible with 'Deterministic IPs"
        );
    }
    state.unassign_unsuitable();
    let mut coverage = Coverage::new(state);
    coverage.allocate_unassigned(state);
}
