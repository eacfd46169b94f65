//! A policy file as `backtest --simulate` runs it, beside the peers.

use crate::model::TargetKey;
use crate::policy::TargetPolicy;
use crate::sim::baseline::Peer;
use crate::sim::suite::{Contender, Setup};

/// One policy file, ready to run: its targets, the service target, and the cluster it scales.
pub(super) struct Subject {
    pub(super) file: String,
    /// Every target of the file (the service's and the capacity ones).
    pub(super) targets: Vec<TargetPolicy>,
    /// The capacity targets alone (what sizes the instances under a peer).
    pub(super) capacity: Vec<TargetPolicy>,
    pub(super) setup: Setup,
}

impl Subject {
    pub(super) fn contender(&self) -> Contender {
        Contender::Ecscale(self.targets.clone())
    }

    pub(super) fn peer(&self, peer: &Peer) -> Contender {
        Contender::Baseline {
            peer: peer.clone(),
            capacity: self.capacity.clone(),
        }
    }

    /// The service target (there is exactly one).
    pub(super) fn service(&self) -> Option<&TargetPolicy> {
        self.targets
            .iter()
            .find(|t| matches!(t.target, TargetKey::Service { .. }))
    }
}
