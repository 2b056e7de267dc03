//! [`ManifestDir`]: the current contents of a manifest directory, file by file.
//!
//! A file that cannot be read as YAML (or is not UTF-8, or is over one of
//! the [`Limits`]) keeps its last good contents (what is programmed stays)
//! and is reported and counted once per change. No more than
//! `max_bytes + 1` bytes of a file are ever read. A file that disappears
//! takes its objects with it. Hidden files (editor swap files, the `..data`
//! links of a mounted ConfigMap) are skipped. A symbolic link is followed
//! only when its target stays inside the directory (a mounted ConfigMap's
//! `name.yaml → ..data/name.yaml → ..<timestamp>/name.yaml` does); then the
//! resolved path is what is read, so the link cannot be re-pointed between
//! the check and the read. A link that leads out (or nowhere) is never read:
//! it is reported and counted once per change of its target
//! (`symlink_outside`), and a file it replaced keeps its last good contents.
//!
//! A rescan reads only the files whose metadata (device, inode, size, mtime,
//! ctime) changed since they were last read: the periodic safety-net rescan
//! of a directory holding thousands of Services must not re-read and hash
//! megabytes every few seconds. A file written moments before it was read may
//! change again within the same timestamp tick, so its metadata is trusted
//! only once it is older than [`SETTLE`] (as git does for its index).

use std::{
    collections::{BTreeMap, BTreeSet, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::{
    limits::{Exceeded, Limits},
    parse::{ManifestError, ParsedFile, parse_file_with},
};
use crate::model::{EndpointSlice, ObjectRef, Service};
use crate::telemetry::{ConfigRejects, ConfigSource};

/// A file whose last change is younger than this is read again at every
/// scan, whatever its metadata says: a write in the same timestamp tick as
/// the last read would leave size and times unchanged.
const SETTLE: Duration = Duration::from_secs(2);

/// One file's last good parse.
struct FileState {
    fingerprint: u64,
    /// The metadata when the file was last read, if it had settled then: while
    /// it is the same, the contents are too.
    stamp: Option<Stamp>,
    good: Option<ParsedFile>,
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The metadata of `path` (symlinks followed), if it can be had.
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// True when the file last changed at least [`SETTLE`] before `now`: a
    /// later write would change its times. A time in the future never settles.
    fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let newest = self.mtime.max(self.ctime);
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let (Ok(secs), Ok(nanos)) = (u64::try_from(newest.0), u32::try_from(newest.1)) else {
            return false;
        };
        let changed = Duration::new(secs, nanos.min(999_999_999));
        now.checked_sub(changed).is_some_and(|age| age >= settle)
    }
}

/// The directory's files and what they hold.
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    rejects: ConfigRejects,
    limits: Limits,
    /// [`SETTLE`], shorter in tests.
    settle: Duration,
    /// Links that lead out of the directory, with the target last reported.
    outside_links: BTreeMap<PathBuf, String>,
}

/// Errors reading the directory itself.
#[derive(Debug, thiserror::Error)]
#[error("cannot read manifest directory {dir}")]
pub struct DirError {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            rejects: ConfigRejects::default(),
            limits: Limits::default(),
            settle: SETTLE,
            outside_links: BTreeMap::new(),
        }
    }

    /// Counts each problem (reported once per change of a file) in `rejects`.
    pub fn with_rejects(mut self, rejects: ConfigRejects) -> Self {
        self.rejects = rejects;
        self
    }

    /// Parses each file under `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory. Returns true when the set of objects may have
    /// changed. Problems are logged here, once per change of a file.
    pub fn scan(&mut self) -> Result<Changes, DirError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| DirError {
            dir: self.dir.clone(),
            source,
        })?;
        // Links must stay inside the directory as it really is.
        let root = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let mut seen = Vec::new();
        let mut outside = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if !is_link {
                if is_manifest(&path) {
                    seen.push((path.clone(), path));
                }
                continue;
            }
            if !is_manifest_name(&path) {
                continue;
            }
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(&root) => {
                    if target.is_file() {
                        seen.push((path, target));
                    }
                }
                resolved => {
                    let target = match resolved {
                        Ok(target) => target.display().to_string(),
                        Err(error) => format!(
                            "{}: {error}",
                            std::fs::read_link(&path)
                                .map(|t| t.display().to_string())
                                .unwrap_or_default()
                        ),
                    };
                    outside.insert(path, target);
                }
            }
        }
        for (path, target) in &outside {
            if self.outside_links.get(path) != Some(target) {
                let error = ManifestError::OutsideLink {
                    file: path.clone(),
                    target: target.clone(),
                };
                self.rejects.record(ConfigSource::Manifests, error.label());
                let kept = if self.files.contains_key(path) {
                    "; keeping its last good contents"
                } else {
                    ""
                };
                tracing::error!("{error}{kept}");
            }
        }
        // A file that became an outside link keeps its last good contents.
        let kept: Vec<PathBuf> = outside
            .keys()
            .filter(|p| self.files.contains_key(*p))
            .cloned()
            .collect();
        self.outside_links = outside;
        let mut changes = Changes::default();
        let before: Vec<PathBuf> = self.files.keys().cloned().collect();
        for gone in before
            .iter()
            .filter(|p| !kept.contains(p) && !seen.iter().any(|(path, _)| path == *p))
        {
            tracing::info!(file = %gone.display(), "manifest removed");
            if let Some(state) = self.files.remove(gone) {
                changes.note(state.good.as_ref());
            }
        }
        for (path, source) in seen {
            self.refresh(&path, &source, &mut changes);
        }
        Ok(changes)
    }

    /// The Service in effect for `id`: the first file (by path) that has it.
    pub fn service(&self, id: &ObjectRef) -> Option<&Service> {
        self.files
            .values()
            .filter_map(|f| f.good.as_ref())
            .find_map(|p| p.services.iter().find(|s| s.id == *id))
    }

    /// The EndpointSlice in effect for `id`: the first file (by path) that has it.
    pub fn slice(&self, id: &ObjectRef) -> Option<&EndpointSlice> {
        self.files
            .values()
            .filter_map(|f| f.good.as_ref())
            .find_map(|p| p.slices.iter().find(|s| s.id == *id))
    }

    /// Re-parses one file if its bytes changed, noting the objects it held
    /// before and holds now in `changes`. `source` is where its bytes are
    /// read: `path` itself, or the checked target of a link.
    fn refresh(&mut self, path: &Path, source: &Path, changes: &mut Changes) {
        // Taken before reading: a write during the read changes it, and the
        // next scan reads again.
        let stamp = Stamp::of(source);
        if let Some(state) = self.files.get(path)
            && stamp.is_some()
            && state.stamp == stamp
        {
            return;
        }
        let stamp = stamp.filter(|s| s.settled(SystemTime::now(), self.settle));
        let bytes = match read_bounded(source, self.limits.max_bytes) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Vanished between listing and reading: keep what we had.
                tracing::warn!(file = %path.display(), error = %error, "cannot read manifest; keeping its last good contents");
                return;
            }
        };
        let fingerprint = fingerprint(&bytes);
        if let Some(state) = self.files.get_mut(path)
            && state.fingerprint == fingerprint
        {
            state.stamp = stamp;
            return;
        }
        let previous = self.files.remove(path).and_then(|f| f.good);
        changes.note(previous.as_ref());
        let parsed = if bytes.len() as u64 > self.limits.max_bytes {
            Err(ManifestError::Limit {
                file: path.to_owned(),
                exceeded: Exceeded::Size {
                    limit: self.limits.max_bytes,
                },
            })
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => parse_file_with(path, &text, &self.limits),
                Err(error) => Err(ManifestError::NotUtf8 {
                    file: path.to_owned(),
                    reason: error.utf8_error().to_string(),
                }),
            }
        };
        let good = match parsed {
            Ok(parsed) => {
                // Each problem's text starts with the file, the object and the reason.
                for problem in &parsed.problems {
                    self.rejects
                        .record(ConfigSource::Manifests, problem.label());
                    if problem.is_warning() {
                        tracing::warn!("{problem}");
                    } else {
                        tracing::error!("{problem}; skipped this object");
                    }
                }
                tracing::info!(
                    file = %path.display(),
                    services = parsed.services.len(),
                    endpoint_slices = parsed.slices.len(),
                    "manifest loaded"
                );
                Some(parsed)
            }
            Err(error) => {
                let kept = if previous.is_some() {
                    "keeping its last good contents"
                } else {
                    "nothing loaded from it"
                };
                self.rejects.record(ConfigSource::Manifests, error.label());
                tracing::error!("{error}; {kept}");
                previous
            }
        };
        changes.note(good.as_ref());
        self.files.insert(
            path.to_path_buf(),
            FileState {
                fingerprint,
                stamp,
                good,
            },
        );
    }

    /// The objects among `changes` that more than one file defines: the
    /// same clash [`ManifestDir::objects`] reports at start, for a file
    /// changed while running. The first file (by path) wins.
    pub fn duplicates(&self, changes: &Changes) -> Vec<Duplicate> {
        let mut out = Vec::new();
        for id in &changes.services {
            let files = self.files_with(|p| p.services.iter().any(|s| s.id == *id));
            out.extend(Duplicate::of("Service", id, &files));
        }
        for id in &changes.slices {
            let files = self.files_with(|p| p.slices.iter().any(|s| s.id == *id));
            out.extend(Duplicate::of("EndpointSlice", id, &files));
        }
        out
    }

    fn files_with(&self, has: impl Fn(&ParsedFile) -> bool) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|(_, f)| f.good.as_ref().is_some_and(&has))
            .map(|(p, _)| p.as_path())
            .collect()
    }

    /// Every object, merged across files. When two files define the same object,
    /// the first file (by path) wins and the clash is logged.
    pub fn objects(&self) -> (Vec<Service>, Vec<EndpointSlice>) {
        let mut services: BTreeMap<ObjectRef, (&Path, &Service)> = BTreeMap::new();
        let mut slices: BTreeMap<ObjectRef, (&Path, &EndpointSlice)> = BTreeMap::new();
        for (path, state) in &self.files {
            let Some(parsed) = &state.good else { continue };
            for svc in &parsed.services {
                if let Some((first, _)) = services.get(&svc.id) {
                    tracing::warn!(object = %svc.id, file = %path.display(), first = %first.display(), "Service defined twice; using the first");
                } else {
                    services.insert(svc.id.clone(), (path, svc));
                }
            }
            for slice in &parsed.slices {
                if let Some((first, _)) = slices.get(&slice.id) {
                    tracing::warn!(object = %slice.id, file = %path.display(), first = %first.display(), "EndpointSlice defined twice; using the first");
                } else {
                    slices.insert(slice.id.clone(), (path, slice));
                }
            }
        }
        (
            services.into_values().map(|(_, s)| s.clone()).collect(),
            slices.into_values().map(|(_, s)| s.clone()).collect(),
        )
    }
}

/// An object defined in more than one file: `file` is ignored, `first` used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub kind: &'static str,
    pub object: ObjectRef,
    pub first: PathBuf,
    pub file: PathBuf,
}

impl Duplicate {
    fn of(kind: &'static str, id: &ObjectRef, files: &[&Path]) -> Vec<Self> {
        let Some((first, rest)) = files.split_first() else {
            return Vec::new();
        };
        rest.iter()
            .map(|file| Duplicate {
                kind,
                object: id.clone(),
                first: first.to_path_buf(),
                file: file.to_path_buf(),
            })
            .collect()
    }

    /// Logs it as the start-up merge does.
    pub fn warn(&self) {
        tracing::warn!(object = %self.object, file = %self.file.display(), first = %self.first.display(), "{} defined twice; using the first", self.kind);
    }
}

/// The objects a scan may have changed: every id found in the old or new
/// contents of a file that changed or went away.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub services: BTreeSet<ObjectRef>,
    pub slices: BTreeSet<ObjectRef>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty()
    }

    fn note(&mut self, parsed: Option<&ParsedFile>) {
        if let Some(parsed) = parsed {
            self.services
                .extend(parsed.services.iter().map(|s| s.id.clone()));
            self.slices
                .extend(parsed.slices.iter().map(|s| s.id.clone()));
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    is_manifest_name(path) && path.is_file()
}

/// Not hidden, and named `*.yaml`, `*.yml` or `*.json`.
fn is_manifest_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// At most `max + 1` bytes of `path`: one more than allowed tells a file
/// over the limit, without reading the rest of it.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    fn svc(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  clusterIP: {ip}\n  ports: [{{port: 80, protocol: TCP}}]\n"
        )
    }

    fn names(dir: &ManifestDir) -> Vec<String> {
        dir.objects()
            .0
            .into_iter()
            .map(|s| s.id.name.to_string())
            .collect()
    }

    #[test]
    fn a_file_turning_invalid_keeps_its_last_good_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        std::fs::write(tmp.path().join("a.yaml"), svc("web", "10.96.0.10")).unwrap();
        assert!(!dir.scan().unwrap().is_empty());
        std::fs::write(tmp.path().join("a.yaml"), "kind: Service\n  bad: [indent").unwrap();
        dir.scan().unwrap();
        assert_eq!(names(&dir), ["web"]);
        // Unchanged bytes are not re-parsed or reported again.
        assert!(dir.scan().unwrap().is_empty());
    }

    #[test]
    fn a_removed_file_takes_its_objects_and_others_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        std::fs::write(tmp.path().join("a.yaml"), svc("a", "10.96.0.10")).unwrap();
        std::fs::write(tmp.path().join("b.yml"), svc("b", "10.96.0.11")).unwrap();
        std::fs::write(tmp.path().join(".swap.yaml"), svc("hidden", "10.96.0.12")).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "not a manifest").unwrap();
        dir.scan().unwrap();
        assert_eq!(names(&dir), ["a", "b"]);
        std::fs::remove_file(tmp.path().join("a.yaml")).unwrap();
        assert!(!dir.scan().unwrap().is_empty());
        assert_eq!(names(&dir), ["b"]);
    }

    #[test]
    fn the_same_object_in_two_files_uses_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        std::fs::write(tmp.path().join("1.yaml"), svc("web", "10.96.0.10")).unwrap();
        std::fs::write(tmp.path().join("2.yaml"), svc("web", "10.96.0.99")).unwrap();
        dir.scan().unwrap();
        let services = dir.objects().0;
        assert_eq!(services.len(), 1);
        assert_eq!(
            services[0].cluster_ips,
            ["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_settled_file_is_not_read_again_while_its_metadata_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        std::fs::write(&path, svc("web", "10.96.0.10")).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        dir.settle = Duration::ZERO;
        assert!(!dir.scan().unwrap().is_empty());
        let stamp = dir.files[&path].stamp;
        assert_eq!(stamp, Stamp::of(&path));
        // Unreadable now, but its metadata says it is the same file: the
        // scan does not even open it, and keeps what it has.
        dir.files.get_mut(&path).unwrap().fingerprint ^= 1;
        assert!(dir.scan().unwrap().is_empty());
        assert_eq!(names(&dir), ["web"]);
        // A new inode (a ConfigMap update, an editor's rename) is read.
        std::fs::write(tmp.path().join("b.tmp"), svc("api", "10.96.0.11")).unwrap();
        std::fs::rename(tmp.path().join("b.tmp"), &path).unwrap();
        assert!(!dir.scan().unwrap().is_empty());
        assert_eq!(names(&dir), ["api"]);
    }

    #[test]
    fn a_file_written_just_now_is_read_again_even_at_the_same_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        let mut dir = ManifestDir::new(tmp.path());
        std::fs::write(&path, svc("web", "10.96.0.10")).unwrap();
        dir.scan().unwrap();
        // Too fresh to trust its times (they may not move within one tick).
        assert_eq!(dir.files[&path].stamp, None);
        std::fs::write(&path, svc("web", "10.96.0.11")).unwrap();
        assert!(!dir.scan().unwrap().is_empty());
        assert_eq!(
            dir.objects().0[0].cluster_ips,
            ["10.96.0.11".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_stamp_settles_after_the_window_and_never_from_the_future() {
        let at = |secs: i64| Stamp {
            dev: 1,
            ino: 2,
            len: 3,
            mtime: (secs, 0),
            ctime: (secs, 500),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(at(990).settled(now, SETTLE));
        assert!(!at(999).settled(now, SETTLE));
        assert!(!at(1_010).settled(now, SETTLE));
        // Before 1970: not trusted (read every time).
        assert!(!at(-5).settled(now, SETTLE));
        // The newer of mtime and ctime counts.
        let mut s = at(990);
        s.ctime = (999, 0);
        assert!(!s.settled(now, SETTLE));
    }

    /// A directory with `limits`, counting into a fresh counter.
    fn limited(path: &Path, limits: Limits) -> (ManifestDir, ConfigRejects) {
        let rejects = ConfigRejects::default();
        let dir = ManifestDir::new(path)
            .with_rejects(rejects.clone())
            .with_limits(limits);
        (dir, rejects)
    }

    #[test]
    fn a_file_over_the_size_limit_is_rejected_and_counted_once() {
        let tmp = tempfile::tempdir().unwrap();
        let big = format!("{}\n{}", svc("big", "10.96.0.11"), "# pad\n".repeat(200));
        std::fs::write(tmp.path().join("a.yaml"), svc("web", "10.96.0.10")).unwrap();
        std::fs::write(tmp.path().join("b.yaml"), &big).unwrap();
        let limits = Limits {
            max_bytes: 512,
            ..Limits::default()
        };
        let (mut dir, rejects) = limited(tmp.path(), limits);
        dir.scan().unwrap();
        dir.scan().unwrap();
        assert_eq!(names(&dir), ["web"]);
        assert_eq!(rejects.count(ConfigSource::Manifests, "too_large"), 1);
    }

    #[test]
    fn an_alias_bomb_is_rejected_at_the_node_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        // 9^8 = 43 million values once expanded; the limit stops it at 10,000.
        std::fs::write(tmp.path().join("bomb.yaml"), &bomb).unwrap();
        std::fs::write(tmp.path().join("web.yaml"), svc("web", "10.96.0.10")).unwrap();
        let limits = Limits {
            max_nodes: 10_000,
            ..Limits::default()
        };
        let (mut dir, rejects) = limited(tmp.path(), limits);
        dir.scan().unwrap();
        assert_eq!(names(&dir), ["web"]);
        assert_eq!(rejects.count(ConfigSource::Manifests, "too_many_nodes"), 1);
    }

    #[test]
    fn deep_nesting_is_rejected_at_the_depth_limit() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("flow.yaml"), "[".repeat(200_000)).unwrap();
        std::fs::write(
            tmp.path().join("block.yaml"),
            format!("{}x\n", "- ".repeat(40)),
        )
        .unwrap();
        let limits = Limits {
            max_depth: 32,
            ..Limits::default()
        };
        let (mut dir, rejects) = limited(tmp.path(), limits);
        dir.scan().unwrap();
        assert_eq!(rejects.count(ConfigSource::Manifests, "too_deep"), 2);
        // Within the limit, the same shape is fine.
        std::fs::write(
            tmp.path().join("block.yaml"),
            format!("{}x\n", "- ".repeat(20)),
        )
        .unwrap();
        dir.scan().unwrap();
        assert_eq!(rejects.count(ConfigSource::Manifests, "too_deep"), 2);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_counted_once_per_change() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        std::fs::write(&path, svc("web", "10.96.0.10")).unwrap();
        let (mut dir, rejects) = limited(tmp.path(), Limits::default());
        dir.scan().unwrap();
        std::fs::write(&path, b"kind: Service\xff\xfe\n").unwrap();
        for _ in 0..3 {
            dir.scan().unwrap();
        }
        assert_eq!(names(&dir), ["web"], "keeps its last good contents");
        assert_eq!(rejects.count(ConfigSource::Manifests, "not_utf8"), 1);
        std::fs::write(&path, b"kind: Service\xff\n").unwrap();
        dir.scan().unwrap();
        dir.scan().unwrap();
        assert_eq!(rejects.count(ConfigSource::Manifests, "not_utf8"), 2);
    }

    /// A mounted ConfigMap's layout (`a.yaml → ..data/a.yaml`, `..data →
    /// ..<timestamp>`) is read; links out of the directory (absolute, or
    /// `../`) and dangling ones are not, and are counted once per target;
    /// a file that became such a link keeps its last good contents.
    #[test]
    fn links_are_followed_only_inside_the_directory() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("secret.yaml"),
            svc("secret", "10.96.0.66"),
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("..2026_12_07_10_00_00.1")).unwrap();
        std::fs::write(
            root.join("..2026_12_07_10_00_00.1/web.yaml"),
            svc("web", "10.96.0.10"),
        )
        .unwrap();
        symlink("..2026_12_07_10_00_00.1", root.join("..data")).unwrap();
        symlink("..data/web.yaml", root.join("web.yaml")).unwrap();
        symlink(outside.path().join("secret.yaml"), root.join("abs.yaml")).unwrap();
        let relative = format!(
            "../{}/secret.yaml",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        symlink(&relative, root.join("rel.yaml")).unwrap();
        symlink("nowhere.yaml", root.join("dangling.yaml")).unwrap();
        std::fs::write(root.join("api.yaml"), svc("api", "10.96.0.11")).unwrap();
        let (mut dir, rejects) = limited(root, Limits::default());
        for _ in 0..3 {
            dir.scan().unwrap();
        }
        assert_eq!(names(&dir), ["api", "web"]);
        assert_eq!(rejects.count(ConfigSource::Manifests, "symlink_outside"), 3);
        // api.yaml becomes a link out: its last good contents stay.
        std::fs::remove_file(root.join("api.yaml")).unwrap();
        symlink(outside.path().join("secret.yaml"), root.join("api.yaml")).unwrap();
        dir.scan().unwrap();
        dir.scan().unwrap();
        assert_eq!(names(&dir), ["api", "web"]);
        assert_eq!(rejects.count(ConfigSource::Manifests, "symlink_outside"), 4);
    }

    #[test]
    fn a_service_defined_again_while_running_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        std::fs::write(tmp.path().join("1.yaml"), svc("web", "10.96.0.10")).unwrap();
        let changes = dir.scan().unwrap();
        assert_eq!(dir.duplicates(&changes), []);
        std::fs::write(tmp.path().join("2.yaml"), svc("web", "10.96.0.99")).unwrap();
        let changes = dir.scan().unwrap();
        let duplicates = dir.duplicates(&changes);
        assert_eq!(duplicates.len(), 1, "{duplicates:?}");
        assert_eq!(duplicates[0].kind, "Service");
        assert_eq!(&*duplicates[0].object.name, "web");
        assert_eq!(duplicates[0].first, tmp.path().join("1.yaml"));
        assert_eq!(duplicates[0].file, tmp.path().join("2.yaml"));
        assert_eq!(
            dir.service(&duplicates[0].object).unwrap().cluster_ips,
            ["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let mut dir = ManifestDir::new("/nonexistent/manifests");
        let err = dir.scan().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/manifests"), "{err}");
    }
}
