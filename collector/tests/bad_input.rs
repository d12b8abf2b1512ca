//! A real collector, in-process, fed malformed and oversized agent streams:
//! each gets a clear error on its own stream, and neither the collector nor
//! any other node's state is touched.

use bytes::BufMut;
use prost::Message;
use reachmap_collector::config::Config;
use reachmap_proto::v1 as pb;
use reachmap_proto::v1::agent_message::Body;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Sends raw bytes as messages: lets a test put anything on the wire.
struct RawCodec;
struct RawEncoder;
struct MsgDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = pb::CollectorMessage;
    type Encoder = RawEncoder;
    type Decoder = MsgDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> MsgDecoder {
        MsgDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for MsgDecoder {
    type Item = pb::CollectorMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::CollectorMessage>, Status> {
        pb::CollectorMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Collector {
    /// `https://127.0.0.1:PORT`.
    url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: std::path::PathBuf,
}

async fn start_collector() -> Collector {
    let dir = std::env::temp_dir().join(format!(
        "reachmap-bad-input-{}-{}",
        std::process::id(),
        free_port()
    ));
    let grpc = free_port();
    let config = Config {
        listen: format!("127.0.0.1:{grpc}").parse().expect("addr"),
        http: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        data_dir: dir.clone(),
        server_names: Vec::new(),
        probe: reachmap_collector::config::ProbeSettings::default(),
        metrics_pair_cap: 1000,
        insecure: false,
        own_ca: None,
        node_cert_lifetime: Duration::from_secs(3600),
        metrics_listen: None,
        store: Default::default(),
        store_at: reachmap_collector::store::Location::Dir(dir.clone()),
        name: "bad-input".into(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(reachmap_collector::run(config, shutdown.clone()));
    let url = format!("https://127.0.0.1:{grpc}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Collector {
        url,
        shutdown,
        task,
        dir,
    }
}

/// Who a test connects as.
enum As<'a> {
    Node(&'a str),
    Client(reachmap_tls::Role),
    /// No certificate: server-authenticated TLS only (as enrolment is).
    Anonymous,
}

/// A TLS channel to the collector, with a certificate its CA issued (the
/// node's key made here, as an agent would) unless anonymous.
async fn channel(c: &Collector, who: As<'_>) -> Channel {
    use reachmap_collector::trust::{Authority, csr};
    let ca = Authority::existing_ca(&c.dir, None).expect("the collector's CA");
    let identity = match who {
        As::Anonymous => None,
        As::Node(name) => {
            let (key_pem, der) = reachmap_tls::csr::node_key_and_csr(name).expect("csr");
            let checked = csr::check_csr(&der, name).expect("checked");
            let issued = ca
                .issue_node(&checked, Duration::from_secs(600))
                .expect("issued");
            Some((issued.der, key_pem))
        }
        As::Client(role) => {
            let (issued, key_pem) = ca
                .issue_client("tester", role, Duration::from_secs(600))
                .expect("issued");
            Some((issued.der, key_pem))
        }
    }
    .map(|(der, key_pem)| reachmap_tls::ClientIdentity {
        chain: vec![der.into()],
        key: reachmap_tls::pem::key(&key_pem).expect("key"),
    });
    let roots = reachmap_tls::pem::certs(&ca.ca_cert_pem).expect("ca");
    let config = reachmap_tls::client_config(
        &reachmap_tls::ServerTrust::Roots(roots),
        identity,
        reachmap_tls::ALPN_H2,
    )
    .expect("config");
    reachmap_tls::connect(
        tonic::transport::Endpoint::from_shared(c.url.clone()).expect("url"),
        config,
    )
    .await
    .expect("connect")
}

fn hello(node: &str) -> Vec<u8> {
    msg(
        1,
        Body::Hello(pb::Hello {
            node: node.into(),
            boot_id: "8b1e7b0c-3f7e-4a55-9d2e-0c4f6f1f3a2b".into(),
            version: "test".into(),
            instance_id: 1,
            heartbeat_interval_ms: 1000,
            ..Default::default()
        }),
    )
}

fn snapshot(seq: u64, ip: &str) -> Vec<u8> {
    msg(
        seq,
        Body::Snapshot(pb::Snapshot {
            version: 1,
            interfaces: vec![pb::Interface {
                index: 2,
                name: "eth0".into(),
                oper_state: pb::OperState::Up as i32,
                addresses: vec![pb::Address {
                    ip: ip.into(),
                    prefix_len: 24,
                    scope: pb::AddressScope::Universe as i32,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
}

fn msg(seq: u64, body: Body) -> Vec<u8> {
    pb::AgentMessage {
        seq,
        body: Some(body),
    }
    .encode_to_vec()
}

/// Opens a stream, sends `messages`, and returns what the collector answered
/// until it ended the stream (or until `wait` passed with the stream open).
async fn exchange(
    c: &Collector,
    node: &str,
    messages: Vec<Vec<u8>>,
    wait: Duration,
) -> (
    Vec<pb::CollectorMessage>,
    Option<Status>,
    mpsc::Sender<Vec<u8>>,
) {
    let channel = channel(c, As::Node(node)).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel(16);
    for m in messages {
        tx.send(m).await.expect("queue");
    }
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/reachmap.v1.Collector/Connect");
    let mut inbound = match grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return (Vec::new(), Some(s), tx),
    };
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await {
            Err(_) => return (got, None, tx),
            Ok(Ok(Some(m))) => got.push(m),
            Ok(Ok(None)) => return (got, None, tx),
            Ok(Err(s)) => return (got, Some(s), tx),
        }
    }
}

async fn list(c: &Collector) -> Vec<pb::NodeSummary> {
    let channel = channel(c, As::Client(reachmap_tls::Role::Viewer)).await;
    let mut q = pb::query_client::QueryClient::new(channel);
    q.list_nodes(pb::ListNodesRequest {})
        .await
        .expect("list")
        .into_inner()
        .nodes
}

fn node<'a>(nodes: &'a [pb::NodeSummary], name: &str) -> Option<&'a pb::NodeSummary> {
    nodes.iter().find(|n| n.name == name)
}

#[tokio::test]
async fn bad_streams_get_clear_errors_and_touch_nothing_else() {
    let c = start_collector().await;
    let short = Duration::from_millis(500);

    // A good agent, kept open for the whole test.
    let (acks, status, _good) = exchange(
        &c,
        "good-1",
        vec![hello("good-1"), snapshot(2, "198.18.0.11")],
        short,
    )
    .await;
    assert!(status.is_none(), "good stream failed: {status:?}");
    assert!(
        acks.iter().any(|m| matches!(
            m.body,
            Some(pb::collector_message::Body::Ack(pb::Ack { seq: 2 }))
        )),
        "{acks:?}"
    );

    // Not starting with hello.
    let (_, status, _) = exchange(&c, "n0", vec![snapshot(1, "198.18.0.99")], short).await;
    let status = status.expect("rejected");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("first message must be hello, got snapshot"),
        "{status:?}"
    );

    // An invalid name in hello.
    let (_, status, _) = exchange(&c, "n0", vec![hello("bad name")], short).await;
    let status = status.expect("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("message 1: hello.node:"),
        "{status:?}"
    );

    // A malformed address inside a snapshot, named down to the field.
    let (_, status, _) = exchange(
        &c,
        "bad-ip",
        vec![hello("bad-ip"), snapshot(2, "198.18.0.300")],
        short,
    )
    .await;
    let status = status.expect("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "message 2: snapshot.interfaces[0].addresses[0].ip: \"198.18.0.300\" is not an IP address"
    );

    // Sequence numbers that go backwards.
    let (_, status, _) = exchange(
        &c,
        "bad-seq",
        vec![
            hello("bad-seq"),
            snapshot(5, "198.18.0.12"),
            snapshot(3, "198.18.0.12"),
        ],
        short,
    )
    .await;
    assert!(
        status
            .expect("rejected")
            .message()
            .contains("seq: 3 is not above the previous 5")
    );

    // Bytes that are not a protobuf message at all.
    let (_, status, _) = exchange(
        &c,
        "garbage",
        vec![hello("garbage"), vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]],
        short,
    )
    .await;
    let status = status.expect("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A message over the size limit.
    let huge = vec![0u8; reachmap_proto::MAX_MESSAGE_BYTES + 1];
    let (_, status, _) = exchange(
        &c,
        "too-big",
        vec![hello("too-big"), huge],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        status.is_some(),
        "oversized message must end the stream with an error"
    );

    // The collector still serves, and the good node is as it was.
    let nodes = list(&c).await;
    let good = node(&nodes, "good-1").expect("good node listed");
    assert!(good.connected);
    assert_eq!(good.addresses, vec!["198.18.0.11".to_string()]);
    for bad in ["bad-ip", "bad-seq", "garbage", "too-big"] {
        if let Some(n) = node(&nodes, bad) {
            assert!(!n.connected, "{bad} must be disconnected after its error");
        }
    }
    assert!(node(&nodes, "bad name").is_none());

    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The agent's configuration travels in its Hello: kept when it is JSON
/// within 64 KiB, left out (the stream goes on) when it is not.
#[tokio::test]
async fn an_agent_configuration_is_kept_or_left_out_but_never_refused() {
    let c = start_collector().await;
    let short = Duration::from_millis(300);
    let with_config = |node: &str, config: String| {
        msg(
            1,
            Body::Hello(pb::Hello {
                node: node.into(),
                boot_id: "b".into(),
                instance_id: 1,
                heartbeat_interval_ms: 1000,
                config_json: config,
                ..Default::default()
            }),
        )
    };
    let good = r#"{"node":"cfg-good","heartbeat_interval":"1s"}"#.to_string();
    let too_long = format!(r#"{{"x":"{}"}}"#, "a".repeat(64 << 10));
    let cases = [
        ("cfg-good", good.clone(), good.as_str()),
        ("cfg-not-json", "{\"node\": ".to_string(), ""),
        ("cfg-too-long", too_long, ""),
        ("cfg-none", String::new(), ""),
    ];
    let channel = channel(&c, As::Client(reachmap_tls::Role::Viewer)).await;
    let mut q = pb::query_client::QueryClient::new(channel);
    for (node, config, kept) in cases {
        let (answers, status, _open) =
            exchange(&c, node, vec![with_config(node, config)], short).await;
        assert!(status.is_none(), "{node}: the stream goes on: {status:?}");
        assert!(!answers.is_empty(), "{node}: the hello is acked");
        let detail = q
            .get_node(pb::GetNodeRequest { name: node.into() })
            .await
            .expect("get_node")
            .into_inner();
        assert_eq!(detail.agent_config_json, kept, "{node}");
    }
    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test]
async fn a_second_machine_cannot_take_a_connected_name() {
    let c = start_collector().await;
    let short = Duration::from_millis(300);
    let with_machine = |m: &str| {
        msg(
            1,
            Body::Hello(pb::Hello {
                node: "web-1".into(),
                machine_id: m.into(),
                boot_id: "b".into(),
                instance_id: 1,
                ..Default::default()
            }),
        )
    };
    let (_, status, _first) = exchange(&c, "web-1", vec![with_machine("aaaa")], short).await;
    assert!(status.is_none());
    let (_, status, _) = exchange(&c, "web-1", vec![with_machine("bbbb")], short).await;
    let status = status.expect("rejected");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(status.message().contains("web-1"), "{status:?}");
    let nodes = list(&c).await;
    assert_eq!(
        node(&nodes, "web-1").map(|n| (n.connected, n.machine_id.as_str())),
        Some((true, "aaaa"))
    );
    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test]
async fn identity_is_the_certificate_and_roles_are_enforced() {
    let c = start_collector().await;
    let short = Duration::from_millis(300);
    // node-a is connected with its own certificate.
    let (_, status, _a) = exchange(
        &c,
        "node-a",
        vec![hello("node-a"), snapshot(2, "198.18.0.21")],
        short,
    )
    .await;
    assert!(status.is_none(), "{status:?}");
    // node-b's certificate naming node-a in its hello is refused, and
    // node-a is untouched.
    let (_, status, _) = exchange(
        &c,
        "node-b",
        vec![hello("node-a"), snapshot(2, "198.18.0.99")],
        short,
    )
    .await;
    let status = status.expect("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "this certificate is node node-b's; the hello names node-a"
    );
    let nodes = list(&c).await;
    let a = node(&nodes, "node-a").expect("node-a");
    assert!(a.connected);
    assert_eq!(a.addresses, vec!["198.18.0.21".to_string()]);
    assert!(node(&nodes, "node-b").is_none());

    // A node's certificate speaks the agent stream only.
    let mut q = pb::query_client::QueryClient::new(channel(&c, As::Node("node-a")).await);
    let e = q
        .list_nodes(pb::ListNodesRequest {})
        .await
        .expect_err("a node cannot query");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // A viewer reads but does not command.
    let mut v = pb::query_client::QueryClient::new(
        channel(&c, As::Client(reachmap_tls::Role::Viewer)).await,
    );
    let e = v
        .test_port(pb::TestPortRequest {
            src: "node-a".into(),
            dst: "node-a".into(),
            port: 9,
            timeout_ms: 100,
            ports: Vec::new(),
            udp: false,
        })
        .await
        .expect_err("a viewer cannot test-port");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "client tester is a viewer; test-port needs the operator role"
    );
    let e = v
        .create_token(pb::CreateTokenRequest {
            kind: "enroll".into(),
            ..Default::default()
        })
        .await
        .expect_err("a viewer cannot make tokens");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // No certificate and no token: unauthenticated.
    let anonymous = channel(&c, As::Anonymous).await;
    let e = pb::query_client::QueryClient::new(anonymous)
        .list_nodes(pb::ListNodesRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A plaintext client on the TLS port gets no service.
    let plain = Channel::from_shared(c.url.replace("https://", "http://"))
        .expect("url")
        .connect()
        .await;
    if let Ok(ch) = plain {
        let r = pb::query_client::QueryClient::new(ch)
            .list_nodes(pb::ListNodesRequest {})
            .await;
        assert!(r.is_err(), "plaintext must not be served: {r:?}");
    }
    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test]
async fn bad_enrolment_requests_are_refused_without_using_the_token() {
    let c = start_collector().await;
    let (token, _) = reachmap_collector::trust::Trust::create_token_offline(
        &c.dir,
        &reachmap_collector::store::Location::Dir(c.dir.clone()),
        reachmap_collector::trust::TokenKind::Enroll,
        None,
        1,
        Some("db-1".into()),
        String::new(),
    )
    .expect("token");
    let mut client = pb::collector_client::CollectorClient::new(channel(&c, As::Anonymous).await);
    let enroll = |node: &str, csr: Vec<u8>| pb::EnrollRequest {
        token: token.clone(),
        node: node.into(),
        csr_der: csr,
    };
    let (_, other_name) = reachmap_tls::csr::node_key_and_csr("db-2").expect("csr");
    let weak = ::pem::parse(include_str!("fixtures/csr-rsa1024.pem"))
        .expect("pem")
        .into_contents();
    let (_, db2) = reachmap_tls::csr::node_key_and_csr("db-2").expect("csr");
    let cases: Vec<(pb::EnrollRequest, &str)> = vec![
        (enroll("db-1", b"garbage".to_vec()), "not a PKCS#10 request"),
        (
            enroll("db-1", vec![0x30; 9000]),
            "the CSR is 9000 bytes (at most 8192)",
        ),
        (
            enroll("db-1", other_name),
            "expected only reachmap:node:db-1",
        ),
        (enroll("n1", weak), "RSA with 1024 bits"),
        (enroll("db-2", db2), "is for node db-1, not db-2"),
    ];
    for (req, want) in cases {
        let e = client.enroll(req).await.expect_err(want);
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains(want),
            "{:?} does not say {want:?}",
            e.message()
        );
        assert!(!e.message().contains('\n'));
    }
    // None of them used the one use up.
    let (_, good) = reachmap_tls::csr::node_key_and_csr("db-1").expect("csr");
    let r = client
        .enroll(enroll("db-1", good))
        .await
        .expect("a good CSR enrols")
        .into_inner();
    let info = reachmap_tls::cert_info(&r.cert_der).expect("certificate");
    assert_eq!(
        info.identity(),
        Some(reachmap_tls::Identity::Node("db-1".into()))
    );
    assert!(info.client_auth && !info.server_auth && !info.is_ca);
    let (_, again) = reachmap_tls::csr::node_key_and_csr("db-1").expect("csr");
    let e = client
        .enroll(enroll("db-1", again))
        .await
        .expect_err("used up");
    assert!(e.message().contains("is used up"), "{e:?}");
    c.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
    let _ = std::fs::remove_dir_all(&c.dir);
}
