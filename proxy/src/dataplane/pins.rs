//! Where the proxy's pins live under the pin path, and which layout version
//! they belong to (see [`proxy_common::LAYOUT_VERSION`]).
//!
//! ```text
//! <pin-path>/v<N>/maps/<MAP>                         the maps of layout version N
//! <pin-path>/v<N>/links/cgroup-<cgroup id>/<program> the links, per cgroup
//! <pin-path>/v<N>/links/tc-<ifindex>/<program>       the tc programs' links, per device
//! <pin-path>/maps, <pin-path>/links                  the layout before versions: version 0
//! ```
//!
//! [`Inventory::read`] only looks, so a daemon can refuse pins of a newer
//! layout before it has changed anything. Removing pins (after a migration, or
//! by `proxy cleanup`) is here too; bpffs holds only directories and pins.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use proxy_common::LAYOUT_VERSION;

/// Where things live under the pin path, for this daemon's layout version.
#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory of one layout version (the root itself for version 0).
    pub fn dir_of(&self, version: u32) -> PathBuf {
        if version == 0 {
            self.root.clone()
        } else {
            self.root.join(format!("v{version}"))
        }
    }

    /// `<root>/v<LAYOUT_VERSION>`.
    pub fn version_dir(&self) -> PathBuf {
        self.dir_of(LAYOUT_VERSION)
    }

    /// The maps of this layout version.
    pub fn maps(&self) -> PathBuf {
        self.version_dir().join(MAPS)
    }

    /// The links of this layout version, one directory per cgroup.
    pub fn links(&self) -> PathBuf {
        self.version_dir().join(LINKS)
    }

    /// Links attached to one cgroup live in a directory named for the cgroup's
    /// id (its inode number on cgroup2), so a daemon started on another cgroup
    /// never takes over the wrong links. (bpffs holds no plain files.)
    pub fn links_for(&self, cgroup_id: u64) -> PathBuf {
        cgroup_links(&self.links(), cgroup_id)
    }

    /// The tc programs' links on one device, named for its ifindex
    /// (`links/tc-<ifindex>/<program>`).
    pub fn tc_links_for(&self, ifindex: u32) -> PathBuf {
        self.links().join(format!("{TC_LINKS_PREFIX}{ifindex}"))
    }
}

/// The prefix of a device's link directory (see [`PinLayout::tc_links_for`]).
pub const TC_LINKS_PREFIX: &str = "tc-";
/// The prefix of a cgroup's link directory (see [`PinLayout::links_for`]).
pub const CGROUP_LINKS_PREFIX: &str = "cgroup-";

const MAPS: &str = "maps";
const LINKS: &str = "links";

fn cgroup_links(links: &Path, cgroup_id: u64) -> PathBuf {
    links.join(format!("{CGROUP_LINKS_PREFIX}{cgroup_id}"))
}

/// Errors while reading what a pin path holds.
#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error("cannot read the pin directory {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dir} holds pins of layout version {found}, but this proxy uses layout version \
         {expected}: a newer proxy made them, and this one cannot read them safely. Nothing \
         was changed, and the Services on this node keep working through those pins. Run that \
         newer proxy (or a later one) instead; or, to go back to this version, run `proxy \
         cleanup --pin-path {root}` first (that detaches the hooks: Services on this node stop \
         working until this proxy has programmed them again)",
        dir = dir.display(),
        root = root.display()
    )]
    NewerLayout {
        dir: PathBuf,
        found: u32,
        expected: u32,
        root: PathBuf,
    },
}

/// Pins of one layout version found under the pin path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundLayout {
    pub version: u32,
    /// `<dir>/maps`, `<dir>/links`: those that exist.
    pub maps: Option<PathBuf>,
    pub links: Option<PathBuf>,
    /// The version directory (`<root>/v<N>`); `None` for version 0, whose
    /// directories sit in the root.
    pub dir: Option<PathBuf>,
}

impl FoundLayout {
    /// Where this layout pinned the links of one cgroup, if it has links.
    pub fn links_for(&self, cgroup_id: u64) -> Option<PathBuf> {
        self.links.as_deref().map(|l| cgroup_links(l, cgroup_id))
    }

    /// Removes every pin of this layout, returning the pins removed. Removing
    /// a link's last pin detaches its hook; a map is freed once no program
    /// and no pin holds it.
    pub fn remove(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for dir in [&self.links, &self.maps].into_iter().flatten() {
            if dir.exists() {
                removed.extend(remove_tree(dir)?);
            }
        }
        if let Some(dir) = &self.dir
            && dir.exists()
        {
            removed.extend(remove_tree(dir)?);
        }
        Ok(removed)
    }
}

/// What a pin path holds, by layout version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Sorted by version.
    pub layouts: Vec<FoundLayout>,
    /// Entries that are no layout of ours (left alone).
    pub unknown: Vec<PathBuf>,
}

impl Inventory {
    /// Reads the pin path without changing anything. A missing pin path holds
    /// nothing.
    pub fn read(pins: &PinLayout) -> Result<Self, PinsError> {
        let entries = match fs::read_dir(&pins.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(PinsError::Read {
                    path: pins.root.clone(),
                    source,
                });
            }
        };
        let mut inventory = Self::default();
        let mut v0 = FoundLayout {
            version: 0,
            maps: None,
            links: None,
            dir: None,
        };
        for entry in entries {
            let entry = entry.map_err(|source| PinsError::Read {
                path: pins.root.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match (name.as_ref(), path.is_dir()) {
                (MAPS, true) => v0.maps = Some(path),
                (LINKS, true) => v0.links = Some(path),
                (other, true) => match parse_version(other) {
                    Some(version) => {
                        let existing = |sub: &str| Some(path.join(sub)).filter(|p| p.is_dir());
                        inventory.layouts.push(FoundLayout {
                            version,
                            maps: existing(MAPS),
                            links: existing(LINKS),
                            dir: Some(path),
                        });
                    }
                    None => inventory.unknown.push(path),
                },
                (_, false) => inventory.unknown.push(path),
            }
        }
        if v0.maps.is_some() || v0.links.is_some() {
            inventory.layouts.push(v0);
        }
        inventory.layouts.sort_by_key(|l| l.version);
        Ok(inventory)
    }

    /// Refuses pins of a newer layout version (the newest found is named).
    pub fn check(&self, pins: &PinLayout) -> Result<(), PinsError> {
        match self.layouts.last() {
            Some(newest) if newest.version > LAYOUT_VERSION => Err(PinsError::NewerLayout {
                dir: pins.dir_of(newest.version),
                found: newest.version,
                expected: LAYOUT_VERSION,
                root: pins.root.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Layouts older than this daemon's, newest first (the order in which a
    /// migration looks for links to take over).
    pub fn older(&self) -> Vec<FoundLayout> {
        self.layouts
            .iter()
            .rev()
            .filter(|l| l.version < LAYOUT_VERSION)
            .cloned()
            .collect()
    }
}

/// `v<N>` with N a decimal number.
fn parse_version(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes every pin of every layout version, newer ones included (this is
/// the explicit reset, `proxy cleanup`), then the pin path itself if it is
/// empty. Missing pins are fine. Returns the pins removed.
pub fn remove_all(pins: &PinLayout) -> io::Result<Vec<PathBuf>> {
    let inventory = Inventory::read(pins).map_err(|e| match e {
        PinsError::Read { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    let mut removed = Vec::new();
    for layout in &inventory.layouts {
        removed.extend(layout.remove()?);
    }
    let _ = fs::remove_dir(&pins.root);
    Ok(removed)
}

/// Removes a directory of pins and directories, returning the pins removed.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            removed.extend(remove_tree(&path)?);
        } else {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    fs::remove_dir(dir)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    fn mkdirs(root: &Path, dirs: &[&str]) {
        for d in dirs {
            fs::create_dir_all(root.join(d)).unwrap();
        }
    }

    fn versions(inventory: &Inventory) -> Vec<u32> {
        inventory.layouts.iter().map(|l| l.version).collect()
    }

    #[test]
    fn the_current_layout_is_versioned_by_directory() {
        let pins = PinLayout::new("/sys/fs/bpf/proxy");
        let v = LAYOUT_VERSION;
        assert_eq!(
            pins.maps(),
            PathBuf::from(format!("/sys/fs/bpf/proxy/v{v}/maps"))
        );
        assert_eq!(
            pins.links_for(42),
            PathBuf::from(format!("/sys/fs/bpf/proxy/v{v}/links/cgroup-42"))
        );
        assert_eq!(pins.dir_of(0), PathBuf::from("/sys/fs/bpf/proxy"));
    }

    #[test]
    fn a_missing_or_empty_pin_path_holds_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let pins = PinLayout::new(tmp.path().join("absent"));
        assert_eq!(Inventory::read(&pins).unwrap(), Inventory::default());
        let pins = PinLayout::new(tmp.path());
        let inventory = Inventory::read(&pins).unwrap();
        assert!(inventory.layouts.is_empty());
        inventory.check(&pins).unwrap();
    }

    #[test]
    fn the_unversioned_layout_is_version_0_and_older() {
        let tmp = tempfile::tempdir().unwrap();
        mkdirs(tmp.path(), &["maps", "links/cgroup-7"]);
        let pins = PinLayout::new(tmp.path());
        let inventory = Inventory::read(&pins).unwrap();
        assert_eq!(versions(&inventory), [0]);
        inventory.check(&pins).unwrap();
        let older = inventory.older();
        assert_eq!(older.len(), 1);
        assert_eq!(
            older[0].links_for(7),
            Some(tmp.path().join("links/cgroup-7"))
        );
        assert_eq!(older[0].dir, None);
    }

    #[test]
    fn a_newer_layout_is_refused_with_both_versions_and_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let newer = LAYOUT_VERSION + 1;
        mkdirs(
            tmp.path(),
            &[
                &format!("v{LAYOUT_VERSION}/maps"),
                &format!("v{newer}/maps"),
            ],
        );
        let pins = PinLayout::new(tmp.path());
        let inventory = Inventory::read(&pins).unwrap();
        assert_eq!(versions(&inventory), [LAYOUT_VERSION, newer]);
        let message = inventory.check(&pins).unwrap_err().to_string();
        for needle in [
            format!("layout version {newer}"),
            format!("layout version {LAYOUT_VERSION}"),
            "Nothing was changed".to_owned(),
            format!("proxy cleanup --pin-path {}", tmp.path().display()),
        ] {
            assert!(
                message.contains(&needle),
                "{needle:?} missing from: {message}"
            );
        }
    }

    #[test]
    fn names_that_are_no_layout_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        mkdirs(tmp.path(), &["v", "vnext", "v1x", "other"]);
        fs::write(tmp.path().join("file"), "").unwrap();
        let pins = PinLayout::new(tmp.path());
        let inventory = Inventory::read(&pins).unwrap();
        assert!(inventory.layouts.is_empty(), "{inventory:?}");
        assert_eq!(inventory.unknown.len(), 5);
    }

    #[test]
    fn removing_a_layout_removes_only_its_pins() {
        let tmp = tempfile::tempdir().unwrap();
        mkdirs(
            tmp.path(),
            &["maps", "links/cgroup-1", &format!("v{LAYOUT_VERSION}/maps")],
        );
        fs::write(tmp.path().join("maps/SVC_V4"), "").unwrap();
        fs::write(tmp.path().join("links/cgroup-1/sock_connect4"), "").unwrap();
        let pins = PinLayout::new(tmp.path());
        let inventory = Inventory::read(&pins).unwrap();
        let removed = inventory.older()[0].remove().unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let after = Inventory::read(&pins).unwrap();
        assert_eq!(versions(&after), [LAYOUT_VERSION]);

        let removed = remove_all(&pins).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(!tmp.path().exists());
    }
}
