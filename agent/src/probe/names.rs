//! Looks up the fleet's names through this host's own resolver — the one
//! its clients use (`getaddrinfo`: /etc/hosts, DNS, whatever nsswitch says)
//! — so that a name still pointing at a member's old address shows at the
//! collector. Nothing is probed by name: probes go to the plan's addresses.

use super::model::{FleetName, NameResolution};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// A resolver's own retries take seconds; a lookup gets at most this long.
const MAX_LOOKUP: Duration = Duration::from_secs(5);

/// How long one lookup may take with probes every `interval`.
pub fn lookup_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_millis(100), MAX_LOOKUP)
}

/// Every name looked up at once, each bounded by `timeout`.
/// How a lookup that timed out begins its error.
pub const NO_ANSWER: &str = "no answer in";

pub async fn resolve_all(names: &[FleetName], timeout: Duration) -> Vec<NameResolution> {
    futures::future::join_all(names.iter().map(|n| resolve(n, timeout))).await
}

async fn resolve(name: &FleetName, timeout: Duration) -> NameResolution {
    let lookup = tokio::net::lookup_host((name.name.as_str(), 0));
    let (addresses, error) = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => (Vec::new(), Some(format!("{NO_ANSWER} {timeout:?}"))),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Ok(Ok(found)) => {
            let addresses = unique(found.map(|a| a.ip()));
            if addresses.is_empty() {
                (addresses, Some("no addresses".to_string()))
            } else {
                (addresses, None)
            }
        }
    };
    NameResolution {
        name: name.clone(),
        addresses,
        error,
        at: SystemTime::now(),
    }
}

/// In first-seen order: getaddrinfo lists an address once per socket type.
fn unique(found: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in found {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> FleetName {
        FleetName {
            name: n.into(),
            node: "node-1".into(),
        }
    }

    #[tokio::test]
    async fn resolves_through_the_host_resolver() {
        // "localhost" is in every /etc/hosts and an address literal resolves
        // to itself: neither sends a query anywhere.
        let got = resolve_all(
            &[name("localhost"), name("198.18.0.7")],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(got.len(), 2);
        assert!(
            got[0].addresses.iter().all(|a| a.is_loopback()) && !got[0].addresses.is_empty(),
            "{:?}",
            got[0]
        );
        assert_eq!(got[0].error, None);
        assert_eq!(got[0].name, name("localhost"));
        assert_eq!(
            got[1].addresses,
            vec!["198.18.0.7".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn repeats_are_dropped_in_order() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            unique([ip("198.18.0.2"), ip("198.18.0.1"), ip("198.18.0.2")].into_iter()),
            vec![ip("198.18.0.2"), ip("198.18.0.1")]
        );
        assert_eq!(lookup_timeout(Duration::from_secs(60)), MAX_LOOKUP);
        assert_eq!(
            lookup_timeout(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
