//! ADD of a URL, fetched by the agent on the VM's network as dockerd's
//! classic builder fetches it: saved (never extracted) at the destination,
//! or under the URL's last path segment in a directory destination, mode
//! 0600 unless --chmod, its mtime the server's Last-Modified. The cache key
//! is the content's hash, so the URL is fetched on every build (dockerd
//! does the same) and a changed file reruns the step.

use std::io::Write as _;

use futures_util::StreamExt;

use super::*;

/// Between two reads of a download, not for the whole of it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Run<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn add_url(
        &mut self,
        state: &mut State,
        config: Value,
        url: &str,
        dest: &str,
        attrs: Attributes,
        flags: &str,
        into_dir: bool,
    ) -> Result<(), BuildError> {
        let target = if into_dir {
            let name = copy::url_file_name(url)
                .ok_or_else(|| BuildError::new(format!("ADD failed: cannot determine a file name from {url}")))?;
            format!("{}/{name}", ignore::clean(dest))
        } else {
            ignore::clean(dest)
        };
        let download = self.work.join("add-url.download");
        let (hash, mtime) = fetch(url, &download).await.map_err(|e| BuildError::new(format!("ADD failed: {e}")))?;
        let tar = self.work.join("add-url.tar");
        std::fs::File::create(&tar)
            .and_then(|f| copy::write_file_tar(&target, &download, attrs, mtime, std::io::BufWriter::new(f)))
            .map_err(|e| BuildError::new(format!("ADD failed: {e}")))?;
        let _ = std::fs::remove_file(&download);
        let comment = format!("#(nop) ADD{flags} file:{hash} in {dest} ");
        self.layer_step(state, config, vec![comment], &hash, tar).await
    }
}

/// Downloads `url` into `path`; returns the content's sha256 and the
/// server's Last-Modified (Unix seconds, 0 without one).
async fn fetch(url: &str, path: &std::path::Path) -> Result<(String, u64), String> {
    use sha2::Digest as _;
    berth_engine::registry::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("berth-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| format!("fetching {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("fetching {url}: {}", response.status()));
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let mut hasher = sha2::Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("fetching {url}: {e}"))?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    file.flush().map_err(|e| e.to_string())?;
    Ok((hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(), mtime))
}
