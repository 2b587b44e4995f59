//! Where Berth keeps things.
//!
//! `BERTH_HOME` (default: the platform data dir from `directories`) holds all
//! per-user state:
//!
//! ```text
//! config.toml            settings (see config.rs)
//! disk.raw               0600: the VM's data disk (sparse)
//! run/                   0700: daemon.lock, daemon.pid, state.json, sockets
//! logs/                  0700: daemon.log, console.log (kernel), agent.log, qemu.log, helpers.log (0600)
//! ```
//!
//! The home itself is 0700; none of these may be a symbolic link or belong
//! to another user (private_fs.rs says why).
//!
//! A profile (`berth --profile NAME`, as Colima's) is another VM with its own
//! home, `profiles/NAME/` inside the default profile's home (which is
//! BERTH_HOME when set), so one BERTH_HOME holds all of a user's VMs and
//! `berth list` finds them by listing one directory.
//!
//! Assets (guest kernel, initramfs, helper programs) are looked up separately:
//! `BERTH_ASSETS`, then `<exe>/../lib/berth` (the Debian package's FHS path,
//! architecture-dependent files), `<exe>/../share/berth` (packaging/setup.sh's
//! ~/.local layout), then the platform data dir.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    /// None for the default profile.
    pub profile: Option<String>,
    /// The default profile's home, which holds `profiles/`.
    pub root: PathBuf,
}

/// What `--profile` accepts: a name that is one directory and reads well in
/// a docker context name (`berth-NAME`).
pub fn validate_profile_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let starts_well = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 32 || !starts_well || !name.chars().all(ok_char) {
        bail!(
            "profile name {name:?} is not valid: use 1 to 32 lowercase letters, digits, `-` or `_`, \
             starting with a letter or digit"
        );
    }
    Ok(())
}

impl Paths {
    /// The paths of a profile; None or "default" is the default profile.
    pub fn for_profile(profile: Option<&str>) -> Result<Paths> {
        let root = Paths::from_env()?;
        match profile {
            None | Some("default") => Ok(root),
            Some(name) => {
                validate_profile_name(name)?;
                let home = root.profiles_dir().join(name);
                Ok(Paths { home, profile: Some(name.to_string()), root: root.home })
            }
        }
    }

    /// The default profile's paths (BERTH_HOME, else the platform data dir).
    pub fn from_env() -> Result<Paths> {
        let home = match std::env::var_os("BERTH_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => {
                Paths::default_home().context("cannot determine a home directory for Berth's state; set BERTH_HOME")?
            }
        };
        let home = if home.is_absolute() { home } else { std::env::current_dir()?.join(home) };
        Ok(Paths { root: home.clone(), home, profile: None })
    }

    /// Where the profiles other than the default live.
    pub fn profiles_dir(&self) -> PathBuf {
        self.root.join("profiles")
    }

    /// The profile's name as `berth list` shows it.
    pub fn profile_name(&self) -> &str {
        self.profile.as_deref().unwrap_or("default")
    }

    /// Whether the profile lives under the user's everyday home (not a
    /// BERTH_HOME chosen for a test or a script).
    pub fn root_is_default(&self) -> bool {
        Paths::default_home().is_some_and(|default| default == self.root)
    }

    /// The home used when BERTH_HOME is not set: the user's everyday Berth.
    /// On Windows %LOCALAPPDATA%\Berth: per machine, not roaming (the
    /// data disk is gigabytes).
    pub fn default_home() -> Option<PathBuf> {
        if cfg!(windows) {
            return directories::BaseDirs::new().map(|dirs| dirs.data_local_dir().join("Berth"));
        }
        directories::ProjectDirs::from("dev", "berth", "berth").map(|dirs| dirs.data_dir().join("home"))
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    pub fn disk_image(&self) -> PathBuf {
        self.home.join("disk.raw")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("daemon.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("daemon.pid")
    }
    pub fn state_file(&self) -> PathBuf {
        self.run_dir().join("state.json")
    }
    /// The key of the running VM's agent (0600; `berth shell` reads it).
    pub fn agent_key_file(&self) -> PathBuf {
        self.run_dir().join("agent.key")
    }
    /// Where the Docker API is served: [`Paths::docker_socket`], or on
    /// Windows this home's named pipe (`\\.\pipe\berth_engine` for the default home).
    pub fn docker_api(&self) -> crate::platform::api_address::ApiAddress {
        use crate::platform::api_address::{ApiAddress, PipeName};
        if cfg!(windows) {
            ApiAddress::NamedPipe(PipeName::for_home(&self.home, self.root_is_default() && self.profile.is_none()))
        } else {
            ApiAddress::Unix(self.docker_socket())
        }
    }
    /// The API's unix socket (Linux, macOS).
    pub fn docker_socket(&self) -> PathBuf {
        self.run_dir().join("docker.sock")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.log_dir().join("daemon.log")
    }
    pub fn console_log(&self) -> PathBuf {
        self.log_dir().join("console.log")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.log_dir().join("agent.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.log_dir().join("qemu.log")
    }
    pub fn helpers_log(&self) -> PathBuf {
        self.log_dir().join("helpers.log")
    }

    /// The state directories, outermost first, each named as errors name it.
    fn state_dirs(&self) -> Vec<(PathBuf, &'static str)> {
        let mut dirs = Vec::new();
        if self.profile.is_some() {
            dirs.push((self.root.clone(), "BERTH_HOME"));
            dirs.push((self.profiles_dir(), "the profiles directory"));
            dirs.push((self.home.clone(), "the profile's home"));
        } else {
            dirs.push((self.home.clone(), "BERTH_HOME"));
        }
        dirs.push((self.run_dir(), "the run directory"));
        dirs.push((self.log_dir(), "the log directory"));
        dirs
    }

    /// Creates the state directories, private to the user (see private_fs):
    /// `run/` holds the sockets that control the VM, the home the disk.
    pub fn ensure_dirs(&self) -> Result<()> {
        for (dir, what) in self.state_dirs() {
            crate::private_fs::ensure_dir(&dir, what)?;
        }
        let logs = std::fs::read_dir(self.log_dir()).into_iter().flatten().flatten().map(|entry| entry.path());
        crate::private_fs::tighten_existing(logs.chain([self.disk_image()]))
    }

    /// Refuses state directories that are links or belong to someone else,
    /// before a command that only reads them (status, stop, logs, shell)
    /// trusts a pid file, a socket or a log in them.
    pub fn check_dirs(&self) -> Result<()> {
        for (dir, what) in self.state_dirs() {
            crate::private_fs::check_dir(&dir, what)?;
        }
        Ok(())
    }
}

/// How to get the missing parts, for the way this `berth` was installed:
/// someone who installed the package has no checkout to run setup.sh in.
pub fn install_hint() -> String {
    install_hint_for(std::env::current_exe().ok().as_deref())
}

fn install_hint_for(exe: Option<&Path>) -> String {
    let packaged = exe.is_some_and(|exe| exe.starts_with("/usr/bin") || exe.starts_with("/usr/local/bin"));
    if packaged {
        "reinstall the Berth package (`sudo apt-get install --reinstall berth`), which puts them in /usr/lib/berth, \
         or point BERTH_ASSETS at a directory that has them"
            .into()
    } else {
        "install the Berth package (packaging/deb/build.sh builds it; it puts them in /usr/lib/berth), or, from a \
         source checkout, run `packaging/setup.sh` (it installs them in ~/.local/share/berth), or point BERTH_ASSETS \
         at a directory that has them"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packaged_berth_is_told_to_reinstall_the_package_not_to_run_setup() {
        let packaged = install_hint_for(Some(Path::new("/usr/bin/berth")));
        assert!(packaged.contains("apt-get install --reinstall berth") && !packaged.contains("setup.sh"), "{packaged}");
        let from_source = install_hint_for(Some(Path::new("/home/me/.local/bin/berth")));
        assert!(from_source.contains("packaging/setup.sh") && from_source.contains("Berth package"), "{from_source}");
    }

    #[test]
    fn profile_names_are_one_plain_directory() {
        for good in ["work", "ci-2", "a_b", "0"] {
            validate_profile_name(good).unwrap();
        }
        for bad in ["", "Work", "../x", "a/b", "-x", ".hidden", &"x".repeat(33)] {
            assert!(validate_profile_name(bad).unwrap_err().to_string().contains("not valid"), "{bad:?}");
        }
    }
}

/// The files a VM boot needs that are not part of the `berth` binary.
#[derive(Debug, Clone)]
pub struct Assets {
    pub dir: PathBuf,
}

impl Assets {
    pub fn locate() -> Result<Assets> {
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("BERTH_ASSETS") {
            candidates.push(PathBuf::from(dir));
        }
        if let Some(prefix) = std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        {
            candidates.push(prefix.join("lib/berth"));
            candidates.push(prefix.join("share/berth"));
        }
        if let Some(dirs) = directories::BaseDirs::new() {
            candidates.push(dirs.data_dir().join("berth"));
        }
        // A directory with any guest's initramfs (an arm64-only install has
        // only aarch64/initramfs.cpio).
        let has_a_guest = |dir: &PathBuf| {
            crate::vm::arch::GuestArch::ALL.iter().any(|arch| arch.assets_dir(dir).join("initramfs.cpio").is_file())
        };
        match candidates.iter().find(|dir| has_a_guest(dir)) {
            Some(dir) => Ok(Assets { dir: dir.clone() }),
            None => bail!(
                "the Berth guest image (initramfs.cpio) was not found in any of: {}\n{}",
                candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
                install_hint()
            ),
        }
    }

    /// The guest kernel: an uncompressed PVH-bootable `vmlinux` where present
    /// (no decompression at boot), else `bzImage`.
    pub fn kernel(&self) -> Result<PathBuf> {
        ["vmlinux", "bzImage"].iter().map(|name| self.dir.join(name)).find(|p| p.is_file()).with_context(|| {
            format!("no guest kernel (vmlinux or bzImage) in {}\n{}", self.dir.display(), install_hint())
        })
    }

    /// The directory the assets were found in.
    #[cfg(all(target_os = "macos", target_arch = "aarch64"))]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// A helper program: next to the assets first, then on PATH.
    pub fn helper(&self, name: &str, how_to_get: &str) -> Result<PathBuf> {
        let bundled = self.dir.join("bin").join(name);
        if bundled.is_file() {
            return Ok(bundled);
        }
        if let Some(found) = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return Ok(found);
        }
        bail!(
            "`{name}` is needed to run the VM but was not found in {} or on PATH; {how_to_get}",
            bundled.parent().unwrap().display()
        )
    }

    /// The helper's path without an error: where it would be found, if anywhere.
    pub fn find_helper(&self, name: &str) -> Option<PathBuf> {
        self.helper(name, "").ok()
    }
}
