//! Several collectors: the list of URLs the configuration gives, the
//! addresses they stand for (a host name may resolve to several, each tried
//! in turn with the name kept as the TLS server name), and the rotation the
//! stream follows over them.
//!
//! The stream stays on the address it is connected to until its stream
//! fails; then the next address is tried at once (within a jitter of
//! `reconnect_initial`), and the backoff grows only when a whole round of
//! addresses failed in a row — a dead collector costs one connect timeout,
//! not a backoff ladder, before the next is tried. Names are looked up again
//! at the start of every round.

use crate::backoff::Backoff;
use crate::config::{ConfigError, parse_collector_url};
use rand::Rng;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tonic::transport::Uri;

/// How long one name lookup may take before its URL is tried by name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid {
        key: "collector",
        message,
    }
}

/// A comma-separated list of collector URLs (`--collector`,
/// `REACHMAP_COLLECTOR`, or the config file's string), each checked as
/// [`parse_collector_url`] does.
pub fn parse_list(text: &str, insecure: bool) -> Result<Vec<Uri>, ConfigError> {
    check_list(&text.split(',').collect::<Vec<_>>(), insecure)
}

/// The config file's `collector`: one string (itself a comma-separated
/// list) or an array of URL strings.
pub fn from_toml(value: &toml::Value, insecure: bool) -> Result<Vec<Uri>, ConfigError> {
    match value {
        toml::Value::String(s) => parse_list(s, insecure),
        toml::Value::Array(items) => {
            let mut urls = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => urls.push(s),
                    None => {
                        return Err(invalid(format!(
                            "entry {} of the array is {item}, not a URL string",
                            i + 1
                        )));
                    }
                }
            }
            check_list(&urls, insecure)
        }
        other => Err(invalid(format!(
            "{other} is not a URL, a comma-separated list of URLs or an array of URLs"
        ))),
    }
}

fn check_list(entries: &[&str], insecure: bool) -> Result<Vec<Uri>, ConfigError> {
    let entries: Vec<&str> = entries.iter().map(|e| e.trim()).collect();
    if entries.iter().all(|e| e.is_empty()) {
        return Err(invalid(
            "the list is empty: give at least one URL, e.g. https://collector:7440".into(),
        ));
    }
    let mut urls: Vec<Uri> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if entry.is_empty() {
            return Err(invalid(format!(
                "entry {} of {} is empty (a stray comma?)",
                i + 1,
                entries.len()
            )));
        }
        let url = parse_collector_url(entry, insecure)?;
        if urls.contains(&url) {
            return Err(invalid(format!("{entry:?} is listed twice")));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// One place the stream may connect to: a collector URL, and the address
/// its host name resolved to (`None`: the host is an address itself, or the
/// name could not be looked up — then it is connected to by name, and the
/// connection says why it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: Uri,
    pub addr: Option<SocketAddr>,
}

impl fmt::Display for Target {
    /// The URL without a path (and any user information), with the
    /// address after it when the URL names a host: `https://c:7440
    /// (198.18.0.2:7440)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", shown_url(&self.url))?;
        match self.addr {
            Some(a) => write!(f, " ({a})"),
            None => Ok(()),
        }
    }
}

/// `scheme://host:port` of a collector URL: no path, no user information.
pub fn shown_url(url: &Uri) -> String {
    let authority = url
        .authority()
        .map(|a| match a.port() {
            Some(p) => format!("{}:{p}", a.host()),
            None => a.host().to_string(),
        })
        .unwrap_or_default();
    format!("{}://{authority}", url.scheme_str().unwrap_or("https"))
}

/// The URL's host when it is a name to look up (not an address).
fn host_name(url: &Uri) -> Option<&str> {
    let host = url.host()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_err().then_some(host)
}

/// Every URL with each of its addresses, in the URLs' order and then the
/// resolver's, without repeats; `lookup` gives a name's addresses (`None`
/// when it could not), called once for each URL whose host is a name, in
/// the URLs' order.
pub fn expand(
    urls: &[Uri],
    mut lookup: impl FnMut(&Uri) -> Option<Vec<SocketAddr>>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for url in urls {
        let addrs = match host_name(url) {
            Some(_) => lookup(url).unwrap_or_default(),
            None => Vec::new(),
        };
        let before = targets.len();
        for addr in addrs {
            let t = Target {
                url: url.clone(),
                addr: Some(addr),
            };
            if !targets[before..].contains(&t) {
                targets.push(t);
            }
        }
        if targets.len() == before {
            targets.push(Target {
                url: url.clone(),
                addr: None,
            });
        }
    }
    targets
}

/// Looks every URL's host name up (each bounded by [`RESOLVE_TIMEOUT`])
/// and [`expand`]s the list.
pub async fn resolve(urls: &[Uri]) -> Vec<Target> {
    // One answer per URL with a name, in order: what `expand` asks for.
    let mut found = Vec::with_capacity(urls.len());
    for url in urls {
        let Some(host) = host_name(url) else {
            continue;
        };
        let port = url.port_u16().unwrap_or(reachmap_proto::DEFAULT_GRPC_PORT);
        let lookup = tokio::net::lookup_host((host, port));
        found.push(match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => Some(addrs.collect::<Vec<_>>()),
            Ok(Err(e)) => {
                tracing::warn!(collector = %shown_url(url), error = %e, "cannot look the collector's name up");
                None
            }
            Err(_) => {
                tracing::warn!(collector = %shown_url(url), timeout = ?RESOLVE_TIMEOUT, "the collector's name lookup timed out");
                None
            }
        });
    }
    let mut found = found.into_iter();
    expand(urls, |_| found.next().flatten())
}

/// Which collector address the stream tries next, and how long it waits
/// first.
#[derive(Debug)]
pub struct Rotation {
    urls: Vec<Uri>,
    targets: Vec<Target>,
    next: usize,
    /// Failures in a row since the last stream that worked, within the
    /// current round.
    failed: usize,
    backoff: Backoff,
    /// The most the stream waits before trying the next address of a round.
    pause: Duration,
}

impl Rotation {
    /// Starts at the first URL; `initial` and `max` are the backoff's,
    /// `initial` also the most it waits between addresses of one round.
    /// `None` without a URL (the configuration never has none).
    pub fn new(urls: Vec<Uri>, initial: Duration, max: Duration) -> Option<Self> {
        let targets = expand(&urls, |_| None);
        if targets.is_empty() {
            return None;
        }
        Some(Rotation {
            urls,
            targets,
            next: 0,
            failed: 0,
            backoff: Backoff::new(initial, max),
            pause: initial,
        })
    }

    /// The configured URLs.
    pub fn urls(&self) -> &[Uri] {
        &self.urls
    }

    /// Whether the next attempt starts a round (when the names are looked
    /// up again).
    pub fn round_starts(&self) -> bool {
        self.next == 0
    }

    /// Takes the addresses a lookup found; an empty list is ignored.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        if targets.is_empty() {
            return;
        }
        self.targets = targets;
        self.next %= self.targets.len();
    }

    /// The address to try now.
    pub fn current(&self) -> &Target {
        // `targets` is never empty and `next` always below its length.
        &self.targets[self.next]
    }

    /// The stream worked (the collector took its snapshot): the next
    /// failure starts a fresh round and the backoff starts over.
    pub fn connected(&mut self) {
        self.failed = 0;
        self.backoff.reset();
    }

    /// The stream to the current address failed or could not open: moves
    /// to the next address and says how long to wait before trying it —
    /// a jitter of at most `initial` within a round, the backoff's next
    /// (growing) delay once every address of the round failed in a row.
    pub fn failed(&mut self, rng: &mut impl Rng) -> Duration {
        let len = self.targets.len();
        self.next = (self.next + 1) % len;
        self.failed += 1;
        if self.failed >= len {
            self.failed = 0;
            self.backoff.next_delay(rng)
        } else {
            let most = u64::try_from(self.pause.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rng.random_range(0..=most))
        }
    }
}

#[cfg(test)]
#[path = "collectors_tests.rs"]
mod tests;
