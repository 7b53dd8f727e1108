//! Runs the `pullsecret-injector` binary the way a user does from a shell: arguments, bytes on
//! stdin, and the captured exit code, stdout and stderr.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_pullsecret-injector");

/// The binary with no `POD_NAMESPACE` inherited from the environment the tests run in.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("POD_NAMESPACE");
    cmd
}

/// Runs the binary with `args`, writes `stdin` to it and closes it, and waits for the exit.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_command(command().args(args), stdin)
}

/// Like [`run`] for a command built by the caller (extra environment, paths, another program).
pub fn run_command(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", cmd.get_program().display()));
    let mut input = child.stdin.take().expect("stdin piped");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for the process")
}

/// Asserts the exit code, showing stderr when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The string `field` of every object in the array `array` of a JSON report, in order.
pub fn strings_in<'a>(report: &'a serde_json::Value, array: &str, field: &str) -> Vec<&'a str> {
    report[array]
        .as_array()
        .unwrap_or_else(|| panic!("`{array}` is an array: {report}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("`{field}` is a string: {item}"))
        })
        .collect()
}
