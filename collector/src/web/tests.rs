use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn etag_changes_with_body_and_version() {
    let a = etag("0.1.0", "body");
    assert!(
        a.starts_with('"') && a.ends_with('"') && a.len() == 18,
        "{a}"
    );
    assert_eq!(a, etag("0.1.0", "body"));
    assert_ne!(a, etag("0.1.0", "body!"));
    assert_ne!(a, etag("0.1.1", "body"));
}

#[test]
fn if_none_match_forms() {
    let tag = "\"00000000000000ab\"";
    assert!(etag_matches(tag.as_bytes(), tag));
    assert!(etag_matches(b"W/\"00000000000000ab\"", tag));
    assert!(etag_matches(b"\"x\", \"00000000000000ab\"", tag));
    assert!(etag_matches(b"*", tag));
    assert!(!etag_matches(b"\"00000000000000ac\"", tag));
    assert!(!etag_matches(b"", tag));
    assert!(!etag_matches(&[0xff, 0xfe], tag));
}

#[test]
fn page_has_what_scripts_and_the_next_issue_rely_on() {
    let html = asset("/").expect("index").body;
    for needle in [
        "id=\"matrix\"",
        "id=\"view\"",
        "id=\"legend\"",
        "id=\"updated\"",
        "id=\"details\"",
        "id=\"cell-why\"",
        "id=\"timectl\"",
        "type=\"datetime-local\"",
        "id=\"live\"",
        "id=\"asof-banner\"",
        "id=\"back-live\"",
        "id=\"asof-error\"",
        "id=\"history-strip\"",
        "id=\"history-caption\"",
        "id=\"summary\"",
        "id=\"sum-causes\"",
        "id=\"problems-list\"",
        "id=\"findings-list\"",
        "id=\"node\"",
        "id=\"n-listeners\"",
        "id=\"n-events\"",
        "id=\"viewport\"",
        "src=\"app.js\"",
        "href=\"style.css\"",
    ] {
        assert!(html.contains(needle), "index.html lacks {needle}");
    }
    let js = asset("/app.js").expect("app.js").body;
    assert!(js.contains("api/v1/matrix") && js.contains("api/v1/nodes"));
    assert!(js.contains("api/v1/findings"));
    assert!(js.contains("api/v1/history") && js.contains("&at="));
    assert!(js.contains("api/v1/why") && js.contains("api/v1/events?node="));
    assert!(js.contains("api/v1/nodes/${"));
    assert!(js.contains("data-state") || js.contains("dataset.state"));
    assert!(
        !js.contains("innerHTML"),
        "data must not go through innerHTML"
    );
}

/// Every form control of the page has a label or an accessible name.
#[test]
fn controls_are_labelled() {
    let html = asset("/").expect("index").body;
    for (n, tag) in html.split('<').enumerate().skip(1) {
        let name = tag.split([' ', '>']).next().unwrap_or_default();
        if !["input", "select", "button"].contains(&name) {
            continue;
        }
        let id = tag
            .split("id=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let labelled = tag.contains("aria-label=")
            || (!id.is_empty() && html.contains(&format!("for=\"{id}\"")))
            || (name == "button" && !tag.trim_end().ends_with('>'));
        assert!(labelled, "control {n} <{tag}> has no label");
    }
}

#[test]
fn page_loads_nothing_from_elsewhere() {
    for path in ["/", "/app.js", "/style.css"] {
        let body = asset(path).expect("asset").body;
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(external), "{path} refers to {external}");
        }
    }
}

/// A GET over a real socket: status line and headers (lower-cased names),
/// and the body.
async fn get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    (head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn serves_assets_with_types_and_revalidation() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, routes::<()>()).await });

    for (path, ty) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let (head, body) = get(addr, path, "").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(
            head.contains(&format!("content-type: {ty}")),
            "{path}: {head}"
        );
        assert!(head.contains("cache-control: no-cache"), "{path}: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{path}");
        assert!(head.contains("content-security-policy: default-src 'none'"));
        assert_eq!(body, asset(path).expect("asset").body, "{path}");

        let tag = &asset(path).expect("asset").etag;
        let (head, body) = get(addr, path, &format!("If-None-Match: {tag}\r\n")).await;
        assert!(head.starts_with("http/1.1 304"), "{path}: {head}");
        assert!(body.is_empty(), "{path}: 304 with a body");
        let (head, _) = get(addr, path, "If-None-Match: \"stale\"\r\n").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    }
    let (head, _) = get(addr, "/nope.js", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    server.abort();
}
