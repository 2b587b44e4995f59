//! Image configs the engine writes itself: `docker commit` (a container's
//! writable layer on top of its image) and `docker import` (a tarball as a
//! one-layer image), with the Dockerfile instructions both accept as
//! `--change`; and the parts of an image config other code reads typed
//! (`Healthcheck`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

/// Docker's `container.HealthConfig`, as image configs (HEALTHCHECK) and
/// create requests (`--health-*`) carry it. Durations are nanoseconds; a
/// zero field means "inherit" (from the image, then Docker's default), so
/// zero fields are left out as Go's `omitempty` leaves them out.
///
/// `Test` is `[]` (inherit), `["NONE"]` (disabled), `["CMD", arg...]` or
/// `["CMD-SHELL", command]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(rename = "Test", default, deserialize_with = "go_strings", skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, deserialize_with = "go_int", skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, deserialize_with = "go_int", skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, deserialize_with = "go_int", skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// API 1.44: the interval between probes during the start period.
    #[serde(rename = "StartInterval", default, deserialize_with = "go_int", skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, deserialize_with = "go_int", skip_serializing_if = "is_zero")]
    pub retries: i64,
    /// Keys Berth does not know, kept as sent (inspect and the stored
    /// record show what the client sent; Go's decoder ignores them).
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, Value>,
}

impl Healthcheck {
    /// An image config's (`config.Healthcheck`), if it has one that parses.
    pub fn of_image(image_config: &Value) -> Option<Healthcheck> {
        let value = image_config.get("config")?.get("Healthcheck")?;
        serde_json::from_value(value.clone()).ok()
    }

    /// dockerd's merge (`daemon/commit.go` merge): each field the container
    /// leaves zero comes from the image.
    pub fn inherit(&mut self, image: &Healthcheck) {
        if self.test.is_empty() {
            self.test = image.test.clone();
        }
        for (mine, theirs) in [
            (&mut self.interval, image.interval),
            (&mut self.timeout, image.timeout),
            (&mut self.start_period, image.start_period),
            (&mut self.start_interval, image.start_interval),
            (&mut self.retries, image.retries),
        ] {
            if *mine == 0 {
                *mine = theirs;
            }
        }
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// Go's `[]string`: `null` is empty, a `null` element is "".
fn go_strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let items = Option::<Vec<Option<String>>>::deserialize(deserializer)?;
    Ok(items.unwrap_or_default().into_iter().map(Option::unwrap_or_default).collect())
}

/// Go's integer fields: `null` is zero.
fn go_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(deserializer)?.unwrap_or_default())
}

/// The Dockerfile instructions `--change` accepts, as Docker lists them.
const CHANGE_INSTRUCTIONS: &[&str] =
    &["CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"];

/// Applies `--change` instructions (`CMD ["sh"]`, `ENV A=1 B=2`, `EXPOSE 80/tcp`...)
/// to a Docker container Config object. Errors name the bad instruction,
/// in Docker's words where it has them.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<(), String> {
    if !config.is_object() {
        *config = json!({});
    }
    for change in changes {
        // Docker splits the --change values on newlines too.
        for line in change.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            apply_one(config.as_object_mut().expect("an object"), line)?;
        }
    }
    Ok(())
}

fn apply_one(config: &mut Map<String, Value>, line: &str) -> Result<(), String> {
    let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let instruction = instruction.to_ascii_uppercase();
    let args = args.trim();
    if !CHANGE_INSTRUCTIONS.contains(&instruction.as_str()) {
        return Err(format!("{instruction} is not a valid change command"));
    }
    match instruction.as_str() {
        "CMD" | "ENTRYPOINT" => {
            let key = if instruction == "CMD" { "Cmd" } else { "Entrypoint" };
            config.insert(key.into(), exec_form(args).into());
        }
        "ENV" => {
            let env = config.entry("Env").or_insert_with(|| json!([]));
            if !env.is_array() {
                *env = json!([]);
            }
            let env = env.as_array_mut().expect("an array");
            for (key, value) in key_values(args, "ENV")? {
                env.retain(|e| e.as_str().and_then(|e| e.split_once('=')).map(|(k, _)| k) != Some(key.as_str()));
                env.push(format!("{key}={value}").into());
            }
        }
        "LABEL" => {
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            for (key, value) in key_values(args, "LABEL")? {
                labels[key] = value.into();
            }
        }
        "EXPOSE" => {
            let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            if !ports.is_object() {
                *ports = json!({});
            }
            for port in args.split_whitespace() {
                let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.split('-').any(|p| p.parse::<u16>().is_err()) || !["tcp", "udp", "sctp"].contains(&proto) {
                    return Err(format!("invalid port specification in EXPOSE: {port:?}"));
                }
                ports[format!("{number}/{proto}")] = json!({});
            }
        }
        "VOLUME" => {
            let volumes = config.entry("Volumes").or_insert_with(|| json!({}));
            if !volumes.is_object() {
                *volumes = json!({});
            }
            let paths = match serde_json::from_str::<Vec<String>>(args) {
                Ok(list) => list,
                Err(_) => args.split_whitespace().map(String::from).collect(),
            };
            for path in paths {
                volumes[path] = json!({});
            }
        }
        "USER" => {
            config.insert("User".into(), args.into());
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), args.into());
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), args.into());
        }
        _ => return Err(format!("{instruction} is not supported by Berth's --change")),
    }
    Ok(())
}

/// `["a","b"]` (exec form) or `a b` (shell form: run by /bin/sh -c).
fn exec_form(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(list) => list,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), args.into()],
    }
}

/// `K=V K2="v 2"` or the legacy `K V with spaces`.
fn key_values(args: &str, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let words = shell_words(args);
    if words.is_empty() {
        return Err(format!("{instruction} requires at least one argument"));
    }
    if !words[0].contains('=') {
        let (key, value) =
            args.split_once(char::is_whitespace).ok_or_else(|| format!("{instruction} must have two arguments"))?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{instruction} names must be KEY=VALUE, got {w:?}")),
        })
        .collect()
}

/// Splits on whitespace outside double or single quotes, removing the quotes.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_word = true;
            }
            (_, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// The fields of a container Config that belong in an image's config.
fn image_part(config: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "Hostname",
        "Domainname",
        "User",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "ExposedPorts",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Env",
        "Cmd",
        "Image",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "OnBuild",
        "Labels",
        "StopSignal",
        "Healthcheck",
    ] {
        if let Some(value) = config.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// What to record about a new layer in the image's history.
pub struct NewLayer {
    pub diff_id: String,
    pub created: String,
    pub created_by: String,
    pub comment: String,
    pub author: String,
}

/// `docker commit`: the base image's config with the container's Config,
/// one more layer and one more history entry.
pub fn committed(base: &Value, container_id: &str, container_config: &Value, layer: &NewLayer) -> Value {
    let mut image = base.clone();
    if !image.is_object() {
        image = json!({});
    }
    image["config"] = image_part(container_config);
    image["container_config"] = image_part(container_config);
    image["container"] = container_id.into();
    image["created"] = layer.created.clone().into();
    image["author"] = layer.author.clone().into();
    image["comment"] = layer.comment.clone().into();
    add_layer(&mut image, layer);
    image
}

/// `docker import`: a one-layer image with `config` (the `--change`s).
pub fn imported(config: &Value, layer: &NewLayer) -> Value {
    let mut image = json!({
        "architecture": crate::reference::oci_architecture(),
        "os": "linux",
        "created": layer.created,
        "comment": layer.comment,
        "config": image_part(config),
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    add_layer(&mut image, layer);
    image
}

fn add_layer(image: &mut Value, layer: &NewLayer) {
    if !image["rootfs"]["diff_ids"].is_array() {
        image["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
    }
    image["rootfs"]["diff_ids"].as_array_mut().expect("an array").push(layer.diff_id.clone().into());
    let mut entry = json!({ "created": layer.created, "created_by": layer.created_by });
    if !layer.comment.is_empty() {
        entry["comment"] = layer.comment.clone().into();
    }
    if !layer.author.is_empty() {
        entry["author"] = layer.author.clone().into();
    }
    match image["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => image["history"] = json!([entry]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> Result<Value, String> {
        let mut config = json!({ "Env": ["PATH=/bin", "A=old"], "Cmd": ["sh"] });
        apply_changes(&mut config, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(config)
    }

    #[test]
    fn dockerfile_changes_apply_as_docker_applies_them() {
        let config = changed(&[
            "CMD [\"echo\", \"hi\"]",
            "ENTRYPOINT /entry.sh --flag",
            "ENV A=new B=\"two words\"",
            "env LEGACY value with spaces",
            "EXPOSE 8000 53/udp",
            "LABEL com.example=yes",
            "USER foobar",
            "WORKDIR /srv",
            "VOLUME [\"/data\"]",
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(config["Cmd"], json!(["echo", "hi"]));
        assert_eq!(config["Entrypoint"], json!(["/bin/sh", "-c", "/entry.sh --flag"]));
        assert_eq!(config["Env"], json!(["PATH=/bin", "A=new", "B=two words", "LEGACY=value with spaces"]));
        assert_eq!(config["ExposedPorts"], json!({ "8000/tcp": {}, "53/udp": {} }));
        assert_eq!(config["Labels"], json!({ "com.example": "yes" }));
        assert_eq!((config["User"].as_str(), config["WorkingDir"].as_str()), (Some("foobar"), Some("/srv")));
        assert_eq!(config["Volumes"], json!({ "/data": {} }));
        assert_eq!(config["StopSignal"], "SIGINT");
    }

    #[test]
    fn healthchecks_read_as_go_reads_them_and_inherit_zero_fields() {
        let image = json!({ "config": { "Healthcheck": {
            "Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000i64, "Retries": 2 } } });
        let from_image = Healthcheck::of_image(&image).unwrap();
        assert_eq!(from_image.test, ["CMD-SHELL", "true"]);
        let mut given: Healthcheck =
            serde_json::from_value(json!({ "Test": null, "Timeout": 5, "Retries": null })).unwrap();
        given.inherit(&from_image);
        assert_eq!((given.interval, given.timeout, given.retries), (1_000_000_000, 5, 2));
        assert_eq!(given.test, ["CMD-SHELL", "true"]);
        // Zero fields are omitted, as Go's omitempty omits them.
        assert_eq!(serde_json::to_value(Healthcheck::default()).unwrap(), json!({}));
        assert!(Healthcheck::of_image(&json!({ "config": {} })).is_none());
    }

    #[test]
    fn bad_changes_are_refused_by_name() {
        assert_eq!(changed(&["RUN rm -rf /"]).unwrap_err(), "RUN is not a valid change command");
        assert!(changed(&["EXPOSE eighty"]).unwrap_err().contains("EXPOSE"));
        assert!(changed(&["ENV"]).unwrap_err().contains("ENV"));
    }

    #[test]
    fn commits_and_imports_add_a_layer_and_history() {
        let base = json!({ "architecture": "amd64", "os": "linux", "config": { "Cmd": ["sh"] },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:aa"] }, "history": [{ "created_by": "base" }] });
        let layer = NewLayer {
            diff_id: "sha256:bb".into(),
            created: "2026-01-01T00:00:00Z".into(),
            created_by: "sh -c x".into(),
            comment: "c".into(),
            author: "me".into(),
        };
        let image = committed(&base, "abc", &json!({ "Cmd": ["x"], "Hostname": "h", "HostConfig": {} }), &layer);
        assert_eq!(image["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(image["history"].as_array().unwrap().len(), 2);
        assert_eq!((image["config"]["Cmd"].clone(), image["container"].clone()), (json!(["x"]), json!("abc")));
        assert!(image["config"].get("HostConfig").is_none());
        let imported = imported(&json!({ "User": "u" }), &layer);
        assert_eq!(imported["rootfs"]["diff_ids"], json!(["sha256:bb"]));
        assert_eq!(imported["config"]["User"], "u");
        assert_eq!(imported["os"], "linux");
    }
}
