//! `reachmap matrix`: the fleet's reachability as a grid a person reads at a
//! glance — sources down, destinations across — then every cell that is not
//! ok, one line each. Colour on a terminal, plain text when piped.

use super::render::render;
use super::{CliError, Format, json, local_times, moment, status, when};
use crate::view::{self, CellView, MatrixView};
use reachmap_proto::v1 as pb;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

/// Bad cells `reachmap matrix` asks the correlator about.
const MAX_EXPLAINED: usize = 100;
/// Fleets larger than this are shown zone by zone.
const ZONE_VIEW_NODES: usize = 60;
/// Cells the zone view lists at most.
const MAX_LISTED: usize = 200;

/// `reachmap matrix`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct MatrixArgs {
    /// Only the cells of this port (a service or a listener's port)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// With --format json, every cell's service, RTT p99, probes sent,
    /// address probed and time of the last change as well
    #[arg(long)]
    pub detail: bool,
    /// The matrix as it was then: RFC 3339, "2026-12-01 02:14" (local), or "10m ago"
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Zone by zone (the nodes' zone label): each pair's worst state and counts, then the cells that are not ok; the default beyond 60 nodes
    #[arg(long)]
    pub zones: bool,
    /// Only cells from or to the nodes of this zone
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Only cells from this node
    #[arg(long, value_name = "NODE")]
    pub src: Option<String>,
    /// Only cells to this node
    #[arg(long, value_name = "NODE")]
    pub dst: Option<String>,
    /// Only cells from the nodes of this zone (with --dst-zone: one pair of the zone view, node by node)
    #[arg(long, value_name = "ZONE")]
    pub src_zone: Option<String>,
    /// Only cells to the nodes of this zone
    #[arg(long, value_name = "ZONE")]
    pub dst_zone: Option<String>,
    /// Only cells in this state, listed one a line: ok, degraded, failing, unknown
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<crate::probe::CellState>,
}

fn parse_state(s: &str) -> Result<crate::probe::CellState, String> {
    crate::select::Selection::state_named(s)
}

/// `reachmap matrix`: the zone view or the node grid, or the cells asked
/// for, each bad one with its top cause.
pub async fn run(
    client: &mut super::connect::Client,
    url: &str,
    args: MatrixArgs,
    now: SystemTime,
) -> Result<String, CliError> {
    let MatrixArgs {
        port,
        format,
        detail,
        at,
        zones,
        zone,
        src,
        dst,
        src_zone,
        dst_zone,
        state,
    } = args;
    let at = moment(at.as_deref(), now)?;
    let narrowed = zone.is_some()
        || src.is_some()
        || dst.is_some()
        || src_zone.is_some()
        || dst_zone.is_some()
        || state.is_some();
    let ask = |by_zone| pb::MatrixRequest {
        port: port.map(u32::from).unwrap_or(0),
        at_unix_nanos: at,
        zone: zone.clone().unwrap_or_default(),
        src: src.clone().unwrap_or_default(),
        dst: dst.clone().unwrap_or_default(),
        src_zone: src_zone.clone().unwrap_or_default(),
        dst_zone: dst_zone.clone().unwrap_or_default(),
        state: state.map_or(0, crate::encode::cell_state),
        by_zone,
    };
    // A node grid is unreadable past ZONE_VIEW_NODES nodes: the zone
    // view (small whatever the fleet) is asked first, and the node
    // grid only for a fleet small enough to read it.
    let automatic = !narrowed && format == Format::Table;
    let mut by_zone = zones || automatic;
    let mut matrix = client
        .get_matrix(ask(by_zone))
        .await
        .map_err(|s| status(url, s))?
        .into_inner();
    if automatic && !zones && matrix.nodes.len() <= ZONE_VIEW_NODES {
        by_zone = false;
        matrix = client
            .get_matrix(ask(false))
            .await
            .map_err(|s| status(url, s))?
            .into_inner();
    }
    let v = view::MatrixView::from(&matrix);
    Ok(match format {
        Format::Json if detail => json(&v),
        Format::Json => json(&v.summary()),
        Format::Table => {
            use std::io::IsTerminal;
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            // Every bad cell shown gets its top cause.
            let asks = cells_to_explain(&v, port, MAX_EXPLAINED);
            let answers = futures::future::join_all(asks.into_iter().map(|(s, d, p)| {
                let mut c = client.clone();
                async move {
                    let a = c
                        .why(pb::WhyRequest {
                            src: s.clone(),
                            dst: d.clone(),
                            port: u32::from(p),
                            at_unix_nanos: at,
                        })
                        .await
                        .ok()?
                        .into_inner();
                    let top = a.causes.first()?.code.clone();
                    Some(((s, d, p), top))
                }
            }))
            .await;
            let causes: Causes = answers.into_iter().flatten().collect();
            let grid = if by_zone {
                render_zones(&v, color, &causes, MAX_LISTED)
            } else if state.is_some() {
                cell_table(v.cells.iter().collect(), color, &causes, usize::MAX)
            } else {
                render_matrix(&v, port, color, &causes)
            };
            if at == 0 {
                grid
            } else {
                format!("as of {}\n{grid}", when::show(at, local_times()))
            }
        }
    })
}

const RESET: &str = "\x1b[0m";

fn colour(state: &str) -> &'static str {
    match state {
        "ok" => "\x1b[32m",
        "degraded" => "\x1b[33m",
        "failing" => "\x1b[1;31m",
        _ => "\x1b[90m",
    }
}

/// The symbol of a cell in the grid; the same width with or without colour.
fn mark(state: &str) -> &'static str {
    match state {
        "ok" => "ok",
        "degraded" => "DG",
        "failing" => "XX",
        _ => "??",
    }
}

fn paint(text: &str, state: &str, color: bool) -> String {
    if color {
        format!("{}{text}{RESET}", colour(state))
    } else {
        text.to_string()
    }
}

/// Which cells the grid shows: the given port, else the probe port over TCP.
fn grid_cells(m: &MatrixView, port: Option<u16>) -> (String, Vec<&CellView>) {
    match port {
        Some(p) => (
            format!("port {p}"),
            m.cells
                .iter()
                .filter(|c| c.port == p && c.kind != "icmp")
                .collect(),
        ),
        None => (
            format!("probe port {} (tcp)", reachmap_proto::DEFAULT_PROBE_PORT),
            m.cells
                .iter()
                .filter(|c| c.port == reachmap_proto::DEFAULT_PROBE_PORT && c.kind == "tcp")
                .collect(),
        ),
    }
}

fn percent(loss: f64) -> String {
    format!("{:.0}%", loss * 100.0)
}

/// The top cause of a bad cell, by (src, dst, port), from `reachmap why`.
pub type Causes = std::collections::HashMap<(String, String, u16), String>;

/// The cells worth explaining: failing or degraded TCP/HTTP cells, at most
/// `max` of them, worst first.
pub fn cells_to_explain(
    m: &MatrixView,
    port: Option<u16>,
    max: usize,
) -> Vec<(String, String, u16)> {
    let mut bad: Vec<&CellView> = m
        .cells
        .iter()
        .filter(|c| (c.state == "failing" || c.state == "degraded") && c.kind != "icmp")
        .filter(|c| port.is_none_or(|p| c.port == p))
        .collect();
    bad.sort_by_key(|c| rank(&c.state));
    bad.into_iter()
        .take(max)
        .map(|c| (c.src.clone(), c.dst.clone(), c.port))
        .collect()
}

pub fn render_matrix(m: &MatrixView, port: Option<u16>, color: bool, causes: &Causes) -> String {
    let mut out = String::new();
    if m.nodes.is_empty() {
        out.push_str("no nodes\n");
        return out;
    }
    let (what, cells) = grid_cells(m, port);
    let by_pair: BTreeMap<(&str, &str), &CellView> = cells
        .iter()
        .map(|c| ((c.src.as_str(), c.dst.as_str()), *c))
        .collect();
    // Destinations are numbered; the legend names them, so a wide fleet
    // still fits a terminal.
    let width = m.nodes.iter().map(|n| n.chars().count()).max().unwrap_or(4);
    let _ = writeln!(out, "reachability on {what}: rows reach columns");
    let _ = write!(out, "{:width$}  ", "");
    for (i, _) in m.nodes.iter().enumerate() {
        let _ = write!(out, "{:>3}", i);
    }
    out.push('\n');
    for (i, src) in m.nodes.iter().enumerate() {
        let _ = write!(out, "{src:<width$}  ");
        for (j, dst) in m.nodes.iter().enumerate() {
            if i == j {
                out.push_str("  ·");
                continue;
            }
            match by_pair.get(&(src.as_str(), dst.as_str())) {
                Some(c) => {
                    let _ = write!(out, " {}", paint(mark(&c.state), &c.state, color));
                }
                None => out.push_str("  -"),
            }
        }
        let _ = writeln!(out, "   {i} = {src}");
    }
    let counts = count_states(m.cells.iter());
    let _ = writeln!(
        out,
        "\n{} cells: {} ok, {} degraded, {} failing, {} unknown   (ok ok, DG degraded, XX failing, ?? unknown, - not probed)",
        m.cells.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    let bad: Vec<&CellView> = m
        .cells
        .iter()
        .filter(|c| c.state != "ok")
        .filter(|c| port.is_none_or(|p| c.port == p))
        .collect();
    if !bad.is_empty() {
        out.push('\n');
        out.push_str(&cell_table(bad, color, causes, usize::MAX));
    }
    out
}

/// Cells one line each, worst first; at most `limit`, and how many more.
pub fn cell_table(mut cells: Vec<&CellView>, color: bool, causes: &Causes, limit: usize) -> String {
    cells.sort_by(|a, b| {
        rank(&a.state)
            .cmp(&rank(&b.state))
            .then_with(|| (&a.src, &a.dst, a.port).cmp(&(&b.src, &b.dst, b.port)))
    });
    let more = cells.len().saturating_sub(limit);
    cells.truncate(limit);
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            vec![
                c.src.clone(),
                c.dst.clone(),
                target(c),
                paint(&c.state, &c.state, color),
                c.failure.clone().unwrap_or_else(|| "-".into()),
                percent(c.loss),
                c.rtt_ms
                    .map(|r| format!("{r:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                causes
                    .get(&(c.src.clone(), c.dst.clone(), c.port))
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = render(
        &[
            "SRC", "DST", "TARGET", "STATE", "FAILURE", "LOSS", "RTT", "CAUSE",
        ],
        &rows,
    );
    if more > 0 {
        let _ = writeln!(
            out,
            "... and {more} more (narrow with --zone, --src, --dst or --state)"
        );
    }
    out
}

/// Zones down and across: each pair's worst state and how many of its
/// cells are not ok; then those cells, one line each (at most `limit`).
pub fn render_zones(m: &MatrixView, color: bool, causes: &Causes, limit: usize) -> String {
    let mut out = String::new();
    if m.zones.is_empty() {
        out.push_str("no cells\n");
        return out;
    }
    let name = |z: &str| {
        if z.is_empty() {
            "(no zone)".to_string()
        } else {
            z.to_string()
        }
    };
    let mut zones: Vec<String> = m
        .zones
        .iter()
        .flat_map(|z| [z.src_zone.clone(), z.dst_zone.clone()])
        .collect();
    zones.sort();
    zones.dedup();
    let by_pair: BTreeMap<(&str, &str), &crate::select::ZoneView> = m
        .zones
        .iter()
        .map(|z| ((z.src_zone.as_str(), z.dst_zone.as_str()), z))
        .collect();
    let text = |z: &crate::select::ZoneView| {
        format!("{} {}/{}", mark(&z.worst), z.total() - z.ok, z.total())
    };
    let cell_width = m
        .zones
        .iter()
        .map(|z| text(z).len())
        .max()
        .unwrap_or(4)
        .max(3);
    let width = zones
        .iter()
        .map(|z| name(z).chars().count())
        .max()
        .unwrap_or(4);
    let _ = writeln!(
        out,
        "reachability by zone: rows reach columns (worst state, cells not ok / cells)"
    );
    let _ = write!(out, "{:width$} ", "");
    for (i, _) in zones.iter().enumerate() {
        let _ = write!(out, " {:>cell_width$}", i);
    }
    out.push('\n');
    for (i, src) in zones.iter().enumerate() {
        let _ = write!(out, "{:<width$} ", name(src));
        for dst in &zones {
            match by_pair.get(&(src.as_str(), dst.as_str())) {
                Some(z) => {
                    let t = format!("{:>cell_width$}", text(z));
                    let _ = write!(out, " {}", paint(&t, &z.worst, color));
                }
                None => {
                    let _ = write!(out, " {:>cell_width$}", "-");
                }
            }
        }
        let _ = writeln!(out, "   {i} = {}", name(src));
    }
    let total: u32 = m.zones.iter().map(|z| z.total()).sum();
    let [ok, degraded, failing, unknown] = m.zones.iter().fold([0u32; 4], |mut n, z| {
        n[0] += z.ok;
        n[1] += z.degraded;
        n[2] += z.failing;
        n[3] += z.unknown;
        n
    });
    let _ = writeln!(
        out,
        "\n{total} cells in {} zone(s): {ok} ok, {degraded} degraded, {failing} failing, {unknown} unknown",
        zones.len()
    );
    if !m.cells.is_empty() {
        out.push('\n');
        out.push_str(&cell_table(m.cells.iter().collect(), color, causes, limit));
    }
    if m.cells_left_out > 0 {
        let _ = writeln!(
            out,
            "{} more cells not ok are not listed (the worst {} are); narrow with --src-zone/--dst-zone, --zone, --src or --state",
            m.cells_left_out,
            m.cells.len()
        );
    }
    out
}

fn target(c: &CellView) -> String {
    let name = c
        .service
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if c.kind == "icmp" {
        "icmp".to_string()
    } else {
        format!("{}/{}{name}", c.kind, c.port)
    }
}

fn rank(state: &str) -> u8 {
    match state {
        "failing" => 0,
        "degraded" => 1,
        "unknown" => 2,
        _ => 3,
    }
}

fn count_states<'a>(cells: impl Iterator<Item = &'a CellView>) -> [usize; 4] {
    let mut n = [0; 4];
    for c in cells {
        let i = match c.state.as_str() {
            "ok" => 0,
            "degraded" => 1,
            "failing" => 2,
            _ => 3,
        };
        n[i] += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(src: &str, dst: &str, state: &str, failure: Option<&str>) -> CellView {
        CellView {
            src: src.into(),
            dst: dst.into(),
            port: 7442,
            kind: "tcp".into(),
            service: None,
            state: state.into(),
            loss: if state == "ok" { 0.0 } else { 1.0 },
            rtt_ms: (state == "ok").then_some(0.2),
            rtt_p99_ms: None,
            failure: failure.map(String::from),
            sent: 10,
            address: "198.18.0.12".into(),
            updated: 0,
        }
    }

    #[test]
    fn grid_marks_every_pair_and_lists_problems() {
        let m = MatrixView {
            nodes: vec!["a".into(), "b".into()],
            cells: vec![
                cell("a", "b", "failing", Some("timeout")),
                cell("b", "a", "ok", None),
            ],
            zones: Vec::new(),
            cells_left_out: 0,
        };
        let causes: Causes = [(
            ("a".to_string(), "b".to_string(), 7442),
            "FIREWALL_INBOUND".to_string(),
        )]
        .into();
        let plain = render_matrix(&m, None, false, &causes);
        let lines: Vec<&str> = plain.lines().collect();
        assert!(
            lines[2].starts_with("a    ·") && lines[2].contains("XX"),
            "{plain}"
        );
        assert!(lines[3].contains("ok") && lines[3].contains('·'), "{plain}");
        assert!(!plain.contains('\x1b'), "no colour when plain: {plain}");
        assert!(
            plain
                .lines()
                .any(|l| l.starts_with("a") && l.contains("failing") && l.contains("timeout")),
            "{plain}"
        );
        assert!(plain.contains("FIREWALL_INBOUND"), "{plain}");
        let coloured = render_matrix(&m, None, true, &causes);
        assert!(coloured.contains("\x1b[1;31mXX"), "{coloured}");
    }

    #[test]
    fn the_zone_view_shows_each_pair_and_lists_what_is_not_ok() {
        let zone = |s: &str, d: &str, ok, failing| crate::select::ZoneView {
            src_zone: s.into(),
            dst_zone: d.into(),
            worst: if failing > 0 { "failing" } else { "ok" }.into(),
            ok,
            degraded: 0,
            failing,
            unknown: 0,
        };
        let m = MatrixView {
            nodes: vec!["a-1".into(), "b-1".into()],
            cells: vec![
                cell("a-1", "b-1", "failing", Some("timeout")),
                cell("a-2", "b-1", "failing", Some("timeout")),
            ],
            zones: vec![
                zone("", "a", 2, 0),
                zone("a", "a", 2, 0),
                zone("a", "b", 0, 2),
                zone("b", "a", 2, 0),
            ],
            cells_left_out: 0,
        };
        let plain = render_zones(&m, false, &Causes::new(), 1);
        let lines: Vec<&str> = plain.lines().collect();
        assert!(lines[0].starts_with("reachability by zone"), "{plain}");
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(name))
                .copied()
                .unwrap_or_default()
        };
        assert!(row("(no zone)").contains("ok 0/2"), "{plain}");
        assert!(
            row("a ").contains("XX 2/2") && row("a ").contains("ok 0/2"),
            "{plain}"
        );
        assert!(
            row("b ").contains('-'),
            "b to no zone is not probed: {plain}"
        );
        assert!(
            plain.contains("8 cells in 3 zone(s): 6 ok, 0 degraded, 2 failing"),
            "{plain}"
        );
        // One cell listed, and how many more.
        assert!(
            plain.contains("a-1") && plain.contains("... and 1 more"),
            "{plain}"
        );
        assert_eq!(
            render_zones(
                &MatrixView {
                    nodes: vec![],
                    cells: vec![],
                    zones: vec![],
                    cells_left_out: 0,
                },
                false,
                &Causes::new(),
                5
            ),
            "no cells\n"
        );
    }
}
