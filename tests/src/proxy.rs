//! [`ProxyProcess`]: the `proxy` daemon, run inside an entered [`Sandbox`] as
//! `proxy run --manifests DIR --cgroup CGROUP --pin-path PINS --query-socket SOCK --log-format text`
//! (or another source in place of `--manifests DIR`),
//! its stdout and stderr in a log file in the sandbox's directory.
//!
//! `Drop` stops it (SIGTERM, a bounded wait, then SIGKILL) and, when the thread
//! is panicking, prints its log so a failed test shows what the proxy said.

use std::{
    ffi::OsStr,
    fs::{self, OpenOptions},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{Confinement, Error, Sandbox};

/// How long `stop()` and `Drop` wait after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

static LOG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running `proxy run`.
pub struct ProxyProcess {
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl ProxyProcess {
    /// Starts the proxy from the current thread, which must have entered
    /// `sandbox`, so the proxy inherits its namespace and cgroup.
    ///
    /// The proxy gets SIGTERM when the starting thread dies (`PR_SET_PDEATHSIG`),
    /// so a killed test does not leave it running: start it from the test's own
    /// thread, not from a short-lived helper.
    pub fn start(proxy_bin: &Path, sandbox: &Sandbox, manifests_dir: &Path) -> Result<Self, Error> {
        Self::start_with_args(proxy_bin, sandbox, manifests_dir, &[])
    }

    /// [`ProxyProcess::start`] with extra arguments after the standard ones.
    pub fn start_with_args(
        proxy_bin: &Path,
        sandbox: &Sandbox,
        manifests_dir: &Path,
        extra: &[&str],
    ) -> Result<Self, Error> {
        let source = [OsStr::new("--manifests"), manifests_dir.as_os_str()];
        Self::start_with_source(proxy_bin, sandbox, &source, extra)
    }

    /// Like [`ProxyProcess::start_with_args`], with `source` (for example
    /// `["--kubeconfig", PATH]`) in place of `--manifests DIR`.
    pub fn start_with_source(
        proxy_bin: &Path,
        sandbox: &Sandbox,
        source: &[&OsStr],
        extra: &[&str],
    ) -> Result<Self, Error> {
        Self::start_wrapped(&[], proxy_bin, sandbox, source, extra)
    }

    /// Like [`ProxyProcess::start_with_source`], run through `wrapper` (a
    /// command and its arguments that execs the rest, such as
    /// `setpriv --bounding-set -bpf --`). Empty: no wrapper.
    pub fn start_wrapped(
        wrapper: &[&str],
        proxy_bin: &Path,
        sandbox: &Sandbox,
        source: &[&OsStr],
        extra: &[&str],
    ) -> Result<Self, Error> {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(proxy_bin);
                cmd
            }
            None => Command::new(proxy_bin),
        };
        cmd.arg("run")
            .args(source)
            .arg("--cgroup")
            .arg(sandbox.cgroup_path())
            .arg("--pin-path")
            .arg(sandbox.pin_path())
            .arg("--query-socket")
            .arg(Self::query_socket(sandbox))
            .args(["--log-format", "text"])
            .args(extra);
        Self::spawn(cmd, sandbox)
    }

    /// The query socket the standard flags give the proxy
    /// (`--query-socket`, in the sandbox's directory), for `proxy explain`
    /// and `proxy diff`.
    pub fn query_socket(sandbox: &Sandbox) -> PathBuf {
        sandbox.dir().join("proxy.sock")
    }

    /// Runs `proxy ARGS…` exactly as given (no standard flags added), with
    /// only the environment `env`, confined as a container would confine it
    /// when `confinement` is given. The sandbox must be entered, as for
    /// [`ProxyProcess::start`].
    pub fn start_raw(
        proxy_bin: &Path,
        sandbox: &Sandbox,
        args: &[&OsStr],
        env: &[(&str, &OsStr)],
        confinement: Option<&Confinement>,
    ) -> Result<Self, Error> {
        let mut cmd = Command::new(proxy_bin);
        cmd.args(args).env_clear();
        for (key, value) in env {
            cmd.env(key, value);
        }
        if let Some(confinement) = confinement {
            confinement.apply_to(&mut cmd)?;
        }
        Self::spawn(cmd, sandbox)
    }

    /// Starts `cmd` with its output in a new log file of the sandbox, and
    /// SIGTERM when the starting thread dies.
    fn spawn(mut cmd: Command, sandbox: &Sandbox) -> Result<Self, Error> {
        if !sandbox.is_entered() {
            return Err(Error::Usage(
                "ProxyProcess::start: enter() the sandbox first, so the proxy runs inside it"
                    .into(),
            ));
        }
        let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = sandbox.dir().join(format!("proxy-{n}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io("creating the proxy log", &log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("creating the proxy log", &log, e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
        // memory of the parent; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args().take_while(|arg| *arg != "run"))
            .map(|part| part.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let child = cmd.spawn().map_err(|e| Error::Spawn {
            command: format!("{command} …"),
            source: e,
        })?;
        Ok(ProxyProcess {
            child,
            log,
            exit: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the proxy has written so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<could not read {}: {e}>", self.log.display()))
    }

    /// `Some(status)` once the proxy has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends SIGTERM and waits up to 5 s for the exit; then SIGKILL. Returns the
    /// exit status (a signal death when it had to be killed).
    pub fn stop(&mut self) -> Result<ExitStatus, Error> {
        self.signal_and_wait(STOP_TIMEOUT)
    }

    /// SIGKILL, as a crash would be; returns once it is gone.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("waiting for the proxy", &self.log, e))?;
        self.exit = Some(status);
        Ok(status)
    }

    fn signal_and_wait(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let pid = i32::try_from(self.child.id())
            .map_err(|_| Error::Usage("proxy pid out of range".into()))?;
        nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM)
            .map_err(|e| Error::sys("sending SIGTERM to the proxy", e))?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("proxy did not exit within {timeout:?} of SIGTERM; killing it");
        self.kill()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Err(e) = self.signal_and_wait(STOP_TIMEOUT) {
            eprintln!("stopping the proxy: {e}");
            let _ = self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- proxy log ({}) -----\n{}\n----- end of proxy log -----",
                self.log.display(),
                self.log()
            );
        }
    }
}
