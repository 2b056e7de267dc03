//! Kernel memory of the proxy's eBPF maps: the `memlock` the kernel charges
//! each map pinned under a pin path (`bpftool -j map show pinned FILE`, its
//! `bytes_memlock`, the same number as `memlock` in the map's
//! `/proc/PID/fdinfo`), per map and summed.
//!
//! A preallocated hash map is charged for its whole capacity when created; a
//! map with `BPF_F_NO_PREALLOC` for its bucket array (16 bytes per bucket,
//! the capacity rounded up to a power of two) plus the entries present.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// One pinned map's kernel memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    pub name: String,
    pub max_entries: u64,
    pub bytes: u64,
}

/// The part of `bpftool -j map show` read here.
#[derive(Deserialize)]
struct Shown {
    name: String,
    max_entries: u64,
    bytes_memlock: u64,
}

/// Every map pinned in a `maps` directory under `pin_path`, largest first.
pub fn pinned(pin_path: &Path) -> anyhow::Result<Vec<MapMemory>> {
    let mut files = Vec::new();
    collect(pin_path, &mut files)?;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let done = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(&file)
            .output()
            .context("running bpftool (scripts/setup.sh installs it)")?;
        if !done.status.success() {
            bail!(
                "bpftool map show pinned {}: {}",
                file.display(),
                String::from_utf8_lossy(&done.stderr).trim()
            );
        }
        out.push(
            parse(&String::from_utf8_lossy(&done.stdout))
                .with_context(|| format!("reading bpftool's answer for {}", file.display()))?,
        );
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The pins under directories named `maps`, below `dir`.
fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    let in_maps = dir.file_name().is_some_and(|n| n == "maps");
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&entry.path(), out)?;
        } else if in_maps {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// One map of `bpftool -j map show pinned FILE`.
fn parse(json: &str) -> anyhow::Result<MapMemory> {
    let shown: Shown = serde_json::from_str(json.trim())?;
    Ok(MapMemory {
        name: shown.name,
        max_entries: shown.max_entries,
        bytes: shown.bytes_memlock,
    })
}

/// The sum of `maps`, in MiB.
pub fn total_mib(maps: &[MapMemory]) -> f64 {
    mib(maps.iter().map(|m| m.bytes).sum())
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The maps of at least 1 MiB, largest first: `SVC_V4 64.0, CT_V4 28.1, …`
/// (MiB), and how many smaller ones there are.
pub fn summary(maps: &[MapMemory]) -> String {
    let large: Vec<String> = maps
        .iter()
        .filter(|m| m.bytes >= 1 << 20)
        .map(|m| format!("{} {:.1}", m.name, mib(m.bytes)))
        .collect();
    let small = maps.len() - large.len();
    let small_bytes: u64 = maps
        .iter()
        .filter(|m| m.bytes < 1 << 20)
        .map(|m| m.bytes)
        .sum();
    format!(
        "{} MiB; {small} more under 1 MiB each ({:.1} MiB)",
        large.join(", "),
        mib(small_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_answers_are_read_and_summed() {
        let svc = parse(
            r#"{"id":7,"type":"hash","name":"SVC_V4","flags":1,"bytes_key":12,
                "bytes_value":12,"max_entries":4194304,"bytes_memlock":67108864,
                "frozen":0,"pinned":["/x/v2/maps/SVC_V4"]}"#,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            svc,
            MapMemory {
                name: "SVC_V4".into(),
                max_entries: 4_194_304,
                bytes: 64 << 20
            }
        );
        let maps = vec![
            svc,
            MapMemory {
                name: "NODE_CFG".into(),
                max_entries: 1,
                bytes: 512 << 10,
            },
        ];
        assert!((total_mib(&maps) - 64.5).abs() < 1e-9);
        assert_eq!(
            summary(&maps),
            "SVC_V4 64.0 MiB; 1 more under 1 MiB each (0.5 MiB)"
        );
        assert!(parse("{}").is_err());
    }
}
