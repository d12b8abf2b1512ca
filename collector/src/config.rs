//! The collector's configuration: TOML file, flags and environment (a flag
//! or variable wins over the file), validated at start; errors name the key.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    http: Option<String>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
}

impl Config {
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => File::default(),
        };
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
        Ok(Config {
            listen: socket_addr("listen", &listen)?,
            http: socket_addr("http", &http)?,
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/reachmap".into()),
        })
    }
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
    fn errors_name_the_key() {
        let mut f = flags("");
        f.http = Some("localhost".into());
        assert!(
            Config::load(&f)
                .expect_err("bad")
                .to_string()
                .starts_with("http:")
        );
        let e = Config::load(&flags("lissen = \"x\"\n"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("lissen") && !e.contains('\n'), "{e}");
    }
}
