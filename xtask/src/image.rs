//! `cargo xtask image`: the container image, built by buildah from the
//! Dockerfile's own runtime stage, tagged `localhost/ebpf-proxy:<commit>`.
//!
//! The build stage's base (`rust:1-bookworm`) cannot be pulled here, and the
//! runtime stage needs none (`FROM scratch`). So the runtime stage's lines are
//! kept as they are, except that each `COPY --from=build SRC DST` takes SRC
//! from a staged build context instead: the release binary for
//! `/src/target/release/proxy`, this machine's own file for anything else
//! (the dynamic loader, glibc, libm, libgcc_s: this is Debian 12, the build
//! stage's release, so they are the same files). Nothing is pulled
//! (`--pull=never`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::dockerfile::{Instruction, parse};

/// The image's repository name.
pub const REPOSITORY: &str = "localhost/ebpf-proxy";
/// Where the build stage's binary is (its `WORKDIR` plus cargo's path).
const STAGE_BINARY: &str = "/src/target/release/proxy";

/// The runtime stage as a Containerfile for a context directory: every
/// `COPY --from=build SRC DST` becomes `COPY files/SRC DST`. Returns the text
/// and the SRCs, in order.
pub fn runtime_containerfile(dockerfile: &str) -> anyhow::Result<(String, Vec<String>)> {
    let instructions = parse(dockerfile);
    let last_from = instructions
        .iter()
        .rposition(|i| i.op == "FROM")
        .context("no FROM in the Dockerfile")?;
    let runtime: &[Instruction] = &instructions[last_from..];
    ensure!(
        runtime[0].args == "scratch",
        "the runtime stage is FROM {}, not scratch: nothing can be pulled here",
        runtime[0].args
    );
    let mut text = String::new();
    let mut sources = Vec::new();
    for i in runtime {
        let line = match i.op.as_str() {
            "COPY" => {
                let parts: Vec<&str> = i.args.split_whitespace().collect();
                match parts.as_slice() {
                    ["--from=build", src, dst] if src.starts_with('/') => {
                        sources.push((*src).to_owned());
                        format!("COPY files{src} {dst}")
                    }
                    _ => bail!("runtime COPY {}: expected --from=build /SRC DST", i.args),
                }
            }
            "RUN" => bail!("RUN in the runtime stage: it has no shell"),
            _ => format!("{} {}", i.op, i.args),
        };
        text.push_str(&line);
        text.push('\n');
    }
    Ok((text, sources))
}

/// The commit's short hash, `-dirty` when the worktree has changes.
fn commit_tag(root: &Path) -> anyhow::Result<String> {
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .context("running git")?;
        ensure!(out.status.success(), "git {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Ok(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Builds the image with `binary` as the build stage's `proxy`; returns its
/// tags (the commit's, then `extra_tags`).
pub fn build(root: &Path, binary: &Path, extra_tags: &[String]) -> anyhow::Result<Vec<String>> {
    let dockerfile =
        fs::read_to_string(root.join("Dockerfile")).context("reading the Dockerfile")?;
    let (containerfile, sources) = runtime_containerfile(&dockerfile)?;
    let context = root.join("target").join("image-context");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("removing {}", context.display()))?;
    }
    for src in &sources {
        let from: PathBuf = if src == STAGE_BINARY {
            binary.to_path_buf()
        } else {
            ensure!(
                !src.starts_with("/src/"),
                "runtime COPY {src}: only {STAGE_BINARY} is known from the build stage's tree"
            );
            PathBuf::from(src)
        };
        let to = context.join("files").join(src.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        // fs::copy follows symlinks (/lib64/ld-linux… is one), as COPY does.
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} into the context", from.display()))?;
    }
    fs::write(context.join("Containerfile"), &containerfile)?;

    let commit = commit_tag(root)?;
    let mut tags = vec![format!("{REPOSITORY}:{commit}")];
    tags.extend(extra_tags.iter().cloned());
    let mut cmd = Command::new("buildah");
    cmd.args(["build", "--pull=never", "--layers=false", "--format=oci"])
        .arg(format!(
            "--label=org.opencontainers.image.revision={commit}"
        ))
        .arg(format!(
            "--label=org.opencontainers.image.version={}",
            env!("CARGO_PKG_VERSION")
        ));
    for tag in &tags {
        cmd.arg(format!("--tag={tag}"));
    }
    cmd.arg("--file")
        .arg(context.join("Containerfile"))
        .arg(&context);
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .context("running buildah (scripts/setup.sh installs it)")?;
    ensure!(status.success(), "buildah build failed: {status}");
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_stage_is_kept_with_its_copies_taken_from_the_context() {
        let dockerfile = "FROM docker.io/library/rust:1-bookworm AS build\n\
            RUN cargo xtask build --release\n\
            # the runtime\n\
            FROM scratch\n\
            COPY --from=build /lib64/ld.so /lib64/ld.so\n\
            COPY --from=build /src/target/release/proxy /usr/local/bin/proxy\n\
            LABEL a=\"b\" \\\n  c=\"d\"\n\
            ENTRYPOINT [\"/usr/local/bin/proxy\"]\n";
        let (text, sources) = runtime_containerfile(dockerfile).expect("a runtime stage");
        assert_eq!(sources, ["/lib64/ld.so", "/src/target/release/proxy"]);
        assert_eq!(
            text,
            "FROM scratch\n\
             COPY files/lib64/ld.so /lib64/ld.so\n\
             COPY files/src/target/release/proxy /usr/local/bin/proxy\n\
             LABEL a=\"b\" c=\"d\"\n\
             ENTRYPOINT [\"/usr/local/bin/proxy\"]\n"
        );
    }

    #[test]
    fn a_runtime_stage_that_needs_a_pull_or_a_shell_is_refused() {
        let pull = "FROM a AS build\nFROM gcr.io/distroless/cc-debian12\n";
        assert!(runtime_containerfile(pull).is_err());
        let run = "FROM a AS build\nFROM scratch\nRUN true\n";
        assert!(runtime_containerfile(run).is_err());
    }

    #[test]
    fn the_repositorys_dockerfile_gives_a_runtime_stage() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = fs::read_to_string(root.join("Dockerfile")).expect("reading the Dockerfile");
        let (_, sources) = runtime_containerfile(&text).expect("a runtime stage");
        assert!(sources.iter().any(|s| s == STAGE_BINARY), "{sources:?}");
    }
}
