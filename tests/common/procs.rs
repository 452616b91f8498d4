//! Processes seen from `/proc`: the stand-in tenders an endpoint started (through the
//! launch records of `PETREL_STAND_IN_RECORD_DIR`) and a process's peak memory.

use std::collections::BTreeMap;
use std::path::Path;

/// The environment variable that makes the stand-in tender write a launch record.
pub const RECORD_DIR_VAR: &str = "PETREL_STAND_IN_RECORD_DIR";

/// A live stand-in tender: its pid and the unikernel name it was started for (the
/// `--name=` argument petrel passes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tender {
    /// Process id.
    pub pid: u32,
    /// The argument vector it was started with.
    pub argv: Vec<String>,
}

impl Tender {
    /// The image file it runs (the argument after the tender options).
    pub fn image(&self) -> &str {
        self.argv
            .iter()
            .skip(1)
            .find(|a| !a.starts_with("--"))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Whether `pid` is alive (exists and is not a zombie) and still runs `argv`.
fn alive(pid: u32, argv: &[String]) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')));
    if zombie {
        return false;
    }
    // The pid could have been reused by another program.
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let running: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    running == argv
}

/// Every stand-in tender that wrote a launch record into `dir` and is still alive.
pub fn live_tenders(dir: &Path) -> Vec<Tender> {
    let mut live = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return live;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pid = u32::try_from(record["pid"].as_u64().unwrap()).unwrap();
        let argv: Vec<String> = record["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        if alive(pid, &argv) {
            live.push(Tender { pid, argv });
        }
    }
    live.sort();
    live
}

/// Live stand-in tenders of `dir`, counted by image file.
pub fn tenders_by_image(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for tender in live_tenders(dir) {
        *counts.entry(tender.image().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`: peak resident set; `VmRSS`: now).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The fields of `/proc/<pid>/status` named `name`, split on whitespace.
pub fn status(pid: u32, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let prefix = format!("{name}:");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line[prefix.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
