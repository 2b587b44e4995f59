//! `berth version`: every piece a bug report needs, the running VM's agent
//! and kernel (from the daemon's state record), the kernel the assets carry
//! (read from its boot header, so it is known before any boot) and the
//! helper programs the backend would start (each asked for its own `--version`).

use std::process::Command;

use anyhow::Result;
use serde::Serialize;

use crate::lifecycle;
use crate::paths::{Assets, Paths};
use crate::state::Phase;

#[derive(Serialize)]
struct Versions {
    berth: String,
    /// Of the running VM; None when no VM runs.
    agent: Option<String>,
    kernel: Option<String>,
    /// The kernel in the assets directory, and that directory.
    assets_kernel: Option<String>,
    assets_dir: Option<String>,
    helpers: Vec<Helper>,
}

#[derive(Serialize)]
struct Helper {
    name: String,
    /// The first line of its `--version`, or why there is none.
    version: String,
}

/// The helpers of this platform's VM backend.
const HELPERS: &[&str] =
    if cfg!(target_os = "linux") { &["qemu-system-x86_64", "virtiofsd", "vhost-device-vsock"] } else { &[] };

pub fn show(paths: &Paths, json: bool) -> Result<()> {
    let state = lifecycle::effective_state(paths)?;
    let running = state.state == Phase::Running;
    let assets = Assets::locate().ok();
    let helpers = HELPERS
        .iter()
        .map(|name| {
            let found = match &assets {
                Some(assets) => assets.find_helper(name),
                None => Assets { dir: Default::default() }.find_helper(name),
            };
            let version = match found {
                Some(path) => {
                    first_line_of_version(&path).unwrap_or_else(|| format!("{} (no version)", path.display()))
                }
                None => "not found".to_string(),
            };
            Helper { name: name.to_string(), version }
        })
        .collect();
    let versions = Versions {
        berth: env!("CARGO_PKG_VERSION").into(),
        agent: state.agent_version.filter(|_| running),
        kernel: state.kernel_release.filter(|_| running),
        assets_kernel: assets.as_ref().and_then(kernel_file_version),
        assets_dir: assets.as_ref().map(|a| a.dir.display().to_string()),
        helpers,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    let not_running = || "- (no VM running)".to_string();
    println!("{:<20} {}", "berth", versions.berth);
    println!("{:<20} {}", "agent", versions.agent.unwrap_or_else(not_running));
    println!("{:<20} {}", "kernel", versions.kernel.unwrap_or_else(not_running));
    println!("{:<20} {}", "kernel (assets)", versions.assets_kernel.unwrap_or_else(|| "-".into()));
    println!("{:<20} {}", "assets", versions.assets_dir.unwrap_or_else(|| "not found".into()));
    for Helper { name, version } in versions.helpers {
        println!("{name:<20} {version}");
    }
    Ok(())
}

/// The first line of a program's `--version`, None when it cannot run or says nothing.
pub fn first_line_of_version(program: &std::path::Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next()?.trim().to_string()).filter(|line| !line.is_empty())
}

/// The release of the assets' kernel: a bzImage says it in its boot header
/// (x86 boot protocol: the offset of a NUL-ended string at 0x20e, counted
/// from 0x200), a vmlinux in its `Linux version` banner.
fn kernel_file_version(assets: &Assets) -> Option<String> {
    let bz_image = std::fs::read(assets.dir.join("bzImage")).ok();
    if let Some(version) = bz_image.as_deref().and_then(bz_image_version) {
        return Some(version);
    }
    let vmlinux = std::fs::read(assets.kernel().ok()?).ok()?;
    banner_version(&vmlinux)
}

fn bz_image_version(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let offset = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize + 0x200;
    let text = image.get(offset..)?;
    let end = text.iter().take(256).position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&text[..end]).into_owned())
}

fn banner_version(vmlinux: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = vmlinux.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let release = vmlinux[at..].split(|b| *b == b' ' || *b == 0).next()?;
    Some(String::from_utf8_lossy(release).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_release_from_a_bzimage_header_or_a_banner() {
        let mut image = vec![0u8; 0x600];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let release = b"6.1.192 (root@vm) #1\0";
        image[0x500..0x500 + release.len()].copy_from_slice(release);
        assert_eq!(bz_image_version(&image).as_deref(), Some("6.1.192 (root@vm) #1"));
        assert_eq!(bz_image_version(&image[..0x100]), None, "truncated");
        assert_eq!(bz_image_version(&[0u8; 0x600]), None, "no boot header");
        assert_eq!(banner_version(b"\0\0Linux version 6.1.192 (root@vm) x").as_deref(), Some("6.1.192"));
        assert_eq!(banner_version(b"nothing here"), None);
    }
}
