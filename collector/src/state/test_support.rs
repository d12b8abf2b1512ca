//! What the state module's tests share.

use super::Hello;
use crate::probe::{FailureCounts, Outcome, TargetState, WindowInput, WindowTarget};
use std::collections::BTreeMap;

/// An agent's hello, as a test attaches `node`.
pub fn hello(node: &str) -> Hello {
    Hello {
        node: node.into(),
        machine_id: format!("m-{node}"),
        boot_id: "b".into(),
        version: "0.1.0".into(),
        instance_id: 1,
        heartbeat_interval_ms: 1000,
        labels: BTreeMap::new(),
        config_json: None,
    }
}

/// A window of ten probes, all answered, toward `target`.
pub fn ok_window(target: WindowTarget) -> WindowInput {
    WindowInput {
        target,
        sent: 10,
        ok: 10,
        failures: FailureCounts::default(),
        rtt_p50_ms: Some(1.0),
        rtt_p99_ms: Some(2.0),
        last_outcome: Some(Outcome::Open),
        last_failure: None,
        state: TargetState::Ok,
        last_http_status: None,
        last_tls_error: None,
    }
}
