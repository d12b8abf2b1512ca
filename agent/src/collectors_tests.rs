use super::*;
use crate::config::{Config, Flags};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn urls(list: &[&str]) -> Vec<Uri> {
    list.iter()
        .map(|u| parse_collector_url(u, false).expect("valid URL"))
        .collect()
}

fn shown(urls: &[Uri]) -> Vec<String> {
    urls.iter().map(ToString::to_string).collect()
}

fn err(r: Result<Vec<Uri>, ConfigError>) -> String {
    r.expect_err("refused").to_string()
}

#[test]
fn a_list_is_split_trimmed_and_each_url_given_its_port() {
    let list =
        parse_list(" https://c1:9000 ,https://c2, https://198.18.0.2 ", false).expect("valid");
    assert_eq!(
        shown(&list),
        [
            "https://c1:9000/",
            "https://c2:7440/",
            "https://198.18.0.2:7440/"
        ]
    );
    let one = parse_list("https://c", false).expect("valid");
    assert_eq!(shown(&one), ["https://c:7440/"]);
}

#[test]
fn a_bad_entry_is_named_in_a_one_line_error() {
    for (text, names) in [
        ("https://a:1,ftp://b", "\"ftp://b\""),
        ("https://a:1, http://b:2", "\"http://b:2\" is plaintext"),
        ("https://a:1,not a url", "\"not a url\""),
    ] {
        let e = err(parse_list(text, false));
        assert!(e.starts_with("collector: "), "{e}");
        assert!(e.contains(names), "{text}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = err(parse_list("https://a:1,,https://b:2", false));
    assert_eq!(e, "collector: entry 2 of 3 is empty (a stray comma?)");
    let e = err(parse_list("https://a:1,https://a:1", false));
    assert_eq!(e, "collector: \"https://a:1\" is listed twice");
    // The same collector spelled with and without the default port.
    let e = err(parse_list("https://a,https://a:7440", false));
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn an_empty_list_is_refused() {
    for text in ["", " ", ",", " , ,"] {
        let e = err(parse_list(text, false));
        assert!(
            e.starts_with("collector: the list is empty"),
            "{text:?}: {e}"
        );
    }
    let e = err(from_toml(&toml::Value::Array(Vec::new()), false));
    assert!(e.starts_with("collector: the list is empty"), "{e}");
}

#[test]
fn the_file_takes_a_string_a_comma_list_or_an_array() {
    let value = |text: &str| -> toml::Value {
        let table: toml::Table = toml::from_str(text).expect("TOML");
        table["collector"].clone()
    };
    let a = from_toml(&value("collector = \"https://a:1\""), false).expect("valid");
    assert_eq!(shown(&a), ["https://a:1/"]);
    let a = from_toml(&value("collector = \"https://a:1,https://b:2\""), false).expect("valid");
    assert_eq!(shown(&a), ["https://a:1/", "https://b:2/"]);
    let a = from_toml(
        &value("collector = [\"https://a:1\", \"https://b\"]"),
        false,
    )
    .expect("valid");
    assert_eq!(shown(&a), ["https://a:1/", "https://b:7440/"]);
    let e = err(from_toml(&value("collector = [\"https://a:1\", 7]"), false));
    assert_eq!(e, "collector: entry 2 of the array is 7, not a URL string");
    let e = err(from_toml(
        &value("collector = [\"https://a:1\", \"ftp://b\"]"),
        false,
    ));
    assert!(e.starts_with("collector: \"ftp://b\""), "{e}");
    let e = err(from_toml(&value("collector = 7"), false));
    assert!(e.starts_with("collector: 7 is not a URL"), "{e}");
}

fn with_file(text: &str) -> (tempfile::NamedTempFile, Flags) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write");
    let flags = Flags {
        config: Some(file.path().to_owned()),
        node: Some("n1".into()),
        ..Flags::default()
    };
    (file, flags)
}

#[test]
fn config_has_every_collector_and_the_first_as_collector() {
    let (_f, mut flags) = with_file("collector = [\"https://a:1\", \"https://b:2\"]\n");
    let c = Config::load(&flags).expect("valid");
    assert_eq!(shown(&c.collectors), ["https://a:1/", "https://b:2/"]);
    assert_eq!(c.collector, c.collectors[0]);
    // A flag (or REACHMAP_COLLECTOR) wins over the file, comma-separated.
    flags.collector = Some("https://x:3, https://y:4".into());
    let c = Config::load(&flags).expect("valid");
    assert_eq!(shown(&c.collectors), ["https://x:3/", "https://y:4/"]);
    flags.collector = Some("https://x:3,".into());
    let e = Config::load(&flags).expect_err("stray comma").to_string();
    assert_eq!(e, "collector: entry 2 of 2 is empty (a stray comma?)");
    // Plaintext entries only with --insecure, and then all of them.
    flags.collector = Some("http://x:3,http://y:4".into());
    flags.insecure = true;
    assert_eq!(Config::load(&flags).expect("valid").collectors.len(), 2);
    flags.collector = Some("http://x:3,https://y:4".into());
    let e = Config::load(&flags).expect_err("mixed").to_string();
    assert!(e.starts_with("collector: \"https://y:4\""), "{e}");
    let (_f, flags) = with_file("collector = []\n");
    let e = Config::load(&flags).expect_err("empty").to_string();
    assert!(e.starts_with("collector: the list is empty"), "{e}");
}

#[test]
fn the_hello_shows_the_collector_it_goes_to_and_every_one() {
    let (_f, flags) = with_file("collector = \"https://user:pw@a:1,https://b:2\"\n");
    let c = Config::load(&flags).expect("valid");
    let text = c.shown_json(&c.collectors[1]);
    assert!(!text.contains("pw"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["collector"], "https://b:2");
    assert_eq!(
        v["collectors"],
        serde_json::json!(["https://a:1", "https://b:2"])
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn names_expand_to_their_addresses_in_order_and_addresses_stay_as_they_are() {
    let list = urls(&[
        "https://198.18.0.1:7440",
        "https://collectors.test:7440",
        "https://[2001:db8::1]:7440",
        "https://gone.test:7440",
    ]);
    let targets = expand(&list, |u| match u.host() {
        Some("collectors.test") => Some(vec![
            addr("198.18.0.2:7440"),
            addr("198.18.0.3:7440"),
            addr("198.18.0.2:7440"),
        ]),
        Some("gone.test") => None,
        other => panic!("looked up an address: {other:?}"),
    });
    let shown: Vec<String> = targets.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "https://198.18.0.1:7440",
            "https://collectors.test:7440 (198.18.0.2:7440)",
            "https://collectors.test:7440 (198.18.0.3:7440)",
            "https://[2001:db8::1]:7440",
            "https://gone.test:7440",
        ]
    );
    // The TLS server name stays the URL's host for every address.
    assert!(
        targets[1..3]
            .iter()
            .all(|t| t.url.host() == Some("collectors.test"))
    );
}

#[tokio::test]
async fn resolve_looks_a_name_up_and_leaves_an_address_alone() {
    let list = urls(&["https://127.0.0.1:7440", "https://localhost:7441"]);
    let targets = resolve(&list).await;
    assert_eq!(targets[0].addr, None);
    let local: Vec<&Target> = targets[1..].iter().collect();
    assert!(!local.is_empty());
    for t in local {
        let a = t.addr.expect("localhost resolves");
        assert!(a.ip().is_loopback() && a.port() == 7441, "{t}");
    }
}

fn rotation(list: &[&str], lookup: &[(&str, &[&str])]) -> Rotation {
    let list = urls(list);
    let mut r =
        Rotation::new(list, Duration::from_millis(100), Duration::from_secs(10)).expect("some URL");
    let targets = expand(r.urls(), |u| {
        lookup
            .iter()
            .find(|(h, _)| u.host() == Some(*h))
            .map(|(_, a)| a.iter().map(|s| addr(s)).collect())
    });
    r.set_targets(targets);
    r
}

#[test]
fn rotation_goes_round_robin_over_every_address() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut r = rotation(
        &["https://a.test:7440", "https://198.18.0.9:7440"],
        &[("a.test", &["198.18.0.2:7440", "198.18.0.3:7440"])],
    );
    let mut order = Vec::new();
    for _ in 0..7 {
        assert_eq!(r.round_starts(), order.len() % 3 == 0);
        order.push(r.current().to_string());
        r.failed(&mut rng);
    }
    assert_eq!(
        order,
        [
            "https://a.test:7440 (198.18.0.2:7440)",
            "https://a.test:7440 (198.18.0.3:7440)",
            "https://198.18.0.9:7440",
            "https://a.test:7440 (198.18.0.2:7440)",
            "https://a.test:7440 (198.18.0.3:7440)",
            "https://198.18.0.9:7440",
            "https://a.test:7440 (198.18.0.2:7440)",
        ]
    );
    assert!(Rotation::new(Vec::new(), Duration::ZERO, Duration::ZERO).is_none());
}

#[test]
fn the_backoff_grows_only_after_a_whole_round_failed() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut r = rotation(
        &[
            "https://198.18.0.1:7440",
            "https://198.18.0.2:7440",
            "https://198.18.0.3:7440",
        ],
        &[],
    );
    // Steps of the backoff: 100, 200, 400, 800 ms; a delay is between
    // half and all of its step.
    for step_ms in [100u64, 200, 400, 800] {
        for _ in 0..2 {
            let d = r.failed(&mut rng);
            assert!(d <= Duration::from_millis(100), "within a round: {d:?}");
        }
        let d = r.failed(&mut rng);
        let step = Duration::from_millis(step_ms);
        assert!(
            d >= step / 2 && d <= step,
            "end of a round: {d:?} for {step:?}"
        );
        assert!(r.round_starts());
    }
}

#[test]
fn a_stream_that_worked_stays_put_and_its_loss_tries_the_next_at_once() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut r = rotation(&["https://198.18.0.1:7440", "https://198.18.0.2:7440"], &[]);
    // Both down for a while: the backoff grew.
    for _ in 0..8 {
        r.failed(&mut rng);
    }
    // The second one takes the stream (after the first failed once more).
    r.failed(&mut rng);
    assert_eq!(r.current().to_string(), "https://198.18.0.2:7440");
    r.connected();
    assert_eq!(r.current().to_string(), "https://198.18.0.2:7440");
    // It dies: the first is tried within the short pause, not the backoff.
    let d = r.failed(&mut rng);
    assert!(d <= Duration::from_millis(100), "{d:?}");
    assert_eq!(r.current().to_string(), "https://198.18.0.1:7440");
    // Down too: now a round failed, and the backoff starts from its first step.
    let d = r.failed(&mut rng);
    assert!(
        d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
        "{d:?}"
    );
}

#[test]
fn one_collector_backs_off_at_every_failure_as_before() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut r = rotation(&["https://198.18.0.1:7440"], &[]);
    for step_ms in [100u64, 200, 400, 800, 1600] {
        let d = r.failed(&mut rng);
        let step = Duration::from_millis(step_ms);
        assert!(d >= step / 2 && d <= step, "{d:?} for {step:?}");
        assert!(r.round_starts());
    }
}

#[test]
fn a_lookup_that_changes_the_list_keeps_the_rotation_in_range() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut r = rotation(
        &["https://a.test:7440"],
        &[(
            "a.test",
            &["198.18.0.2:7440", "198.18.0.3:7440", "198.18.0.4:7440"],
        )],
    );
    r.failed(&mut rng);
    r.failed(&mut rng);
    assert_eq!(r.current().addr, Some(addr("198.18.0.4:7440")));
    r.set_targets(expand(r.urls(), |_| Some(vec![addr("198.18.0.2:7440")])));
    assert_eq!(r.current().addr, Some(addr("198.18.0.2:7440")));
    r.set_targets(Vec::new());
    assert_eq!(r.current().addr, Some(addr("198.18.0.2:7440")));
}
