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

#[test]
fn config_profiles_list_and_quiet_without_a_vm() {
    let home = tempfile::tempdir().unwrap();
    let berth = |args: &[&str]| Command::new(berth_bin()).args(args).env("BERTH_HOME", home.path()).output().unwrap();
    let out = berth(&["-p", "work", "config", "set", "vm.cpus", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm.cpus set in"), "a confirmation without --quiet");
    let quiet = berth(&["--quiet", "-p", "work", "config", "set", "vm.memory-mib", "1024"]);
    assert!(quiet.status.success() && quiet.stdout.is_empty(), "--quiet prints nothing: {quiet:?}");
    let refused = berth(&["-p", "work", "config", "set", "vm.memory-mib", "16"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("vm.memory-mib = 16 is out of range"), "{refused:?}");
    let get = berth(&["-p", "work", "config", "get", "vm.memory-mib"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "1024\n", "the refused value was not written");
    assert!(home.path().join("profiles/work/config.toml").is_file());

    let list = berth(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["profile"], "default");
    assert_eq!((rows[1]["profile"].as_str(), rows[1]["state"].as_str()), (Some("work"), Some("stopped")));
    assert_eq!((rows[1]["cpus"].as_u64(), rows[1]["memory_mib"].as_u64()), (Some(3), Some(1024)));
    let bad = berth(&["-p", "../escape", "status"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("profile name \"../escape\" is not valid"), "{bad:?}");
}
