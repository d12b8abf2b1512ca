//! Fact-source health from an agent.

use super::{ProtocolError, err, text};
use crate::model::health::{FactSource, SourceHealth, SourceState, Sources};
use reachmap_proto::v1 as pb;

const MAX_ERROR_TEXT: usize = 1024;

/// A source the collector does not know (a newer agent's) is left out;
/// one named twice or without a name is an error.
pub fn sources(field: &str, list: &[pb::SourceHealth]) -> Result<Sources, ProtocolError> {
    let mut out = Sources::new();
    for (n, h) in list.iter().enumerate() {
        let f = format!("{field}[{n}]");
        let source = match pb::FactSource::try_from(h.source) {
            Ok(pb::FactSource::Unspecified) => {
                return Err(err(format!("{f}.source"), "unspecified"));
            }
            Ok(s) => fact_source(s),
            Err(_) => continue,
        };
        let Some(source) = source else { continue };
        let state = match pb::SourceState::try_from(h.state) {
            Ok(pb::SourceState::Starting) => SourceState::Starting,
            Ok(pb::SourceState::Ok) => SourceState::Ok,
            Ok(pb::SourceState::Degraded) => SourceState::Degraded,
            Ok(pb::SourceState::Down) => SourceState::Down,
            Ok(pb::SourceState::Unspecified) | Err(_) => {
                return Err(err(
                    format!("{f}.state"),
                    format!("unknown state {}", h.state),
                ));
            }
        };
        let last_error = if h.last_error.is_empty() {
            None
        } else {
            Some((
                h.last_error_unix_nanos,
                text(&format!("{f}.last_error"), &h.last_error, MAX_ERROR_TEXT)?,
            ))
        };
        let health = SourceHealth {
            state,
            since: h.since_unix_nanos,
            last_error,
            errors_total: h.errors_total,
            restarts_total: h.restarts_total,
        };
        if out.insert(source, health).is_some() {
            return Err(err(
                format!("{f}.source"),
                format!("{} appears twice", source.name()),
            ));
        }
    }
    Ok(out)
}

fn fact_source(s: pb::FactSource) -> Option<FactSource> {
    Some(match s {
        pb::FactSource::Unspecified => return None,
        pb::FactSource::Sockets => FactSource::Sockets,
        pb::FactSource::Firewall => FactSource::Firewall,
        pb::FactSource::Network => FactSource::Network,
        pb::FactSource::KernelLog => FactSource::KernelLog,
        pb::FactSource::Resources => FactSource::Resources,
        pb::FactSource::Prober => FactSource::Prober,
        pb::FactSource::Names => FactSource::Names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(source: pb::FactSource, state: pb::SourceState, error: &str) -> pb::SourceHealth {
        pb::SourceHealth {
            source: source as i32,
            state: state as i32,
            since_unix_nanos: 5,
            last_error: error.into(),
            last_error_unix_nanos: 7,
            errors_total: 2,
            restarts_total: 1,
        }
    }

    #[test]
    fn sources_are_read_and_bad_ones_named() {
        let ok = sources(
            "snapshot.sources",
            &[
                h(
                    pb::FactSource::KernelLog,
                    pb::SourceState::Down,
                    "no /dev/kmsg",
                ),
                h(pb::FactSource::Sockets, pb::SourceState::Ok, ""),
            ],
        )
        .expect("valid");
        let k = &ok[&FactSource::KernelLog];
        assert!(k.blind());
        assert_eq!(k.last_error, Some((7, "no /dev/kmsg".into())));
        assert!(!ok[&FactSource::Sockets].blind());

        let mut unknown = h(pb::FactSource::Sockets, pb::SourceState::Ok, "");
        unknown.source = 99;
        assert!(sources("s", &[unknown]).expect("skipped").is_empty());

        let twice = sources(
            "snapshot.sources",
            &[
                h(pb::FactSource::Sockets, pb::SourceState::Ok, ""),
                h(pb::FactSource::Sockets, pb::SourceState::Down, "x"),
            ],
        )
        .expect_err("twice");
        assert_eq!(
            twice.to_string(),
            "snapshot.sources[1].source: sockets appears twice"
        );
        let mut bad_state = h(pb::FactSource::Sockets, pb::SourceState::Ok, "");
        bad_state.state = 42;
        assert_eq!(
            sources("d", &[bad_state]).expect_err("state").to_string(),
            "d[0].state: unknown state 42"
        );
        let control = h(pb::FactSource::Names, pb::SourceState::Down, "a\nb");
        assert!(sources("d", &[control]).is_err());
    }
}
