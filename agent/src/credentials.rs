//! The node's identity toward the collector: its key (made here, never
//! sent), its certificate and the collector's CA, kept in the state
//! directory as `NODE.key`, `NODE.crt` and `NODE.ca.crt` (0600). The first
//! start enrols with a bootstrap token over server-authenticated TLS (the
//! collector trusted by `--ca-pin` or `--ca-file`); later starts load the
//! files; the certificate is renewed at 70–90 % of its lifetime over the
//! stream's own mutual-TLS connection (a unary call beside the stream on the
//! same HTTP/2 connection), which is never interrupted.
//!
//! Nothing here depends on which collector answers: with several, the
//! agent enrols with the first that takes its token (each address tried in
//! turn) and trusts the CA it was given — a node's files are named after
//! the node, not a URL — so every collector sharing that CA takes its
//! certificate, and renewal goes to whichever collector the stream is on.

use crate::collectors::Target;
use crate::config::Config;
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::collector_client::CollectorClient;
use reachmap_tls::file::write_atomic;
use reachmap_tls::{ClientIdentity, ServerTrust};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the stream connects with: a client configuration for mutual TLS,
/// or `None` with `--insecure`.
pub type Tls = Option<Arc<rustls::ClientConfig>>;

/// A certificate the agent holds, ready to use.
#[derive(Clone)]
pub struct Credentials {
    pub tls: Arc<rustls::ClientConfig>,
    /// When it was issued: `notBefore` is set back for clock skew, so the
    /// lifetime is counted from when the agent got it (now, or the time
    /// its file was written).
    pub issued_unix: i64,
    pub not_after_unix: i64,
    pub serial: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredError {
    /// Nothing will change by trying again: the operator must act.
    #[error("{0}")]
    Fatal(String),
    /// The collector may be unreachable for now.
    #[error("{0}")]
    Retry(String),
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Paths {
    key: PathBuf,
    cert: PathBuf,
    ca: PathBuf,
}

fn paths(config: &Config) -> Paths {
    let dir = &config.state_dir;
    Paths {
        key: dir.join(format!("{}.key", config.node)),
        cert: dir.join(format!("{}.crt", config.node)),
        ca: dir.join(format!("{}.ca.crt", config.node)),
    }
}

/// The three files, when all are there.
fn read_files(p: &Paths) -> Result<Option<(String, String, String)>, CredError> {
    let read = |path: &PathBuf| match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredError::Fatal(format!("{}: {e}", path.display()))),
    };
    Ok(match (read(&p.key)?, read(&p.cert)?, read(&p.ca)?) {
        (Some(k), Some(c), Some(a)) => Some((k, c, a)),
        _ => None,
    })
}

fn build(key_pem: &str, cert_pem: &str, ca_pem: &str, node: &str) -> Result<Credentials, String> {
    let chain = reachmap_tls::pem::certs(cert_pem)?;
    let info = reachmap_tls::cert_info(&chain[0])?;
    match info.identity() {
        Some(reachmap_tls::Identity::Node(n)) if n == node => {}
        other => {
            return Err(format!(
                "the certificate is for {}, not node {node}",
                other.map_or("no node".to_string(), |i| i.to_string())
            ));
        }
    }
    let key = reachmap_tls::pem::key(key_pem)?;
    let ca = reachmap_tls::pem::certs(ca_pem)?;
    let tls = reachmap_tls::client_config(
        &ServerTrust::Roots(ca),
        Some(ClientIdentity { chain, key }),
        reachmap_tls::ALPN_H2,
    )
    .map_err(|e| e.to_string())?;
    Ok(Credentials {
        tls,
        issued_unix: now_unix().clamp(info.not_before_unix, info.not_after_unix),
        not_after_unix: info.not_after_unix,
        serial: info.serial,
    })
}

fn save(config: &Config, key_pem: &str, cert_pem: &str, ca_pem: &str) {
    let p = paths(config);
    // The key first: a certificate without its key is useless.
    let saved = std::fs::create_dir_all(&config.state_dir)
        .and_then(|()| write_atomic(&p.key, key_pem.as_bytes(), 0o600))
        .and_then(|()| write_atomic(&p.ca, ca_pem.as_bytes(), 0o600))
        .and_then(|()| write_atomic(&p.cert, cert_pem.as_bytes(), 0o600));
    if let Err(e) = saved {
        tracing::warn!(dir = %config.state_dir.display(), error = %e, "cannot keep the node certificate in the state directory: the next start will need an enrolment token again");
    }
}

fn endpoint(target: &Target) -> Endpoint {
    Endpoint::from(target.url.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(15))
}

/// Connecting failed: a wrong pin or CA will not fix itself.
fn connect_error(target: &Target, e: &tonic::transport::Error) -> CredError {
    let mut text = e.to_string();
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        text = next.to_string();
        cur = next;
    }
    if text.contains("does not match the pin")
        || text.contains("UnknownIssuer")
        || text.contains("not a reachmap collector")
        || text.contains("does not speak TLS")
    {
        CredError::Fatal(format!("the collector at {target} is not trusted: {text}"))
    } else {
        CredError::Retry(format!("cannot reach the collector at {target}: {text}"))
    }
}

/// Runs `attempt` against each collector address in turn until one
/// succeeds. All failing: the one error when there was one address; else
/// every error on one line, `Fatal` only when every one was (a collector
/// that cannot be reached now may take the request later).
async fn each_collector<T, F, Fut>(config: &Config, mut attempt: F) -> Result<T, CredError>
where
    F: FnMut(Target) -> Fut,
    Fut: std::future::Future<Output = Result<T, CredError>>,
{
    let targets = crate::collectors::resolve(&config.collectors).await;
    let mut errors = Vec::with_capacity(targets.len());
    for target in targets {
        match attempt(target.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => errors.push((target, e)),
        }
    }
    if errors.len() == 1
        && let Some((_, e)) = errors.pop()
    {
        return Err(e);
    }
    let fatal = errors.iter().all(|(_, e)| matches!(e, CredError::Fatal(_)));
    let text = errors
        .iter()
        .map(|(t, e)| {
            let (t, e) = (t.to_string(), e.to_string());
            if e.contains(&t) {
                e
            } else {
                format!("{t}: {e}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(if fatal {
        CredError::Fatal(text)
    } else {
        CredError::Retry(text)
    })
}

fn status_error(what: &str, s: &tonic::Status) -> CredError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            CredError::Retry(format!("{what}: {}", s.message()))
        }
        _ => CredError::Fatal(format!("{what}: {}", s.message())),
    }
}

fn pem_of(resp: &pb::EnrollResponse) -> (String, String) {
    (
        reachmap_tls::pem::cert_pem(&resp.cert_der),
        reachmap_tls::pem::cert_pem(&resp.ca_der),
    )
}

/// Enrols with the bootstrap token.
async fn enrol(config: &Config, token: &str) -> Result<Credentials, CredError> {
    let trust = match (&config.ca_file, &config.ca_pin) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CredError::Fatal(format!("ca_file {}: {e}", f.display())))?;
            ServerTrust::Roots(
                reachmap_tls::pem::certs(&text)
                    .map_err(|e| CredError::Fatal(format!("ca_file {}: {e}", f.display())))?,
            )
        }
        (None, Some(pin)) => ServerTrust::Pin(pin.clone()),
        (None, None) => {
            return Err(CredError::Fatal(
                "enrolment needs the collector's CA: give --ca-pin (from `reachmap-collector ca pin`) or --ca-file".into(),
            ));
        }
    };
    let tls = reachmap_tls::client_config(&trust, None, reachmap_tls::ALPN_H2)
        .map_err(|e| CredError::Fatal(e.to_string()))?;
    let (key_pem, csr_der) =
        reachmap_tls::csr::node_key_and_csr(&config.node).map_err(CredError::Fatal)?;
    let (resp, target) = each_collector(config, |target| {
        let (tls, csr_der) = (tls.clone(), csr_der.clone());
        async move {
            let channel = reachmap_tls::connect_at(endpoint(&target), tls, target.addr)
                .await
                .map_err(|e| connect_error(&target, &e))?;
            let resp = CollectorClient::new(channel)
                .enroll(pb::EnrollRequest {
                    token: token.to_string(),
                    node: config.node.clone(),
                    csr_der,
                })
                .await
                .map_err(|s| status_error("enrolment", &s))?
                .into_inner();
            Ok((resp, target))
        }
    })
    .await?;
    let (cert_pem, ca_pem) = pem_of(&resp);
    let creds = build(&key_pem, &cert_pem, &ca_pem, &config.node)
        .map_err(|e| CredError::Fatal(format!("the collector's answer: {e}")))?;
    save(config, &key_pem, &cert_pem, &ca_pem);
    tracing::info!(node = %config.node, collector = %target, serial = %creds.serial, until = creds.not_after_unix, "enrolled");
    Ok(creds)
}

/// The certificate in the state directory, or a new one by enrolment.
pub async fn obtain(config: &Config) -> Result<Credentials, CredError> {
    let p = paths(config);
    if let Some((key, cert, ca)) = read_files(&p)? {
        match build(&key, &cert, &ca, &config.node) {
            Ok(mut c) if c.not_after_unix > now_unix() => {
                let written = std::fs::metadata(&p.cert)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                if let Some(w) = written {
                    c.issued_unix = w.min(c.issued_unix);
                }
                return Ok(c);
            }
            Ok(c) => {
                let msg = format!(
                    "the node certificate in {} expired {}s ago",
                    p.cert.display(),
                    now_unix() - c.not_after_unix
                );
                if config.enroll_token.is_none() {
                    return Err(CredError::Fatal(format!(
                        "{msg}: create a token with `reachmap token create --node {}` and start the agent with --enroll-token",
                        config.node
                    )));
                }
                tracing::warn!("{msg}; enrolling again with the token");
            }
            Err(e) => {
                if config.enroll_token.is_none() {
                    return Err(CredError::Fatal(format!(
                        "{}: {e}; enrol again with --enroll-token",
                        p.cert.display()
                    )));
                }
                tracing::warn!(file = %p.cert.display(), error = %e, "unusable node certificate; enrolling again");
            }
        }
    }
    match &config.enroll_token {
        Some(token) => enrol(config, token).await,
        None => Err(CredError::Fatal(format!(
            "no node certificate in {} and no enrolment token: create one with `reachmap token create --node {}` and start the agent with --enroll-token TOKEN --ca-pin PIN",
            config.state_dir.display(),
            config.node
        ))),
    }
}

/// `obtain`, trying again while the collector cannot be reached.
pub async fn obtain_patiently(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<Credentials>, CredError> {
    let mut delay = RETRY_MIN;
    loop {
        match obtain(config).await {
            Ok(c) => return Ok(Some(c)),
            Err(CredError::Fatal(e)) => return Err(CredError::Fatal(e)),
            Err(CredError::Retry(e)) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot enrol yet");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// When to renew: 70–90 % of the way from its issue to its end.
pub fn renew_at(issued: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - issued).max(0) as f64;
    issued + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

async fn renew_once(
    config: &Config,
    current: &Credentials,
    stream: Option<tonic::transport::Channel>,
) -> Result<Credentials, CredError> {
    let (key_pem, csr_der) =
        reachmap_tls::csr::node_key_and_csr(&config.node).map_err(CredError::Fatal)?;
    let renew = |channel: tonic::transport::Channel, csr_der: Vec<u8>| async move {
        CollectorClient::new(channel)
            .renew(pb::RenewRequest { csr_der })
            .await
            .map_err(|s| status_error("renewal", &s))
            .map(tonic::Response::into_inner)
    };
    // The stream's connection when there is one; else a connection of its
    // own to each collector in turn.
    let resp = match stream {
        Some(channel) => renew(channel, csr_der).await?,
        None => {
            each_collector(config, |target| {
                let (tls, csr_der) = (current.tls.clone(), csr_der.clone());
                async move {
                    let channel = reachmap_tls::connect_at(endpoint(&target), tls, target.addr)
                        .await
                        .map_err(|e| connect_error(&target, &e))?;
                    renew(channel, csr_der).await
                }
            })
            .await?
        }
    };
    let (cert_pem, ca_pem) = pem_of(&resp);
    let creds = build(&key_pem, &cert_pem, &ca_pem, &config.node)
        .map_err(|e| CredError::Fatal(format!("the collector's answer: {e}")))?;
    save(config, &key_pem, &cert_pem, &ca_pem);
    Ok(creds)
}

/// Renews the certificate before it ends, for as long as the agent runs,
/// over the stream's connection; the stream presents the new certificate
/// from its next connection on.
pub async fn renew(
    config: Arc<Config>,
    mut current: Credentials,
    tls: watch::Sender<Tls>,
    stream: watch::Receiver<Option<tonic::transport::Channel>>,
    shutdown: CancellationToken,
) {
    loop {
        let at = renew_at(current.issued_unix, current.not_after_unix, rand::random());
        let wait = Duration::from_secs(u64::try_from(at - now_unix()).unwrap_or(0));
        tracing::debug!(?wait, "renewing the node certificate then");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let mut delay = RETRY_MIN;
        loop {
            let conn = stream.borrow().clone();
            match renew_once(&config, &current, conn).await {
                Ok(new) => {
                    tracing::info!(serial = %new.serial, until = new.not_after_unix, "renewed the node certificate");
                    let _ = tls.send(Some(new.tls.clone()));
                    current = new;
                    break;
                }
                Err(e) => {
                    let left = current.not_after_unix - now_unix();
                    tracing::warn!(error = %e, expires_in_s = left, "cannot renew the node certificate yet");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(collectors: &str) -> (tempfile::NamedTempFile, Config) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let flags = crate::config::Flags {
            config: Some(file.path().to_owned()),
            collector: Some(collectors.into()),
            node: Some("n1".into()),
            ..Default::default()
        };
        let c = Config::load(&flags).expect("valid");
        (file, c)
    }

    #[tokio::test]
    async fn each_collector_is_tried_until_one_answers() {
        let (_f, c) = config("https://198.18.0.1:7440,https://198.18.0.2:7440");
        let mut tried = Vec::new();
        let got = each_collector(&c, |t| {
            tried.push(t.to_string());
            async move {
                match t.url.host() {
                    Some("198.18.0.1") => Err(CredError::Retry("cannot reach".into())),
                    _ => Ok(t.to_string()),
                }
            }
        })
        .await;
        assert_eq!(got.expect("the second answers"), "https://198.18.0.2:7440");
        assert_eq!(
            tried,
            ["https://198.18.0.1:7440", "https://198.18.0.2:7440"]
        );
    }

    #[tokio::test]
    async fn every_collector_failing_is_fatal_only_when_each_was() {
        let (_f, c) = config("https://198.18.0.1:7440,https://198.18.0.2:7440");
        let fatal_first = |t: Target| async move {
            Err::<(), _>(match t.url.host() {
                Some("198.18.0.1") => CredError::Fatal("enrolment: unknown token".into()),
                _ => CredError::Retry(format!("cannot reach the collector at {t}: refused")),
            })
        };
        match each_collector(&c, fatal_first).await {
            Err(CredError::Retry(e)) => assert_eq!(
                e,
                "https://198.18.0.1:7440: enrolment: unknown token; cannot reach the collector at https://198.18.0.2:7440: refused"
            ),
            other => panic!("{other:?}"),
        }
        let all_fatal = |_| async { Err::<(), _>(CredError::Fatal("no".into())) };
        assert!(matches!(
            each_collector(&c, all_fatal).await,
            Err(CredError::Fatal(_))
        ));
        // One collector: its error as it was.
        let (_f, one) = config("https://198.18.0.1:7440");
        match each_collector(&one, all_fatal).await {
            Err(CredError::Fatal(e)) => assert_eq!(e, "no"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renewal_falls_between_70_and_90_percent() {
        assert_eq!(renew_at(0, 1000, 0.0), 700);
        assert_eq!(renew_at(0, 1000, 1.0), 900);
        assert_eq!(renew_at(100, 1100, 0.5), 900);
        assert_eq!(renew_at(0, 1000, 7.0), 900);
    }
}
