//! Pulls from a real registry (docker-registry, with images pushed by
//! skopeo), and the pieces of a pull on their own.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oci_client::manifest::ImageIndexEntry;
use oci_client::Client;

use super::endpoint::is_loopback;
use super::*;
use crate::test_support;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

/// docker-registry and skopeo (Debian's; packaging/setup.sh installs
/// them: a test installs nothing itself).
fn tools_available() -> bool {
    let present = Path::new(REGISTRY).exists() && Path::new(SKOPEO).exists();
    assert!(present, "{REGISTRY} and {SKOPEO} are missing: packaging/setup.sh installs them");
    present
}

macro_rules! registry_or_skip {
    () => {
        registry_or_skip!(false)
    };
    ($auth:expr) => {
        match TestRegistry::start($auth) {
            Some(registry) => registry,
            None => {
                eprintln!("SKIPPED: docker-registry/skopeo are not installed and could not be installed");
                return;
            }
        }
    };
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A distribution registry on a free loopback port, killed on drop.
struct TestRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// `user:password` when the registry requires basic auth.
    creds: Option<&'static str>,
}

/// bcrypt of TEST_PASSWORD (the only htpasswd format distribution reads).
const TEST_HTPASSWD: &str = "tester:$2b$04$dAZhn4uLw/GYmBuDrbjpfOnCHgyrfKj210P.upybjYHPbU4.SvTkC\n";
const TEST_PASSWORD: &str = "berth-secret";

impl TestRegistry {
    fn start(auth: bool) -> Option<TestRegistry> {
        if !tools_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if auth {
            std::fs::write(dir.path().join("htpasswd"), TEST_HTPASSWD).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let creds = auth.then_some("tester:berth-secret");
        let registry = TestRegistry { child, port, dir, creds };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the registry did not listen: {}", registry.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GET requests for a blob, from the registry's access log.
    fn blob_gets(&self, repository: &str, short_digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repository}/blobs/sha256:{short_digest}");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// `skopeo copy` of a docker-archive into the registry.
    fn push_archive(&self, archive: &[u8], name: &str) {
        let file = self.dir.path().join(format!("archive-{}.tar", name.replace(['/', ':'], "_")));
        std::fs::write(&file, archive).unwrap();
        let out = Command::new(SKOPEO)
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .args(self.creds.map(|c| format!("--dest-creds={c}")))
            .arg(format!("docker-archive:{}", file.display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The file the registry serves a blob from.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    fn client(&self) -> Client {
        client_for(&Endpoint { host: self.host(), insecure: true, mirror: false }).unwrap()
    }

    fn reference(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host(), repository.into(), tag.into())
    }

    /// Pushes blobs and a manifest with oci-client; returns the manifest's descriptor JSON.
    async fn push_image(
        &self,
        repository: &str,
        tag: &str,
        config: &[u8],
        layers: &[(&[u8], &str)],
    ) -> serde_json::Value {
        let client = self.client();
        let reference = self.reference(repository, tag);
        let auth = RegistryAuth::Anonymous;
        client.auth(&reference, &auth, oci_client::RegistryOperation::Push).await.unwrap();
        let config_digest = test_support::digest(config);
        client.push_blob(&reference, config.to_vec(), &config_digest).await.unwrap();
        let mut layer_descriptors = Vec::new();
        for (data, media_type) in layers {
            let digest = test_support::digest(data);
            client.push_blob(&reference, data.to_vec(), &digest).await.unwrap();
            layer_descriptors.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()}));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descriptors,
        }))
        .unwrap();
        self.push_manifest(repository, tag, &manifest, "application/vnd.oci.image.manifest.v1+json").await;
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": test_support::digest(&manifest),
            "size": manifest.len(),
        })
    }

    async fn push_manifest(&self, repository: &str, tag: &str, body: &[u8], media_type: &str) {
        let client = self.client();
        let reference = self.reference(repository, tag);
        client.auth(&reference, &RegistryAuth::Anonymous, oci_client::RegistryOperation::Push).await.unwrap();
        client.push_manifest_raw(&reference, body.to_vec(), media_type.parse().unwrap()).await.unwrap();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_store(dir: &Path) -> Arc<Mutex<ImageStore>> {
    Arc::new(Mutex::new(ImageStore::open(dir).unwrap()))
}

async fn pull_recorded(
    store: &Arc<Mutex<ImageStore>>,
    reference: &str,
    opts: &PullOptions,
) -> (Result<String, PullError>, Vec<Progress>) {
    let mut events = Vec::new();
    let result = pull(store.clone(), reference, opts, |p| events.push(p)).await;
    (result, events)
}

fn tmp_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("tmp")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn started(events: &[Progress]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| if let Progress::LayerStart { id, .. } = e { Some(id.clone()) } else { None })
        .collect()
}

fn existing(events: &[Progress]) -> Vec<String> {
    events.iter().filter_map(|e| if let Progress::LayerExists { id } = e { Some(id.clone()) } else { None }).collect()
}

fn config_json(arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| test_support::digest(l)).collect();
    let mut config = serde_json::json!({
        "architecture": arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(variant) = variant {
        config["variant"] = variant.into();
    }
    serde_json::to_vec(&config).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn pulls_into_the_store_and_reuses_layers() {
    let registry = registry_or_skip!();
    let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
    registry.push_archive(&archive, "test/busybox:1");
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let opts = PullOptions::default();
    let reference = format!("{}/test/busybox:1", registry.host());

    let (result, events) = pull_recorded(&store, &reference, &opts).await;
    assert_eq!(result.unwrap(), expected_id);
    assert!(
        matches!(&events[0], Progress::Resolved { reference: r, digest } if *r == reference && digest.starts_with("sha256:"))
    );
    let layer_ids = started(&events);
    assert_eq!(layer_ids.len(), 1, "{events:?}");
    assert!(events.contains(&Progress::LayerDone { id: layer_ids[0].clone() }));
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::LayerProgress { current, total, .. } if current == total && *total > 0)));
    assert_eq!(events.last(), Some(&Progress::Done { image_id: expected_id.clone(), changed: true }));
    assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1, "{}", registry.log());
    let busybox_diff_id = test_support::digest(&test_support::busybox_layer());
    {
        let store = store.lock().unwrap();
        let record = store.resolve(&reference).expect("tagged");
        assert_eq!(record.id, expected_id);
        assert_eq!(record.diff_ids, vec![busybox_diff_id.clone()]);
        assert!(record.size > 0);
        assert_eq!(store.tags_of(&expected_id), vec![reference.as_str()]);
        assert!(store.layer_dir(&busybox_diff_id).unwrap().join("bin/busybox").is_file());
    }
    assert!(tmp_entries(dir.path()).is_empty(), "{:?}", tmp_entries(dir.path()));

    // Again: the layer is there, nothing is downloaded.
    let (result, events) = pull_recorded(&store, &reference, &opts).await;
    assert_eq!(result.unwrap(), expected_id);
    assert!(started(&events).is_empty(), "{events:?}");
    assert_eq!(existing(&events), layer_ids);
    assert_eq!(events.last(), Some(&Progress::Done { image_id: expected_id.clone(), changed: false }));
    assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1);

    // A new image sharing the busybox layer downloads only its own layer.
    let extra = test_support::tar(&[("etc/motd", "hello\n")]);
    let (archive2, expected_id2) = test_support::docker_archive(&[test_support::busybox_layer(), extra], &["x:1"]);
    registry.push_archive(&archive2, "test/busybox:2");
    let reference2 = format!("{}/test/busybox:2", registry.host());
    let (result, events) = pull_recorded(&store, &reference2, &opts).await;
    assert_eq!(result.unwrap(), expected_id2);
    assert_eq!(existing(&events), layer_ids);
    assert_eq!(started(&events).len(), 1);
    assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1);

    // Durable: a reopened store has both images and tags.
    let reopened = ImageStore::open(dir.path()).unwrap();
    assert_eq!(reopened.resolve(&reference).unwrap().id, expected_id);
    let second = reopened.resolve(&reference2).unwrap();
    assert_eq!(second.id, expected_id2);
    assert_eq!(second.diff_ids.len(), 2);
    assert_eq!(second.diff_ids[0], busybox_diff_id);
    assert!(second.size > reopened.resolve(&reference).unwrap().size / 2, "size estimated for the shared layer");
}

#[tokio::test]
async fn errors_in_dockers_words() {
    let registry = registry_or_skip!();
    let (archive, _) = test_support::busybox_archive(&["test/busybox:1"]);
    registry.push_archive(&archive, "test/busybox:1");
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let opts = PullOptions::default();
    let host = registry.host();

    let (result, _) = pull_recorded(&store, &format!("{host}/test/busybox:nosuch"), &opts).await;
    let err = result.unwrap_err();
    assert!(matches!(err, PullError::ManifestUnknown { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("manifest for {host}/test/busybox:nosuch not found: manifest unknown: manifest unknown")
    );

    // distribution answers MANIFEST_UNKNOWN for a missing repository too
    // (Docker then says the same); Docker Hub answers 401, tested below.
    let (result, _) = pull_recorded(&store, &format!("{host}/no/such-repo:1"), &opts).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        format!("manifest for {host}/no/such-repo:1 not found: manifest unknown: manifest unknown")
    );

    let closed = format!("127.0.0.1:{}", free_port());
    let (result, _) = pull_recorded(&store, &format!("{closed}/test/busybox:1"), &opts).await;
    let err = result.unwrap_err();
    assert!(matches!(err, PullError::Connection { .. }), "{err:?}");
    assert!(err.to_string().contains(&closed), "{err}");

    let (result, _) = pull_recorded(&store, "Not/Valid", &opts).await;
    assert!(matches!(result.unwrap_err(), PullError::InvalidReference(_)));

    assert_eq!(store.lock().unwrap().images().count(), 0);
    assert!(tmp_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn multi_arch_index_picks_this_platform() {
    let registry = registry_or_skip!();
    let this = reference::oci_architecture();
    let other = if this == "arm64" { "amd64" } else { "arm64" };
    let layer_this = test_support::tar(&[("arch", this)]);
    let layer_other = test_support::tar(&[("arch", other)]);
    let layer_s390x = test_support::tar(&[("arch", "s390x")]);
    let config_this = config_json(this, (this == "arm64").then_some("v8"), &[&layer_this]);
    let config_other = config_json(other, (other == "arm64").then_some("v8"), &[&layer_other]);
    let config_s390x = config_json("s390x", None, &[&layer_s390x]);
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let tar = "application/vnd.oci.image.layer.v1.tar";
    let gz_other = gzip(&layer_other);
    let gz_this = gzip(&layer_this);
    let m_other = registry.push_image("test/multi", "other", &config_other, &[(&gz_other, gz)]).await;
    let m_s390x = registry.push_image("test/multi", "s390x", &config_s390x, &[(&layer_s390x, tar)]).await;
    let m_this = registry.push_image("test/multi", "this", &config_this, &[(&gz_this, gz)]).await;
    let entry = |m: &serde_json::Value, arch: &str| {
        let mut e = m.clone();
        e["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        if arch == "arm64" {
            e["platform"]["variant"] = "v8".into();
        }
        e
    };
    let mut attestation = m_this.clone();
    attestation["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
    let entries = vec![entry(&m_other, other), entry(&m_s390x, "s390x"), attestation, entry(&m_this, this)];
    let oci_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
    }))
    .unwrap();
    registry.push_manifest("test/multi", "oci", &oci_index, "application/vnd.oci.image.index.v1+json").await;
    let docker_list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [entry(&m_other, other), entry(&m_this, this)],
    }))
    .unwrap();
    registry
        .push_manifest(
            "test/multi",
            "docker",
            &docker_list,
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let opts = PullOptions::default();
    let expected_id = test_support::digest(&config_this);
    for (tag, index) in [("oci", &oci_index), ("docker", &docker_list)] {
        let reference = format!("{}/test/multi:{tag}", registry.host());
        let (result, events) = pull_recorded(&store, &reference, &opts).await;
        assert_eq!(result.unwrap(), expected_id, "{tag}");
        assert_eq!(
            events[0],
            Progress::Resolved { reference: reference.clone(), digest: test_support::digest(index) },
            "the index digest"
        );
        let store = store.lock().unwrap();
        let record = store.resolve(&reference).unwrap();
        assert_eq!(record.diff_ids, vec![test_support::digest(&layer_this)]);
        let unpacked = store.layer_dir(&record.diff_ids[0]).unwrap().join("arch");
        assert_eq!(std::fs::read_to_string(unpacked).unwrap(), this);
    }
    assert_eq!(store.lock().unwrap().images().count(), 1);

    // An index without this platform.
    let foreign = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&m_s390x, "s390x")],
    }))
    .unwrap();
    registry.push_manifest("test/multi", "foreign", &foreign, "application/vnd.oci.image.index.v1+json").await;
    let (result, _) = pull_recorded(&store, &format!("{}/test/multi:foreign", registry.host()), &opts).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        format!("no matching manifest for linux/{this} in the manifest list entries")
    );
}

#[tokio::test]
async fn a_corrupt_blob_leaves_nothing_visible() {
    let registry = registry_or_skip!();
    let good = gzip(&test_support::tar(&[("good", "1")]));
    let bad_layer = test_support::tar(&[("bad", "2")]);
    let bad = gzip(&bad_layer);
    let config = config_json(reference::oci_architecture(), None, &[&test_support::tar(&[("good", "1")]), &bad_layer]);
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    registry.push_image("test/broken", "1", &config, &[(&good, gz), (&bad, gz)]).await;
    // Same length, other bytes: the registry serves it, the digest check must not pass it.
    let data = registry.blob_data(&test_support::digest(&bad));
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let reference = format!("{}/test/broken:1", registry.host());
    let (result, events) = pull_recorded(&store, &reference, &PullOptions::default()).await;
    let err = result.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("digest"), "{err}");
    assert_eq!(started(&events).len(), 2);
    let store = store.lock().unwrap();
    assert!(store.resolve(&reference).is_none());
    assert_eq!(store.images().count(), 0);
    assert!(tmp_entries(dir.path()).is_empty(), "{:?}", tmp_entries(dir.path()));
    assert_eq!(std::fs::read_dir(dir.path().join("layers/sha256")).unwrap().count(), 0, "no layer became visible");
    assert!(
        !dir.path().join("index.json").exists()
            || !std::fs::read_to_string(dir.path().join("index.json")).unwrap().contains("sha256")
    );
}

#[tokio::test]
async fn docker_hub_mirrors_are_tried_in_order() {
    let registry = registry_or_skip!();
    let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
    registry.push_archive(&archive, "library/busybox:1");
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let opts = PullOptions {
        mirrors: vec![format!("http://127.0.0.1:{}", free_port()), format!("http://{}/", registry.host())],
        ..PullOptions::default()
    };
    let (result, _) = pull_recorded(&store, "busybox:1", &opts).await;
    assert_eq!(result.unwrap(), expected_id);
    assert_eq!(store.lock().unwrap().resolve("docker.io/library/busybox:1").unwrap().id, expected_id);
    assert_eq!(store.lock().unwrap().tags_of(&expected_id), vec!["docker.io/library/busybox:1"]);
}

#[tokio::test]
async fn credentials_and_access_denied() {
    let registry = registry_or_skip!(true);
    assert_eq!(registry.creds, Some("tester:berth-secret"));
    let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
    registry.push_archive(&archive, "test/private:1");
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let host = registry.host();
    let reference = format!("{host}/test/private:1");
    let denied =
        format!("pull access denied for {host}/test/private, repository does not exist or may require 'docker login'");

    let (result, _) = pull_recorded(&store, &reference, &PullOptions::default()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, PullError::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&denied), "{err}");

    let with = |password: &str| PullOptions {
        auth: Some(Credentials { username: "tester".into(), password: password.into(), ..Credentials::default() }),
        ..PullOptions::default()
    };
    let (result, _) = pull_recorded(&store, &reference, &with("wrong")).await;
    assert!(result.unwrap_err().to_string().starts_with(&denied));
    assert_eq!(store.lock().unwrap().images().count(), 0);

    let (result, _) = pull_recorded(&store, &reference, &with(TEST_PASSWORD)).await;
    assert_eq!(result.unwrap(), expected_id);
    assert_eq!(store.lock().unwrap().resolve(&reference).unwrap().id, expected_id);
}

#[test]
fn endpoints_and_insecure_registries() {
    let opts = PullOptions {
        mirrors: vec!["https://mirror.example/".into(), "http://10.0.0.1:5000".into()],
        insecure_registries: vec!["registry.lan:5000".into()],
        ..PullOptions::default()
    };
    let hosts: Vec<(String, bool, bool)> =
        endpoints("docker.io", &opts).into_iter().map(|e| (e.host, e.insecure, e.mirror)).collect();
    assert_eq!(
        hosts,
        vec![
            ("mirror.example".into(), false, true),
            ("10.0.0.1:5000".into(), true, true),
            ("registry-1.docker.io".into(), false, false),
        ]
    );
    assert_eq!(endpoints("ghcr.io", &opts), vec![Endpoint { host: "ghcr.io".into(), insecure: false, mirror: false }]);
    assert!(endpoints("registry.lan:5000", &opts)[0].insecure);
    assert!(!endpoints("registry.lan:5001", &opts)[0].insecure);
    for host in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
        assert!(is_loopback(host), "{host}");
    }
    for host in ["example.com", "10.0.0.1:5000", "localhost.example:5000"] {
        assert!(!is_loopback(host), "{host}");
    }
}

#[test]
fn references_for_the_registry() {
    let t = Target::parse(&reference::normalize("busybox").unwrap()).unwrap();
    assert_eq!(
        (t.registry.as_str(), t.repository.as_str(), t.tag.as_deref()),
        ("docker.io", "library/busybox", Some("latest"))
    );
    assert_eq!((t.familiar(), t.familiar_repository().as_str()), ("busybox:latest", "busybox"));
    let t = Target::parse("localhost:5000/a/b:1").unwrap();
    assert_eq!((t.registry.as_str(), t.repository.as_str()), ("localhost:5000", "a/b"));
    assert_eq!(t.familiar_repository(), "localhost:5000/a/b");
    let digest = format!("sha256:{}", "a".repeat(64));
    let t = Target::parse(&reference::normalize(&format!("me/app@{digest}")).unwrap()).unwrap();
    assert_eq!((t.tag.as_deref(), t.digest.as_deref()), (None, Some(digest.as_str())));
    assert_eq!(t.familiar_repository(), "me/app");
    assert_eq!(t.oci_reference(DOCKER_HUB_REGISTRY).resolve_registry(), DOCKER_HUB_REGISTRY);
}

#[test]
fn only_sha256_digests_name_files() {
    assert!(is_sha256_digest(&format!("sha256:{}", "0a".repeat(32))));
    for bad in [
        format!("sha256:{}", "0A".repeat(32)),
        format!("sha256:{}", "0".repeat(63)),
        format!("sha512:{}", "0".repeat(64)),
        format!("sha256:../../{}", "0".repeat(58)),
        String::new(),
    ] {
        assert!(!is_sha256_digest(&bad), "{bad}");
    }
}

#[test]
fn platform_selection_prefers_the_exact_variant() {
    let entries: Vec<ImageIndexEntry> = serde_json::from_value(serde_json::json!([
        {"mediaType": "m", "digest": "sha256:1", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"mediaType": "m", "digest": "sha256:2", "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "m", "digest": "sha256:3", "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": "m", "digest": "sha256:4", "size": 1, "platform": {"os": "windows", "architecture": "amd64"}},
        {"mediaType": "m", "digest": "sha256:5", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
    ]))
    .unwrap();
    assert_eq!(select_platform(&entries, "arm64").unwrap().digest, "sha256:3");
    assert_eq!(select_platform(&entries, "amd64").unwrap().digest, "sha256:5");
    assert_eq!(select_platform(&entries[..2], "arm64").unwrap().digest, "sha256:2");
    assert!(select_platform(&entries, "s390x").is_none());
}

#[test]
fn credentials_from_x_registry_auth() {
    let c: Credentials = serde_json::from_str(r#"{"username":"u","password":"p"}"#).unwrap();
    assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Basic("u".into(), "p".into()));
    let c: Credentials = serde_json::from_str(r#"{"auth":"dTpwOng="}"#).unwrap();
    assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Basic("u".into(), "p:x".into()));
    let c: Credentials = serde_json::from_str(r#"{"registrytoken":"t"}"#).unwrap();
    assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Bearer("t".into()));
    let c: Credentials = serde_json::from_str(r#"{"identitytoken":"t"}"#).unwrap();
    assert!(matches!(registry_auth(Some(&c)), Err(PullError::Unsupported(_))));
    assert_eq!(registry_auth(None).unwrap(), RegistryAuth::Anonymous);
    let secret = Credentials { username: "u".into(), password: "hunter2".into(), ..Credentials::default() };
    assert!(!format!("{secret:?}").contains("hunter2"));
}

#[test]
fn the_pull_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let opts = PullOptions::default();
    let future = pull(open_store(dir.path()), "busybox", &opts, |_| {});
    assert_send(&future);
}
