//! HTTPS services end to end over real namespaces: certificates made here
//! (a CA, and leaves that are expired, for another name, self-signed, or
//! good), HTTPS servers on a node serving them, and the collector's config
//! declaring each as a `tls = true` service checked against the CA file.
//! The probes tell each failure apart, `why` names it as TLS_ERROR with the
//! reason and its fix, and the good one is open.

mod why_support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use reachmap_fleet_tests::{Fleet, assert_eventually, ensure, require_root};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;
use why_support::{cli_json, wait_mesh};

const TOOL: &str = env!("CARGO_BIN_EXE_reachmap-test-tool");

/// A leaf for `name`, valid from `from` to `until` days from now, signed by
/// `issuer` (or by itself), written as `<stem>.pem` and `<stem>.key`.
fn leaf(
    dir: &Path,
    stem: &str,
    name: &str,
    (from, until): (i64, i64),
    issuer: Option<&Issuer<'_, KeyPair>>,
) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(until);
    let cert = match issuer {
        Some(i) => p.signed_by(&key, i),
        None => p.self_signed(&key),
    }
    .expect("sign");
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
}

/// The CA (written as `ca.pem`) and four leaves for node-1.
fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "reachmap test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    let issuer = Issuer::new(ca, ca_key);
    let name = "node-1.fleet.test";
    leaf(dir, "expired", name, (-30, -3), Some(&issuer));
    leaf(dir, "misnamed", "other.test", (-1, 30), Some(&issuer));
    leaf(dir, "good", name, (-1, 30), Some(&issuer));
    leaf(dir, "selfsigned", name, (-1, 30), None);
}

const SERVICES: [(&str, u16); 4] = [
    ("expired", 8443),
    ("misnamed", 8444),
    ("good", 8445),
    ("selfsigned", 8446),
];

fn https_fleet(test: &str) -> Fleet {
    let mut fleet = Fleet::new(test, 2);
    let dir = fleet.dir().to_path_buf();
    certificates(&dir);
    let ca = dir.join("ca.pem");
    let mut config = String::new();
    for (name, port) in SERVICES {
        config.push_str(&format!(
            "[[services]]\nname = \"{name}\"\nport = {port}\ntls = true\npath = \"/healthz\"\n\
             server_name = \"{{node}}.fleet.test\"\nca_file = \"{}\"\n\n",
            ca.display()
        ));
    }
    let path = dir.join("collector.toml");
    std::fs::write(&path, config).expect("write collector.toml");
    let path = path.to_str().expect("UTF-8 path").to_string();
    fleet.start_collector_with(&["--config", &path]);
    fleet.start_agents();
    for (stem, port) in SERVICES {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        fleet.spawn(
            1,
            stem,
            &[
                TOOL,
                "https",
                &format!("0.0.0.0:{port}"),
                cert.to_str().expect("UTF-8"),
                key.to_str().expect("UTF-8"),
            ],
        );
    }
    fleet
}

/// `why node-0 node-1:PORT` once its top cause is TLS_ERROR of `kind`.
fn tls_cause(fleet: &Fleet, port: u16, kind: &str) -> Value {
    let target = format!("node-1:{port}");
    assert_eventually!(
        Duration::from_secs(40),
        || {
            let w = cli_json(fleet, &["why", "node-0", &target, "--format", "json"])?;
            let top = &w["causes"][0];
            ensure(
                top["code"] == "TLS_ERROR"
                    && top["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("({kind})"))),
                &w,
            )?;
            Ok::<Value, String>(w)
        },
        "why names the TLS failure"
    )
}

#[test]
fn https_probes_tell_an_expired_a_misnamed_and_an_untrusted_certificate_apart() {
    if !require_root() {
        return;
    }
    let fleet = https_fleet("tls_certs");
    wait_mesh(&fleet, 2);

    let w = tls_cause(&fleet, 8443, "expired");
    let top = &w["causes"][0];
    assert_eq!(top["node"], "node-1", "{top:#}");
    let detail = top["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with(
            "TLS to node-1:8443 (service \"expired\") fails (expired): the certificate expired "
        ) && detail.ends_with(", 3 days before the probe"),
        "{detail}"
    );
    assert!(
        top["fix"]
            .as_str()
            .is_some_and(|f| f.starts_with("renew the certificate of node-1:8443")),
        "{top:#}"
    );
    assert_eq!(w["probe"]["kind"], "https", "{w:#}");
    assert_eq!(w["probe"]["tls_error"]["kind"], "expired", "{w:#}");

    let w = tls_cause(&fleet, 8444, "wrong_name");
    let detail = w["causes"][0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("other.test") && detail.ends_with("not node-1.fleet.test"),
        "{detail}"
    );

    let w = tls_cause(&fleet, 8446, "unknown_issuer");
    assert!(
        w["causes"][0]["fix"]
            .as_str()
            .is_some_and(|f| f.contains("ca_file")),
        "{w:#}"
    );

    // The good certificate, checked against the same CA for the same name:
    // open, and nothing to explain.
    let w = assert_eventually!(
        Duration::from_secs(30),
        || {
            let w = cli_json(
                &fleet,
                &["why", "node-0", "node-1:8445", "--format", "json"],
            )?;
            ensure(w["probe"]["state"] == "ok", &w)?;
            Ok::<Value, String>(w)
        },
        "the good certificate passes"
    );
    assert_eq!(w["probe"]["kind"], "https", "{w:#}");
    assert!(
        w["causes"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["code"] != "TLS_ERROR")),
        "{w:#}"
    );
}
