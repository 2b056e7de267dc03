//! The BPF filesystem that holds our pins. Like Cilium, the proxy mounts bpffs
//! itself when it is missing, so a node without `/sys/fs/bpf` still works.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Errors while preparing the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error(
        "cannot mount bpffs on {path} (without CAP_SYS_ADMIN, mount it beforehand: \
         `mount -t bpf bpf /sys/fs/bpf` on the host, as systemd does at boot)"
    )]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create pin directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to mount bpffs over {path}: it is an ordinary directory with files in it, \
         which the mount would hide (give --pin-path an empty or new directory, or one on bpffs)"
    )]
    NotEmpty { path: PathBuf },
    #[error("{path} is not on a BPF filesystem, even after mounting one")]
    NotBpffs { path: PathBuf },
    #[error(
        "the pin path {path} is not on a BPF filesystem, and --mount-bpffs=false: mount one \
         beforehand (`mount -t bpf bpf /sys/fs/bpf` on the host, as systemd does at boot)"
    )]
    Missing { path: PathBuf },
}

/// True when `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// The pin path's nearest existing directory: what it is (or will be) on.
fn nearest(pin_path: &Path) -> &Path {
    pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// Checks, mounting nothing, that `pin_path` is (or, once its directories
/// are made, will be) on a bpffs (`--mount-bpffs=false`).
pub fn require(pin_path: &Path) -> Result<(), BpffsError> {
    if is_bpffs(nearest(pin_path)) {
        Ok(())
    } else {
        Err(BpffsError::Missing {
            path: pin_path.to_path_buf(),
        })
    }
}

/// Makes sure `pin_path` exists on a bpffs, mounting one if needed, and that the
/// directory is private to root (0700): the pins are the dataplane.
///
/// The mount point is `/sys/fs/bpf` when the pin path is below it (the usual
/// layout), else the pin path itself, which must then be new or empty: a
/// mount over files would hide them.
pub fn ensure(pin_path: &Path) -> Result<(), BpffsError> {
    if !is_bpffs(nearest(pin_path)) {
        let sys_bpf = Path::new("/sys/fs/bpf");
        let mount_point = if pin_path.starts_with(sys_bpf) && sys_bpf.is_dir() {
            sys_bpf.to_path_buf()
        } else {
            if has_entries(pin_path) {
                return Err(BpffsError::NotEmpty {
                    path: pin_path.to_path_buf(),
                });
            }
            create_dir(pin_path)?;
            pin_path.to_path_buf()
        };
        tracing::info!(mount_point = %mount_point.display(), "bpffs missing: mounting it");
        mount(
            Some("bpf"),
            &mount_point,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| BpffsError::Mount {
            path: mount_point.clone(),
            source,
        })?;
    }
    create_dir(pin_path)?;
    if !is_bpffs(pin_path) {
        return Err(BpffsError::NotBpffs {
            path: pin_path.to_path_buf(),
        });
    }
    fs::set_permissions(pin_path, fs::Permissions::from_mode(0o700)).map_err(|source| {
        BpffsError::Create {
            path: pin_path.to_path_buf(),
            source,
        }
    })
}

/// True when `path` is a directory with something in it.
fn has_entries(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some())
}

/// Creates a directory and its parents with mode 0700.
pub fn create_dir(path: &Path) -> Result<(), BpffsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| BpffsError::Create {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn without_mounting_a_pin_path_on_no_bpffs_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("proxy");
        let error = require(&pins).expect_err("a tmpfs is no bpffs");
        assert!(
            error.to_string().contains(&*pins.to_string_lossy()),
            "{error}"
        );
        assert!(!pins.exists(), "nothing is created");
    }

    #[test]
    fn an_ordinary_directory_with_files_is_never_mounted_over() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let error = ensure(tmp.path()).unwrap_err();
        assert!(matches!(error, BpffsError::NotEmpty { .. }), "{error:?}");
        assert!(
            error.to_string().contains("refusing to mount bpffs"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }
}
