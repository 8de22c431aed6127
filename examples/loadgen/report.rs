//! What a run reports: a JSON line built by hand (no crates), percentiles, and what /proc says
//! about CPU use, machine load and a server's memory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::time::Instant;

/// One flat JSON object, written as one line.
pub struct Json(String);

impl Json {
    pub fn new(mode: &str) -> Json {
        let mut json = Json(String::from("{"));
        json.text("mode", mode);
        json
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&format!("\"{key}\":"));
    }

    pub fn text(&mut self, key: &str, value: &str) -> &mut Json {
        self.key(key);
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        self.0.push_str(&format!("\"{escaped}\""));
        self
    }

    pub fn number(&mut self, key: &str, value: f64) -> &mut Json {
        self.key(key);
        if value.is_finite() {
            // Three significant decimals are plenty for these measurements.
            self.0
                .push_str(&format!("{}", (value * 1000.0).round() / 1000.0));
        } else {
            self.0.push_str("null");
        }
        self
    }

    pub fn int(&mut self, key: &str, value: u64) -> &mut Json {
        self.key(key);
        self.0.push_str(&value.to_string());
        self
    }

    /// A nested object of counts, e.g. errors by kind.
    pub fn counts(&mut self, key: &str, counts: &BTreeMap<&'static str, u64>) -> &mut Json {
        self.key(key);
        let inner: Vec<String> = counts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        self.0.push_str(&format!("{{{}}}", inner.join(",")));
        self
    }

    /// A list of numbers.
    pub fn list(&mut self, key: &str, values: &[f64]) -> &mut Json {
        self.key(key);
        let inner: Vec<String> = values
            .iter()
            .map(|v| format!("{}", (v * 1000.0).round() / 1000.0))
            .collect();
        self.0.push_str(&format!("[{}]", inner.join(",")));
        self
    }

    /// The label, round and machine load every line carries.
    pub fn common(&mut self, args: &crate::Args) -> &mut Json {
        if let Ok(label) = args.text("label", Some("")) {
            self.text("label", &label);
        }
        if let Ok(round) = args.text("round", Some("")) {
            self.text("round", &round);
        }
        self.text("loadavg", &loadavg())
    }

    pub fn finish(&mut self) -> String {
        let mut line = std::mem::take(&mut self.0);
        line.push('}');
        line
    }
}

/// The `p`-th percentile (0–100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sort(values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg gives them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time of this process and of the whole machine at one instant, to tell afterwards how
/// many cores the load generator took from the server and how busy the machine was.
pub struct CpuClock {
    at: Instant,
    own_ticks: u64,
    busy_ticks: u64,
}

/// Clock ticks per second for /proc times; 100 on every Linux this runs on.
const TICKS: f64 = 100.0;

impl CpuClock {
    pub fn now() -> CpuClock {
        CpuClock {
            at: Instant::now(),
            own_ticks: own_ticks(),
            busy_ticks: busy_ticks(),
        }
    }

    /// (cores used by this process, cores busy in the whole machine) since `self`.
    pub fn cores_since(&self) -> (f64, f64) {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let own = own_ticks().saturating_sub(self.own_ticks) as f64 / TICKS / secs;
        let busy = busy_ticks().saturating_sub(self.busy_ticks) as f64 / TICKS / secs;
        (own, busy)
    }
}

fn own_ticks() -> u64 {
    // Fields 14 and 15 (utime, stime) of /proc/self/stat, counted after the ")" that ends the
    // command name (which may itself hold spaces).
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn busy_ticks() -> u64 {
    // The "cpu" line of /proc/stat: everything but idle and iowait.
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// Memory of a process tree (the process and all its descendants), from /proc.
#[derive(Default, Clone, Copy)]
pub struct Memory {
    pub pss_kib: u64,
    pub rss_kib: u64,
    pub processes: u64,
    pub threads: u64,
}

/// Sums PSS (from smaps_rollup), RSS and thread counts over `pid` and its descendants: popstate
/// and the probe are one process, Dovecot is a tree of them.
pub fn tree_memory(pid: u32) -> Memory {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut total = Memory::default();
    let mut todo = vec![pid];
    // Bounded: a process tree on this machine has far fewer than a million members.
    while let Some(p) = todo.pop() {
        if total.processes > 1_000_000 {
            break;
        }
        let Ok(rollup) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        total.processes += 1;
        total.pss_kib += field_kib(&rollup, "Pss:");
        total.rss_kib += field_kib(&rollup, "Rss:");
        if let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) {
            total.threads += field_kib(&status, "Threads:");
        }
        todo.extend(children.get(&p).into_iter().flatten());
    }
    total
}

fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The first number after `name` at the start of a line ("Pss:   1234 kB").
fn field_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Kernel memory machine-wide (thread stacks, page tables, unreclaimable slab: sockets live
/// there), KiB. It includes the load generator's own sockets: compare targets, not absolutes.
pub fn kernel_kib() -> u64 {
    let Ok(meminfo) = fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    ["KernelStack:", "PageTables:", "SUnreclaim:"]
        .iter()
        .map(|name| field_kib(&meminfo, name))
        .sum()
}
