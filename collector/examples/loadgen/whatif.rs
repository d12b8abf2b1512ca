//! `what-if` under load: a 5,000-rule proposed ruleset for one simulated
//! agent, made as iptables-save text and read by the agent's own parser and
//! wire conversion (as `reachmap what-if --ruleset` reads a file), sent over
//! gRPC and evaluated against every cell into and out of the agent.

use crate::pb;
use reachmap_agent::facts::firewall::{Backend, Family, Ruleset};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Rules in the proposed ruleset.
pub const RULES: usize = 5000;

/// iptables-save text: `rules` accept rules for single sources and port
/// ranges spread over 50 user chains jumped to by source prefix, and one
/// rule dropping the probe port from the second half of the simulated
/// addresses — the change that would break cells.
pub fn text(rules: usize) -> String {
    let chains = 50;
    let mut t =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in 0..chains {
        let _ = writeln!(t, ":SVC-{c:02} - [0:0]");
    }
    let _ = writeln!(
        t,
        "-A INPUT -s 198.19.2.0/23 -p tcp -m tcp --dport 7442 -j DROP"
    );
    for c in 0..chains {
        let _ = writeln!(t, "-A INPUT -s 10.{c}.0.0/16 -j SVC-{c:02}");
    }
    for i in 0..rules.saturating_sub(chains + 1) {
        let c = i % chains;
        let _ = writeln!(
            t,
            "-A SVC-{c:02} -s 10.{c}.{}.{}/32 -p tcp -m tcp --dport {}:{} -j ACCEPT",
            (i / 250) % 250,
            i % 250 + 1,
            1000 + i % 5000,
            1010 + i % 5000
        );
    }
    t.push_str("COMMIT\n");
    t
}

/// The proposed ruleset as the CLI would send it.
pub fn ruleset(rules: usize) -> pb::Firewall {
    match reachmap_agent::inspect::firewall::parse_iptables_save(
        &text(rules),
        Family::Ip,
        Backend::IptablesNft,
    ) {
        Ok(tables) => {
            let mut rs = Ruleset {
                tables,
                ..Ruleset::default()
            };
            rs.finish();
            reachmap_agent::wire::firewall::firewall(&rs)
        }
        Err(e) => {
            eprintln!("loadgen: the what-if ruleset does not parse: {e}");
            pb::Firewall::default()
        }
    }
}

/// One `WhatIf` call: (time to the answer, the same, cells checked).
pub fn grpc_what_if(
    rt: &tokio::runtime::Handle,
    url: &str,
    node: &str,
    proposed: &pb::Firewall,
) -> anyhow::Result<(Duration, Duration, usize)> {
    rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?;
        let ch = match crate::tls::CREDS.get() {
            Some(c) => reachmap_tls::connect(endpoint, c.viewer_h2.clone()).await?,
            None => endpoint.connect().await?,
        };
        let mut q = pb::query_client::QueryClient::new(ch)
            .max_decoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(reachmap_proto::MAX_MESSAGE_BYTES);
        let start = Instant::now();
        let r = q
            .what_if(pb::WhatIfRequest {
                node: node.to_string(),
                ruleset: Some(proposed.clone()),
                addresses: Vec::new(),
            })
            .await?
            .into_inner();
        let total = start.elapsed();
        if r.cells_checked == 0 {
            anyhow::bail!("what-if of {node} checked no cells");
        }
        eprintln!(
            "loadgen: what-if {node}: {} cells checked, {} would break, in {:.1} ms",
            r.cells_checked,
            r.breaks.len(),
            total.as_secs_f64() * 1e3
        );
        Ok((total, total, r.cells_checked as usize))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_proposed_ruleset_has_its_rules() {
        let fw = super::ruleset(super::RULES);
        let rules: usize = fw
            .tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum();
        assert_eq!(rules, super::RULES);
    }
}
