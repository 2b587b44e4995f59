//! The VM as part of the host: it gives back the memory containers freed,
//! and its clock follows the host's, also after the VM was paused.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{self, describe, Berth};

/// The QEMU process of this Berth and its resident set, in MiB.
fn qemu_rss_mib(berth: &Berth) -> u64 {
    let line = berth.live_processes().into_iter().find(|p| p.contains("qemu-system")).expect("the VM's QEMU process");
    let pid = line.split_whitespace().next().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

fn qemu_pid(berth: &Berth) -> i32 {
    let line = berth.live_processes().into_iter().find(|p| p.contains("qemu-system")).expect("QEMU");
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn memory_a_container_freed_returns_to_the_host() {
    let share = tempfile::tempdir().unwrap();
    let berth = Berth::with_config_file(&format!(
        "[vm]\ncpus = 1\nmemory-mib = 1536\ndisk-gib = 2\nshares = [{:?}]\n",
        share.path().display().to_string()
    ));
    berth.start();
    harness::load_busybox(&berth);
    let idle = qemu_rss_mib(&berth);
    // The peak is read while the container still holds the memory: read
    // after it exited, free page reporting may already have returned part.
    let spike = "dd if=/dev/zero of=/dev/shm/spike bs=1M count=1000 && echo filled && sleep 600";
    harness::docker_ok(&berth, &["run", "-d", "--name", "spike", "--shm-size", "1100m", "busybox", "sh", "-c", spike]);
    let filling = Instant::now();
    while !harness::docker_ok(&berth, &["logs", "spike"]).contains("filled") {
        assert!(filling.elapsed() < Duration::from_secs(120), "the spike never filled /dev/shm");
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak = qemu_rss_mib(&berth);
    assert!(peak > idle + 800, "the spike did not reach the host (idle {idle} MiB, with the spike {peak} MiB)");
    harness::docker_ok(&berth, &["rm", "-f", "spike"]);
    let since = Instant::now();
    let mut now = peak;
    while since.elapsed() < Duration::from_secs(30) && now > idle + 300 {
        std::thread::sleep(Duration::from_millis(500));
        now = qemu_rss_mib(&berth);
    }
    eprintln!("QEMU RSS: idle {idle} MiB, spike {peak} MiB, {now} MiB {:?} after", since.elapsed());
    assert!(now <= idle + 300, "QEMU kept {now} MiB 30 s after the spike (idle {idle} MiB)");
    berth.stop_and_check_clean();
}

/// The guest's clock minus the host's, in seconds, measured around one
/// `berth shell` round trip (half of it is the uncertainty).
fn guest_clock_offset(berth: &Berth) -> (f64, f64) {
    let host = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let before = host();
    // busybox's date has no sub-second format; adjtimex(2) reports the time.
    let out = berth.shell(&["busybox", "adjtimex"]);
    let after = host();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(name)).expect(name);
        line.rsplit(':').next().unwrap().trim().parse().expect(name)
    };
    let guest = field("time.tv_sec") + field("time.tv_usec") / 1e6;
    (guest - (before + after) / 2.0, (after - before) / 2.0)
}

#[test]
fn guest_clock_follows_the_host_after_a_pause() {
    let berth = Berth::new();
    berth.start();
    // Set precisely at boot (the RTC alone gives whole seconds), at the
    // latest one sync period (2 s, host/src/clock_sync.rs) after it.
    std::thread::sleep(Duration::from_secs(3));
    let (offset, slack) = guest_clock_offset(&berth);
    assert!(offset.abs() < 0.5 + slack, "the guest is {offset:.3} s off after boot");

    // What a laptop's sleep does to the VM: its process stops running.
    let qemu = qemu_pid(&berth);
    // SAFETY: plain kill(2) of the VM's QEMU process, which this test owns.
    unsafe { libc::kill(qemu, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(20));
    // SAFETY: as above.
    unsafe { libc::kill(qemu, libc::SIGCONT) };
    std::thread::sleep(Duration::from_secs(5));
    let (offset, slack) = guest_clock_offset(&berth);
    eprintln!("guest clock after a 20 s pause and 5 s: {offset:+.3} s (±{slack:.3})");
    assert!(offset.abs() < 0.5 + slack, "the guest is {offset:.3} s off 5 s after a 20 s pause");
    assert!(berth.logs().contains("the VM's clock was off"), "the correction is not in `berth logs`");
    berth.stop_and_check_clean();
}

fn disk_config(share: &std::path::Path, gib: u32) -> String {
    format!("[vm]\ncpus = 1\nmemory-mib = 512\ndisk-gib = {gib}\nshares = [{:?}]\n", share.display().to_string())
}

/// The data filesystem's size in MiB, as `df` in the VM reports it.
fn data_fs_mib(berth: &Berth) -> u64 {
    let out = berth.shell(&["sh", "-c", "df -m /var/lib/berth | tail -1"]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Bytes the host really stores for the sparse disk image.
fn allocated_mib(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    (std::fs::metadata(path).unwrap().blocks() * 512) >> 20
}

#[test]
fn the_data_disk_grows_with_its_setting_and_gives_freed_space_back() {
    let share = tempfile::tempdir().unwrap();
    let berth = Berth::with_config_file(&disk_config(share.path(), 2));
    berth.start();
    let before = data_fs_mib(&berth);
    assert!((1800..=2048).contains(&before), "a 2 GiB disk holds a {before} MiB filesystem");

    let image = berth.home.path().join("disk.raw");
    let write =
        berth.shell(&["sh", "-c", "dd if=/dev/urandom of=/var/lib/berth/filler bs=1M count=300 2>/dev/null; sync"]);
    assert!(write.status.success(), "{}", describe(&write));
    let full = allocated_mib(&image);
    let remove = berth.shell(&["sh", "-c", "rm /var/lib/berth/filler; sync"]);
    assert!(remove.status.success(), "{}", describe(&remove));
    let mut freed = full;
    for _ in 0..20 {
        freed = allocated_mib(&image);
        if freed + 200 < full {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("disk image on the host: {full} MiB with a 300 MiB file, {freed} MiB after it was removed");
    assert!(freed + 200 < full, "removing 300 MiB in the VM freed nothing on the host ({full} -> {freed} MiB)");

    berth.ok(&["stop"]);
    std::fs::write(berth.home.path().join("config.toml"), disk_config(share.path(), 3)).unwrap();
    berth.start();
    let after = data_fs_mib(&berth);
    assert!(after > before + 900, "disk-gib 2 -> 3 left the filesystem at {after} MiB (was {before})");
    assert!(berth.logs().contains("data filesystem grown"), "the resize is not in `berth logs`");
    berth.stop_and_check_clean();
}

#[test]
fn host_temp_and_home_paths_bind_without_configuration() {
    // No `shares` key: the defaults (home and the temp dirs) apply.
    let berth = Berth::with_config_file("[vm]\ncpus = 1\nmemory-mib = 512\ndisk-gib = 2\n");
    berth.start();
    harness::load_busybox(&berth);
    let dir = tempfile::Builder::new().prefix("berth-bind-").tempdir_in("/tmp").unwrap();
    std::fs::write(dir.path().join("from-host"), "hello from the host\n").unwrap();
    let bind = format!("{}:/data", dir.path().display());
    let out = harness::docker(
        &berth,
        &["run", "--rm", "-v", &bind, "busybox", "sh", "-c", "cat /data/from-host; echo back > /data/from-container"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the host\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("from-container")).unwrap(), "back\n");
    let read_only = format!("{}:/data:ro", dir.path().display());
    let out = harness::docker(&berth, &["run", "--rm", "-v", &read_only, "busybox", "touch", "/data/nope"]);
    assert!(!out.status.success(), "a read-only bind was writable: {}", describe(&out));
    assert!(!dir.path().join("nope").exists());

    // The home directory is shared too (a directory under it, as compose's `./src`).
    let home = std::env::var("HOME").unwrap();
    let project = tempfile::Builder::new().prefix(".berth-test-project-").tempdir_in(&home).unwrap();
    std::fs::write(project.path().join("app.txt"), "app\n").unwrap();
    let bind = format!("{}:/src:ro", project.path().display());
    let out = harness::docker(&berth, &["run", "--rm", "-v", &bind, "busybox", "cat", "/src/app.txt"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app\n");

    // A path outside every share is refused, naming the setting.
    let out = harness::docker(&berth, &["run", "--rm", "-v", "/etc:/host-etc", "busybox", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[vm] shares"), "{}", describe(&out));
    berth.stop_and_check_clean();
}
