//! `berth list`: every profile of this BERTH_HOME (the default one and each
//! `profiles/NAME/`), as Colima's `colima list` shows them.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::lifecycle;
use crate::paths::Paths;
use crate::state::Phase;

#[derive(Debug, Serialize)]
pub struct ProfileRow {
    pub profile: String,
    pub state: Phase,
    /// The running VM's, else the configured ones.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    /// Only while running: which accelerator the VM got.
    pub accel: Option<String>,
    pub docker_context: String,
    /// Why the profile could not be read (a broken config, a foreign directory).
    pub error: Option<String>,
}

/// The profiles that exist: the default one, then `profiles/*` by name.
pub fn all(root: &Paths) -> Result<Vec<Paths>> {
    let mut profiles = vec![Paths::for_profile(None)?];
    let mut names: Vec<String> = std::fs::read_dir(root.profiles_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| crate::paths::validate_profile_name(name).is_ok())
        .collect();
    names.sort();
    for name in names {
        profiles.push(Paths::for_profile(Some(&name))?);
    }
    Ok(profiles)
}

pub fn row(paths: &Paths) -> ProfileRow {
    let mut row = ProfileRow {
        profile: paths.profile_name().to_string(),
        state: Phase::Stopped,
        cpus: None,
        memory_mib: None,
        disk_gib: None,
        accel: None,
        docker_context: lifecycle::home_context(paths).name,
        error: None,
    };
    let checked = paths.check_dirs().and_then(|()| lifecycle::effective_state(paths));
    match checked {
        Ok(state) => {
            let live = matches!(state.state, Phase::Running | Phase::Starting);
            row.state = state.state;
            if live {
                row.cpus = state.cpus;
                row.memory_mib = state.memory_mib;
                row.accel = state.accel;
            }
            if state.state == Phase::Error {
                row.error = state.error;
            }
        }
        Err(err) => row.error = Some(format!("{err:#}")),
    }
    match Config::load(&paths.config_file()) {
        Ok(config) => {
            row.cpus = row.cpus.or(Some(config.cpus));
            row.memory_mib = row.memory_mib.or(Some(config.memory_mib));
            row.disk_gib = Some(config.disk_gib);
        }
        Err(err) => row.error = row.error.or(Some(format!("{err:#}"))),
    }
    row
}

pub fn list(paths: &Paths, json: bool) -> Result<()> {
    let rows: Vec<ProfileRow> = all(paths)?.iter().map(row).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let dash = || "-".to_string();
    println!("{:<16} {:<9} {:>5} {:>9} {:>8} {:<6} CONTEXT", "PROFILE", "STATE", "CPUS", "MEMORY", "DISK", "ACCEL");
    for row in rows {
        let state = serde_json::to_value(row.state)?.as_str().unwrap_or("?").to_string();
        println!(
            "{:<16} {:<9} {:>5} {:>9} {:>8} {:<6} {}",
            row.profile,
            state,
            row.cpus.map(|c| c.to_string()).unwrap_or_else(dash),
            row.memory_mib.map(|m| format!("{:.1}GiB", m as f64 / 1024.0)).unwrap_or_else(dash),
            row.disk_gib.map(|d| format!("{d}GiB")).unwrap_or_else(dash),
            row.accel.unwrap_or_else(dash),
            row.docker_context
        );
        if let Some(error) = row.error {
            println!("  {error}");
        }
    }
    Ok(())
}
