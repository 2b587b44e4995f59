//! Registry pulls, with Docker's progress messages, and the registry's
//! view of a reference (`/distribution`).

use std::sync::Arc;

use berth_agent_proto::PullImageRequest;
use serde_json::Value;
use tokio::sync::mpsc;

use super::ImagesSlot;
use crate::error::AgentError;
use crate::events::Events;

/// Docker's own bar: 50 columns, `=` done, `>` the head.
pub(super) fn progress_bar(current: u64, total: u64) -> String {
    let filled = (current.min(total) * 50).checked_div(total).unwrap_or(0) as usize;
    let head = if filled < 50 { ">" } else { "=" };
    format!(
        "[{}{head}{}] {:.3}MB/{:.3}MB",
        "=".repeat(filled.saturating_sub(1)),
        " ".repeat(50usize.saturating_sub(filled.max(1))),
        current as f64 / 1e6,
        total as f64 / 1e6
    )
}

/// One of Docker's pull progress messages for a pull event.
fn pull_message(event: &berth_engine::registry::Progress, reference: &str) -> serde_json::Value {
    use berth_engine::registry::Progress;
    use serde_json::json;
    match event {
        Progress::Resolved { .. } => {
            // docker.io/library/busybox:latest -> "library/busybox", "latest"
            let (name, tag) = match reference.split_once('@') {
                Some((name, digest)) => (name, digest),
                None => match reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((name, tag)) => (name, tag),
                    None => (reference, "latest"),
                },
            };
            let path = name.split_once('/').map(|(_, path)| path).unwrap_or(name);
            json!({ "status": format!("Pulling from {path}"), "id": tag })
        }
        Progress::LayerStart { id, .. } => json!({ "status": "Pulling fs layer", "progressDetail": {}, "id": id }),
        Progress::LayerProgress { id, current, total } => json!({
            "status": "Downloading", "progressDetail": { "current": current, "total": total },
            "progress": progress_bar(*current, *total), "id": id,
        }),
        Progress::LayerExtracting { id } => json!({ "status": "Extracting", "progressDetail": {}, "id": id }),
        Progress::LayerExists { id } => json!({ "status": "Already exists", "progressDetail": {}, "id": id }),
        Progress::LayerDone { id } => json!({ "status": "Pull complete", "progressDetail": {}, "id": id }),
        Progress::Done { changed, .. } => {
            let familiar = berth_engine::reference::familiar(reference);
            let status = if *changed {
                format!("Status: Downloaded newer image for {familiar}")
            } else {
                format!("Status: Image is up to date for {familiar}")
            };
            json!({ "status": status })
        }
    }
}

/// The reference and registry options of a pull-like request.
fn pull_options(req: PullImageRequest) -> Result<(String, berth_engine::registry::PullOptions), AgentError> {
    use berth_engine::registry::PullOptions;
    let PullImageRequest { reference, auth_json, registry_mirrors, insecure_registries } = req;
    let auth = credentials(&auth_json)?;
    Ok((reference, PullOptions { insecure_registries, mirrors: registry_mirrors, auth }))
}

/// The client's X-Registry-Auth (decoded JSON); none when empty.
pub(super) fn credentials(auth_json: &str) -> Result<Option<berth_engine::registry::Credentials>, AgentError> {
    if auth_json.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(auth_json).map(Some).map_err(|e| AgentError::invalid(format!("invalid X-Registry-Auth: {e}")))
}

/// `docker pull`: Docker's progress messages, as they come. An error
/// before any progress is the call's own; a later one is the stream's last
/// message, in Docker's `errorDetail` form.
pub async fn pull(
    images: Arc<ImagesSlot>,
    events: Arc<Events>,
    req: PullImageRequest,
) -> Result<mpsc::UnboundedReceiver<Value>, AgentError> {
    let (reference, options) = pull_options(req)?;
    let normalized = berth_engine::reference::normalize(&reference).map_err(AgentError::invalid)?;
    // Unbounded: progress comes from a synchronous callback; a pull has
    // a few hundred messages at most (one per 512 KiB and layer event).
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), AgentError>>();
    tokio::spawn(async move {
        let mut first = Some(first_tx);
        let progress_tx = tx.clone();
        let mut resolved = None;
        let mut announce = |event: berth_engine::registry::Progress| {
            use berth_engine::registry::Progress;
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            }
            match &event {
                Progress::Resolved { digest, .. } => resolved = Some(digest.clone()),
                // Docker's line before the status, which scripts read.
                Progress::Done { .. } => {
                    if let Some(digest) = resolved.take() {
                        let _ = progress_tx.send(serde_json::json!({ "status": format!("Digest: {digest}") }));
                    }
                }
                _ => {}
            }
            let _ = progress_tx.send(pull_message(&event, &normalized));
        };
        let result = berth_engine::registry::pull(images, &reference, &options, &mut announce).await;
        match result {
            Ok(id) => {
                let name = berth_engine::reference::familiar(&normalized).to_string();
                events.emit("image", "pull", &name, serde_json::json!({ "name": name }));
                tracing::info!(%reference, %id, "image pulled");
            }
            Err(err) => {
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Err(AgentError::from(&err)));
                    }
                    None => {
                        let _ = tx.send(serde_json::json!({ "errorDetail": { "message": err.to_string() }, "error": err.to_string() }));
                    }
                }
            }
        }
    });
    if let Ok(Err(err)) = first_rx.await {
        return Err(err);
    }
    Ok(rx)
}

/// What the registry says about a reference, without pulling it.
pub async fn inspect_distribution(req: PullImageRequest) -> Result<Value, AgentError> {
    let (reference, options) = pull_options(req)?;
    berth_engine::registry::inspect_distribution(&reference, &options).await.map_err(|err| AgentError::from(&err))
}
