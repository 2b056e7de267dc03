//! Runs the few external commands the kit needs (`ip`), turning failures into
//! [`Error::Command`] with the command line and its stderr.

use std::process::Command;

use crate::Error;

/// Runs `program args…` and returns its stdout; a non-zero exit is an error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args…`
pub(crate) fn ip(args: &[&str]) -> Result<String, Error> {
    run("ip", args)
}
