//! `cargo xtask dockerfile`: the Dockerfile's build stage, run without a
//! container engine (its base, `rust:1-bookworm`, cannot be pulled here), so
//! CI proves that its instructions build the image's binary from its build
//! context. The runtime stage is built by buildah (`cargo xtask image`).
//!
//! It builds the context as an OCI builder would (the repository's files less
//! `.dockerignore`), then executes the build stage's instructions in order in a
//! scratch directory standing for its `WORKDIR`: `COPY` from the context,
//! `RUN` with bash. Then it checks what the runtime stage takes: the file its
//! `COPY --from=build` names exists, runs (`--version`), and links nothing the
//! runtime stage (FROM scratch) does not copy.
//!
//! Not checked, because only a container engine could: the base images
//! image itself (that `rust:1-bookworm` has rustup, apt and a C toolchain,
//! and glibc 2.36 at the paths the runtime stage copies, as this Debian 12
//! machine does).
//! The stage's `target/` is a link to `target/dockerfile-stage/`, kept
//! between runs, so a second run rebuilds only what changed; the first is a
//! full release build (about five minutes on two cores).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
pub(crate) struct Instruction {
    pub(crate) op: String,
    pub(crate) args: String,
}

pub(crate) fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap_or((current.as_str(), ""));
                out.push(Instruction {
                    op: op.to_uppercase(),
                    args: args.trim().to_owned(),
                });
                current.clear();
            }
        }
    }
    out
}

/// Whether `path` (relative, `/`-separated) is excluded by a `.dockerignore`
/// pattern. Handles what ours uses: `dir/` or `name` (anchored at the root,
/// matching the entry and everything below it) and `**/*.ext` or `**/name`
/// (at any depth).
fn ignored(path: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim_end_matches('/');
        if let Some(any) = p.strip_prefix("**/") {
            path.split('/').any(|segment| glob(any, segment))
        } else {
            path == p || path.starts_with(&format!("{p}/"))
        }
    })
}

/// `*` and literal characters only.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_dir() {
        for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let entry = entry?;
            copy(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let dockerfile =
        fs::read_to_string(root.join("Dockerfile")).context("reading the Dockerfile")?;
    let instructions = parse(&dockerfile);
    let patterns: Vec<String> = fs::read_to_string(root.join(".dockerignore"))
        .context("reading .dockerignore")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();

    // The build context: tracked and untracked-but-not-ignored files, less .dockerignore.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let context = scratch.path().join("context");
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files")?;
    ensure!(listed.status.success(), "git ls-files failed");
    let mut files = 0;
    for path in listed.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path);
        let source = root.join(path.as_ref());
        if ignored(&path, &patterns) || !source.is_file() {
            continue;
        }
        copy(&source, &context.join(path.as_ref()))?;
        files += 1;
    }
    eprintln!("xtask: build context: {files} files");

    // The build stage, instruction by instruction.
    let mut stage_dir: Option<PathBuf> = None;
    let mut stages = 0;
    let mut runtime = Vec::new();
    for i in &instructions {
        if i.op == "FROM" {
            stages += 1;
            continue;
        }
        if stages >= 2 {
            runtime.push(i);
            continue;
        }
        match i.op.as_str() {
            "WORKDIR" => {
                let dir = scratch
                    .path()
                    .join("stage")
                    .join(i.args.trim_start_matches('/'));
                fs::create_dir_all(&dir)?;
                // A build directory of its own, kept between runs (see the
                // module docs); not `target/` itself, where the stage's xtask
                // and proxy binaries would replace the repository's.
                let target = root.join("target").join("dockerfile-stage");
                fs::create_dir_all(&target)?;
                symlink(&target, dir.join("target")).context("linking target/")?;
                stage_dir = Some(dir);
            }
            "COPY" => {
                let dir = stage_dir.as_ref().context("COPY before WORKDIR")?;
                let parts: Vec<&str> = i.args.split_whitespace().collect();
                let (dest, sources) = parts.split_last().context("COPY with no arguments")?;
                // A directory's contents go into the destination; a file goes
                // into it when it ends with `/` (or is `.`), else becomes it.
                let into = dest.ends_with('/') || *dest == ".";
                let dest_path = dir.join(dest.trim_end_matches('/'));
                for source in sources {
                    let from = context.join(source.trim_end_matches('/'));
                    ensure!(from.exists(), "COPY {source}: not in the build context");
                    if from.is_dir() || !into {
                        copy(&from, &dest_path)?;
                    } else {
                        copy(
                            &from,
                            &dest_path.join(from.file_name().context("no file name")?),
                        )?;
                    }
                }
            }
            "RUN" => {
                let dir = stage_dir.as_ref().context("RUN before WORKDIR")?;
                eprintln!("xtask: RUN {}", i.args);
                let status = Command::new("bash")
                    .args(["-euo", "pipefail", "-c", &i.args])
                    .current_dir(dir)
                    .status()
                    .with_context(|| format!("running {}", i.args))?;
                ensure!(status.success(), "RUN {} failed: {status}", i.args);
            }
            "ENV" | "ARG" | "LABEL" => bail!(
                "{} is not handled here: teach xtask/src/dockerfile.rs",
                i.op
            ),
            _ => bail!("unexpected instruction {} in the build stage", i.op),
        }
    }
    ensure!(
        stages == 2,
        "expected a build stage and a runtime stage, found {stages}"
    );

    // What the runtime stage takes from the build stage: the binary, and
    // the C runtime files it links (the stage is FROM scratch).
    stage_dir.context("no WORKDIR in the build stage")?;
    let (binary, version, copied) = check_runtime_copies(&runtime, &scratch.path().join("stage"))?;
    eprintln!(
        "xtask: the runtime stage's binary: {binary} ({version}), with {}",
        copied.join(" ")
    );
    Ok(())
}

/// The runtime stage's COPYs, against the build stage's tree at `stage`:
/// each is `--from=build`, one is the binary (under `/src/`), which was
/// built, runs (`--version`) and links nothing but the other files copied
/// (the stage is FROM scratch). The binary's path, its version line and the
/// other files.
fn check_runtime_copies<'a>(
    runtime: &[&'a Instruction],
    stage: &Path,
) -> anyhow::Result<(&'a str, String, Vec<&'a str>)> {
    let mut copied = Vec::new();
    let mut binary = None;
    for i in runtime.iter().filter(|i| i.op == "COPY") {
        let parts: Vec<&str> = i.args.split_whitespace().collect();
        ensure!(
            parts.first() == Some(&"--from=build") && parts.len() == 3,
            "runtime COPY {}: only files of the build stage belong there",
            i.args
        );
        if parts[1].starts_with("/src/") {
            binary = Some(parts[1]);
        } else {
            copied.push(parts[1]);
        }
    }
    let binary = binary.context("the runtime stage copies no binary from /src")?;
    let built = stage.join(binary.trim_start_matches('/'));
    ensure!(built.is_file(), "{binary} was not built");
    let version = Command::new(&built)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}", built.display()))?;
    ensure!(
        version.status.success(),
        "{} --version failed",
        built.display()
    );
    let ldd = Command::new("ldd")
        .arg(&built)
        .output()
        .context("running ldd")?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with("linux-vdso.so") {
            continue;
        }
        let base = name.rsplit('/').next().unwrap_or(name);
        ensure!(
            copied.iter().any(|c| c.rsplit('/').next() == Some(base)),
            "{binary} links {name}, which the runtime stage does not copy (it is FROM scratch)"
        );
    }
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((binary, version, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage tree whose `/src/bin` is this machine's `sleep` (glibc only).
    fn stage_with_sleep() -> tempfile::TempDir {
        let stage = tempfile::tempdir().expect("a temporary directory");
        fs::create_dir_all(stage.path().join("src")).expect("src/");
        fs::copy("/bin/sleep", stage.path().join("src/bin")).expect("copying /bin/sleep");
        stage
    }

    #[test]
    fn the_runtime_stage_must_copy_every_library_its_binary_links() {
        let stage = stage_with_sleep();
        let full = parse(
            "FROM scratch\n\
             COPY --from=build /lib64/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2\n\
             COPY --from=build /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libc.so.6\n\
             COPY --from=build /src/bin /bin/sleep\n",
        );
        let refs: Vec<&Instruction> = full.iter().skip(1).collect();
        let (binary, _, copied) = check_runtime_copies(&refs, stage.path()).expect("complete");
        assert_eq!(binary, "/src/bin");
        assert_eq!(copied.len(), 2);

        let without_libc: Vec<&Instruction> = full
            .iter()
            .skip(1)
            .filter(|i| !i.args.contains("libc"))
            .collect();
        let err = check_runtime_copies(&without_libc, stage.path()).expect_err("libc missing");
        assert!(err.to_string().contains("libc.so.6"), "{err}");
    }

    #[test]
    fn dockerignore_patterns_match_as_ours_mean_them() {
        let p: Vec<String> = ["target/", ".git", "**/*.o", ".cache/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(ignored("target/debug/proxy", &p));
        assert!(ignored(".git", &p));
        assert!(ignored("proxy/src/x.o", &p));
        assert!(!ignored("proxy/target.rs", &p));
        assert!(!ignored("tests/target/x", &p), "anchored at the root");
        assert!(!ignored("scripts/setup.sh", &p));
    }
}
