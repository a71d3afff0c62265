//! `nacre completions SHELL` prints a script that knows the commands; the
//! bash one is valid bash.

mod common;

use std::process::{Command, Stdio};

use common::NACRE;

fn script(shell: &str) -> String {
    let out = Command::new(NACRE)
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_shell_gets_a_script_with_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let text = script(shell);
        assert!(text.len() > 1000, "{shell}: {} bytes", text.len());
        for word in ["serve", "get", "range-entries", "log-level"] {
            assert!(text.contains(word), "{shell}: no {word}");
        }
    }
    let out = Command::new(NACRE)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_bash_script_parses() {
    let text = script("bash");
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash is installed");
    std::io::Write::write_all(bash.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(bash.stdin.take());
    let out = bash.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
