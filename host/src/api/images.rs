//! `/images/*`: forwarded to the agent's image store.

use berth_agent_proto::{ArchiveChunk, ImageSummary, ListImagesRequest};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use super::{agent_error, error, json_response, Body};
use crate::agent_client::AgentEndpoint;

/// The short name Docker shows for a normalised reference (the agent's
/// store keeps `docker.io/library/busybox:latest`, users see `busybox:latest`).
pub fn familiar(reference: &str) -> &str {
    reference.strip_prefix("docker.io/library/").or_else(|| reference.strip_prefix("docker.io/")).unwrap_or(reference)
}

/// `docker load`: the request body is the archive; streamed to the agent.
pub async fn load(req: Request<Incoming>, agent: &AgentEndpoint) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<ArchiveChunk>(16);
    let mut body = req.into_body();
    let pump = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(ArchiveChunk { data: data.to_vec() }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                // A truncated upload: the agent sees a short archive and refuses it.
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    let result = agent.client().load_images(ReceiverStream::new(rx)).await;
    let upload = pump.await;
    let loaded = match result {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            if let Ok(Err(err)) = upload {
                return error(StatusCode::BAD_REQUEST, format!("reading the uploaded archive: {err}"));
            }
            return agent_error(status);
        }
    };
    // Docker's progress stream: one JSON message per loaded name.
    let mut lines = String::new();
    for image in &loaded.images {
        if image.tags.is_empty() {
            lines.push_str(&json!({ "stream": format!("Loaded image ID: {}\n", image.id) }).to_string());
        }
        for tag in &image.tags {
            lines.push_str(&json!({ "stream": format!("Loaded image: {}\n", familiar(tag)) }).to_string());
        }
        lines.push('\n');
    }
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(lines)));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// Whether a `filters` query value is absent or empty (`{}`), percent-encoded or not.
fn filters_empty(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("filters="))
        .all(|value| value.is_empty() || value == "{}" || value.eq_ignore_ascii_case("%7B%7D"))
}

/// `docker images`.
pub async fn list(query: Option<&str>, agent: &AgentEndpoint) -> Response<Body> {
    if !filters_empty(query) {
        return error(StatusCode::BAD_REQUEST, "Berth does not support image list filters yet");
    }
    let images = match agent.client().list_images(ListImagesRequest {}).await {
        Ok(reply) => reply.into_inner().images,
        Err(status) => return agent_error(status),
    };
    json_response(StatusCode::OK, images_json(images))
}

fn images_json(mut images: Vec<ImageSummary>) -> serde_json::Value {
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    images
        .iter()
        .map(|image| {
            json!({
                "Id": image.id,
                "ParentId": "",
                "RepoTags": image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
                "RepoDigests": [],
                "Created": image.created,
                "Size": image.size,
                "SharedSize": -1,
                "Labels": {},
                "Containers": -1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names_and_filters() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("localhost:5000/x:y"), "localhost:5000/x:y");
        assert!(filters_empty(None));
        assert!(filters_empty(Some("all=0&filters=%7B%7D")));
        assert!(!filters_empty(Some("filters=%7B%22dangling%22%3A%7B%22true%22%3Atrue%7D%7D")));
    }

    #[test]
    fn newest_images_first_in_dockers_shape() {
        let image = |id: &str, created: i64| ImageSummary {
            id: id.into(),
            tags: vec![format!("docker.io/library/{id}:1")],
            size: 10,
            created,
        };
        let listed = images_json(vec![image("old", 1), image("new", 2)]);
        assert_eq!(listed[0]["RepoTags"], json!(["new:1"]));
        assert_eq!(listed[1]["Created"], 1);
        assert_eq!(listed[0]["Size"], 10);
    }
}
