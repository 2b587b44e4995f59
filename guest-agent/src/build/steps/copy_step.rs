//! COPY and ADD: sources from the context (globs, directories, ADD's local
//! archives) or from another stage or image (`--from`), written into a
//! layer with their --chown/--chmod, and hashed for the cache without
//! mtimes.

use super::*;

impl Run<'_> {
    pub(super) async fn copy_step(
        &mut self,
        state: &mut State,
        spec: &CopySpec,
        stage: usize,
    ) -> Result<(), BuildError> {
        let keyword = if spec.add { "ADD" } else { "COPY" };
        let config = state.config().clone();
        let layers = self.layers(&state.image).await?;
        let dest = self.expand(state, &spec.dest)?;
        let workdir = config["WorkingDir"].as_str().unwrap_or("").to_string();
        let dest = if dest.starts_with('/') {
            dest
        } else {
            let trailing = if dest.ends_with('/') { "/" } else { "" };
            format!("/{}{trailing}", ignore::clean(&format!("{workdir}/{dest}")))
        };
        let mut attrs = Attributes::default();
        let mut flags = String::new();
        if let Some(chown) = &spec.chown {
            let chown = self.expand(state, chown)?;
            attrs.owner = Some(copy::resolve_owner(&layers, &chown).map_err(BuildError::new)?);
            flags.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = &spec.chmod {
            let chmod = self.expand(state, chmod)?;
            attrs.mode = Some(copy::parse_chmod(&chmod).map_err(BuildError::new)?);
            flags.push_str(&format!(" --chmod={chmod}"));
        }
        let mut sources = Vec::new();
        for source in &spec.sources {
            sources.push(self.expand(state, source)?);
        }
        let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
        if spec.add && sources.iter().any(is_url) {
            if sources.len() > 1 {
                return Err(BuildError::new("ADD of a URL takes that one source: add each URL in its own ADD"));
            }
            let into_dir = dest.ends_with('/') || copy::is_dir(&layers, &dest);
            return self.add_url(state, config, &sources[0], &dest, attrs, &flags, into_dir).await;
        }
        let tar = self.work.join("copy.tar");
        if !spec.inline.is_empty() {
            let into_dir = dest.ends_with('/') || spec.inline.len() > 1 || copy::is_dir(&layers, &dest);
            let mut files = Vec::new();
            for doc in &spec.inline {
                let content = if doc.expand { self.expand(state, &doc.content)? } else { doc.content.clone() };
                let target =
                    if into_dir { format!("{}/{}", ignore::clean(&dest), doc.name) } else { ignore::clean(&dest) };
                files.push((target, content.into_bytes()));
            }
            let hash = cache::sha256_hex(format!("{files:?}").as_bytes());
            std::fs::File::create(&tar)
                .and_then(|f| copy::write_inline_tar(&files, attrs, f))
                .map_err(|e| BuildError::new(format!("{keyword} failed: {e}")))?;
            let comment = format!("#(nop) {keyword}{flags} heredoc:{hash} in {dest} ");
            return self.layer_step(state, config, vec![comment], &hash, tar).await;
        }
        if let Some(from) = &spec.from {
            return self.copy_from(state, config, keyword, from, &sources, &dest, attrs, &flags, stage).await;
        }
        let plan = copy::plan(self.context, keyword, &sources, &dest, |p| copy::is_dir(&layers, p))
            .map_err(BuildError::new)?;
        let comment = format!("#(nop) {keyword}{flags} {} in {dest} ", plan.key);
        let cmd: Vec<String> = state.shell().into_iter().chain(Some(comment)).collect();
        let probe = Self::probe(&config, &cmd);
        let key = cache::key(&state.id, &probe, &plan.key);
        if self.lookup(state, &key).await? {
            return Ok(());
        }
        // ADD extracts local archives into the destination directory.
        let (archives, plain): (Vec<_>, Vec<_>) =
            plan.items.iter().cloned().partition(|item| {
                spec.add && !item.contents && copy::is_archive(&self.context.file_path(&item.source))
            });
        let plain = copy::Plan { items: plain, key: plan.key.clone() };
        std::fs::File::create(&tar)
            .and_then(|f| copy::write_tar(self.context, &plain, attrs, std::io::BufWriter::new(f)))
            .map_err(|e| BuildError::new(format!("{keyword} failed: {e}")))?;
        let mut tars = vec![("/".to_string(), tar)];
        for (n, item) in archives.iter().enumerate() {
            let dir = ignore::clean(&dest);
            let unpacked = self.work.join(format!("add-{n}.tar"));
            let source = self.context.file_path(&item.source);
            decompress_to(&source, &unpacked).map_err(|e| BuildError::new(format!("ADD failed: {e}")))?;
            let holder = self.work.join(format!("add-{n}-dir.tar"));
            std::fs::File::create(&holder)
                .and_then(|f| copy::write_dir_tar(&dir, f))
                .map_err(|e| BuildError::new(format!("ADD failed: {e}")))?;
            tars.push(("/".into(), holder));
            tars.push((format!("/{dir}"), unpacked));
        }
        self.extract_and_commit(state, config, probe, &cmd.join(" "), &key, &tars).await
    }

    /// COPY --from: the files out of a stage's or an image's root (the
    /// archive helper's tar, as `docker cp` reads it), renamed to the
    /// destination and hashed as they go.
    #[allow(clippy::too_many_arguments)]
    async fn copy_from(
        &mut self,
        state: &mut State,
        config: Value,
        keyword: &str,
        from: &str,
        sources: &[String],
        dest: &str,
        attrs: Attributes,
        flags: &str,
        stage: usize,
    ) -> Result<(), BuildError> {
        let lower = from.to_ascii_lowercase();
        let by_stage = self.names.get(&lower).copied().or_else(|| lower.parse::<usize>().ok());
        let (image, image_id) = match by_stage {
            Some(index) if index >= stage => {
                return Err(BuildError::new(format!("invalid from flag value {from}: refers to current build stage")))
            }
            Some(index) => self
                .results
                .get(index)
                .cloned()
                .flatten()
                .ok_or_else(|| BuildError::new(format!("invalid from flag value {from}: index out of bounds")))?,
            None => self.image(from, false).await?,
        };
        if sources.len() > 1 && !dest.ends_with('/') {
            return Err(BuildError::new(format!(
                "When using {keyword} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let source_layers = self.layers(&image).await?;
        let dest_layers = self.layers(&state.image).await?;
        let containers = self.builder.containers.clone();
        let request = json!({ "Cmd": ["/bin/sh"], "Entrypoint": [""], "HostConfig": { "NetworkMode": "none" } });
        let mut source = State::from_base(image, image_id);
        source.id = if source.id.is_empty() { cache::image_id(&source.image) } else { source.id };
        let info = source.image_info(source_layers.clone(), &self.work);
        let source_container = containers.create("", request, info, String::new()).await?;
        let tar = self.work.join("copy-from.tar");
        let result = async {
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&tar).map_err(|e| BuildError::new(e.to_string()))?);
            let mut hasher = Vec::new();
            let into_dir = dest.ends_with('/') || sources.len() > 1 || copy::is_dir(&dest_layers, dest);
            let mut builder = tar::Builder::new(&mut out);
            for source in sources {
                if source.contains(['*', '?', '[']) {
                    return Err(BuildError::new(format!(
                        "{keyword} --from with wildcards is not supported by Berth yet: {source}"
                    )));
                }
                let path = format!("/{}", ignore::clean(source));
                let is_dir = copy::is_dir(&source_layers, &path);
                let base = path.rsplit('/').next().unwrap_or("").to_string();
                let target =
                    if is_dir || !into_dir { ignore::clean(dest) } else { format!("{}/{base}", ignore::clean(dest)) };
                let bytes = get_archive(&containers, &source_container, &path).await.map_err(|e| {
                    if e.message.contains("Could not find the file") {
                        BuildError::new(format!("{keyword} failed: stat {path}: file does not exist"))
                    } else {
                        e
                    }
                })?;
                rename_entries(&bytes, &base, &target, is_dir, attrs, &mut builder, &mut hasher)
                    .map_err(|e| BuildError::new(format!("{keyword} failed: {e}")))?;
            }
            builder.finish().map_err(|e| BuildError::new(e.to_string()))?;
            drop(builder);
            std::io::Write::flush(&mut out).map_err(|e| BuildError::new(e.to_string()))?;
            Ok(cache::sha256_hex(&hasher))
        }
        .await;
        let _ = containers.remove(&source_container, true, true).await;
        let hash = result?;
        let comment = format!("#(nop) {keyword}{flags} --from={from} multi:{hash} in {dest} ");
        self.layer_step(state, config, vec![comment], &hash, tar).await
    }
}

/// A path out of a container's root, as the archive helper tars it.
async fn get_archive(
    containers: &std::sync::Arc<crate::containers::Containers>,
    id: &str,
    path: &str,
) -> Result<Vec<u8>, BuildError> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let collect = tokio::spawn(async move {
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            bytes.extend_from_slice(&chunk);
        }
        bytes
    });
    crate::archive::run(containers, id, "get", path, None, Some(tx)).await?;
    collect.await.map_err(|e| BuildError::new(e.to_string()))
}

/// Re-roots the helper's tar of `base` at `target` (a directory's
/// contents go into it), applying --chown/--chmod and hashing each entry
/// without its mtime.
fn rename_entries(
    bytes: &[u8],
    base: &str,
    target: &str,
    contents: bool,
    attrs: Attributes,
    builder: &mut tar::Builder<impl std::io::Write>,
    hasher: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = ignore::clean(&name);
        let rest = name.strip_prefix(base).unwrap_or(&name).trim_start_matches('/');
        let new_name = match (contents, rest.is_empty()) {
            (true, true) => continue,
            (true, false) if target.is_empty() => rest.to_string(),
            (true, false) => format!("{target}/{rest}"),
            (false, _) => target.to_string(),
        };
        let mut header = entry.header().clone();
        if let Some((uid, gid)) = attrs.owner {
            header.set_uid(uid);
            header.set_gid(gid);
        }
        if let (Some(mode), false) = (attrs.mode, header.entry_type().is_symlink()) {
            header.set_mode(mode);
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        hasher.extend_from_slice(
            format!(
                "{new_name}|{:o}|{}|{}|{:?}|{}|",
                header.mode().unwrap_or(0),
                header.uid().unwrap_or(0),
                header.gid().unwrap_or(0),
                header.entry_type(),
                String::from_utf8_lossy(&link)
            )
            .as_bytes(),
        );
        hasher.extend_from_slice(cache::sha256_hex(&data).as_bytes());
        if header.entry_type().is_dir() {
            builder.append_data(&mut header, format!("{new_name}/"), std::io::empty())?;
        } else if header.entry_type().is_symlink() || header.entry_type().is_hard_link() {
            builder.append_link(&mut header, &new_name, String::from_utf8_lossy(&link).as_ref())?;
        } else {
            builder.append_data(&mut header, &new_name, data.as_slice())?;
        }
    }
    Ok(())
}

/// ADD's local archive as a plain tar (gzip decompressed; bzip2 and xz
/// are recognised but not yet decompressed).
fn decompress_to(source: &std::path::Path, out: &std::path::Path) -> std::io::Result<()> {
    let mut input = std::fs::File::open(source)?;
    let mut magic = [0u8; 2];
    let n = std::io::Read::read(&mut input, &mut magic)?;
    let input = std::io::Read::chain(std::io::Cursor::new(magic[..n].to_vec()), input);
    let mut output = std::fs::File::create(out)?;
    if magic[..n] == [0x1f, 0x8b] {
        std::io::copy(&mut flate2::read::GzDecoder::new(input), &mut output)?;
    } else if magic[..n] == *b"BZ" || magic[..n] == [0xfd, b'7'] {
        return Err(std::io::Error::other("bzip2 and xz archives are not supported by Berth yet"));
    } else {
        let mut input = input;
        std::io::copy(&mut input, &mut output)?;
    }
    Ok(())
}
