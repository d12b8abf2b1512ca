//! `reachmap`, the query CLI: talks to the collector's Query service.

mod connect;
mod diag;
mod facts;
mod findings;
mod history;
mod matrix;
mod render;
mod table;
mod testport;
pub mod when;
mod why;

use crate::view;
use clap::{Parser, Subcommand, ValueEnum};
use reachmap_proto::v1 as pb;
use std::time::SystemTime;

#[derive(Parser, Debug)]
#[command(
    name = "reachmap",
    version,
    about = "Ask the reachmap collector who can reach whom, and why not."
)]
pub struct Cli {
    /// Collector gRPC URL
    #[arg(
        long,
        global = true,
        env = "REACHMAP_COLLECTOR",
        default_value = "https://127.0.0.1:7440",
        value_name = "URL"
    )]
    pub collector: String,
    #[command(flatten)]
    pub auth: connect::Auth,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the fleet's nodes: addresses, stream state, agent version, clock offset
    Nodes {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one node's facts: interfaces, addresses, routes, recent events (or `node revoke NAME`)
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Node {
        #[arg(required = true)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Bootstrap tokens for agents, and API tokens for scripts and the web page (operator)
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The collectors sharing the store: their agents, the leader of fleet-wide work, heartbeat lag
    Collectors {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Query clients' certificates (`reachmap-collector issue-client`): list or revoke them (operator)
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Who reaches whom, right now: a grid of sources and destinations
    Matrix(matrix::MatrixArgs),
    /// Why can SRC not reach DST[:PORT]? A verdict and the causes, with evidence and fixes
    Why {
        src: String,
        /// NODE or NODE:PORT (the probe port when no port is given)
        #[arg(value_name = "DST[:PORT]")]
        dst: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Explain from the facts as they were then: RFC 3339, "2026-12-01 02:14" (local), or "10m ago"
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// What happened on the fleet's nodes: stored events, oldest first
    Events {
        /// Only this node's
        node: Option<String>,
        /// From this time on: "1h" (that long ago), "10m ago", RFC 3339 or a local "2026-12-01 02:14"
        #[arg(long, default_value = "1h", value_name = "TIME")]
        since: String,
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only these kinds, comma-separated (oom_kill,firewall_changed,listener_gone,...)
        #[arg(long = "type", value_delimiter = ',', value_name = "KINDS")]
        types: Vec<String>,
        /// At most this many, the newest
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One pair's timeline: ok, degraded, failing and unknown intervals, each bad one with its cause then
    History {
        src: String,
        /// NODE or NODE:PORT (the probe port when no port is given)
        #[arg(value_name = "DST[:PORT]")]
        dst: String,
        #[arg(long, default_value = "24h", value_name = "TIME")]
        since: String,
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// What is wrong with the fleet as a whole: partitions, isolated nodes, one-way pairs, services down everywhere, one cause behind many cells, stale addresses
    Findings {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Before a change: which cells into and out of NODE a proposed ruleset or address change would break. Exit status 0: nothing breaks; 1: something would; 2: the check could not run
    #[command(name = "what-if")]
    WhatIf {
        node: String,
        /// NODE's whole proposed ruleset: nft JSON (`nft -j list ruleset`), iptables-save text, or nft syntax (loaded in a private network namespace, needs root); `-` for standard input
        #[arg(long, value_name = "FILE", required_unless_present = "address")]
        ruleset: Option<String>,
        /// The ruleset file is ip6tables-save text
        #[arg(long, requires = "ruleset")]
        ip6: bool,
        /// NODE's address would change from OLD to NEW (repeatable)
        #[arg(long, value_name = "OLD=NEW")]
        address: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Is the network path open? DST's agent listens on PORT for a moment and SRC's agent connects
    TestPort {
        src: String,
        /// NODE:PORT, or NODE with --ports
        #[arg(value_name = "DST:PORT")]
        dst: String,
        /// Many ports at once, e.g. 22,80,443,9000-9010 (at most 1,024): which pass, and what that says
        #[arg(long, value_name = "PORTS", conflicts_with = "udp")]
        ports: Option<String>,
        /// UDP: DST's agent binds a temporary UDP socket, SRC's agent sends it a datagram
        #[arg(long)]
        udp: bool,
        /// How long to wait for the connection
        #[arg(long, default_value = "3s", value_name = "DURATION")]
        timeout: humantime::Duration,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Where on the way from SRC to DST:PORT a TCP connection stops (SYNs with growing TTL from SRC)
    Trace {
        src: String,
        /// NODE or NODE:PORT (the probe port when no port is given)
        #[arg(value_name = "DST[:PORT]")]
        dst: String,
        /// How far to go
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=30))]
        max_hops: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Everything the collector knows about NODE (or, with --fleet, the fleet) as one .tar.gz to attach to a ticket
    Diag {
        /// The node to bundle (or --fleet)
        #[arg(required_unless_present = "fleet")]
        node: Option<String>,
        /// The fleet's nodes and matrix instead of one node
        #[arg(long, conflicts_with = "node")]
        fleet: bool,
        /// Where to write it, a file or a directory [default: reachmap-diag-NODE-TIME.tar.gz here]
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// The node's events from this time on: "24h" (that long ago), RFC 3339 or a local "2026-12-01 02:14"
        #[arg(long, default_value = "24h", value_name = "TIME")]
        since: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeAction {
    /// Deny the node's certificates: its stream is cut at once and its handshakes refused (operator)
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ClientAction {
    /// The client certificates issued and not yet expired
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Deny every certificate issued to the client NAME: every request it makes from then on is refused
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Make a token; it is printed once
    Create {
        /// How long it is valid [default: 1h for enrolment, 30d for API tokens]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<humantime::Duration>,
        /// Enrolment: how many nodes may use it
        #[arg(long, default_value_t = 1, value_name = "N")]
        uses: u32,
        /// Enrolment: the only node name it may enrol
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// An API token with this role instead of an enrolment token
        #[arg(long, value_enum, value_name = "ROLE")]
        role: Option<RoleArg>,
        /// A note shown by `token list`
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The tokens, without their secrets
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a token by its ID (the part before the dot)
    Revoke { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Viewer,
    Operator,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0:?} is not a collector URL (expected https://HOST:PORT)")]
    BadUrl(String),
    #[error("cannot reach the collector at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Query(String),
    #[error("{0}")]
    Usage(String),
    /// `what-if` found something the change would break: the answer goes
    /// to standard output and the exit status is 1.
    #[error("{0}")]
    WouldBreak(String),
}

impl CliError {
    /// The exit status: 1 for `what-if`'s "something would break", and for
    /// any other error; 2 for an error of a command whose 1 means an answer.
    pub fn exit_code(&self, gating: bool) -> u8 {
        match self {
            CliError::WouldBreak(_) => 1,
            _ if gating => 2,
            _ => 1,
        }
    }
}

impl Command {
    /// Commands whose exit status 1 is an answer, not an error.
    pub fn gates(&self) -> bool {
        matches!(self, Command::WhatIf { .. })
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn status(url: &str, s: tonic::Status) -> CliError {
    // "transport error" alone says nothing: what the connection died of
    // (a TLS alert such as a revoked certificate, a reset) is in its source.
    if s.message() == "transport error"
        && let Some(src) = std::error::Error::source(&s)
    {
        return CliError::Unreachable {
            url: url.to_string(),
            reason: format!("transport error: {}", root_cause(src)),
        };
    }
    match s.code() {
        tonic::Code::Unavailable => CliError::Unreachable {
            url: url.to_string(),
            reason: s.message().to_string(),
        },
        tonic::Code::Unauthenticated => {
            CliError::Query(format!("not authenticated: {}", s.message()))
        }
        tonic::Code::PermissionDenied => CliError::Query(format!("not allowed: {}", s.message())),
        _ => CliError::Query(s.message().to_string()),
    }
}

/// Runs one command and returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    let mut client = connect::connect(&cli.collector, &cli.auth).await?;
    let now = SystemTime::now();
    match cli.command {
        Command::Nodes { format } => {
            let r = client
                .list_nodes(pb::ListNodesRequest {})
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let nodes = r.nodes;
            Ok(match format {
                Format::Json => json(&view::nodes(&nodes)),
                Format::Table => {
                    let mut out = table::nodes(&nodes, now);
                    if let Some(st) = r.store.filter(|s| !s.writable) {
                        out.push_str(&format!(
                            "\nthe collector's store takes no writes since {}: {} (events stay with the agents until it does)\n",
                            when::show(st.failing_since_unix_nanos, local_times()),
                            st.error
                        ));
                    }
                    out
                }
            })
        }
        Command::Matrix(args) => matrix::run(&mut client, &cli.collector, args, now).await,
        Command::Trace {
            src,
            dst,
            max_hops,
            format,
        } => {
            let (dst, port) = node_port(dst)?;
            let r = client
                .trace(pb::TraceRequest {
                    src,
                    dst,
                    port: u32::from(port),
                    max_hops,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            Ok(match format {
                Format::Json => json(&testport::trace_json(&r)),
                Format::Table => testport::render_trace(&r),
            })
        }
        Command::Why {
            src,
            dst,
            format,
            at,
        } => {
            let (dst, port) = node_port(dst)?;
            let at = moment(at.as_deref(), now)?;
            let answer = client
                .why(pb::WhyRequest {
                    src,
                    dst,
                    port: u32::from(port),
                    at_unix_nanos: at,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let e = crate::why::Explanation::from(&answer);
            Ok(match format {
                Format::Json => json(&e),
                Format::Table => {
                    use std::io::IsTerminal;
                    let color =
                        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                    why::render(&e, now, color)
                }
            })
        }
        Command::Events {
            node,
            since,
            until,
            types,
            limit,
            format,
        } => {
            let r = client
                .events(pb::EventsRequest {
                    node: node.unwrap_or_default(),
                    since_unix_nanos: when::parse(&since, now).map_err(CliError::Usage)?,
                    until_unix_nanos: moment(until.as_deref(), now)?,
                    types,
                    limit,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let v = view::EventsView::from(&r);
            Ok(match format {
                Format::Json => json(&v),
                Format::Table => history::events(&v, local_times()),
            })
        }
        Command::History {
            src,
            dst,
            since,
            until,
            format,
        } => {
            let (dst, port) = node_port(dst)?;
            let r = client
                .history(pb::HistoryRequest {
                    src,
                    dst,
                    port: u32::from(port),
                    since_unix_nanos: when::parse(&since, now).map_err(CliError::Usage)?,
                    until_unix_nanos: moment(until.as_deref(), now)?,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let v = view::HistoryView::new(&r, crate::state::unix_nanos(now));
            Ok(match format {
                Format::Json => json(&v),
                Format::Table => {
                    history::timeline(&v, crate::state::unix_nanos(now), local_times())
                }
            })
        }
        Command::TestPort {
            src,
            dst,
            ports,
            udp,
            timeout,
            format,
        } => {
            let (dst, port, ports) = match ports {
                Some(spec) => {
                    if dst.contains(':') {
                        return Err(CliError::Usage(format!(
                            "{dst:?}: give DST without a port when --ports names them"
                        )));
                    }
                    let ports = crate::testport::parse_spec(&spec).map_err(CliError::Usage)?;
                    (dst, 0, ports.into_iter().map(u32::from).collect())
                }
                None => {
                    let (dst, port) = dst
                        .rsplit_once(':')
                        .and_then(|(d, p)| Some((d.to_string(), p.parse::<u16>().ok()?)))
                        .filter(|(_, p)| *p != 0)
                        .ok_or_else(|| {
                            CliError::Usage(format!("{dst:?} is not NODE:PORT (or use --ports)"))
                        })?;
                    (dst, u32::from(port), Vec::new())
                }
            };
            let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            let r = client
                .test_port(pb::TestPortRequest {
                    src,
                    dst,
                    port,
                    timeout_ms,
                    ports,
                    udp,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            Ok(match format {
                Format::Json => json(&view::TestPortView::from(&r)),
                Format::Table => testport::render(&r),
            })
        }
        Command::Node {
            action: Some(NodeAction::Revoke { name }),
            ..
        } => {
            let r = client
                .revoke_node(pb::RevokeNodeRequest { node: name.clone() })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            Ok(format!(
                "revoked {name}: {} certificate(s) denied{}\n",
                r.certificates,
                if r.disconnected {
                    ", its stream cut"
                } else {
                    ""
                }
            ))
        }
        Command::Findings { format } => {
            let r = client
                .findings(pb::FindingsRequest {})
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let report = crate::findings::wire::from_pb(&r);
            Ok(match format {
                Format::Json => json(&report),
                Format::Table => findings::render_findings(&report),
            })
        }
        Command::WhatIf {
            node,
            ruleset,
            ip6,
            address,
            format,
        } => {
            let addresses = address
                .iter()
                .map(|a| findings::address_change(a))
                .collect::<Result<Vec<_>, _>>()?;
            let fw = ruleset
                .as_deref()
                .map(|path| findings::read_ruleset(path, ip6))
                .transpose()?;
            let mut change: Vec<String> = ruleset.iter().map(|p| format!("ruleset {p}")).collect();
            change.extend(address.iter().map(|a| format!("address {a}")));
            let r = client
                .what_if(pb::WhatIfRequest {
                    node,
                    ruleset: fw,
                    addresses,
                })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let out = match format {
                Format::Json => json(&findings::what_if_json(&r)),
                Format::Table => findings::render_what_if(&r, &change.join(" and ")),
            };
            if r.breaks.is_empty() && r.stale.is_empty() {
                Ok(out)
            } else {
                Err(CliError::WouldBreak(out))
            }
        }
        Command::Token { action } => token(&mut client, &cli.collector, action).await,
        Command::Diag {
            node, out, since, ..
        } => diag::run(&mut client, &cli.collector, node, out, &since, now).await,
        Command::Collectors { format } => {
            let r = client
                .list_collectors(pb::ListCollectorsRequest {})
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let views: Vec<view::CollectorView> = r
                .collectors
                .iter()
                .map(|c| view::CollectorView::of(c, r.now_unix_nanos))
                .collect();
            Ok(match format {
                Format::Json => json(&views),
                Format::Table => table::collectors(&views),
            })
        }
        Command::Client {
            action: ClientAction::List { format },
        } => {
            let r = client
                .list_clients(pb::ListClientsRequest {})
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            let views: Vec<view::ClientCertView> =
                r.clients.iter().map(view::ClientCertView::from).collect();
            Ok(match format {
                Format::Json => json(&views),
                Format::Table => table::clients(&views),
            })
        }
        Command::Client {
            action: ClientAction::Revoke { name },
        } => {
            let r = client
                .revoke_client(pb::RevokeClientRequest { name: name.clone() })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            Ok(format!(
                "revoked client {name}: {} certificate(s) denied\n",
                r.certificates
            ))
        }
        Command::Node { name, format, .. } => {
            let name = name.unwrap_or_default();
            let detail = client
                .get_node(pb::GetNodeRequest { name })
                .await
                .map_err(|s| status(&cli.collector, s))?
                .into_inner();
            Ok(match format {
                Format::Json => json(&view::NodeDetailView::from(&detail)),
                Format::Table => table::node(&detail, now),
            })
        }
    }
}

async fn token(
    client: &mut connect::Client,
    url: &str,
    action: TokenAction,
) -> Result<String, CliError> {
    match action {
        TokenAction::Create {
            ttl,
            uses,
            node,
            role,
            description,
            format,
        } => {
            let kind = match role {
                None => "enroll",
                Some(RoleArg::Viewer) => "viewer",
                Some(RoleArg::Operator) => "operator",
            };
            let r = client
                .create_token(pb::CreateTokenRequest {
                    kind: kind.into(),
                    ttl_seconds: ttl.map(|d| d.as_secs().max(1)).unwrap_or(0),
                    uses,
                    node: node.unwrap_or_default(),
                    description,
                })
                .await
                .map_err(|s| status(url, s))?
                .into_inner();
            Ok(match format {
                Format::Json => json(&serde_json::json!({
                    "token": r.token,
                    "info": r.info.as_ref().map(view::TokenView::from),
                })),
                Format::Table => format!("{}\n", r.token),
            })
        }
        TokenAction::List { format } => {
            let r = client
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(|s| status(url, s))?
                .into_inner();
            let views: Vec<view::TokenView> = r.tokens.iter().map(view::TokenView::from).collect();
            Ok(match format {
                Format::Json => json(&views),
                Format::Table => table::tokens(&views),
            })
        }
        TokenAction::Revoke { id } => {
            client
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(|s| status(url, s))?;
            Ok(format!("revoked token {id}\n"))
        }
    }
}

/// `NODE` or `NODE:PORT` (the probe port when none is given).
fn node_port(dst: String) -> Result<(String, u16), CliError> {
    match dst.rsplit_once(':') {
        Some((d, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| CliError::Usage(format!("{p:?} is not a port (1-65535)")))?;
            Ok((d.to_string(), port))
        }
        None => Ok((dst, reachmap_proto::DEFAULT_PROBE_PORT)),
    }
}

/// `--at`/`--until`: 0 when not given (now).
fn moment(text: Option<&str>, now: SystemTime) -> Result<i64, CliError> {
    when::parse_or_now(text, now).map_err(CliError::Usage)
}

/// Times in the local zone on a terminal, UTC otherwise.
fn local_times() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// Parses the command line; a usage error is one line on stderr and exit
/// code 2 (help and version print as usual).
pub fn parse_args<T: Parser>(bin: &str) -> T {
    T::try_parse().unwrap_or_else(|e| exit_on_usage_error(bin, e))
}

pub fn exit_on_usage_error(bin: &str, e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    eprintln!("{bin}: {first} (see {bin} --help)");
    std::process::exit(2);
}
