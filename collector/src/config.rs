//! The collector's configuration: TOML file, flags and environment (a flag
//! or variable wins over the file), validated at start; errors name the key.

use crate::probe::FleetName;
pub use services::{DEFAULT_UDP_PAYLOAD, ServiceConfig};

mod services;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/reachmap/collector.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

#[derive(Args, Debug, Default, Clone)]
pub struct Flags {
    /// TOML configuration file [default: /etc/reachmap/collector.toml when it exists]
    #[arg(long, env = "REACHMAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC address for agents and the CLI [default: 0.0.0.0:7440]
    #[arg(long, env = "REACHMAP_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// HTTP address for the JSON API [default: 0.0.0.0:7441]
    #[arg(long, env = "REACHMAP_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// Where the collector keeps its state [default: /var/lib/reachmap]
    #[arg(long, env = "REACHMAP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How often every agent probes each of its targets [default: 10s]
    #[arg(long, env = "REACHMAP_PROBE_INTERVAL", value_name = "DURATION")]
    pub probe_interval: Option<String>,
    /// How long one probe may take [default: the interval, at most 2s]
    #[arg(long, env = "REACHMAP_PROBE_TIMEOUT", value_name = "DURATION")]
    pub probe_timeout: Option<String>,
    /// Fleet size up to which every node probes every other; beyond it, full mesh inside a zone and a few representatives of other zones [default: 50]
    #[arg(long, env = "REACHMAP_FULL_MESH_MAX", value_name = "N")]
    pub full_mesh_max: Option<usize>,
    /// Per-pair series in /metrics only while the matrix has at most this many cells [default: 1000]
    #[arg(long, env = "REACHMAP_METRICS_PAIR_CAP", value_name = "N")]
    pub metrics_pair_cap: Option<usize>,
    /// A name the fleet's clients use for a member (e.g. db.example.com=db-1): every other agent looks it up and reports a name pointing at an old address; repeat for more, added to the file's [[names]]
    #[arg(
        long = "name",
        env = "REACHMAP_NAMES",
        value_name = "NAME=NODE",
        value_delimiter = ','
    )]
    pub names: Vec<String>,
    /// A DNS name or IP address agents and clients reach the collector at, put in its server certificate (besides the host name); repeat for more, added to the file's server_names
    #[arg(
        long = "server-name",
        env = "REACHMAP_SERVER_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub server_names: Vec<String>,
    /// Plaintext, and nobody authenticated: for a lab only (a WARN at every start)
    #[arg(long, env = "REACHMAP_INSECURE")]
    pub insecure: bool,
    /// The operator's own CA certificate (PEM) instead of the one made under the data directory; with --ca-key
    #[arg(
        long,
        env = "REACHMAP_CA_CERT",
        value_name = "FILE",
        requires = "ca_key"
    )]
    pub ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PEM)
    #[arg(
        long,
        env = "REACHMAP_CA_KEY",
        value_name = "FILE",
        requires = "ca_cert"
    )]
    pub ca_key: Option<PathBuf>,
    /// Lifetime of the certificates nodes get at enrolment and renewal [default: 30d]
    #[arg(long, env = "REACHMAP_NODE_CERT_LIFETIME", value_name = "DURATION")]
    pub node_cert_lifetime: Option<String>,
    /// Also serve /metrics without authentication on this address (e.g. 127.0.0.1:7444), for a local Prometheus
    #[arg(long, env = "REACHMAP_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
    /// How long the store keeps events, cell changes and fact changes [default: 14d]
    #[arg(long, env = "REACHMAP_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// Largest size of the store, e.g. 2GiB; the oldest rows go first [default: 2GiB]
    #[arg(long, env = "REACHMAP_STORE_MAX_BYTES", value_name = "SIZE")]
    pub store_max_bytes: Option<String>,
    /// Move a store that cannot be used (corrupt, not a reachmap store, from a newer version) aside and start a new one
    #[arg(long, env = "REACHMAP_STORE_RECOVER")]
    pub store_recover: bool,
    /// This collector's name among the collectors sharing a store (`reachmap collectors`) [default: the host name]
    #[arg(long, env = "REACHMAP_COLLECTOR_NAME", value_name = "NAME")]
    pub collector_name: Option<String>,
    /// A PostgreSQL database shared by several collectors, e.g. postgres://reachmap:SECRET@db:5432/reachmap?sslmode=require [default: store.db in the data directory]
    #[arg(long, env = "REACHMAP_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The PostgreSQL server's CA certificate (PEM), to verify it over TLS [default: the system's roots]
    #[arg(long, env = "REACHMAP_STORE_CA", value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
}

/// How the fleet probes itself. `Default` is the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Results per target in an agent's rolling window.
    pub window: usize,
    /// Most probes one agent starts per second.
    pub max_probes_per_second: u32,
    pub full_mesh_max: usize,
    /// Nodes of each other zone a node probes in a sparse plan.
    pub zone_representatives: usize,
    /// Sources that probe every node at least, in a sparse plan.
    pub min_probers: usize,
    pub services: Vec<ServiceConfig>,
    pub names: Vec<FleetName>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    http: Option<String>,
    data_dir: Option<PathBuf>,
    probe_interval: Option<String>,
    probe_timeout: Option<String>,
    probe_window: Option<usize>,
    max_probes_per_second: Option<u32>,
    full_mesh_max: Option<usize>,
    zone_representatives: Option<usize>,
    min_probers: Option<usize>,
    metrics_pair_cap: Option<usize>,
    #[serde(default)]
    services: Vec<ServiceConfig>,
    #[serde(default)]
    names: Vec<FleetName>,
    #[serde(default)]
    server_names: Vec<String>,
    insecure: Option<bool>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    node_cert_lifetime: Option<String>,
    metrics_listen: Option<String>,
    retention: Option<String>,
    store_max_bytes: Option<String>,
    store: Option<String>,
    store_ca: Option<PathBuf>,
    collector_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    /// Names for the collector's server certificate (the host name is
    /// always added).
    pub server_names: Vec<String>,
    pub probe: ProbeSettings,
    pub metrics_pair_cap: usize,
    pub insecure: bool,
    /// The operator's CA: certificate and key files.
    pub own_ca: Option<(PathBuf, PathBuf)>,
    pub node_cert_lifetime: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub store: crate::store::Options,
    /// The data directory's `store.db`, or the shared database.
    pub store_at: crate::store::Location,
    /// Among the collectors sharing the store.
    pub name: String,
}

impl Config {
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => File::default(),
        };
        let probe = probe_settings(flags, &file)?;
        let listen = flags
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| format!("0.0.0.0:{}", reachmap_proto::DEFAULT_GRPC_PORT));
        let http = flags
            .http
            .clone()
            .or(file.http)
            .unwrap_or_else(|| format!("0.0.0.0:{}", reachmap_proto::DEFAULT_HTTP_PORT));
        let server_names: Vec<String> = file
            .server_names
            .iter()
            .chain(&flags.server_names)
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        for n in &server_names {
            if !crate::trust::is_server_name(n) {
                return Err(invalid(
                    "server_names",
                    format!("{n:?} is not a DNS name or an IP address"),
                ));
            }
        }
        let own_ca = match (
            flags.ca_cert.clone().or(file.ca_cert),
            flags.ca_key.clone().or(file.ca_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(invalid("ca_cert", "ca_cert and ca_key go together")),
        };
        let node_cert_lifetime = duration(
            "node_cert_lifetime",
            flags
                .node_cert_lifetime
                .as_deref()
                .or(file.node_cert_lifetime.as_deref()),
        )?
        .unwrap_or(crate::trust::NODE_CERT_LIFETIME);
        if node_cert_lifetime < Duration::from_secs(10)
            || node_cert_lifetime > Duration::from_secs(366 * 24 * 3600)
        {
            return Err(invalid(
                "node_cert_lifetime",
                "must be between 10s and 366 days",
            ));
        }
        let metrics_listen = match flags.metrics_listen.clone().or(file.metrics_listen) {
            Some(a) => Some(socket_addr("metrics_listen", &a)?),
            None => None,
        };
        let defaults = crate::store::Options::default();
        let retention = duration(
            "retention",
            flags.retention.as_deref().or(file.retention.as_deref()),
        )?
        .unwrap_or(defaults.retention);
        if retention < Duration::from_secs(10) {
            return Err(invalid("retention", "must be at least 10s"));
        }
        let max_bytes = match flags
            .store_max_bytes
            .as_deref()
            .or(file.store_max_bytes.as_deref())
        {
            Some(t) => byte_size(t).map_err(|e| invalid("store_max_bytes", e))?,
            None => defaults.max_bytes,
        };
        if max_bytes < 1 << 20 {
            return Err(invalid("store_max_bytes", "must be at least 1MiB"));
        }
        let data_dir: PathBuf = flags
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| "/var/lib/reachmap".into());
        let store_ca = flags.store_ca.clone().or(file.store_ca.clone());
        let store_at = match flags.store.clone().or(file.store.clone()) {
            Some(url) => crate::store::Location::Postgres(store_target(&url, store_ca)?),
            None if store_ca.is_some() => {
                return Err(invalid(
                    "store_ca",
                    "is for a PostgreSQL store: give --store postgres://… too",
                ));
            }
            None => crate::store::Location::Dir(data_dir.clone()),
        };
        let name = match flags.collector_name.clone().or(file.collector_name.clone()) {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "collector".to_string()),
        };
        reachmap_proto::check_node_name(&name)
            .map_err(|e| invalid("collector_name", e.replace("node name", "collector name")))?;
        Ok(Config {
            name,
            store_at,
            store: crate::store::Options {
                retention,
                max_bytes,
                recover: flags.store_recover,
                ..crate::store::Options::default()
            },
            insecure: flags.insecure || file.insecure.unwrap_or(false),
            own_ca,
            node_cert_lifetime,
            metrics_listen,
            server_names,
            probe,
            metrics_pair_cap: flags
                .metrics_pair_cap
                .or(file.metrics_pair_cap)
                .unwrap_or(1000),
            listen: socket_addr("listen", &listen)?,
            http: socket_addr("http", &http)?,
            data_dir,
        })
    }
}

/// `--store URL`: a PostgreSQL URL the client library takes, and a CA file
/// that holds a certificate.
fn store_target(url: &str, ca: Option<PathBuf>) -> Result<crate::store::pg::Target, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "store",
            "must be a postgres:// URL (the embedded store needs no --store: it is store.db in --data-dir)",
        ));
    }
    let target = crate::store::pg::Target {
        url: url.to_string(),
        ca,
    };
    crate::store::pg::check(&target).map_err(|e| {
        let key = if e.contains("PostgreSQL URL") || e.contains("names no host") {
            "store"
        } else {
            "store_ca"
        };
        invalid(key, e)
    })?;
    Ok(target)
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            window: 10,
            max_probes_per_second: 10_000,
            full_mesh_max: 50,
            zone_representatives: 3,
            min_probers: 3,
            services: Vec::new(),
            names: Vec::new(),
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// `2GiB`, `500MB`, `1048576`: a size in bytes (K, M, G are powers of
/// 1000, Ki, Mi, Gi of 1024; a trailing B is optional).
pub fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 2GiB, 500MB)"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix('B')
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let factor: f64 = match unit {
        "" => 1.0,
        "K" | "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G, Ki, Mi, Gi)")),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

fn duration(key: &'static str, text: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            invalid(
                key,
                format!("{text:?} is not a duration like 10s or 500ms ({e})"),
            )
        })
}

fn probe_settings(flags: &Flags, file: &File) -> Result<ProbeSettings, ConfigError> {
    let interval = duration(
        "probe_interval",
        flags
            .probe_interval
            .as_deref()
            .or(file.probe_interval.as_deref()),
    )?
    .unwrap_or(Duration::from_secs(10));
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(invalid("probe_interval", "must be between 100ms and 1h"));
    }
    let timeout = duration(
        "probe_timeout",
        flags
            .probe_timeout
            .as_deref()
            .or(file.probe_timeout.as_deref()),
    )?
    .unwrap_or_else(|| interval.min(Duration::from_secs(2)));
    if timeout.is_zero() || timeout > interval.max(Duration::from_secs(1)) * 3 {
        return Err(invalid(
            "probe_timeout",
            "must be above 0 and at most three intervals",
        ));
    }
    let window = file.probe_window.unwrap_or(10);
    if !(1..=1000).contains(&window) {
        return Err(invalid("probe_window", "must be between 1 and 1000"));
    }
    let max_probes_per_second = file.max_probes_per_second.unwrap_or(10_000);
    if max_probes_per_second == 0 {
        return Err(invalid("max_probes_per_second", "must be at least 1"));
    }
    let services = services::check(&file.services)?;
    let names = fleet_names(flags, file)?;
    Ok(ProbeSettings {
        names,
        interval,
        timeout,
        window,
        max_probes_per_second,
        full_mesh_max: flags.full_mesh_max.or(file.full_mesh_max).unwrap_or(50),
        zone_representatives: file.zone_representatives.unwrap_or(3),
        min_probers: file.min_probers.unwrap_or(3),
        services,
    })
}

/// The file's `[[names]]` and the flag's `NAME=NODE`s, checked: a host
/// name (what a resolver takes) and a node name, each name once.
fn fleet_names(flags: &Flags, file: &File) -> Result<Vec<FleetName>, ConfigError> {
    let mut out = file.names.clone();
    for f in &flags.names {
        let (name, node) = f
            .split_once('=')
            .ok_or_else(|| invalid("names", format!("{f:?} is not NAME=NODE")))?;
        out.push(FleetName {
            name: name.trim().to_string(),
            node: node.trim().to_string(),
        });
    }
    let mut seen = std::collections::BTreeMap::new();
    for n in &out {
        if !reachmap_proto::valid_host_name(&n.name) {
            return Err(invalid("names", format!("{:?} is not a host name", n.name)));
        }
        if let Err(e) = reachmap_proto::check_node_name(&n.node) {
            return Err(invalid("names", format!("{:?}: {e}", n.node)));
        }
        if let Some(other) = seen.insert(n.name.to_ascii_lowercase(), &n.node)
            && *other != n.node
        {
            return Err(invalid(
                "names",
                format!("{:?} is given to both {other} and {}", n.name, n.node),
            ));
        }
    }
    out.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
    out.dedup();
    Ok(out)
}

fn socket_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!("{text:?} is not ADDR:PORT (e.g. 0.0.0.0:7440 or [::]:7440)"),
    })
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(crate::one_line(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(file: &str) -> Flags {
        let path = std::env::temp_dir().join(format!(
            "reachmap-collector-cfg-{}-{}.toml",
            std::process::id(),
            file.len()
        ));
        std::fs::write(&path, file).expect("write");
        Flags {
            config: Some(path),
            ..Flags::default()
        }
    }

    #[test]
    fn defaults_file_and_flags() {
        let c = Config::load(&flags("")).expect("defaults");
        assert_eq!(c.listen.to_string(), "0.0.0.0:7440");
        assert_eq!(c.http.to_string(), "0.0.0.0:7441");
        let mut f = flags("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\n");
        let c = Config::load(&f).expect("file");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        f.listen = Some("[::1]:9001".into());
        assert_eq!(
            Config::load(&f).expect("flag").listen.to_string(),
            "[::1]:9001"
        );
    }

    #[test]
    fn server_names_from_the_file_and_flags() {
        let mut f = flags("server_names = [\"collector.example.internal\"]\n");
        f.server_names = vec!["198.18.0.1".into()];
        let c = Config::load(&f).expect("names");
        assert_eq!(c.server_names, ["collector.example.internal", "198.18.0.1"]);
        f.server_names = vec!["not a name".into()];
        let e = Config::load(&f).expect_err("bad name").to_string();
        assert!(
            e.contains("server_names") && e.contains("not a name"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let f = Flags {
            config: Some(
                format!(
                    "{}/../deploy/config/collector.toml",
                    env!("CARGO_MANIFEST_DIR")
                )
                .into(),
            ),
            ..Flags::default()
        };
        let c = Config::load(&f).expect("deploy/config/collector.toml loads");
        assert_eq!(c.listen.port(), 7440);
    }

    #[test]
    fn the_store_is_a_postgres_url_with_a_readable_ca_or_the_data_dir() {
        let c = Config::load(&flags("data_dir = \"/tmp/x\"\n")).expect("default");
        assert_eq!(c.store_at, crate::store::Location::Dir("/tmp/x".into()));
        let c = Config::load(&flags(
            "store = \"postgres://u:secret@db:5432/reachmap?sslmode=require\"\ncollector_name = \"c-1\"\n",
        ))
        .expect("postgres");
        assert!(matches!(c.store_at, crate::store::Location::Postgres(_)));
        assert_eq!(
            c.store_at.shown(),
            "postgres://db:5432/reachmap",
            "no password"
        );
        assert_eq!(c.name, "c-1");
        for (text, key, says) in [
            ("store = \"/var/lib/x.db\"\n", "store:", "postgres:// URL"),
            (
                "store = \"postgres://u@db/r?sslmode=bogus\"\n",
                "store:",
                "not a PostgreSQL URL",
            ),
            ("store_ca = \"/etc/ca.pem\"\n", "store_ca:", "give --store"),
            (
                "store = \"postgres://u@db/r\"\nstore_ca = \"/nonexistent/ca.pem\"\n",
                "store_ca:",
                "/nonexistent/ca.pem",
            ),
            (
                "collector_name = \"not a name\"\n",
                "collector_name:",
                "collector name",
            ),
        ] {
            let e = Config::load(&flags(text)).expect_err(text).to_string();
            assert!(e.starts_with(key) && e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let mut f = flags("");
        f.http = Some("localhost".into());
        assert!(
            Config::load(&f)
                .expect_err("bad")
                .to_string()
                .starts_with("http:")
        );
        let e = Config::load(&flags(
            "[[services]]\nname = \"web\"\nport = 8080\npath = \"health\"\n",
        ))
        .expect_err("bad path")
        .to_string();
        assert!(e.starts_with("services:") && e.contains("health"), "{e}");
        for (bad, says) in [
            ("upstreams = [\"app\"]", "upstream \"app\""),
            ("upstreams = [\"app:0\"]", "NAME:PORT"),
            ("unit = \"a b\"", "unit \"a b\""),
            ("process = \"\"", "process \"\""),
        ] {
            let e = Config::load(&flags(&format!(
                "[[services]]\nname = \"web\"\nport = 8080\n{bad}\n"
            )))
            .expect_err(bad)
            .to_string();
            assert!(e.starts_with("services:") && e.contains(says), "{bad}: {e}");
        }
        let ok = Config::load(&flags(
            "[[services]]\nname = \"web\"\nport = 80\npath = \"/\"\nupstreams = [\"app:8080\"]\nprocess = \"nginx\"\n",
        ))
        .expect("upstreams and an owner");
        let web = &ok.probe.services[0];
        assert_eq!(web.upstreams, vec!["app:8080".to_string()]);
        assert_eq!(web.process.as_deref(), Some("nginx"));
        let mut f = flags("");
        f.probe_interval = Some("1x".into());
        assert!(
            Config::load(&f)
                .expect_err("bad interval")
                .to_string()
                .starts_with("probe_interval:")
        );
        let e = Config::load(&flags("lissen = \"x\"\n"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("lissen") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn names_from_the_file_and_the_flag() {
        let mut f = flags("[[names]]\nname = \"db.fleet.test\"\nnode = \"db-1\"\n");
        f.names = vec!["web.fleet.test=web-1".into(), "db.fleet.test = db-1".into()];
        let names = Config::load(&f).expect("names").probe.names;
        let pairs: Vec<(&str, &str)> = names
            .iter()
            .map(|n| (n.name.as_str(), n.node.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("db.fleet.test", "db-1"), ("web.fleet.test", "web-1")]
        );
        for (flag, want) in [
            ("db.fleet.test", "not NAME=NODE"),
            ("db fleet=db-1", "not a host name"),
            ("db.fleet.test=db 1", "contains"),
            ("DB.fleet.test=db-2", "given to both"),
        ] {
            f.names = vec![flag.into()];
            let e = Config::load(&f).expect_err(flag).to_string();
            assert!(e.starts_with("names:") && e.contains(want), "{flag}: {e}");
        }
    }
}
