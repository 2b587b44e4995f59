//! The completions and the man page come from the parser's own definitions:
//! every command `berth --help` lists is in both.

use std::process::Command;

use crate::harness::berth_bin;

fn berth(args: &[&str]) -> String {
    let out = Command::new(berth_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_and_man_page_cover_every_command() {
    let help = berth(&["--help"]);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"start") && commands.contains(&"logs"), "{help}");
    let man = berth(&["man"]);
    assert!(man.contains(".TH berth 1"), "not a man page: {}", &man[..man.len().min(200)]);
    for shell in ["bash", "zsh", "fish"] {
        let script = berth(&["completions", shell]);
        for command in &commands {
            assert!(script.contains(command), "{shell} completions lack `{command}`");
        }
    }
    for command in &commands {
        assert!(man.contains(command), "the man page lacks `{command}`");
    }
    // As packages install them: berth.1 and a page per command.
    let dir = tempfile::tempdir().unwrap();
    berth(&["man", "--dir", &dir.path().display().to_string()]);
    for page in commands.iter().map(|c| format!("berth-{c}.1")).chain(["berth.1".to_string()]) {
        let text = std::fs::read_to_string(dir.path().join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page} is not roff: {}", &text[..text.len().min(100)]);
    }
}

#[test]
fn version_without_a_vm_says_none_runs() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(berth_bin()).arg("version").env("BERTH_HOME", home.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("berth                {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("agent                - (no VM running)"), "{text}");
}
