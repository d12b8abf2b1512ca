//! The cause codes `reachmap why` names: one enum, and for each code its
//! stable string (the JSON `code`, part of the public interface), when it is
//! reported, the evidence it carries, the fix it suggests and whether it
//! blocks a connection for certain. `docs/causes.md` is rendered from here
//! (`markdown`); a test fails when the file differs.

use std::fmt;

/// One table, so a code cannot be added without its documentation.
macro_rules! cause_codes {
    ($(
        $variant:ident = $code:literal {
            blocks: $blocks:literal,
            when: $when:literal,
            evidence: $evidence:literal,
            fix: $fix:literal $(,)?
        }
    ),* $(,)?) => {
        /// A cause `reachmap why` may report. The order is the one of the
        /// checks, family by family, and of `docs/causes.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CauseCode {
            $(
                #[doc = concat!("`", $code, "`: reported when ", $when)]
                $variant,
            )*
        }

        impl CauseCode {
            /// Every code, in the order of `docs/causes.md`.
            pub const ALL: &'static [CauseCode] = &[$(CauseCode::$variant),*];

            /// The stable string: the JSON `code`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(CauseCode::$variant => $code,)*
                }
            }

            /// Whether the facts that show this cause make a connection fail
            /// for certain: with no probe of the port, such a cause makes the
            /// verdict `unreachable`.
            pub const fn blocks(self) -> bool {
                match self {
                    $(CauseCode::$variant => $blocks,)*
                }
            }

            /// When the cause is reported (completes "reported when ...").
            pub const fn when(self) -> &'static str {
                match self {
                    $(CauseCode::$variant => $when,)*
                }
            }

            /// The evidence the cause carries.
            pub const fn evidence(self) -> &'static str {
                match self {
                    $(CauseCode::$variant => $evidence,)*
                }
            }

            /// The fix the cause suggests.
            pub const fn fix(self) -> &'static str {
                match self {
                    $(CauseCode::$variant => $fix,)*
                }
            }
        }
    };
}

cause_codes! {
    // Listening: is anything listening on the port, where, can it keep up.
    NotListening = "NOT_LISTENING" {
        blocks: true,
        when: "nothing listens on the TCP port on the destination (not asked for the agent's probe port, whose listener is the agent itself, nor for ICMP).",
        evidence: "the destination's listeners (no TCP socket in LISTEN on the port); the event of the last listener on the port going away, when there is one; the probe result.",
        fix: "start the service that should listen on the port on the destination.",
    },
    PortHeldByOther = "PORT_HELD_BY_OTHER" {
        blocks: false,
        when: "a declared service names the systemd unit or process that should own its port (`unit` or `process` in `[[services]]`), and the TCP listeners on the port on the destination belong to another process: the service could not bind it (\"address already in use\"), and clients reach the other process. Reported whether the probe succeeds or not.",
        evidence: "the declared owner; each listener on the port (address, port, process, pid, systemd unit); the probe result.",
        fix: "stop the process holding the port (or move it to another port), then start the declared service; or correct the declaration.",
    },
    LoopbackOnly = "LOOPBACK_ONLY" {
        blocks: true,
        when: "every listener on the port on the destination is bound to a loopback address: it is reachable from the destination itself only.",
        evidence: "the listener (address, port, process, pid, systemd unit); the probe result.",
        fix: "bind the service to 0.0.0.0 (or the address the source connects to) instead of the loopback address.",
    },
    BoundOtherAddress = "BOUND_OTHER_ADDRESS" {
        blocks: true,
        when: "the listeners on the port on the destination are bound to particular addresses, and an address clients use to reach it (its primary address, or one its configured names resolve to on the source) is not among them; reported even while a probe to the bound address succeeds, and the verdict then holds for the client's address.",
        evidence: "the listener (address, port, process, pid, systemd unit); the probe result; the client addresses and whether each is served.",
        fix: "bind the service to 0.0.0.0 (every address) instead of the address it is bound to, or point clients at that address.",
    },
    ListenQueueOverflow = "LISTEN_QUEUE_OVERFLOW" {
        blocks: false,
        when: "the accept queue of the listener on the port on the destination is full, or the destination's kernel logged a SYN flood on the port, while the port fails.",
        evidence: "the accept queue's fill and limit, with the listener; the kernel's SYN flood message.",
        fix: "make the service accept faster (more workers), or raise its listen backlog and net.core.somaxconn.",
    },
    // Services: the application answered, with the wrong status.
    HttpStatus = "HTTP_STATUS" {
        blocks: false,
        when: "an HTTP probe gets a status other than the expected one (a proxy's 502 or 503, a 404 from the wrong application): the network path and the listener work, the service does not. When the declared service names its upstreams (`upstreams` in `[[services]]`), the destination's own cells to them are followed, and a failing one is named with its top cause.",
        evidence: "the status seen and the one expected; the probe result; for each upstream cell from the destination, its state, and for a failing one its top cause with that cause's evidence.",
        fix: "the failing upstream's fix when one fails; otherwise the service's own logs on the destination.",
    },
    TlsError = "TLS_ERROR" {
        blocks: false,
        when: "an HTTPS probe's TLS handshake fails (the connection opens; what fails is TLS): the certificate expired or is not valid yet, is for another name than the one asked (`server_name` in `[[services]]`, or the node's address), is signed by a CA the probe does not trust (the system roots, or the service's `ca_file`), or the server does not speak TLS on the port. Clients that check certificates fail the same way.",
        evidence: "the agent's reason (the expiry date and how long ago, the names the certificate is for and the one asked, the alert the server sent); the probe result.",
        fix: "by reason: renew the certificate; fix the clock or the certificate's start date; issue one that names the asked name (or probe with the name clients use); give the service a certificate from the trusted CA (or name its CA in `ca_file`); make the service speak TLS on the port.",
    },
    // Firewalls: both ends' rulesets evaluated for the probe's packet.
    FirewallInbound = "FIREWALL_INBOUND" {
        blocks: true,
        when: "the destination's ruleset, evaluated for the probe's packet on its receive path (port forwards followed), drops or rejects it.",
        evidence: "the deciding rule (text, table, chain, handle, comment) or the chain policy; the last ruleset change; the other way working, when it does; the port forward the packet went through; the rules the evaluation could not decide; the probe result.",
        fix: "if the traffic should pass, delete the rule (the nft or iptables command is given) or add an accept rule before it; for a policy, add an accept rule to the chain.",
    },
    FirewallOutbound = "FIREWALL_OUTBOUND" {
        blocks: true,
        when: "the source's ruleset, evaluated for the probe's packet on its send path, drops or rejects it.",
        evidence: "as for FIREWALL_INBOUND, on the source.",
        fix: "as for FIREWALL_INBOUND, on the source.",
    },
    StaleAllowlistAddress = "STALE_ALLOWLIST_ADDRESS" {
        blocks: true,
        when: "the destination's firewall blocks the source's address but would accept an address the source had before (from the source's address changes): an allow-list not updated when the source changed address.",
        evidence: "the source's address change; the rule that allows the old address; what blocks the new one.",
        fix: "replace the old address with the new one in the destination's allow-list (the rule is named).",
    },
    // Addresses, routes, interfaces and names.
    NoRoute = "NO_ROUTE" {
        blocks: true,
        when: "no route in the source's main routing table covers the address it probes the destination at.",
        evidence: "the source's routing table (how many routes, none covering the address); the last route removed; the probe result.",
        fix: "add a route to the address on the source, or restore its default route.",
    },
    InterfaceDown = "INTERFACE_DOWN" {
        blocks: true,
        when: "the interface of the source's route to the destination, or the destination's interface holding the probed address, is administratively down, down, or down because its lower link is (lower_layer_down).",
        evidence: "the interface's state; its last link change; the probe result.",
        fix: "`ip link set IFACE up` on the node, and check its cable or virtual link.",
    },
    PeerAddressChanged = "PEER_ADDRESS_CHANGED" {
        blocks: false,
        when: "the destination no longer holds the address the source probes it at.",
        evidence: "the destination's removal of the address, when its events show it; the destination's addresses now.",
        fix: "point the source (its configuration, DNS record or allow-list) at the destination's new address.",
    },
    StaleDns = "STALE_DNS" {
        blocks: false,
        when: "a name the config gives the destination resolves, through the source's own resolver, to none of the destination's addresses; reported even when the path works, since every client that uses the name fails.",
        evidence: "the lookup on the source (when it was made, what it returned); the destination's removal of that address, when its events show it; the destination's addresses now.",
        fix: "point the name at the destination's current address in the resolver the source uses (its DNS record, or /etc/hosts on the source).",
    },
    // The kernel and the host's resources.
    ProcessOomKilled = "PROCESS_OOM_KILLED" {
        blocks: true,
        when: "nothing listens on the port on the destination and the OOM killer killed a process that listened on it.",
        evidence: "the OOM kill (process, pid, cgroup, systemd unit, the ports it held); its listener going away.",
        fix: "restart the service and raise its MemoryMax (or its cgroup's limit), or fix its memory use.",
    },
    ConntrackFull = "CONNTRACK_FULL" {
        blocks: false,
        when: "a node's connection tracking table is at 95% of nf_conntrack_max or more, or its kernel logged that the table is full: new connections are dropped.",
        evidence: "the kernel's table-full message; nf_conntrack_count of nf_conntrack_max.",
        fix: "raise net.netfilter.nf_conntrack_max on the node, or find what opens so many connections.",
    },
    HostOverloaded = "HOST_OVERLOADED" {
        blocks: false,
        when: "the probes are degraded or time out and a node's 1-minute load is twice its CPU count or more, or its CPUs are 95% busy or more.",
        evidence: "the load averages and CPU busy share, when they were sampled.",
        fix: "find what keeps the node busy, or give it more CPU.",
    },
    CpuSteal = "CPU_STEAL" {
        blocks: false,
        when: "the probes are degraded or time out and a node loses 10% or more of its CPU time to other guests of its hypervisor.",
        evidence: "the CPU steal share, when it was sampled.",
        fix: "move the node to another host or a bigger instance type.",
    },
    MemoryPressure = "MEMORY_PRESSURE" {
        blocks: false,
        when: "the probes are degraded or time out and a node is short of memory: memory pressure (PSI some, 10 s) of 10% or more, less than 5% of its memory available, or used memory growing steadily.",
        evidence: "memory available and total, swap used, memory pressure, when they were sampled; the growth rate when it grows.",
        fix: "find what uses the memory on the node (a leak grows steadily), or add memory.",
    },
    ClockSkew = "CLOCK_SKEW" {
        blocks: false,
        when: "the two nodes' clock offsets to the collector differ by a second or more; reported on the node further off, even when the path works.",
        evidence: "the node's clock offset to the collector.",
        fix: "check time synchronisation (chrony, systemd-timesyncd) on the node.",
    },
    NodeRebooted = "NODE_REBOOTED" {
        blocks: false,
        when: "a node rebooted in the 30 minutes before the cell turned bad (before now, when no turn is known) or since.",
        evidence: "the reboot (old and new boot id).",
        fix: "check that everything the node needs starts at boot (enabled units, addresses, firewall).",
    },
    // Agents, probes and the network between the nodes.
    AgentDown = "AGENT_DOWN" {
        blocks: false,
        when: "a node's agent is not connected: from the source nothing is probed, so the path is unknown; for the destination, ICMP tells whether the host still answers; reported even when the path works.",
        evidence: "when the agent was last seen; the end of its stream.",
        fix: "check the host and `systemctl status reachmap-agent` on it.",
    },
    SourceBlind = "SOURCE_BLIND" {
        blocks: false,
        when: "a fact source on a node is not reading, so checks that rest on it cannot rule causes out.",
        evidence: "the source's health as the node's agent reports it: which source, since when, and its error.",
        fix: "repair the source on the node (the error names what is missing: a capability, a mount, a tool), then ask again.",
    },
    IcmpOnlyBlocked = "ICMP_ONLY_BLOCKED" {
        blocks: false,
        when: "ICMP echo from the source to the destination fails while the TCP probe does not: ping says down, the service is fine; reported even when the path works.",
        evidence: "the ICMP and TCP probe states.",
        fix: "allow ICMP echo-request if ping should work; nothing else needs it.",
    },
    IntermittentLoss = "INTERMITTENT_LOSS" {
        blocks: false,
        when: "the probes are degraded: some of them fail, the others get through.",
        evidence: "the probe result and its loss.",
        fix: "look for a lossy link, an overloaded device or a rate limit between the nodes.",
    },
    Flapping = "FLAPPING" {
        blocks: false,
        when: "the source's probes of the destination went from working to failing and back at least twice in the last hour: temporary interruptions, whatever the state is now.",
        evidence: "each outage of the last hour, from the source's probe state changes: when it began and ended, how the probes failed, and what changed on either node just before it.",
        fix: "look at what changed before each outage (a firewall reload, a restart, a link going down); if nothing did, something in the path drops the traffic from time to time.",
    },
    NetworkPath = "NETWORK_PATH" {
        blocks: false,
        when: "the probes fail with timeouts, both agents are connected and no fact on either node explains it (no cause of weight 75 or more): something in the network path between them drops the traffic.",
        evidence: "the probe result; the other way; how many other nodes reach the destination on the port; a trace from the source (TCP SYNs with growing TTL, kept for a minute): each hop, the last router that answered and from which hop nothing did, or who rejected it — the detail then says \"blocked after hop N, ADDRESS, before DST\".",
        fix: "check the cloud firewall or security group rules, NAT and load balancers between the two nodes, starting after the last hop that answered.",
    },
}

impl CauseCode {
    /// The code of a stable string, if it is one of ours.
    pub fn parse(code: &str) -> Option<CauseCode> {
        CauseCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for CauseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How `docs/causes.md` is made; the test below and the file both say it.
pub const REGENERATE: &str =
    "cargo run -q -p reachmap-collector --example causes_doc > docs/causes.md";

/// `docs/causes.md`: every code with when it is reported, its evidence, its
/// fix and whether it blocks.
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    out.push_str("# Cause codes\n\n");
    let _ = writeln!(
        out,
        "<!-- Rendered from collector/src/why/code.rs; do not edit. Regenerate with\n     {REGENERATE} -->\n"
    );
    out.push_str(
        "`reachmap why SRC DST[:PORT]` answers with a verdict and a ranked list of\n\
         causes. Each cause has one of the codes below (the JSON `code`; stable, part\n\
         of the public interface), the node it is on, a one-line detail, the evidence\n\
         behind it (facts, events and probe results, each with its time) and a fix.\n\
         A cause that no fact supports is never reported. When nothing explains a\n\
         failure the answer has no causes and lists what was checked; `reachmap why`\n\
         prints that as `UNKNOWN`, which is the absence of a cause, not a code.\n\n\
         Unless its entry says otherwise, a cause is looked for only when the pair\n\
         is not reachable.\n\n\
         A cause that *blocks* makes a connection fail for certain when the facts show\n\
         it: with no probe of the port, it makes the verdict `unreachable`.\n\n",
    );
    out.push_str("| code | blocks | reported when |\n|---|---|---|\n");
    for c in CauseCode::ALL {
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | {} | {} |",
            c.as_str(),
            c.as_str().to_ascii_lowercase(),
            yes_no(c.blocks()),
            c.when()
        );
    }
    for c in CauseCode::ALL {
        let _ = write!(
            out,
            "\n## {}\n\n- **Reported when** {}\n- **Evidence:** {}\n- **Fix:** {}\n- **Blocks for certain:** {}\n",
            c.as_str(),
            c.when(),
            c.evidence(),
            c.fix(),
            yes_no(c.blocks())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_stable_strings_that_parse_back() {
        let strings: BTreeSet<&str> = CauseCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), CauseCode::ALL.len());
        for c in CauseCode::ALL {
            assert_eq!(CauseCode::parse(c.as_str()), Some(*c));
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{c}"
            );
            assert!(
                !c.when().is_empty() && !c.evidence().is_empty() && !c.fix().is_empty(),
                "{c}"
            );
        }
        assert_eq!(CauseCode::parse("UNKNOWN"), None, "UNKNOWN is no cause");
    }

    #[test]
    fn the_blocking_codes_are_the_ones_that_fail_a_connection_for_certain() {
        let blocking: BTreeSet<&str> = CauseCode::ALL
            .iter()
            .filter(|c| c.blocks())
            .map(|c| c.as_str())
            .collect();
        let want: BTreeSet<&str> = [
            "NOT_LISTENING",
            "LOOPBACK_ONLY",
            "BOUND_OTHER_ADDRESS",
            "PROCESS_OOM_KILLED",
            "FIREWALL_INBOUND",
            "FIREWALL_OUTBOUND",
            "NO_ROUTE",
            "INTERFACE_DOWN",
            "STALE_ALLOWLIST_ADDRESS",
        ]
        .into_iter()
        .collect();
        assert_eq!(blocking, want);
    }

    #[test]
    fn docs_causes_md_is_what_the_enum_renders() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/causes.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        let rendered = markdown();
        if on_disk != rendered {
            let first = on_disk
                .lines()
                .zip(rendered.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| on_disk.lines().count().min(rendered.lines().count()));
            panic!(
                "docs/causes.md is not what collector/src/why/code.rs renders (first difference at line {}); regenerate it with `{REGENERATE}`",
                first + 1
            );
        }
    }
}
