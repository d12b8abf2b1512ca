//! The Query service, and the one place where fleet state becomes query
//! answers (protocol messages).

use crate::encode;
use crate::model::health::SourceState;
use crate::model::{Interface, NodeFacts, Route};
use crate::state::{Fleet, Node, unix_nanos};
use crate::trust::{Caller, Peer, TokenKind, TokenRecord, Trust};
use reachmap_proto::v1 as pb;
use reachmap_tls::Role;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Recent events returned with a node's details.
const RECENT_EVENTS: usize = 50;

pub struct Query {
    fleet: Fleet,
    trust: Arc<Trust>,
}

impl Query {
    pub fn new(fleet: Fleet, trust: Arc<Trust>) -> Self {
        Query { fleet, trust }
    }

    /// Who sent `request`, if they may do `what` (which needs `need`).
    fn allow<T>(&self, request: &Request<T>, need: Role, what: &str) -> Result<Caller, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trust::bearer);
        let caller = self
            .trust
            .caller(request.extensions().get::<Peer>(), token)?;
        self.trust.allow(&caller, need, what)?;
        Ok(caller)
    }
}

fn token_info(r: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: r.id.clone(),
        kind: r.kind.as_str().into(),
        created_unix: r.created_unix,
        expires_unix: r.expires_unix,
        uses_left: r.uses_left,
        node: r.node.clone().unwrap_or_default(),
        description: r.description.clone(),
        revoked: r.revoked,
    }
}

pub fn summary(n: &Node) -> pb::NodeSummary {
    pb::NodeSummary {
        name: n.name.clone(),
        machine_id: n.machine_id.clone(),
        boot_id: n.boot_id.clone(),
        version: n.version.clone(),
        connected: n.connected(),
        since_unix_nanos: unix_nanos(n.since),
        last_seen_unix_nanos: unix_nanos(n.last_seen),
        addresses: n.addresses(),
        clock_offset_ms: n.clock.map(|c| c.offset_nanos as f64 / 1e6),
        clock_rtt_ms: n.clock.map(|c| c.rtt_nanos as f64 / 1e6),
        labels: n.labels.clone().into_iter().collect(),
        dropped_events_total: n.dropped_events_total,
        unhealthy_sources: n
            .facts
            .as_ref()
            .map(|f| {
                f.sources
                    .iter()
                    .filter(|(_, h)| h.state != SourceState::Ok)
                    .map(|(k, h)| encode::source_health(*k, h))
                    .collect()
            })
            .unwrap_or_default(),
        collector: String::new(),
    }
}

fn interface(i: &Interface) -> pb::Interface {
    let scope = |s: &str| {
        pb::AddressScope::from_str_name(&format!("ADDRESS_SCOPE_{}", s.to_ascii_uppercase()))
            .unwrap_or_default() as i32
    };
    let state =
        pb::OperState::from_str_name(&format!("OPER_STATE_{}", i.oper_state.to_ascii_uppercase()))
            .unwrap_or_default();
    pb::Interface {
        index: i.index,
        name: i.name.clone(),
        mac: i.mac.clone(),
        mtu: i.mtu,
        admin_up: i.admin_up,
        oper_state: state as i32,
        kind: i.kind.clone(),
        addresses: i
            .addresses
            .iter()
            .map(|a| pb::Address {
                ip: a.ip.to_string(),
                prefix_len: u32::from(a.prefix_len),
                scope: scope(&a.scope),
            })
            .collect(),
    }
}

fn route(r: &Route) -> pb::Route {
    pb::Route {
        destination: format!("{}/{}", r.destination, r.prefix_len),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        interface: r.interface.clone(),
        preferred_source: r
            .preferred_source
            .map(|g| g.to_string())
            .unwrap_or_default(),
        metric: r.metric,
        table: r.table,
    }
}

pub fn facts(f: &NodeFacts) -> pb::Snapshot {
    pb::Snapshot {
        version: f.version,
        host: Some(pb::HostInfo {
            hostname: f.host.hostname.clone(),
            kernel: f.host.kernel.clone(),
            os: f.host.os.clone(),
            uptime_seconds: f.host.uptime_seconds,
            boot_time_unix_seconds: f.host.boot_time_unix_seconds,
        }),
        interfaces: f.interfaces.values().map(interface).collect(),
        routes: f.routes.iter().map(route).collect(),
        sockets: Some(encode::sockets(f.listeners.values(), &f.socket_summary)),
        firewall: f.firewall.as_ref().map(encode::firewall),
        resources: f.resources.as_ref().map(encode::resources),
        sources: encode::sources(&f.sources),
    }
}

pub fn detail(n: &Node) -> pb::NodeDetail {
    pb::NodeDetail {
        summary: Some(summary(n)),
        facts: n.facts.as_deref().map(facts),
        recent_events: n
            .events
            .iter()
            .rev()
            .take(RECENT_EVENTS)
            .map(|e| pb::Event {
                received_unix_nanos: unix_nanos(e.received),
                ..e.event.clone()
            })
            .collect(),
        names: n.names.iter().map(crate::encode::resolved_name).collect(),
        agent_config_json: n.agent_config.clone().unwrap_or_default(),
    }
}

/// `why` at `at`, from the store; now (`at` 0) from the live state, or from
/// the shared store when an end's agent streams to another collector (its
/// facts and probe results reach this one only through the store).
pub async fn why_at_or_now(
    fleet: &Fleet,
    src: String,
    dst: String,
    port: u16,
    at: i64,
) -> Result<crate::why::Explanation, Status> {
    if at != 0 {
        crate::history::why_at(fleet, src, dst, port, at).await
    } else if crate::sharing::from_store(fleet, &src, &dst).await {
        let now = unix_nanos(std::time::SystemTime::now());
        crate::history::why_at(fleet, src, dst, port, now).await
    } else {
        why(fleet, src, dst, port).await
    }
}

/// Explains the cell SRC -> DST:PORT, inside the state task; a
/// NETWORK_PATH cause then gets a trace from the source (`trace::into_why`).
pub async fn why(
    fleet: &Fleet,
    src: String,
    dst: String,
    port: u16,
) -> Result<crate::why::Explanation, Status> {
    let owners = fleet.owners();
    let mut e = fleet
        .read_matrix(move |m, nodes| {
            let now = std::time::SystemTime::now();
            crate::why::explain(m, nodes, &owners, &src, &dst, port, now)
        })
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?
        .map_err(|e| match e {
            crate::why::WhyError::NoSuchNode(_) => Status::not_found(e.to_string()),
            crate::why::WhyError::SameNode => Status::invalid_argument(e.to_string()),
        })?;
    crate::trace::into_why(fleet, &mut e).await;
    Ok(e)
}

/// The fleet's findings: made from a copy of the fleet off the state task,
/// and kept while the fleet does not change (`Fleet::findings`).
pub async fn findings(fleet: &Fleet) -> Result<std::sync::Arc<crate::findings::Report>, Status> {
    fleet
        .findings()
        .await
        .map(|made| made.value)
        .ok_or_else(|| Status::unavailable("collector is shutting down"))
}

/// Every collector on this collector's store, as their heartbeats say.
pub async fn collectors(fleet: &Fleet) -> Result<pb::ListCollectorsResponse, Status> {
    let now = crate::state::unix_nanos(std::time::SystemTime::now());
    let list = crate::members::list(fleet.store())
        .await
        .map_err(Status::unavailable)?;
    let store = fleet.store();
    Ok(pb::ListCollectorsResponse {
        collectors: list
            .into_iter()
            .map(|r| {
                // This collector's own store figures are read live: its
                // record is written through the very queue it reports on,
                // so behind a long queue the record is as old as the queue.
                let me = r.name == store.member_name();
                pb::CollectorInfo {
                    alive: r.alive(now),
                    leader: r.leader && r.alive(now),
                    store_writable: if me {
                        store.status().writable
                    } else {
                        r.store_writable
                    },
                    store_queue: if me { store.queued() } else { r.store_queue },
                    name: r.name,
                    grpc: r.grpc,
                    http: r.http,
                    version: r.version,
                    started_unix_nanos: r.started_unix_nanos,
                    seen_unix_nanos: r.seen_unix_nanos,
                    agents: r.agents,
                }
            })
            .collect(),
        now_unix_nanos: now,
    })
}

/// A what-if request checked, then evaluated on a copy of the fleet off
/// the state task.
pub async fn what_if(fleet: &Fleet, r: pb::WhatIfRequest) -> Result<crate::whatif::Impact, Status> {
    reachmap_proto::check_node_name(&r.node).map_err(Status::invalid_argument)?;
    let ruleset = r
        .ruleset
        .as_ref()
        .map(|fw| crate::validate::firewall::firewall("ruleset", fw))
        .transpose()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut changes = Vec::new();
    for (i, a) in r.addresses.iter().enumerate() {
        let parse = |what: &str, text: &str| {
            text.parse::<std::net::IpAddr>().map_err(|_| {
                Status::invalid_argument(format!(
                    "addresses[{i}].{what}: {text:?} is not an IP address"
                ))
            })
        };
        changes.push((parse("old", &a.old)?, parse("new", &a.new)?));
    }
    if ruleset.is_none() && changes.is_empty() {
        return Err(Status::invalid_argument(
            "what-if needs a proposed ruleset or an address change",
        ));
    }
    let node = r.node;
    let view = fleet
        .view_around(&node)
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?;
    tokio::task::spawn_blocking(move || {
        crate::whatif::evaluate(&view.matrix, &view.nodes, &node, ruleset.as_ref(), &changes)
    })
    .await
    .map_err(|e| Status::internal(format!("what-if stopped: {e}")))?
    .map_err(|e| match e {
        crate::whatif::WhatIfError::NoSuchNode(_) => Status::not_found(e.to_string()),
        crate::whatif::WhatIfError::Bad(_) => Status::failed_precondition(e.to_string()),
    })
}

/// A copy of the matrix now (from the state task), or as it was at `at`
/// (from the store), and the moment it is for.
pub async fn matrix_copy(fleet: &Fleet, at: i64) -> Result<(crate::probe::Matrix, i64), Status> {
    if at != 0 {
        return Ok((crate::history::matrix_at(fleet.store(), at).await?, at));
    }
    let (copy, _) = crate::sharing::whole_matrix(fleet)
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?;
    Ok((copy, unix_nanos(std::time::SystemTime::now())))
}

/// `matrix_copy` with each node's zone: a past matrix is read with today's
/// zones (a node gone since is in none).
pub async fn selected_copy(
    fleet: &Fleet,
    at: i64,
) -> Result<(crate::probe::Matrix, crate::select::Zones, i64), Status> {
    let down = || Status::unavailable("collector is shutting down");
    if at != 0 {
        let m = crate::history::matrix_at(fleet.store(), at).await?;
        let zones = fleet
            .read(crate::select::Zones::of_nodes)
            .await
            .ok_or_else(down)?;
        return Ok((m, zones, at));
    }
    let (m, zones) = crate::sharing::whole_matrix(fleet).await.ok_or_else(down)?;
    Ok((m, zones, unix_nanos(std::time::SystemTime::now())))
}

pub fn store_status(s: &crate::store::Status) -> pb::StoreStatus {
    pb::StoreStatus {
        writable: s.writable,
        error: s.error.clone(),
        failing_since_unix_nanos: s.failing_since,
        bytes: s.bytes,
        oldest_unix_nanos: s.oldest,
    }
}

pub async fn list(fleet: &Fleet) -> Result<Vec<pb::NodeSummary>, Status> {
    let live: Vec<pb::NodeSummary> = fleet
        .read(|nodes: &BTreeMap<String, Node>| nodes.values().map(summary).collect())
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?;
    let store = fleet.store();
    if !matches!(store.location(), crate::store::Location::Postgres(_)) {
        return Ok(live);
    }
    // A shared store: the other collectors' agents, from their records.
    match store
        .read(|db| {
            let records = crate::store::registry::load(db).map_err(|e| e.to_string())?;
            Ok((records, crate::members::load(db)?))
        })
        .await
    {
        Ok((records, members)) => Ok(crate::members::with_others(
            live,
            records,
            &members,
            store.member_name(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the other collectors' nodes; listing this one's");
            Ok(live)
        }
    }
}

pub async fn get(fleet: &Fleet, name: String) -> Result<pb::NodeDetail, Status> {
    let found = fleet
        .read(move |nodes: &BTreeMap<String, Node>| nodes.get(&name).map(detail).ok_or(name))
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?;
    found.map_err(|name| Status::not_found(format!("no node named {name:?}")))
}

#[tonic::async_trait]
impl pb::query_server::Query for Query {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.allow(&request, Role::Viewer, "nodes")?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: list(&self.fleet).await?,
            store: Some(store_status(&self.fleet.store().status())),
        }))
    }

    async fn get_matrix(
        &self,
        request: Request<pb::MatrixRequest>,
    ) -> Result<Response<pb::Matrix>, Status> {
        self.allow(&request, Role::Viewer, "matrix")?;
        let r = request.into_inner();
        let port =
            u16::try_from(r.port).map_err(|_| Status::invalid_argument("port: over 65535"))?;
        let port = (port != 0).then_some(port);
        let state = match pb::CellState::try_from(r.state) {
            Ok(s) => crate::select::state_of_wire(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state: unknown {}",
                    r.state
                )));
            }
        };
        let some = |s: String| (!s.is_empty()).then_some(s);
        let sel = crate::select::Selection {
            port,
            zone: some(r.zone),
            src: some(r.src),
            dst: some(r.dst),
            src_zone: some(r.src_zone),
            dst_zone: some(r.dst_zone),
            state,
        };
        if !sel.is_narrowed() && !r.by_zone {
            let (copy, now) = matrix_copy(&self.fleet, r.at_unix_nanos).await?;
            let m = tokio::task::spawn_blocking(move || encode::matrix(&copy, port, now))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            return Ok(Response::new(m));
        }
        let (copy, zones, now) = selected_copy(&self.fleet, r.at_unix_nanos).await?;
        let by_zone = r.by_zone;
        let m = tokio::task::spawn_blocking(move || {
            encode::matrix_selected(&copy, &sel, &zones, by_zone, now)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(m))
    }

    async fn why(
        &self,
        request: Request<pb::WhyRequest>,
    ) -> Result<Response<pb::WhyAnswer>, Status> {
        self.allow(&request, Role::Viewer, "why")?;
        let r = request.into_inner();
        let port = match u16::try_from(r.port) {
            Ok(0) => reachmap_proto::DEFAULT_PROBE_PORT,
            Ok(p) => p,
            Err(_) => return Err(Status::invalid_argument("port: over 65535")),
        };
        let e = why_at_or_now(&self.fleet, r.src, r.dst, port, r.at_unix_nanos).await?;
        Ok(Response::new(pb::WhyAnswer::from(&e)))
    }

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        self.allow(&request, Role::Viewer, "events")?;
        let r = request.into_inner();
        let q = crate::store::read::EventsQuery {
            node: (!r.node.is_empty()).then_some(r.node),
            since: r.since_unix_nanos,
            until: r.until_unix_nanos,
            types: r.types,
            limit: r.limit as usize,
        };
        Ok(Response::new(
            crate::history::events(self.fleet.store(), q).await?,
        ))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        self.allow(&request, Role::Viewer, "history")?;
        let r = request.into_inner();
        let port =
            u16::try_from(r.port).map_err(|_| Status::invalid_argument("port: over 65535"))?;
        Ok(Response::new(
            crate::history::history(
                &self.fleet,
                r.src,
                r.dst,
                port,
                r.since_unix_nanos,
                r.until_unix_nanos,
            )
            .await?,
        ))
    }

    async fn test_port(
        &self,
        request: Request<pb::TestPortRequest>,
    ) -> Result<Response<pb::TestPortResult>, Status> {
        let caller = self.allow(&request, Role::Operator, "test-port")?;
        tracing::info!(?caller, "test-port");
        Ok(Response::new(
            crate::testport::run(&self.fleet, request.into_inner()).await?,
        ))
    }

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceResult>, Status> {
        let caller = self.allow(&request, Role::Operator, "trace")?;
        tracing::info!(?caller, "trace");
        Ok(Response::new(
            crate::trace::run(&self.fleet, request.into_inner()).await?,
        ))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeDetail>, Status> {
        self.allow(&request, Role::Viewer, "node")?;
        Ok(Response::new(
            get(&self.fleet, request.into_inner().name).await?,
        ))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.allow(&request, Role::Operator, "token create")?;
        let r = request.into_inner();
        let kind = TokenKind::parse(&r.kind).ok_or_else(|| {
            Status::invalid_argument(format!(
                "kind {:?}: expected enroll, viewer or operator",
                r.kind
            ))
        })?;
        let ttl = (r.ttl_seconds > 0).then(|| std::time::Duration::from_secs(r.ttl_seconds));
        let node = (!r.node.is_empty()).then_some(r.node);
        let (token, rec) = self
            .trust
            .create_token(kind, ttl, r.uses, node, r.description)
            .map_err(Status::invalid_argument)?;
        tracing::info!(?caller, id = %rec.id, kind = rec.kind.as_str(), "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            info: Some(token_info(&rec)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.allow(&request, Role::Operator, "token list")?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: self.trust.list_tokens().iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.allow(&request, Role::Operator, "token revoke")?;
        let id = request.into_inner().id;
        self.trust.revoke_token(&id).map_err(Status::not_found)?;
        tracing::info!(?caller, %id, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn revoke_node(
        &self,
        request: Request<pb::RevokeNodeRequest>,
    ) -> Result<Response<pb::RevokeNodeResponse>, Status> {
        let caller = self.allow(&request, Role::Operator, "node revoke")?;
        let node = request.into_inner().node;
        reachmap_proto::check_node_name(&node).map_err(Status::invalid_argument)?;
        let name = node.clone();
        let connected = self
            .fleet
            .read(move |nodes: &BTreeMap<String, Node>| {
                nodes.get(&name).is_some_and(Node::connected)
            })
            .await
            .unwrap_or(false);
        let certificates = self.trust.revoke_node(&node).map_err(Status::internal)?;
        tracing::warn!(?caller, %node, certificates, "node revoked");
        Ok(Response::new(pb::RevokeNodeResponse {
            certificates,
            disconnected: connected,
        }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.allow(&request, Role::Operator, "client list")?;
        let clients = self
            .trust
            .clients()
            .map_err(Status::internal)?
            .into_iter()
            .map(|c| pb::ClientCertInfo {
                name: c.node,
                role: c.role.unwrap_or_default(),
                serial: c.serial,
                issued_unix: c.issued_unix,
                not_after_unix: c.not_after_unix,
                revoked_unix: c.revoked_unix.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListClientsResponse { clients }))
    }

    async fn revoke_client(
        &self,
        request: Request<pb::RevokeClientRequest>,
    ) -> Result<Response<pb::RevokeClientResponse>, Status> {
        let caller = self.allow(&request, Role::Operator, "client revoke")?;
        let name = request.into_inner().name;
        reachmap_proto::check_node_name(&name)
            .map_err(|e| Status::invalid_argument(e.replace("node name", "client name")))?;
        let Some(certificates) = self.trust.revoke_client(&name).map_err(Status::internal)? else {
            return Err(Status::not_found(format!(
                "no client certificate was issued to {name:?} (reachmap client list shows those there are)"
            )));
        };
        tracing::warn!(?caller, client = %name, certificates, "client revoked");
        Ok(Response::new(pb::RevokeClientResponse { certificates }))
    }

    async fn findings(
        &self,
        request: Request<pb::FindingsRequest>,
    ) -> Result<Response<pb::FindingsResponse>, Status> {
        self.allow(&request, Role::Viewer, "findings")?;
        let report = findings(&self.fleet).await?;
        Ok(Response::new(crate::findings::wire::report(&report)))
    }

    async fn list_collectors(
        &self,
        request: Request<pb::ListCollectorsRequest>,
    ) -> Result<Response<pb::ListCollectorsResponse>, Status> {
        self.allow(&request, Role::Viewer, "collectors")?;
        collectors(&self.fleet).await.map(Response::new)
    }

    async fn what_if(
        &self,
        request: Request<pb::WhatIfRequest>,
    ) -> Result<Response<pb::WhatIfResponse>, Status> {
        self.allow(&request, Role::Viewer, "what-if")?;
        let impact = what_if(&self.fleet, request.into_inner()).await?;
        Ok(Response::new(crate::whatif::to_pb(&impact)))
    }
}
