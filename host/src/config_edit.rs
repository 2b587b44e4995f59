//! `berth config get/set` and `berth start --cpus/--memory/--disk`: changes
//! to config.toml that go through the same validation as the file itself
//! (`Config::parse` of the text about to be written), so a value the file
//! would refuse is refused before it is written, naming the same key.
//!
//! The file is rewritten from its parsed table: values and sections are
//! kept, comments are not (toml_edit would keep them; it is not in the
//! build, and a file written by these commands has none).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Config;

/// Every key of config.toml, as `berth config get/set` names it.
pub const KEYS: &[&str] = &[
    "backend",
    "vm.cpus",
    "vm.memory-mib",
    "vm.disk-gib",
    "vm.shares",
    "vm.arch",
    "vm.hypervisor",
    "engine.registry-mirrors",
    "engine.insecure-registries",
    "api.tcp",
];

fn check_key(key: &str) -> Result<()> {
    if !KEYS.contains(&key) {
        bail!("unknown config key {key:?}; the keys are: {}", KEYS.join(", "));
    }
    Ok(())
}

/// A value as typed on the command line: TOML when it is TOML (`4`,
/// `["~", "/srv"]`, `"x"`), else the text as a string (`local`, `127.0.0.1:2375`).
pub fn parse_value(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").expect("parsed"),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// The text of `text` with each key set, checked as the file would be.
pub fn with_values(text: &str, changes: &[(&str, toml::Value)], home: Option<&Path>) -> Result<String> {
    let mut table: toml::Table = text.parse().context("the current config.toml is not valid TOML")?;
    for (key, value) in changes {
        check_key(key)?;
        match key.split_once('.') {
            None => {
                table.insert(key.to_string(), value.clone());
            }
            Some((section, name)) => {
                let entry = table.entry(section).or_insert_with(|| toml::Value::Table(Default::default()));
                let Some(section_table) = entry.as_table_mut() else {
                    bail!("config.toml has `{section}` as a value, not a [{section}] section");
                };
                section_table.insert(name.to_string(), value.clone());
            }
        }
    }
    let mut new_text = toml::to_string(&table)?;
    if !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    Config::parse(&new_text, home)?;
    Ok(new_text)
}

/// The file at `path` with `changes` applied, checked, not yet written:
/// its new text and the settings it makes.
pub fn prepare(path: &Path, changes: &[(&str, toml::Value)]) -> Result<(String, Config)> {
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    let text = crate::config::read_config_text(path)?;
    let new_text =
        with_values(&text, changes, home.as_deref()).with_context(|| format!("not changing {}", path.display()))?;
    let config = Config::parse(&new_text, home.as_deref())?;
    Ok((new_text, config))
}

/// Writes `changes` into the config file at `path`.
pub fn set(path: &Path, changes: &[(&str, toml::Value)]) -> Result<()> {
    let (new_text, _) = prepare(path, changes)?;
    crate::state::write_atomically(path, new_text.as_bytes())
}

/// The effective value of `key` (the default when the file does not set it).
pub fn get(config: &Config, key: &str) -> Result<String> {
    check_key(key)?;
    let list = |items: &[String]| toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect());
    let value = match key {
        "backend" => toml::Value::try_from(config.backend)?,
        "vm.cpus" => toml::Value::Integer(config.cpus.into()),
        "vm.memory-mib" => toml::Value::Integer(config.memory_mib as i64),
        "vm.disk-gib" => toml::Value::Integer(config.disk_gib as i64),
        "vm.shares" => list(&config.shares.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
        "vm.arch" => toml::Value::try_from(config.arch)?,
        "vm.hypervisor" => match config.hypervisor {
            Some(hypervisor) => toml::Value::String(hypervisor.name().into()),
            None => return Ok(String::new()),
        },
        "engine.registry-mirrors" => list(&config.registry_mirrors),
        "engine.insecure-registries" => list(&config.insecure_registries),
        "api.tcp" => match config.api_tcp {
            Some(address) => toml::Value::String(address.to_string()),
            None => return Ok(String::new()),
        },
        _ => unreachable!("checked"),
    };
    Ok(match value {
        toml::Value::String(text) => text,
        other => other.to_string(),
    })
}

/// A size as `--memory` and `--disk` take it: `8G`, `8GiB`, `512M`,
/// `512MiB`; a bare number is GiB, as Colima's flags are.
pub fn parse_size_mib(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| anyhow::anyhow!("{text:?} is not a size (e.g. 8G or 512M)"))?;
    let factor = match unit.trim() {
        "" | "g" | "gb" | "gib" => 1024,
        "m" | "mb" | "mib" => 1,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => bail!("{text:?} is not a size: use a number with M or G (e.g. 8G or 512M)"),
    };
    number.checked_mul(factor).with_context(|| format!("{text:?} is too large"))
}

/// The config changes `berth start --cpus/--memory/--disk` asks for.
pub fn start_flag_changes(
    cpus: Option<u32>,
    memory: Option<&str>,
    disk: Option<&str>,
) -> Result<Vec<(&'static str, toml::Value)>> {
    let mut changes = Vec::new();
    if let Some(cpus) = cpus {
        changes.push(("vm.cpus", toml::Value::Integer(cpus.into())));
    }
    if let Some(memory) = memory {
        let mib = parse_size_mib(memory).context("--memory")?;
        changes.push(("vm.memory-mib", toml::Value::Integer(mib as i64)));
    }
    if let Some(disk) = disk {
        let mib = parse_size_mib(disk).context("--disk")?;
        if mib % 1024 != 0 {
            bail!("--disk {disk}: the data disk is sized in whole GiB (e.g. 100G)");
        }
        changes.push(("vm.disk-gib", toml::Value::Integer((mib / 1024) as i64)));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn values_parse_as_toml_or_as_text() {
        assert_eq!(parse_value("4"), toml::Value::Integer(4));
        assert_eq!(parse_value("local"), toml::Value::String("local".into()));
        assert_eq!(parse_value("127.0.0.1:2375"), toml::Value::String("127.0.0.1:2375".into()));
        assert_eq!(parse_value("[\"/tmp\"]"), toml::Value::Array(vec![toml::Value::String("/tmp".into())]));
    }

    #[test]
    fn set_keeps_other_keys_and_validates_as_the_file_does() {
        let h = home();
        let text = "[vm]\ncpus = 2\n[api]\ntcp = \"127.0.0.1:2375\"\n";
        let new = with_values(text, &[("vm.memory-mib", parse_value("1024"))], Some(h.path())).unwrap();
        let config = Config::parse(&new, Some(h.path())).unwrap();
        assert_eq!((config.cpus, config.memory_mib), (2, 1024));
        assert_eq!(config.api_tcp, Some("127.0.0.1:2375".parse().unwrap()));
        let new = with_values("", &[("backend", parse_value("local"))], Some(h.path())).unwrap();
        assert_eq!(get(&Config::parse(&new, Some(h.path())).unwrap(), "backend").unwrap(), "local");

        let err =
            |changes: &[(&str, toml::Value)]| format!("{:#}", with_values(text, changes, Some(h.path())).unwrap_err());
        assert!(err(&[("vm.cpus", parse_value("0"))]).contains("vm.cpus = 0 is out of range"));
        assert!(err(&[("vm.cpu", parse_value("2"))]).contains("unknown config key \"vm.cpu\""));
        assert!(err(&[("api.tcp", parse_value("localhost"))]).contains("api.tcp"));
        assert!(err(&[("vm.shares", parse_value("[\"/no/such/dir\"]"))]).contains("not an existing directory"));
        assert!(err(&[("vm.cpus", parse_value("two"))]).contains("cpus"));
        if cfg!(not(windows)) {
            // `berth config set vm.hypervisor hcs` off Windows: refused before it is written.
            assert!(err(&[("vm.hypervisor", parse_value("hcs"))]).contains("a Windows hypervisor"));
        }
    }

    #[test]
    fn get_answers_defaults_and_every_key() {
        let h = home();
        let config = Config::parse("", Some(h.path())).unwrap();
        assert_eq!(get(&config, "vm.memory-mib").unwrap(), "2048");
        assert_eq!(get(&config, "api.tcp").unwrap(), "");
        #[cfg(target_os = "linux")]
        assert_eq!(get(&config, "vm.hypervisor").unwrap(), "qemu");
        for key in KEYS {
            get(&config, key).unwrap();
        }
        assert!(get(&config, "nope").is_err());
    }

    #[test]
    fn start_flags_become_config_keys() {
        assert_eq!(parse_size_mib("8G").unwrap(), 8192);
        assert_eq!(parse_size_mib("512MiB").unwrap(), 512);
        assert_eq!(parse_size_mib("4").unwrap(), 4096, "a bare number is GiB, as Colima's");
        assert!(parse_size_mib("lots").is_err());
        assert!(parse_size_mib("8X").is_err());
        let changes = start_flag_changes(Some(4), Some("8G"), Some("100G")).unwrap();
        assert_eq!(
            changes,
            vec![
                ("vm.cpus", toml::Value::Integer(4)),
                ("vm.memory-mib", toml::Value::Integer(8192)),
                ("vm.disk-gib", toml::Value::Integer(100))
            ]
        );
        assert!(format!("{:#}", start_flag_changes(None, None, Some("1500M")).unwrap_err()).contains("whole GiB"));
    }
}
