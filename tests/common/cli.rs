//! The real `petrel` binary, run as a tenant or an operator would type it: in a working
//! directory, with arguments, and its exit code and output captured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for a line from a running client (a safety net, not a
/// measurement).
pub const LINE_WAIT: Duration = Duration::from_secs(60);

/// The client binary.
pub fn petrel_binary() -> &'static str {
    env!("CARGO_BIN_EXE_petrel")
}

/// What one run printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `petrel ARGS` in `dir`.
pub fn petrel(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(petrel_binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs `petrel ARGS` in `dir` and requires exit code 0.
pub fn ok(dir: &Path, args: &[&str]) -> Run {
    let run = petrel(dir, args);
    assert_eq!(
        run.code, 0,
        "petrel {args:?}:\n{}{}",
        run.stdout, run.stderr
    );
    run
}

/// Runs `petrel ARGS` in `dir` and requires that the server refused with `text`: exit code
/// 117, nothing on standard output, `petrel: <text>` on standard error.
pub fn refused(dir: &Path, args: &[&str], text: &str) {
    let run = petrel(dir, args);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (117, "", format!("petrel: {text}\n").as_str()),
        "petrel {args:?}"
    );
}

/// A `petrel` process that keeps running (a console subscription), whose standard output
/// is read line by line.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `petrel ARGS` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(petrel_binary())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one ends with `suffix`; returns every line read so far.
    pub fn wait_for_line_ending(&mut self, suffix: &str) -> &[String] {
        while !self.seen.iter().any(|l| l.ends_with(suffix)) {
            match self.lines.recv_timeout(LINE_WAIT) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("no line ending with {suffix:?} ({e}): {:?}", self.seen),
            }
        }
        &self.seen
    }

    /// Waits for the process to end by itself; its exit code and standard error.
    pub fn wait(mut self) -> (i32, String) {
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), stderr)
    }

    /// Stops the process (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
