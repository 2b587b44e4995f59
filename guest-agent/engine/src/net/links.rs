//! Legacy `--link` environment variables, as dockerd's daemon/links makes
//! them for a container that links `target` under `alias`.

use std::net::Ipv4Addr;

use crate::container::Container;

/// `ALIAS_NAME`, `ALIAS_PORT`, `ALIAS_PORT_<p>_<PROTO>{,_ADDR,_PORT,_PROTO}`
/// and `ALIAS_ENV_<VAR>` for the target's own variables.
pub fn link_env(alias: &str, recipient: &str, target: &Container, ip: Ipv4Addr) -> Vec<String> {
    let prefix = alias.to_uppercase().replace('-', "_");
    let config = serde_json::to_value(&target.config).unwrap_or_default();
    let mut env = vec![format!("{prefix}_NAME=/{recipient}/{alias}")];
    let mut ports: Vec<(u16, String)> = config["ExposedPorts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            Some((port.parse().ok()?, proto.to_lowercase()))
        })
        .collect();
    ports.sort();
    if let Some((port, proto)) = ports.first() {
        env.push(format!("{prefix}_PORT={proto}://{ip}:{port}"));
    }
    for (port, proto) in &ports {
        let key = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
        env.push(format!("{key}={proto}://{ip}:{port}"));
        env.push(format!("{key}_ADDR={ip}"));
        env.push(format!("{key}_PORT={port}"));
        env.push(format!("{key}_PROTO={proto}"));
    }
    for var in config["Env"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
        let Some((name, value)) = var.split_once('=') else { continue };
        // dockerd skips what every image has.
        if name != "HOME" && name != "PATH" {
            env.push(format!("{prefix}_ENV_{name}={value}"));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_as_dockerd_sets_them() {
        let target: Container = serde_json::from_value(json!({
            "id": "0123456789abcdef", "name": "db", "created_ns": 0, "image": "x", "image_id": "y",
            "config": {"ExposedPorts": {"6379/tcp": {}, "53/udp": {}}, "Env": ["PATH=/bin", "PASSWORD=x"]},
            "host_config": {}, "layers": [], "state": crate::container::State::default(), "restart_count": 0
        }))
        .unwrap();
        let env = link_env("my-db", "web", &target, Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(
            env,
            [
                "MY_DB_NAME=/web/my-db",
                "MY_DB_PORT=udp://172.17.0.2:53",
                "MY_DB_PORT_53_UDP=udp://172.17.0.2:53",
                "MY_DB_PORT_53_UDP_ADDR=172.17.0.2",
                "MY_DB_PORT_53_UDP_PORT=53",
                "MY_DB_PORT_53_UDP_PROTO=udp",
                "MY_DB_PORT_6379_TCP=tcp://172.17.0.2:6379",
                "MY_DB_PORT_6379_TCP_ADDR=172.17.0.2",
                "MY_DB_PORT_6379_TCP_PORT=6379",
                "MY_DB_PORT_6379_TCP_PROTO=tcp",
                "MY_DB_ENV_PASSWORD=x",
            ]
        );
    }
}
