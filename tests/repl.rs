//! The `repl` example, driven end to end through a pseudo-terminal as a person would use it:
//! line editing and history (rustyline in raw mode), definitions compiled when first called,
//! mutual recursion, a host function, a redefinition that a caller compiled earlier sees,
//! errors (syntax, undefined function, wrong arity, a function not defined yet) that leave the
//! session running, `:stats`, and `:quit` ending it with status 0.
//!
//! The example must be built (`cargo test` builds examples; with a filter such as
//! `--test repl`, run `cargo build --release --example repl` first).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const PROMPT: &str = "ready> ";

/// The whole session must end within this; a hang fails the test instead of stalling it.
const WATCHDOG: Duration = Duration::from_secs(60);

/// The example's binary: `cargo test` puts this test in `target/<profile>/deps/` and the
/// examples in `target/<profile>/examples/`.
fn repl_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join("examples").join("repl");
    assert!(
        binary.is_file(),
        "the repl example is not built at {}: run `cargo build --release --example repl` \
         (a plain `cargo test --release` builds it)",
        binary.display()
    );
    binary
}

/// A pseudo-terminal pair: the master (our end) and the slave (the REPL's terminal), both
/// close-on-exec (the child gets the slave as its stdio, which clears the flag on those).
fn open_pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // A wide terminal, so that no input line wraps (rustyline redraws wrapped lines).
    let size = libc::winsize { ws_row: 40, ws_col: 250, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors into the given ints and reads the winsize; a null
    // name and termios are allowed (no name wanted, default settings).
    let status = unsafe {
        libc::openpty(&raw mut master, &raw mut slave, std::ptr::null_mut(), std::ptr::null(), &raw const size)
    };
    assert_eq!(status, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: sets FD_CLOEXEC on a descriptor we own.
        let status = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(status, 0, "fcntl: {}", std::io::Error::last_os_error());
    }
    (master, slave)
}

/// The REPL running in a pseudo-terminal.
struct Session {
    child: Child,
    master: File,
    /// What the terminal shows, chunk by chunk, from a reader thread; it disconnects when the
    /// terminal closes (the REPL has exited).
    output: Receiver<Vec<u8>>,
    /// Bytes received and not consumed yet.
    pending: Vec<u8>,
    /// Everything shown so far, for failure messages.
    transcript: Vec<u8>,
    deadline: Instant,
}

impl Session {
    fn start() -> Session {
        let (master, slave) = open_pty();
        let mut command = Command::new(repl_binary());
        command
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            // A terminal rustyline edits in (TERM=dumb would make it read plain lines).
            .env("TERM", "xterm");
        // SAFETY: runs in the child between fork and exec and calls only async-signal-safe
        // functions: a new session whose controlling terminal is the pty (stdin), as a shell
        // would give a program it starts.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start the repl example");
        // Our copies of the slave must be closed, or the master never sees the REPL exit.
        drop(command);
        let master = File::from(master);
        let mut reader = master.try_clone().expect("dup the pty master");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO (Linux) or EOF once no process holds the terminal open.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut session = Session {
            child,
            master,
            output,
            pending: Vec::new(),
            transcript: Vec::new(),
            deadline: Instant::now() + WATCHDOG,
        };
        let banner = session.until_prompt();
        assert!(banner.contains("orcjit lazy REPL"), "banner: {banner:?}");
        session
    }

    /// Waits for more output; fails the test if the watchdog fires or the REPL exits.
    fn receive(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.output.recv_timeout(left) {
            Ok(bytes) => {
                self.transcript.extend_from_slice(&bytes);
                self.pending.extend_from_slice(&bytes);
                true
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("the REPL did not answer within {WATCHDOG:?}; the terminal showed:\n{}", clean(&self.transcript))
            }
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Output up to the next prompt (escape sequences and carriage returns removed). The
    /// prompt is recognized in the whole of what is pending, cleaned again as bytes arrive, so
    /// an escape sequence split across reads is removed whole.
    fn until_prompt(&mut self) -> String {
        loop {
            let text = clean(&self.pending);
            if let Some(output) = text.strip_suffix(PROMPT) {
                self.pending.clear();
                return output.to_string();
            }
            if !self.receive() {
                panic!("the REPL exited early; the terminal showed:\n{}", clean(&self.transcript));
            }
        }
    }

    /// Types `keys` and Enter, and returns what the REPL printed before its next prompt.
    fn send(&mut self, keys: &str) -> String {
        self.master.write_all(keys.as_bytes()).and_then(|()| self.master.write_all(b"\r")).expect("type");
        // Rustyline echoes and redraws what is typed without a newline: the first one is the
        // Enter. What comes before it (the rest of the last prompt's redraws) is not the answer.
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                self.pending.drain(..=at);
                return self.until_prompt();
            }
            if !self.receive() {
                panic!("the REPL exited after {keys:?}; the terminal showed:\n{}", clean(&self.transcript));
            }
        }
    }

    /// Types `line`; checks that the answer contains each of `expected`.
    fn check(&mut self, line: &str, expected: &[&str]) -> String {
        let answer = self.send(line);
        for e in expected {
            assert!(answer.contains(e), "after {line:?}, expected {e:?} in the answer, got:\n{answer}");
        }
        answer
    }

    /// Types `:quit` and waits for the REPL to close its terminal and exit.
    fn quit(mut self) -> ExitStatus {
        self.master.write_all(b":quit\r").expect("type");
        while self.receive() {}
        self.child.wait().expect("wait for the repl")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A failed test must not leave the REPL running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Terminal output as text: ANSI escape sequences (CSI `ESC [ ... final`, and two-byte ones)
/// and carriage returns removed.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_repl_compiles_on_first_call_redefines_for_earlier_callers_and_survives_errors() {
    let mut repl = Session::start();

    // Definitions are not compiled; calls are.
    repl.check("def fib(n) if n < 2 then n else fib(n - 1) + fib(n - 2)", &["defined fib(n)"]);
    repl.check("fib(20)", &["=> 6765"]);
    repl.check("def unused(x) x * 3", &["defined unused(x)"]);

    // A redefinition is seen by a caller compiled before it, through its stub.
    repl.check("def f(x) x + 1", &["defined f(x)"]);
    repl.check("def g(x) f(x) * 10", &["defined g(x)"]);
    repl.check("g(1)", &["=> 20"]);
    repl.check("def f(x) x + 2", &["redefined f(x): version 2"]);
    repl.check("g(1)", &["=> 30"]);
    repl.check("def f(x) x * x", &["redefined f(x): version 3"]);
    repl.check("g(3); g(4)", &["=> 90\n=> 160"]);

    // Mutual recursion: a call to a function defined later.
    repl.check("def even(n) if n == 0 then 1 else odd(n - 1)", &["defined even(n)"]);
    repl.check("even(4)", &["error: cannot run this yet: 'even' calls 'odd', which is not defined"]);
    repl.check("def odd(n) if n == 0 then 0 else even(n - 1)", &["defined odd(n)"]);
    repl.check("even(10); odd(10)", &["=> 1\n=> 0"]);

    // Host functions, loops, several statements on a line.
    repl.check("extern sqrt(x); sqrt(2) * sqrt(2) > 1.99", &["extern sqrt(x) at 0x", "=> 1"]);
    repl.check("for i = 1, i < 4 in printd(i * i)", &["1\n4\n9\n=> 0"]);

    // Errors are reported and the session goes on.
    repl.check("def broken(x) x +", &["error: syntax error at column 18: expected an expression"]);
    repl.check("nope(1)", &["error: undefined function 'nope'"]);
    repl.check("fib(1, 2)", &["error: wrong number of arguments to 'fib': expected 1, got 2"]);
    repl.check("def fib(a, b) a", &["error: 'fib' takes 1 argument"]);
    repl.check("fib(10)", &["=> 55"]);

    // Line editing: history (Up) and moving to the start of the line (Ctrl-A).
    repl.check("\x1b[A", &["=> 55"]);
    repl.check("ib(12)\x01f", &["=> 144"]);

    let stats = repl.check(
        ":stats",
        &[
            "fib(n): version 1; compiled: v1\n",
            "f(x): version 3; compiled: v1 v2 v3\n",
            "unused(x): version 1; compiled: none\n",
            "host functions: printd(x), putchard(c), sqrt(x)",
            "modules compiled: ",
            "on orcjit-worker-",
        ],
    );
    assert!(!stats.contains("broken"), "a definition that failed to parse is not defined:\n{stats}");

    let status = repl.quit();
    assert!(status.success(), ":quit ends the REPL with status 0, not {status}");
}
