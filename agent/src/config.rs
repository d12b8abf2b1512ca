//! One typed configuration, from a TOML file, flags and environment
//! variables (a flag or variable wins over the file), validated at start.
//! Every error names the key that is wrong.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Uri;

pub const DEFAULT_CONFIG: &str = "/etc/reachmap/agent.toml";
/// The outbox's default bound in bytes (16 MiB) and the least it may be.
pub const DEFAULT_EVENT_BUFFER_BYTES: u64 = 16 << 20;
pub const MIN_EVENT_BUFFER_BYTES: u64 = 64 << 10;
/// The health endpoint's port on 127.0.0.1 unless configured.
pub const DEFAULT_HEALTH_PORT: u16 = 7443;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Flags and environment variables of `reachmap-agent run`.
#[derive(Args, Debug, Default, Clone)]
pub struct Flags {
    /// TOML configuration file [default: /etc/reachmap/agent.toml when it exists]
    #[arg(long, env = "REACHMAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Collector gRPC URL, e.g. https://collector:7440; several, comma-separated, to fail over between them
    #[arg(long, env = "REACHMAP_COLLECTOR", value_name = "URL[,URL...]")]
    pub collector: Option<String>,
    /// This node's name [default: the hostname]
    #[arg(long, env = "REACHMAP_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// How often to send a heartbeat [default: 5s]
    #[arg(long, env = "REACHMAP_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub heartbeat_interval: Option<String>,
    /// Longest wait between reconnect attempts [default: 5s]
    #[arg(long, env = "REACHMAP_RECONNECT_MAX", value_name = "DURATION")]
    pub reconnect_max: Option<String>,
    /// Where the host's /proc is mounted [default: /proc]
    #[arg(long, global = true, env = "REACHMAP_PROCFS", value_name = "DIR")]
    pub procfs: Option<PathBuf>,
    /// Where the host's /sys is mounted [default: /sys]
    #[arg(long, global = true, env = "REACHMAP_SYSFS", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// The kernel log device [default: /dev/kmsg]
    #[arg(long, global = true, env = "REACHMAP_KMSG", value_name = "FILE")]
    pub kmsg: Option<PathBuf>,
    /// The filesystem whose disk use is reported [default: /]
    #[arg(long, global = true, env = "REACHMAP_ROOTFS", value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Where the agent keeps its small state (kernel log position) [default: /var/lib/reachmap-agent]
    #[arg(long, env = "REACHMAP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How often to read resources and iptables-legacy rules [default: 10s]
    #[arg(long, env = "REACHMAP_POLL_INTERVAL", value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// How often to count connections per listener and sockets by state [default: 30s]
    #[arg(long, env = "REACHMAP_SOCKET_POLL_INTERVAL", value_name = "DURATION")]
    pub socket_poll_interval: Option<String>,
    /// How often to check which listeners exist [default: 250ms]
    #[arg(long, env = "REACHMAP_LISTENER_INTERVAL", value_name = "DURATION")]
    pub listener_interval: Option<String>,
    /// Where peers' probes connect [default: 0.0.0.0:7442]
    #[arg(long, env = "REACHMAP_PROBE_LISTEN", value_name = "ADDR:PORT")]
    pub probe_listen: Option<String>,
    /// Where to serve /healthz, /readyz and /metrics, or `off` [default: 127.0.0.1:7443]
    #[arg(long, env = "REACHMAP_HEALTH_LISTEN", value_name = "ADDR:PORT|off")]
    pub health_listen: Option<String>,
    /// Events kept while the collector is unreachable [default: 10000]
    #[arg(long, env = "REACHMAP_EVENT_BUFFER", value_name = "N")]
    pub event_buffer: Option<usize>,
    /// Bytes of events kept while the collector is unreachable, in memory and in the state directory's outbox log; at least 65536 [default: 16777216, 16 MiB]
    #[arg(long, env = "REACHMAP_EVENT_BUFFER_BYTES", value_name = "BYTES")]
    pub event_buffer_bytes: Option<u64>,
    /// A node label, e.g. zone=eu-west-1a (repeatable)
    #[arg(
        long = "label",
        env = "REACHMAP_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// A bootstrap token (`reachmap token create`): with it the agent enrols once, making its key on this host, and keeps its certificate in the state directory
    #[arg(
        long,
        env = "REACHMAP_ENROLL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub enroll_token: Option<String>,
    /// The collector CA's pin (`reachmap-collector ca pin`), trusted on first contact
    #[arg(long, env = "REACHMAP_CA_PIN", value_name = "sha256:HEX")]
    pub ca_pin: Option<String>,
    /// The collector's CA certificate (PEM), instead of a pin
    #[arg(long, env = "REACHMAP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Plaintext to a collector started with --insecure (a lab only; a WARN at every start)
    #[arg(long, env = "REACHMAP_INSECURE")]
    pub insecure: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    /// One URL, a comma-separated list or an array of URLs.
    collector: Option<toml::Value>,
    node: Option<String>,
    heartbeat_interval: Option<String>,
    reconnect_max: Option<String>,
    procfs: Option<PathBuf>,
    sysfs: Option<PathBuf>,
    kmsg: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    poll_interval: Option<String>,
    socket_poll_interval: Option<String>,
    listener_interval: Option<String>,
    probe_listen: Option<String>,
    health_listen: Option<String>,
    event_buffer: Option<usize>,
    event_buffer_bytes: Option<u64>,
    labels: Option<BTreeMap<String, String>>,
    enroll_token: Option<String>,
    ca_pin: Option<String>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The first of `collectors`.
    pub collector: Uri,
    /// Every collector URL, in the order given: the stream fails over
    /// between them (`collectors::Rotation`). Never empty.
    pub collectors: Vec<Uri>,
    pub node: String,
    pub heartbeat_interval: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub kmsg: PathBuf,
    pub rootfs: PathBuf,
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    pub socket_poll_interval: Duration,
    pub listener_interval: Duration,
    pub probe_listen: std::net::SocketAddr,
    /// The health endpoint's address; `None` when turned off.
    pub health_listen: Option<std::net::SocketAddr>,
    /// Where machine-id is read from; tests point it at a fixture.
    pub etc: PathBuf,
    pub event_buffer: usize,
    /// The outbox's bound in bytes of encoded events, beside `event_buffer`.
    pub event_buffer_bytes: u64,
    pub labels: BTreeMap<String, String>,
    pub enroll_token: Option<String>,
    /// Normalised `sha256:<hex>`.
    pub ca_pin: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

impl Config {
    /// Merges flags over the file (if any) over defaults, and validates.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => File::default(),
        };
        let insecure = flags.insecure || file.insecure.unwrap_or(false);
        let collectors = match (&flags.collector, &file.collector) {
            (Some(text), _) => crate::collectors::parse_list(text, insecure)?,
            (None, Some(value)) => crate::collectors::from_toml(value, insecure)?,
            (None, None) => {
                return Err(invalid(
                    "collector",
                    "not set (use --collector URL, REACHMAP_COLLECTOR or `collector` in the config file)",
                ));
            }
        };
        let node = match flags.node.clone().or(file.node) {
            Some(n) => n,
            None => crate::inspect::host::hostname(),
        };
        reachmap_proto::check_node_name(&node).map_err(|m| invalid("node", m))?;
        let mut labels = file.labels.unwrap_or_default();
        for kv in &flags.labels {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid("labels", format!("{kv:?} is not KEY=VALUE")))?;
            labels.insert(k.to_string(), v.to_string());
        }
        for (k, v) in &labels {
            if k.is_empty() || k.len() > 63 || v.len() > 253 {
                return Err(invalid(
                    "labels",
                    format!("label {k:?}={v:?}: key must be 1-63 characters, value at most 253"),
                ));
            }
        }
        let heartbeat_interval = duration(
            "heartbeat_interval",
            flags
                .heartbeat_interval
                .as_deref()
                .or(file.heartbeat_interval.as_deref()),
            Duration::from_secs(5),
        )?;
        let reconnect_max = duration(
            "reconnect_max",
            flags
                .reconnect_max
                .as_deref()
                .or(file.reconnect_max.as_deref()),
            Duration::from_secs(5),
        )?;
        let poll_interval = duration(
            "poll_interval",
            flags
                .poll_interval
                .as_deref()
                .or(file.poll_interval.as_deref()),
            Duration::from_secs(10),
        )?;
        let socket_poll_interval = duration(
            "socket_poll_interval",
            flags
                .socket_poll_interval
                .as_deref()
                .or(file.socket_poll_interval.as_deref()),
            Duration::from_secs(30),
        )?;
        if socket_poll_interval < Duration::from_millis(100) {
            return Err(invalid("socket_poll_interval", "must be at least 100ms"));
        }
        let listener_interval = duration(
            "listener_interval",
            flags
                .listener_interval
                .as_deref()
                .or(file.listener_interval.as_deref()),
            Duration::from_millis(250),
        )?;
        if listener_interval < Duration::from_millis(10) {
            return Err(invalid("listener_interval", "must be at least 10ms"));
        }
        if poll_interval < Duration::from_millis(100) {
            return Err(invalid("poll_interval", "must be at least 100ms"));
        }
        let probe_listen = flags
            .probe_listen
            .clone()
            .or(file.probe_listen)
            .unwrap_or_else(|| format!("0.0.0.0:{}", reachmap_proto::DEFAULT_PROBE_PORT));
        let probe_listen = probe_listen.parse().map_err(|_| {
            invalid(
                "probe_listen",
                format!("{probe_listen:?} is not ADDR:PORT (e.g. 0.0.0.0:7442)"),
            )
        })?;
        let health_listen = match flags
            .health_listen
            .clone()
            .or(file.health_listen)
            .as_deref()
            .map(str::trim)
        {
            Some("off") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                invalid(
                    "health_listen",
                    format!("{a:?} is not ADDR:PORT (e.g. 127.0.0.1:7443) or off"),
                )
            })?),
            None => Some(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                DEFAULT_HEALTH_PORT,
            ))),
        };
        let event_buffer = flags.event_buffer.or(file.event_buffer).unwrap_or(10_000);
        if event_buffer == 0 {
            return Err(invalid("event_buffer", "must be at least 1"));
        }
        let event_buffer_bytes = flags
            .event_buffer_bytes
            .or(file.event_buffer_bytes)
            .unwrap_or(DEFAULT_EVENT_BUFFER_BYTES);
        if event_buffer_bytes < MIN_EVENT_BUFFER_BYTES {
            return Err(invalid(
                "event_buffer_bytes",
                format!(
                    "{event_buffer_bytes} is too small (at least {MIN_EVENT_BUFFER_BYTES}, 64 KiB)"
                ),
            ));
        }
        let ca_pin = match flags.ca_pin.clone().or(file.ca_pin) {
            Some(p) => Some(
                reachmap_tls::identity::check_pin(p.trim()).map_err(|m| invalid("ca_pin", m))?,
            ),
            None => None,
        };
        let enroll_token = flags
            .enroll_token
            .clone()
            .or(file.enroll_token)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Ok(Config {
            collector: collectors[0].clone(),
            collectors,
            enroll_token,
            ca_pin,
            ca_file: flags.ca_file.clone().or(file.ca_file),
            insecure,
            node,
            heartbeat_interval,
            reconnect_initial: Duration::from_millis(200).min(reconnect_max),
            reconnect_max,
            procfs: flags
                .procfs
                .clone()
                .or(file.procfs)
                .unwrap_or_else(|| "/proc".into()),
            sysfs: flags
                .sysfs
                .clone()
                .or(file.sysfs)
                .unwrap_or_else(|| "/sys".into()),
            kmsg: flags
                .kmsg
                .clone()
                .or(file.kmsg)
                .unwrap_or_else(|| "/dev/kmsg".into()),
            rootfs: flags
                .rootfs
                .clone()
                .or(file.rootfs)
                .unwrap_or_else(|| "/".into()),
            state_dir: flags
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| "/var/lib/reachmap-agent".into()),
            poll_interval,
            socket_poll_interval,
            listener_interval,
            probe_listen,
            health_listen,
            etc: "/etc".into(),
            event_buffer,
            event_buffer_bytes,
            labels,
        })
    }
}

/// The effective configuration as the Hello carries it (`reachmap diag`):
/// every setting a person troubleshooting the node needs, and no secret —
/// the enrolment token only as whether one was given, the collector's trust
/// only as its kind (no pin, no file path), the collector URLs without any
/// user information.
#[derive(Serialize, Debug)]
struct Shown<'a> {
    /// The collector the stream carrying this Hello goes to.
    collector: String,
    collectors: Vec<String>,
    node: &'a str,
    heartbeat_interval: String,
    reconnect_initial: String,
    reconnect_max: String,
    procfs: &'a Path,
    sysfs: &'a Path,
    kmsg: &'a Path,
    rootfs: &'a Path,
    state_dir: &'a Path,
    poll_interval: String,
    socket_poll_interval: String,
    listener_interval: String,
    probe_listen: std::net::SocketAddr,
    health_listen: Option<std::net::SocketAddr>,
    event_buffer: usize,
    event_buffer_bytes: u64,
    labels: &'a BTreeMap<String, String>,
    /// "ca_pin", "ca_file", "insecure" or "none" (the agent's certificate
    /// alone).
    collector_trust: &'static str,
    enroll_token_given: bool,
}

impl Config {
    /// [`Shown`] as JSON: the Hello's `config_json` on a stream to
    /// `current`.
    pub fn shown_json(&self, current: &Uri) -> String {
        use crate::collectors::shown_url;
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let shown = Shown {
            collector: shown_url(current),
            collectors: self.collectors.iter().map(shown_url).collect(),
            node: &self.node,
            heartbeat_interval: human(self.heartbeat_interval),
            reconnect_initial: human(self.reconnect_initial),
            reconnect_max: human(self.reconnect_max),
            procfs: &self.procfs,
            sysfs: &self.sysfs,
            kmsg: &self.kmsg,
            rootfs: &self.rootfs,
            state_dir: &self.state_dir,
            poll_interval: human(self.poll_interval),
            socket_poll_interval: human(self.socket_poll_interval),
            listener_interval: human(self.listener_interval),
            probe_listen: self.probe_listen,
            health_listen: self.health_listen,
            event_buffer: self.event_buffer,
            event_buffer_bytes: self.event_buffer_bytes,
            labels: &self.labels,
            collector_trust: if self.insecure {
                "insecure"
            } else if self.ca_pin.is_some() {
                "ca_pin"
            } else if self.ca_file.is_some() {
                "ca_file"
            } else {
                "none"
            },
            enroll_token_given: self.enroll_token.is_some(),
        };
        serde_json::to_string(&shown).unwrap_or_default()
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: one_line(&e.to_string()),
    })
}

/// TOML errors span several lines with a caret diagram; keep the gist.
pub fn one_line(s: &str) -> String {
    let mut lines = s.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().trim().to_string();
    match lines.next_back() {
        Some(last) if last.trim() != first => format!("{first} {}", last.trim()),
        _ => first,
    }
}

fn duration(
    key: &'static str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration like 5s or 500ms ({e})"),
        )
    })?;
    if d < Duration::from_millis(10) {
        return Err(invalid(
            key,
            format!("{text:?} is too short (at least 10ms)"),
        ));
    }
    Ok(d)
}

/// `https://host[:port]` (`http://` only with `--insecure`); the port
/// defaults to the collector's gRPC port.
pub fn parse_collector_url(text: &str, insecure: bool) -> Result<Uri, ConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|e| invalid("collector", format!("{text:?} is not a URL ({e})")))?;
    let scheme = match (uri.scheme_str(), insecure) {
        (Some("https"), false) => "https",
        (Some("http"), true) => "http",
        (Some("http"), false) => {
            return Err(invalid(
                "collector",
                format!(
                    "{text:?} is plaintext: use https:// (or --insecure for a collector started with --insecure)"
                ),
            ));
        }
        (Some("https"), true) => {
            return Err(invalid(
                "collector",
                format!("{text:?}: --insecure speaks plaintext, use http://"),
            ));
        }
        _ => {
            return Err(invalid(
                "collector",
                format!("{text:?} must start with https://"),
            ));
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(invalid("collector", format!("{text:?} has no host")));
    };
    if authority.host().is_empty() {
        return Err(invalid("collector", format!("{text:?} has no host")));
    }
    if authority.port().is_some() {
        return Ok(uri);
    }
    let with_port = format!(
        "{scheme}://{}:{}",
        authority.host(),
        reachmap_proto::DEFAULT_GRPC_PORT
    );
    with_port
        .parse()
        .map_err(|e| invalid("collector", format!("{text:?} is not a URL ({e})")))
}

/// Parses the command line; a usage error is one line on stderr and exit
/// code 2 (help and version print as usual).
pub fn parse_args<T: clap::Parser>(bin: &str) -> T {
    T::try_parse().unwrap_or_else(|e| {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            config: Some("/nonexistent-reachmap-test.toml".into()),
            collector: Some("https://198.18.0.1:7440".into()),
            node: Some("n1".into()),
            ..Flags::default()
        }
    }

    fn load(flags: &Flags) -> Result<Config, String> {
        Config::load(flags).map_err(|e| e.to_string())
    }

    fn with_file(text: &str) -> Flags {
        let path = std::env::temp_dir().join(format!(
            "reachmap-agent-cfg-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).expect("write");
        Flags {
            config: Some(path),
            ..Flags::default()
        }
    }

    #[test]
    fn missing_file_names_the_file() {
        let e = load(&flags()).expect_err("no such file");
        assert!(
            e.starts_with("config file /nonexistent-reachmap-test.toml:"),
            "{e}"
        );
    }

    #[test]
    fn file_values_and_flag_override() {
        let mut f = with_file(
            "collector = \"https://c:1\"\nnode = \"from-file\"\nheartbeat_interval = \"2s\"\n[labels]\nzone = \"a\"\n",
        );
        let c = load(&f).expect("valid");
        assert_eq!(c.node, "from-file");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
        f.node = Some("from-flag".into());
        f.labels = vec!["zone=b".into()];
        let c = load(&f).expect("valid");
        assert_eq!(c.node, "from-flag");
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("b"));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let e = load(&with_file(
            "collector = \"https://c:1\"\nheartbeat = \"2s\"\n",
        ))
        .expect_err("unknown key");
        assert!(e.contains("heartbeat"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut f = with_file("");
        f.collector = Some("https://c:1".into());
        f.node = Some("n".into());
        f.heartbeat_interval = Some("soon".into());
        assert!(
            load(&f)
                .expect_err("bad")
                .starts_with("heartbeat_interval:")
        );
        f.heartbeat_interval = None;
        f.node = Some("bad name".into());
        assert!(load(&f).expect_err("bad").starts_with("node:"));
        f.node = Some("n".into());
        f.collector = Some("ftp://x".into());
        assert!(load(&f).expect_err("bad").starts_with("collector:"));
        f.collector = None;
        assert!(load(&f).expect_err("bad").starts_with("collector: not set"));
        f.collector = Some("https://c:1".into());
        f.labels = vec!["novalue".into()];
        assert!(load(&f).expect_err("bad").starts_with("labels:"));
    }

    #[test]
    fn event_buffer_bytes_from_file_and_flag_with_a_floor() {
        let mut f =
            with_file("collector = \"https://c:1\"\nnode = \"n\"\nevent_buffer_bytes = 1048576\n");
        assert_eq!(load(&f).expect("valid").event_buffer_bytes, 1 << 20);
        f.event_buffer_bytes = Some(65_536);
        assert_eq!(load(&f).expect("valid").event_buffer_bytes, 65_536);
        f.event_buffer_bytes = Some(65_535);
        let e = load(&f).expect_err("too small");
        assert!(e.starts_with("event_buffer_bytes:"), "{e}");
        f.event_buffer_bytes = None;
        f.config = with_file("collector = \"https://c:1\"\nnode = \"n\"\n").config;
        assert_eq!(
            load(&f).expect("valid").event_buffer_bytes,
            DEFAULT_EVENT_BUFFER_BYTES
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let f = Flags {
            config: Some(
                format!("{}/../deploy/config/agent.toml", env!("CARGO_MANIFEST_DIR")).into(),
            ),
            ..Flags::default()
        };
        let c = load(&f).expect("deploy/config/agent.toml loads");
        assert_eq!(c.node, "web-1");
        assert_eq!(c.collector.port_u16(), Some(7440));
    }

    #[test]
    fn collector_url_gets_the_default_port() {
        assert_eq!(
            parse_collector_url("https://collector", false)
                .expect("ok")
                .to_string(),
            "https://collector:7440/"
        );
        assert_eq!(
            parse_collector_url("https://10.0.0.1:9000", false)
                .expect("ok")
                .port_u16(),
            Some(9000)
        );
        assert!(parse_collector_url("not a url", false).is_err());
        // Plaintext only on request, and then only plaintext.
        let e = parse_collector_url("http://c:1", false).expect_err("plaintext");
        assert!(e.to_string().contains("is plaintext"), "{e}");
        assert!(parse_collector_url("http://c:1", true).is_ok());
        assert!(parse_collector_url("https://c:1", true).is_err());
    }

    #[test]
    fn the_shown_config_has_no_secrets() {
        let token = "tok1d.s3cr3t-enrolment-secret-value";
        let pin = format!("sha256:{}", "ab".repeat(32));
        let mut f = with_file(&format!(
            "collector = \"https://user:hunter2@c:1\"\nnode = \"n\"\nenroll_token = \"{token}\"\nca_pin = \"{pin}\"\nca_file = \"/etc/reachmap/secret-ca.pem\"\n[labels]\nzone = \"a\"\n"
        ));
        f.labels = vec!["rack=r7".into()];
        let c = load(&f).expect("valid");
        assert_eq!(c.enroll_token.as_deref(), Some(token));
        let text = c.shown_json(&c.collector);
        for secret in [
            token,
            "s3cr3t",
            &pin,
            "ab".repeat(32).as_str(),
            "hunter2",
            "secret-ca",
        ] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["node"], "n");
        assert_eq!(v["collector"], "https://c:1");
        assert_eq!(v["heartbeat_interval"], "5s");
        assert_eq!(v["labels"]["zone"], "a");
        assert_eq!(v["labels"]["rack"], "r7");
        assert_eq!(v["collector_trust"], "ca_pin");
        assert_eq!(v["enroll_token_given"], true);
        assert_eq!(v["probe_listen"], "0.0.0.0:7442");
        assert!(text.len() < 64 << 10, "fits the collector's limit");
    }

    #[test]
    fn a_bad_pin_names_its_key() {
        let mut f = flags();
        f.config = None;
        f.ca_pin = Some("sha256:123".into());
        let e = Config::load(&Flags {
            config: Some(with_file("").config.expect("path")),
            ..f
        })
        .expect_err("bad pin")
        .to_string();
        assert!(e.starts_with("ca_pin:"), "{e}");
    }
}
