//! `nacre completions SHELL`: a completion script for the shell, made
//! from the command-line definition itself, so it always knows every
//! command and flag.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics on a write error, and a
    // closed pipe (`| head`) is not worth a panic.
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "nacre", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(script(shell)).unwrap();
            for word in ["serve", "get", "log-format"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }
}
