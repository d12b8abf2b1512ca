//! What an answer cannot see: a fact source of either end that is not
//! reading (down, or not read yet). Such a source's facts are missing or
//! stale, so no check may conclude anything from their absence — "nothing
//! was OOM-killed" from a kernel log nobody reads is exactly the wrong
//! answer. `report` names every blind source as SOURCE_BLIND; `skipped`
//! lets a check that rests on a source step aside and say why in `checked`.

use super::{cause, fact_at};
use crate::model::health::{FactSource, SourceHealth};
use crate::state::Node;
use crate::view::rfc3339;
use crate::why::code::CauseCode;
use crate::why::{Cause, Context};

/// The source's health when it is not reading on `node`.
pub(super) fn blind(node: &Node, source: FactSource) -> Option<&SourceHealth> {
    node.facts.as_ref()?.blind(source)
}

fn state_text(h: &SourceHealth) -> String {
    let since = rfc3339(h.since)
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    let error = h
        .last_error
        .as_ref()
        .map(|(_, e)| format!(": {e}"))
        .unwrap_or_default();
    format!("{}{since}{error}", h.state.name())
}

/// Whether the check of `what` on `node` must stand aside because `source`
/// is blind there; if so, `checked` says what could not be checked and why.
pub(super) fn skipped(
    node: &Node,
    source: FactSource,
    what: &str,
    checked: &mut Vec<String>,
) -> bool {
    let Some(h) = blind(node, source) else {
        return false;
    };
    checked.push(format!(
        "{what} on {}: not known — its {} source is {} ({} cannot be ruled in or out)",
        node.name,
        source.name(),
        state_text(h),
        source.facts()
    ));
    true
}

/// The sources that matter for a connection from `src` to `dst`: everything
/// on the destination but its probes and name lookups, everything on the
/// source.
fn relevant(on_dst: bool, source: FactSource) -> bool {
    !(on_dst && matches!(source, FactSource::Prober | FactSource::Names))
}

/// One SOURCE_BLIND cause per blind source of either end.
pub(super) fn report(ctx: &Context, checked: &mut Vec<String>, out: &mut Vec<Cause>) {
    let mut any = false;
    for (node, on_dst) in [(ctx.dst, true), (ctx.src, false)] {
        let Some(f) = node.facts.as_ref() else {
            continue;
        };
        for (source, h) in &f.sources {
            if !h.blind() || !relevant(on_dst, *source) {
                continue;
            }
            any = true;
            let mut c = cause(
                CauseCode::SourceBlind,
                node,
                60,
                format!(
                    "{} is blind to {}: its {} source is {}, so this answer cannot rule out what only it would show",
                    node.name,
                    source.facts(),
                    source.name(),
                    state_text(h)
                ),
            );
            let time = h.last_error.as_ref().map_or(h.since, |(t, _)| *t);
            c.evidence.push(fact_at(
                node,
                time,
                format!(
                    "source {}: {}, {} errors, {} restarts",
                    source.name(),
                    state_text(h),
                    h.errors_total,
                    h.restarts_total
                ),
            ));
            c.fix = Some(format!(
                "repair the {} source on {} (the error says what is missing); the agent retries it by itself",
                source.name(),
                node.name
            ));
            out.push(c);
        }
    }
    if !any {
        checked.push(format!(
            "fact sources of {} and {}: all reading",
            ctx.src.name, ctx.dst.name
        ));
    }
}
