//! Processes: a child that the test ends with it and whose output goes to
//! files, readings from `/proc`, the open-file limit, a second local user,
//! and re-running one test in a process of its own.
//!
//! All tests share this process, so nothing here changes it for the others:
//! limits for a child are set in the child (`pre_exec`), and a test that
//! must change its own process runs in a copy of the test binary.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::process::Signal;

use super::deadline::Deadline;

/// The daemon binary this build made.
pub const CE_AUTHD: &str = env!("CARGO_BIN_EXE_ce-authd");
/// The client binary this build made.
pub const CE_AUTH: &str = env!("CARGO_BIN_EXE_ce-auth");

/// A child process with its stdout and stderr in files; killed and reaped
/// if the test ends (or fails) while it still runs.
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `dir/NAME.out` and
    /// `dir/NAME.err`, created here (an existing file is truncated, so it
    /// keeps its inode). Files, not pipes: a child that logs a flood must
    /// never block on a full pipe nobody reads.
    pub fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} starts: {e}", cmd.get_program()));
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        signal(self.pid(), sig);
    }

    /// The exit status once the process has exited (and been reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let what = format!("{:?} to exit", self.child.id());
        Deadline::standard().wait_for(&what, || self.try_wait())
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its open descriptors.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A `kB` field of its `/proc/PID/status` (`VmHWM`, `VmRSS`, `VmLck`), in bytes.
    pub fn status_kb(&self, field: &str) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to `pid`, which must exist.
pub fn signal(pid: i32, sig: Signal) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a positive pid");
    rustix::process::kill_process(pid, sig).expect("signal delivered");
}

/// True once `pid` has exited (gone, or a zombie nobody reaped).
pub fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs a prepared command, feeding it `stdin` (or nothing), and returns its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // a program that exits early closes the pipe: its output says why
        if let Err(e) = pipe.write_all(text.as_bytes())
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            panic!("write stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait")
}

/// Fails the test unless `out` is a success, showing what the program said.
pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "{what:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A program's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Gives the child of `cmd` (only the child) soft and hard `RLIMIT_NOFILE` `n`.
pub fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe and changes only the forked child.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
}

/// Gives the child of `cmd` (only the child) soft and hard `RLIMIT_MEMLOCK`
/// `bytes`, and takes `CAP_IPC_LOCK` (which ignores the limit) from it, so a
/// test run as root sees what a user sees.
pub fn limit_memlock(cmd: &mut Command, bytes: u64) {
    // SAFETY: setrlimit and prctl are async-signal-safe and change only the forked child.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setrlimit(
                rustix::process::Resource::Memlock,
                rustix::process::Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                },
            )
            .map_err(std::io::Error::from)?;
            // without CAP_SETPCAP (not root) this fails, and there is no CAP_IPC_LOCK to drop
            let _ = rustix::thread::remove_capability_from_bounding_set(
                rustix::thread::CapabilitySet::IPC_LOCK,
            );
            Ok(())
        });
    }
}

/// Makes sure this process may open `n` more descriptors; false when the
/// hard limit is too low. The soft limit is only ever raised, and as far as
/// allowed (to 16 Ki), not just to `n`: the tests running beside this one
/// open descriptors too.
pub fn ensure_fds(n: u64) -> bool {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // two tests raising at once must not undo each other's raise
    static RAISE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = RAISE.lock().unwrap_or_else(|e| e.into_inner());
    let l = getrlimit(Resource::Nofile);
    let want = n + 200;
    let roomy = want.max(16 * 1024);
    if l.current.is_none_or(|c| c >= roomy) {
        return true;
    }
    if l.maximum.is_some_and(|h| h < want) {
        return false;
    }
    let target = l.maximum.map_or(roomy, |h| h.min(roomy));
    if l.current.is_some_and(|c| c >= target) {
        return true;
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: l.maximum,
        },
    )
    .is_ok()
}

/// The local user that tests needing a second uid run things as.
pub const OTHER_USER: &str = "ceauth-other";

/// Set to `1` (CI does) to make a test that needs two uids fail instead of
/// skipping when it cannot have them.
pub const REQUIRE_TWO_UIDS: &str = "CE_AUTH_REQUIRE_TWO_UIDS";

/// The uid and gid of [`OTHER_USER`], created (a system user without a home
/// or a login shell) when running as root and it is missing. `None`, saying
/// why, when not root; with [`REQUIRE_TWO_UIDS`]`=1` that fails the test.
pub fn other_uid() -> Option<(u32, u32)> {
    static OTHER: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    match OTHER.get_or_init(find_or_create_other_user) {
        Ok(ids) => Some(*ids),
        Err(why) => {
            skip_two_uid_test(why);
            None
        }
    }
}

/// Skips a test that needs two uids, saying why; with
/// [`REQUIRE_TWO_UIDS`]`=1` fails it instead.
pub fn skip_two_uid_test(why: &str) {
    if std::env::var(REQUIRE_TWO_UIDS).is_ok_and(|v| v == "1") {
        panic!("{why}, and {REQUIRE_TWO_UIDS}=1 does not allow skipping this test");
    }
    eprintln!("skipped: {why}");
}

fn find_or_create_other_user() -> Result<(u32, u32), String> {
    if !rustix::process::geteuid().is_root() {
        return Err(format!(
            "not root, so no process can run as a second user ({OTHER_USER})"
        ));
    }
    if let Some(ids) = lookup_user(OTHER_USER) {
        return Ok(ids);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            OTHER_USER,
        ])
        .output()
        .map_err(|e| format!("cannot run useradd to create {OTHER_USER}: {e}"))?;
    // another test run may have created it meanwhile
    lookup_user(OTHER_USER).ok_or_else(|| {
        format!(
            "useradd could not create {OTHER_USER} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// `program` run as `uid`:`gid` with no supplementary groups (`setpriv`).
pub fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

/// The uid and gid of a local user, from the user database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let mut fields = line.trim_end().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// Set in a re-run copy of the test binary: the one test that does its work there.
const ISOLATED: &str = "CE_AUTH_TEST_ISOLATED";

/// For a test that changes its own process for good: runs `body` in a fresh
/// copy of the test binary that runs only this test (`name`, its full name
/// as `cargo test -- --list` shows it), and fails with that copy's failure.
pub fn isolated(name: &str, body: impl FnOnce()) {
    if std::env::var_os(ISOLATED).is_some_and(|v| v == name) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED, name)
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // the filter matched this very test, so its body really ran there
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run in its own process:\n{stdout}"
    );
}

/// Raises this process's soft `RLIMIT_NOFILE` towards `n` (never above the
/// hard limit, never lowering it) and returns the soft limit now in force.
pub fn raise_own_nofile(n: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let want = n.min(hard);
    if want > soft {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(want),
                maximum: cur.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
