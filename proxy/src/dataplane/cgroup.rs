//! Finding the cgroup v2 hierarchy. It is not always at `/sys/fs/cgroup`
//! (hybrid layouts mount it at `/sys/fs/cgroup/unified`), so read mountinfo.

use std::path::PathBuf;

/// Errors while looking for cgroup2.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo")]
    Read(#[source] std::io::Error),
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); pass --cgroup")]
    NotMounted,
}

/// The mount point of the cgroup2 filesystem.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Read)?;
    find_cgroup2(&text).ok_or(CgroupError::NotMounted)
}

/// Parses mountinfo: `id parent major:minor root mount-point options [optional…] - fstype source super-options`.
pub fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hybrid_layout_mount() {
        let info = "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
                    31 25 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
                    33 31 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn decodes_escaped_mount_points() {
        let info = "33 31 0:29 / /mnt/my\\040cgroup rw - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(info), Some(PathBuf::from("/mnt/my cgroup")));
    }

    #[test]
    fn reports_absence() {
        assert_eq!(
            find_cgroup2("25 30 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
