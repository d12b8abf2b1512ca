//! The load generator on the secure path: every simulated agent gets a
//! node certificate from the collector's CA (its key made here, a CSR
//! checked and signed as at enrolment), and the timed queries go as a
//! viewer with a client certificate — gRPC, HTTP and the CLI alike.

use anyhow::Context;
use reachmap_collector::trust::{Authority, csr};
use reachmap_tls::{ClientIdentity, Role, ServerTrust};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub struct Creds {
    /// One client configuration per simulated agent.
    pub nodes: Vec<Arc<rustls::ClientConfig>>,
    /// The viewer, for gRPC.
    pub viewer_h2: Arc<rustls::ClientConfig>,
    /// The viewer, for HTTP/1.1.
    pub viewer_http: Arc<rustls::ClientConfig>,
    /// The viewer's bundle, for `reachmap --credentials`.
    pub bundle: PathBuf,
}

/// Set once TLS is on: what the HTTP and gRPC timers connect with.
pub static CREDS: OnceLock<Creds> = OnceLock::new();

/// Waits for the collector's CA under `data_dir`, then issues everything.
pub fn make(
    data_dir: &Path,
    n: usize,
    name: fn(usize) -> String,
    work: &Path,
) -> anyhow::Result<Creds> {
    let key = Authority::dir(data_dir).join("server.crt");
    let by = Instant::now() + Duration::from_secs(15);
    while !key.exists() {
        if Instant::now() > by {
            anyhow::bail!("no collector CA under {} after 15s", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = Authority::existing_ca(data_dir, None).context("the collector's CA")?;
    let roots = reachmap_tls::pem::certs(&ca.ca_cert_pem).map_err(anyhow::Error::msg)?;
    let trust = ServerTrust::Roots(roots);
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let node = name(i);
        let (key_pem, der) =
            reachmap_tls::csr::node_key_and_csr(&node).map_err(anyhow::Error::msg)?;
        let checked = csr::check_csr(&der, &node).map_err(anyhow::Error::msg)?;
        let issued = ca.issue_node(&checked, Duration::from_secs(24 * 3600))?;
        let id = ClientIdentity {
            chain: vec![issued.der.into()],
            key: reachmap_tls::pem::key(&key_pem).map_err(anyhow::Error::msg)?,
        };
        nodes.push(reachmap_tls::client_config(
            &trust,
            Some(id),
            reachmap_tls::ALPN_H2,
        )?);
    }
    let (issued, key_pem) =
        ca.issue_client("loadgen", Role::Viewer, Duration::from_secs(24 * 3600))?;
    let cert_pem = reachmap_tls::pem::cert_pem(&issued.der);
    let bundle = work.join("loadgen-viewer.pem");
    std::fs::write(&bundle, format!("{cert_pem}{key_pem}{}", ca.ca_cert_pem))
        .with_context(|| format!("writing {}", bundle.display()))?;
    let id = || -> anyhow::Result<ClientIdentity> {
        Ok(ClientIdentity {
            chain: vec![issued.der.clone().into()],
            key: reachmap_tls::pem::key(&key_pem).map_err(anyhow::Error::msg)?,
        })
    };
    Ok(Creds {
        nodes,
        viewer_h2: reachmap_tls::client_config(&trust, Some(id()?), reachmap_tls::ALPN_H2)?,
        viewer_http: reachmap_tls::client_config(&trust, Some(id()?), reachmap_tls::ALPN_HTTP1)?,
        bundle,
    })
}
