//! How the CLI reaches the collector: TLS with a client certificate bundle
//! (`reachmap-collector issue-client`) or an API token, the collector
//! trusted by the bundle's CA, `--ca-file` or `--ca-pin`; plaintext only
//! with `--insecure`.

use super::{CliError, root_cause};
use reachmap_proto::v1::query_client::QueryClient;
use reachmap_tls::{ClientIdentity, ServerTrust};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A whole matrix of a large fleet is bigger than one agent message.
const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct Auth {
    /// A credentials bundle (client certificate, key and the collector's CA, PEM) from `reachmap-collector issue-client` [default: ~/.config/reachmap/credentials.pem when it exists]
    #[arg(long, global = true, env = "REACHMAP_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// An API token (`reachmap token create --role viewer`), sent as a bearer token
    #[arg(
        long,
        global = true,
        env = "REACHMAP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The collector's CA certificate (PEM), when no bundle carries it
    #[arg(long, global = true, env = "REACHMAP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The pin of the collector's CA (`reachmap-collector ca pin`), when no bundle or file carries it
    #[arg(
        long,
        global = true,
        env = "REACHMAP_CA_PIN",
        value_name = "sha256:HEX"
    )]
    pub ca_pin: Option<String>,
    /// Plaintext to a collector started with --insecure (a lab only)
    #[arg(long, global = true, env = "REACHMAP_INSECURE")]
    pub insecure: bool,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type Client = QueryClient<InterceptedService<Channel, Bearer>>;

fn default_bundle() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".config/reachmap/credentials.pem");
    p.exists().then_some(p)
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// The certificates of a bundle, split into the CA and the client's own.
fn bundle(path: &Path) -> Result<(Vec<reachmap_tls::pem::CertDer>, ClientIdentity), CliError> {
    let text = read(path)?;
    let bad = |m: String| CliError::Usage(format!("{}: {m}", path.display()));
    let certs = reachmap_tls::pem::certs(&text).map_err(bad)?;
    let key = reachmap_tls::pem::key(&text).map_err(bad)?;
    let (mut ca, mut chain) = (Vec::new(), Vec::new());
    for c in certs {
        match reachmap_tls::cert_info(&c) {
            Ok(i) if i.is_ca => ca.push(c),
            Ok(_) => chain.push(c),
            Err(e) => return Err(bad(e)),
        }
    }
    if chain.is_empty() {
        return Err(bad("no client certificate in it".into()));
    }
    Ok((ca, ClientIdentity { chain, key }))
}

pub async fn connect(url: &str, auth: &Auth) -> Result<Client, CliError> {
    let uri: tonic::transport::Uri = url.parse().map_err(|_| CliError::BadUrl(url.to_string()))?;
    if uri.host().is_none() {
        return Err(CliError::BadUrl(url.to_string()));
    }
    let endpoint = Endpoint::from(uri.clone())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    let unreachable = |e: tonic::transport::Error| CliError::Unreachable {
        url: url.to_string(),
        reason: root_cause(&e),
    };
    let bearer = match &auth.token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| CliError::Usage("--token: not a token".into()))?,
        ),
        None => None,
    };
    let channel = match (uri.scheme_str(), auth.insecure) {
        (Some("http"), true) => endpoint.connect().await.map_err(unreachable)?,
        (Some("http"), false) => {
            return Err(CliError::Usage(format!(
                "{url} is plaintext: use https:// (or --insecure for a collector started with --insecure)"
            )));
        }
        (Some("https"), true) => {
            return Err(CliError::Usage(
                "--insecure speaks plaintext: use an http:// URL with it".into(),
            ));
        }
        (Some("https"), false) => {
            let bundle_path = auth.credentials.clone().or_else(default_bundle);
            let (mut roots, identity) = match &bundle_path {
                Some(p) => {
                    let (ca, id) = bundle(p)?;
                    (ca, Some(id))
                }
                None => (Vec::new(), None),
            };
            if identity.is_none() && auth.token.is_none() {
                return Err(CliError::Usage(
                    "no credentials: give --credentials FILE (from `reachmap-collector issue-client`) or --token TOKEN (from `reachmap token create`)".into(),
                ));
            }
            if let Some(f) = &auth.ca_file {
                let text = read(f)?;
                roots = reachmap_tls::pem::certs(&text)
                    .map_err(|m| CliError::Usage(format!("{}: {m}", f.display())))?;
            }
            let trust = match (&auth.ca_pin, roots.is_empty()) {
                (Some(pin), true) => ServerTrust::Pin(pin.clone()),
                (_, false) => ServerTrust::Roots(roots),
                (None, true) => {
                    return Err(CliError::Usage(
                        "no CA to trust the collector by: give --credentials, --ca-file or --ca-pin".into(),
                    ));
                }
            };
            let config = reachmap_tls::client_config(&trust, identity, reachmap_tls::ALPN_H2)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            reachmap_tls::connect(endpoint, config)
                .await
                .map_err(unreachable)?
        }
        _ => return Err(CliError::BadUrl(url.to_string())),
    };
    Ok(QueryClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(MAX_ANSWER_BYTES))
}
