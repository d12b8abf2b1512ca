//! Pure parsers of the /proc files behind `Resources`. Each returns the
//! figures or a `FieldError` naming the field that was missing or bad; the
//! sampler adds the path.

use crate::facts::resources::{PressureFile, PressureLine};

/// What is wrong with one field of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub what: String,
}

fn err(field: &str, what: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        what: what.into(),
    }
}

fn num<T: std::str::FromStr>(field: &str, value: Option<&str>) -> Result<T, FieldError> {
    let v = value.ok_or_else(|| err(field, "missing"))?;
    v.parse()
        .map_err(|_| err(field, format!("not a number: {v:?}")))
}

fn finite(field: &str, value: Option<&str>) -> Result<f64, FieldError> {
    let v: f64 = num(field, value)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(err(field, format!("out of range: {v}")))
    }
}

/// `/proc/loadavg`: `0.60 0.86 1.25 2/92 19864`.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], FieldError> {
    let mut w = text.split_whitespace();
    Ok([
        finite("load1", w.next())?,
        finite("load5", w.next())?,
        finite("load15", w.next())?,
    ])
}

/// CPU time counters of the aggregate `cpu` line of /proc/stat, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal (guest time is already in
    /// user and nice).
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
    pub steal: u64,
    /// Number of `cpuN` lines.
    pub cpus: u32,
}

impl CpuTimes {
    /// Busy and steal percent between an earlier reading and this one; `None`
    /// when no time passed or the counters went backwards (another boot).
    pub fn usage_since(&self, earlier: &CpuTimes) -> Option<(f64, f64)> {
        let busy = self.busy.checked_sub(earlier.busy)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        let total = busy.checked_add(idle)?;
        if total == 0 {
            return None;
        }
        let pct = |v: u64| v as f64 * 100.0 / total as f64;
        Some((pct(busy), pct(steal)))
    }
}

/// `/proc/stat`: `cpu  user nice system idle iowait irq softirq steal guest
/// guest_nice` (older kernels stop after fewer columns; missing ones count 0).
pub fn parse_stat(text: &str) -> Result<CpuTimes, FieldError> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let mut v = [0u64; 8];
            let mut fields = rest.split_whitespace();
            const NAMES: [&str; 8] = [
                "cpu user",
                "cpu nice",
                "cpu system",
                "cpu idle",
                "cpu iowait",
                "cpu irq",
                "cpu softirq",
                "cpu steal",
            ];
            for (i, name) in NAMES.iter().enumerate() {
                match fields.next() {
                    Some(f) => v[i] = num(name, Some(f))?,
                    // user, nice, system, idle are in every kernel.
                    None if i < 4 => return Err(err(name, "missing")),
                    None => break,
                }
            }
            let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
            let sum = |xs: &[u64]| xs.iter().try_fold(0u64, |a, &x| a.checked_add(x));
            times = Some(CpuTimes {
                busy: sum(&[user, nice, system, irq, softirq, steal])
                    .ok_or_else(|| err("cpu", "counters overflow"))?,
                idle: sum(&[idle, iowait]).ok_or_else(|| err("cpu", "counters overflow"))?,
                steal,
                cpus: 0,
            });
        } else if line
            .strip_prefix("cpu")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            cpus = cpus.saturating_add(1);
        }
    }
    let mut times = times.ok_or_else(|| err("cpu", "no aggregate cpu line"))?;
    if cpus == 0 {
        return Err(err("cpuN", "no per-CPU lines"));
    }
    times.cpus = cpus;
    Ok(times)
}

/// The /proc/meminfo figures the agent reports, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// `/proc/meminfo`: `MemTotal:       24684096 kB`. Kernels before 3.14 have no
/// MemAvailable; MemFree + Buffers + Cached stands in for it.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, FieldError> {
    let get = |key: &str| -> Result<Option<u64>, FieldError> {
        let Some(value) = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find_map(|(k, v)| (k == key).then_some(v))
        else {
            return Ok(None);
        };
        let mut w = value.split_whitespace();
        let kb: u64 = num(key, w.next())?;
        match w.next() {
            Some("kB") => kb
                .checked_mul(1024)
                .map(Some)
                .ok_or_else(|| err(key, "out of range")),
            None => Ok(Some(kb)),
            Some(unit) => Err(err(key, format!("unknown unit {unit:?}"))),
        }
    };
    let required = |v: Option<u64>, key: &str| v.ok_or_else(|| err(key, "missing"));
    let mem_total = required(get("MemTotal")?, "MemTotal")?;
    let mem_available = match get("MemAvailable")? {
        Some(v) => v,
        None => {
            let free = required(get("MemFree")?, "MemAvailable")?;
            free.saturating_add(get("Buffers")?.unwrap_or(0))
                .saturating_add(get("Cached")?.unwrap_or(0))
        }
    };
    Ok(MemInfo {
        mem_total,
        mem_available,
        swap_total: required(get("SwapTotal")?, "SwapTotal")?,
        swap_free: required(get("SwapFree")?, "SwapFree")?,
    })
}

/// `/proc/pressure/*`: `some avg10=6.57 avg60=3.15 avg300=4.33 total=263118712`
/// and optionally a `full` line.
pub fn parse_pressure(text: &str) -> Result<PressureFile, FieldError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let kind = w.next();
        let slot = match kind {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let kind = kind.unwrap_or_default();
        let mut p = PressureLine::default();
        let mut seen = 0;
        for pair in w {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| err(kind, format!("not key=value: {pair:?}")))?;
            let field = format!("{kind} {key}");
            match key {
                "avg10" => p.avg10 = finite(&field, Some(value))?,
                "avg60" => p.avg60 = finite(&field, Some(value))?,
                "avg300" => p.avg300 = finite(&field, Some(value))?,
                "total" => p.total_us = num(&field, Some(value))?,
                _ => continue,
            }
            seen += 1;
        }
        if seen < 4 {
            return Err(err(kind, "expected avg10, avg60, avg300 and total"));
        }
        *slot = Some(p);
    }
    Ok(PressureFile {
        some: some.ok_or_else(|| err("some", "missing"))?,
        full,
    })
}

/// `/proc/net/netstat`: pairs of lines, a header (`TcpExt: SyncookiesSent
/// ...`) then the values (`TcpExt: 0 ...`). Returns TcpExt ListenOverflows and
/// ListenDrops.
pub fn parse_netstat(text: &str) -> Result<(u64, u64), FieldError> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let Some(names) = header.strip_prefix("TcpExt:") else {
            continue;
        };
        let values = lines
            .next()
            .and_then(|l| l.strip_prefix("TcpExt:"))
            .ok_or_else(|| err("TcpExt", "header without a values line"))?;
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(err(
                "TcpExt",
                format!("{} names but {} values", names.len(), values.len()),
            ));
        }
        let get = |key: &str| {
            let i = names
                .iter()
                .position(|n| *n == key)
                .ok_or_else(|| err(key, "missing"))?;
            num(key, values.get(i).copied())
        };
        return Ok((get("ListenOverflows")?, get("ListenDrops")?));
    }
    Err(err("TcpExt", "missing"))
}

/// A file holding one number (`nf_conntrack_count`, `nf_conntrack_max`).
pub fn parse_number(field: &str, text: &str) -> Result<u64, FieldError> {
    let mut w = text.split_whitespace();
    let n = num(field, w.next())?;
    match w.next() {
        None => Ok(n),
        Some(extra) => Err(err(field, format!("unexpected {extra:?} after the number"))),
    }
}
