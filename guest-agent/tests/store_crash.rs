//! The image store after the agent is killed (SIGKILL) in the middle of a
//! `docker load` and of a pull: nothing half-written is visible, the
//! leftovers are cleaned at the next start, and the same load or pull then
//! succeeds.

mod common;

#[path = "../../tests/vm/registry.rs"]
mod registry;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{ArchiveChunk, ListImagesRequest, PullImageRequest};
use berth_engine::test_support;
use common::start_agent;
use tonic::transport::Channel;

/// Bytes that do not compress, so the image stays big on the wire too.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// busybox plus a 48 MB layer, different for each `seed`.
fn big_image(tag: &str, seed: u64) -> (Vec<u8>, String) {
    let files: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("big/{i}"), noise(12 << 20, seed * 10 + i))).collect();
    test_support::docker_archive(&[test_support::busybox_layer(), test_support::tar(&files)], &[tag])
}

/// Unfinished work under `dir`: temporary unpack directories anywhere, and
/// whatever is in the image store's `tmp`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_store_tmp = entry.file_name() == "tmp" && dir.join("layers").is_dir();
        if entry.file_name().to_string_lossy().starts_with(berth_engine::layer::TEMP_PREFIX) {
            found.push(path.display().to_string());
        } else if is_store_tmp {
            found.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path().display().to_string()));
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(leftovers(&path));
        }
    }
    found
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn image_tags(client: &mut AgentClient<Channel>) -> Vec<String> {
    let images = client.list_images(ListImagesRequest {}).await.unwrap().into_inner().images;
    images.into_iter().flat_map(|i| i.tags).collect()
}

#[tokio::test]
async fn a_crash_during_load_or_pull_leaves_the_store_consistent() {
    let mut agent = start_agent().await;
    let data = agent.dir.path().join("data");
    let (archive, _) = big_image("big:1", 1);
    let chunks = |bytes: &[u8]| -> Vec<ArchiveChunk> {
        bytes.chunks(256 * 1024).map(|c| ArchiveChunk { data: c.to_vec() }).collect()
    };

    // Load: half the archive arrives, then the agent dies.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = agent.client.clone();
    let load = tokio::spawn(async move { client.load_images(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    for chunk in chunks(&archive[..archive.len() / 2]) {
        tx.send(chunk).await.unwrap();
    }
    wait_for("the load to write into the store", || !leftovers(&data).is_empty());
    agent.crash_and_restart().await;
    drop(tx);
    assert!(load.await.unwrap().is_err(), "the interrupted load failed");
    assert!(image_tags(&mut agent.client).await.is_empty(), "no half-loaded image is visible");
    assert_eq!(leftovers(&data), Vec::<String>::new(), "the restart cleaned the leftovers");
    agent.client.load_images(tokio_stream::iter(chunks(&archive))).await.unwrap();
    assert_eq!(image_tags(&mut agent.client).await, vec!["docker.io/library/big:1".to_string()]);

    // Pull: the agent dies while the big layer downloads.
    let registry = registry::LocalRegistry::start();
    let path = agent.dir.path().join("big.tar");
    std::fs::write(&path, big_image("big:2", 2).0).unwrap();
    registry.push(&path, "library/big:2");
    let reference = format!("127.0.0.1:{}/library/big:2", registry.port);
    let request = || PullImageRequest { reference: reference.clone(), ..Default::default() };
    let mut progress = agent.client.pull_image(request()).await.unwrap().into_inner();
    // The first messages are the manifest's; a download is under way once
    // a layer reports progress.
    while let Some(message) = progress.message().await.unwrap() {
        if String::from_utf8_lossy(&message.json).contains("Downloading") {
            break;
        }
    }
    agent.crash_and_restart().await;
    let tags = image_tags(&mut agent.client).await;
    assert!(!tags.contains(&reference), "no half-pulled image is visible: {tags:?}");
    assert_eq!(leftovers(&data), Vec::<String>::new(), "the restart cleaned the leftovers");
    let mut progress = agent.client.pull_image(request()).await.unwrap().into_inner();
    while progress.message().await.unwrap().is_some() {}
    assert!(image_tags(&mut agent.client).await.contains(&reference));
}
