//! The application answered, and not as it should: HTTP_STATUS, followed
//! to the upstream that makes a proxy answer 502 when the declared service
//! names its upstreams; TLS_ERROR when an HTTPS service's handshake fails.

use super::{cause, fact, probe};
use crate::why::code::CauseCode;
use crate::why::{Cause, Context, Evidence};

pub(super) fn http_status(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let Some(p) = ctx.probe.as_ref() else {
        return;
    };
    if p.failure.as_deref() != Some("http_status") {
        return;
    }
    let seen = p
        .http_status
        .map(|s| format!("answers {s}"))
        .unwrap_or_else(|| "answers with another status than expected".into());
    let failing: Vec<&(crate::why::CellSummary, Option<Cause>)> = ctx
        .upstreams
        .iter()
        .filter(|(c, _)| c.state != "ok")
        .collect();
    let service = ctx
        .owner
        .map(|o| format!(" (service {:?})", o.service))
        .unwrap_or_default();
    let detail = match failing.first() {
        Some((cell, Some(top))) => format!(
            "{}:{} {seen}{service} because {} cannot reach {}:{}: {} on {}",
            ctx.dst.name, ctx.port, cell.src, cell.dst, cell.port, top.code, top.node
        ),
        Some((cell, None)) => format!(
            "{}:{} {seen}{service}, and its upstream {}:{} fails from {} ({})",
            ctx.dst.name,
            ctx.port,
            cell.dst,
            cell.port,
            cell.src,
            cell.failure.as_deref().unwrap_or(&cell.state)
        ),
        None => format!(
            "{}:{} {seen}{service}: the network path and the listener work, the application does not",
            ctx.dst.name, ctx.port
        ),
    };
    let mut c = cause(CauseCode::HttpStatus, ctx.dst, 80, detail);
    if let Some(e) = probe(ctx) {
        c.evidence.push(e);
    }
    if let Some(o) = ctx.owner {
        if o.upstreams.is_empty() {
            checked.push(format!("{}'s upstreams: none declared", o.service));
        }
        for (cell, top) in &ctx.upstreams {
            c.evidence.push(Evidence {
                kind: "probe".into(),
                node: cell.src.clone(),
                time: if cell.last_failure > 0 {
                    cell.last_failure
                } else {
                    cell.updated
                },
                text: format!(
                    "upstream {} -> {}:{}: {}{}",
                    cell.src,
                    cell.dst,
                    cell.port,
                    cell.state,
                    cell.failure
                        .as_deref()
                        .map(|f| format!(" ({f})"))
                        .unwrap_or_default()
                ),
            });
            if let Some(t) = top {
                c.evidence.push(fact(
                    ctx.dst,
                    format!("{} on {}: {}", t.code, t.node, t.detail),
                ));
                c.evidence.extend(t.evidence.iter().cloned());
            }
        }
    }
    c.fix = Some(match failing.first() {
        Some((_, Some(top))) => top
            .fix
            .clone()
            .unwrap_or_else(|| format!("fix {} on {} first", top.code, top.node)),
        _ => format!(
            "look at the service's own logs on {}: it answers, with the wrong status",
            ctx.dst.name
        ),
    });
    out.push(c);
}

/// An HTTPS probe whose handshake failed: the agent's reason, and the fix
/// for that reason.
pub(super) fn tls_error(ctx: &Context, out: &mut Vec<Cause>) {
    let Some(p) = ctx.probe.as_ref() else {
        return;
    };
    if p.failure.as_deref() != Some("tls_error") {
        return;
    }
    let service = ctx
        .owner
        .map(|o| o.service.as_str())
        .or(p.service.as_deref())
        .map(|s| format!(" (service {s:?})"))
        .unwrap_or_default();
    let (kind, reason) = match &p.tls_error {
        Some(t) => (t.kind.as_str(), t.detail.clone()),
        None => ("handshake", "the TLS handshake failed".to_string()),
    };
    let at = format!("{}:{}", ctx.dst.name, ctx.port);
    let detail = format!("TLS to {at}{service} fails ({kind}): {reason}");
    let mut c = cause(CauseCode::TlsError, ctx.dst, 85, detail);
    if let Some(e) = probe(ctx) {
        c.evidence.push(e);
    }
    c.fix = Some(match kind {
        "expired" => format!(
            "renew the certificate of {at} and reload the service; clients that check certificates fail until then"
        ),
        "not_yet_valid" => format!(
            "the certificate of {at} is not valid yet: check the clocks of {} and {}, or the certificate's start date",
            ctx.src.name, ctx.dst.name
        ),
        "wrong_name" => format!(
            "give {at} a certificate that names what clients ask for (subjectAltName), or set server_name in [[services]] to the name clients use"
        ),
        "unknown_issuer" => format!(
            "give {at} a certificate from the CA its clients trust, or name the service's CA in ca_file in [[services]]"
        ),
        "revoked" => format!("issue {at} a new certificate: this one is revoked"),
        _ => format!(
            "look at the TLS set-up of the service on {}: is TLS served on port {}, with a usable certificate?",
            ctx.dst.name, ctx.port
        ),
    });
    out.push(c);
}
