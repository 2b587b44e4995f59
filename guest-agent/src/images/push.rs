//! `docker push`, with Docker's progress messages.

use std::sync::Arc;

use berth_agent_proto::PushImageRequest;
use berth_engine::registry::{PullOptions, PushProgress};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::pull::progress_bar;
use super::ImagesSlot;
use crate::error::AgentError;
use crate::events::Events;

/// Docker's message for a push event.
fn push_message(event: &PushProgress) -> Vec<Value> {
    let layer = |status: &str, id: &str| json!({ "status": status, "progressDetail": {}, "id": id });
    match event {
        PushProgress::Repository { name } => {
            vec![json!({ "status": format!("The push refers to repository [{name}]") })]
        }
        PushProgress::Preparing { id } => vec![layer("Preparing", id)],
        PushProgress::Pushing { id, current, total } => vec![json!({
            "status": "Pushing", "progressDetail": { "current": current, "total": total },
            "progress": progress_bar(*current, *total), "id": id,
        })],
        PushProgress::Pushed { id } => vec![layer("Pushed", id)],
        PushProgress::Exists { id } => vec![layer("Layer already exists", id)],
        PushProgress::Mounted { id, from } => vec![layer(&format!("Mounted from {from}"), id)],
        PushProgress::Tagged { tag, digest, size } => vec![
            json!({ "status": format!("{tag}: digest: {digest} size: {size}") }),
            json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": digest, "Size": size } }),
        ],
    }
}

/// Runs the push; every outcome, errors included, is a message of the
/// stream (dockerd writes the repository line before it looks for the image).
pub async fn push(
    images: Arc<ImagesSlot>,
    events: Arc<Events>,
    req: PushImageRequest,
) -> Result<mpsc::UnboundedReceiver<Value>, AgentError> {
    let PushImageRequest { name, tag, auth_json, insecure_registries } = req;
    let auth = super::pull::credentials(&auth_json)?;
    berth_engine::reference::normalize(&name).map_err(AgentError::invalid)?;
    let options = PullOptions { insecure_registries, mirrors: Vec::new(), auth };
    // Unbounded: progress comes from a synchronous callback, a few
    // messages per layer and 512 KiB.
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let announce = |event: PushProgress| {
            for message in push_message(&event) {
                let _ = progress_tx.send(message);
            }
        };
        match berth_engine::registry::push(images, &name, &tag, &options, announce).await {
            Ok(()) => {
                let familiar = if tag.is_empty() { name.clone() } else { format!("{name}:{tag}") };
                events.emit("image", "push", &familiar, json!({ "name": familiar }));
                tracing::info!(%name, %tag, "image pushed");
            }
            Err(err) => {
                let _ = tx.send(json!({ "errorDetail": { "message": err.to_string() }, "error": err.to_string() }));
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_messages_are_dockers() {
        let tagged =
            push_message(&PushProgress::Tagged { tag: "latest".into(), digest: "sha256:ab".into(), size: 528 });
        assert_eq!(tagged[0]["status"], "latest: digest: sha256:ab size: 528");
        assert_eq!(tagged[1]["aux"], json!({ "Tag": "latest", "Digest": "sha256:ab", "Size": 528 }));
        let mounted = push_message(&PushProgress::Mounted { id: "0123".into(), from: "library/busybox".into() });
        assert_eq!(mounted[0], json!({ "status": "Mounted from library/busybox", "progressDetail": {}, "id": "0123" }));
        let repository = push_message(&PushProgress::Repository { name: "localhost:5000/app".into() });
        assert_eq!(repository[0]["status"], "The push refers to repository [localhost:5000/app]");
    }
}
