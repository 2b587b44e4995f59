//! `docker exec -e` values stay out of every process's command line.

use crate::{local_berth, ok};

#[test]
fn exec_environment_is_not_in_any_command_line() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "box", "busybox", "sleep", "600"]);
    // The exec's helper lives as long as the command: look while it runs.
    ok(&berth, &["exec", "-d", "-e", "SECRET=hunter2-in-exec", "box", "sleep", "30"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // What a `--pid host` container (or any process in the VM) can read.
    let mut leaked = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains("hunter2-in-exec") {
                leaked.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
    }
    assert!(leaked.is_empty(), "exec environment in command lines: {leaked:?}");
    // The command itself got it, as with Docker.
    assert_eq!(ok(&berth, &["exec", "-e", "SECRET=x", "box", "sh", "-c", "echo $SECRET"]), "x\n");
    ok(&berth, &["rm", "-f", "box"]);
    berth.stop_and_check_clean();
}
