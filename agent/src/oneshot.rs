//! `reachmap-agent snapshot`: everything the agent sees on this host, read
//! once and printed — no collector needed. The first thing to run on a
//! suspicious host.

use crate::facts::{HostInfo, NetState};
use crate::inspect;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

#[derive(Serialize, Debug)]
pub struct HostSnapshot {
    pub machine_id: String,
    pub boot_id: String,
    pub host: HostInfo,
    #[serde(flatten)]
    pub net: NetState,
}

pub async fn read(procfs: &Path, etc: &Path) -> anyhow::Result<HostSnapshot> {
    let identity = inspect::host::read_identity(procfs, etc)?;
    let host = inspect::host::read_host_info(procfs)?;
    let net = inspect::watch::read_once().await?;
    Ok(HostSnapshot {
        machine_id: identity.machine_id,
        boot_id: identity.boot_id,
        host,
        net,
    })
}

pub fn json(s: &HostSnapshot) -> String {
    let mut out =
        serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    out.push('\n');
    out
}

pub fn text(s: &HostSnapshot) -> String {
    let mut out = String::new();
    let h = &s.host;
    let _ = writeln!(
        out,
        "host {}  kernel {}  {}  up {}s",
        h.hostname, h.kernel, h.os, h.uptime_seconds
    );
    let _ = writeln!(out, "boot id {}  machine id {}", s.boot_id, s.machine_id);
    out.push_str("\ninterfaces\n");
    for i in &s.net.interfaces {
        let addrs: Vec<String> = i
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.ip, a.prefix_len))
            .collect();
        let _ = writeln!(
            out,
            "  {:<16} {:<8} admin {:<4} mtu {:<6} {}",
            i.name,
            format!("{:?}", i.oper_state).to_lowercase(),
            if i.admin_up { "up" } else { "down" },
            i.mtu,
            addrs.join(" ")
        );
    }
    out.push_str("\nroutes (main table)\n");
    for r in &s.net.routes {
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let dev = r
            .interface
            .as_deref()
            .map(|d| format!(" dev {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}{via}{dev} metric {}",
            r.destination_cidr(),
            r.metric
        );
    }
    out
}
