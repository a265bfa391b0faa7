//! A folder of documents (a mounted share), read beneath its root only.
//!
//! tower-http's `ServeFile` would handle ranges, but it opens by path: a symlink (or
//! one swapped in between a check and the open) leads anywhere. Here the file is
//! opened through `cap-std`, which resolves every component beneath the root (openat2
//! `RESOLVE_BENEATH` on Linux): a path or symlink that leads out fails to open. The
//! range is cut with tower-http's own range parser (`http-range-header`) and the
//! bytes are streamed from the open file, a chunk at a time.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::{media, wanted_range, Ask, Content, ContentError};

/// Bytes read from the file per chunk sent.
const CHUNK: usize = 64 * 1024;

pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> FileStore {
        FileStore { root }
    }

    pub async fn open(&self, ask: &Ask<'_>) -> Result<Content, ContentError> {
        let Ask {
            path,
            name,
            media_hint,
            range,
            max_bytes,
        } = *ask;
        let root = self.root.clone();
        let relative: PathBuf = path.iter().collect();
        // Opening the root per request: a share mounted (or gone) after start is seen.
        let (file, size, head) = tokio::task::spawn_blocking(move || {
            let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())
                .map_err(|e| {
                    ContentError::Unavailable(format!("its folder cannot be opened ({})", e.kind()))
                })?;
            let mut file = dir
                .open(&relative)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                        ContentError::Missing
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        ContentError::Outside("it leads outside the store or may not be read")
                    }
                    _ if e.raw_os_error() == Some(40) => {
                        ContentError::Outside("too many symbolic links")
                    }
                    kind => ContentError::Unavailable(format!("reading failed ({kind})")),
                })?
                .into_std();
            let meta = file
                .metadata()
                .map_err(|e| ContentError::Unavailable(format!("reading failed ({})", e.kind())))?;
            if !meta.is_file() {
                return Err(ContentError::Missing);
            }
            let mut head = Vec::with_capacity(media::HEAD_BYTES);
            (&mut file)
                .take(media::HEAD_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(|e| ContentError::Unavailable(format!("reading failed ({})", e.kind())))?;
            Ok((file, meta.len(), head))
        })
        .await
        .map_err(|_| ContentError::Unavailable("reading failed".into()))??;
        if size > max_bytes {
            return Err(ContentError::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let range = wanted_range(range, size)?;
        let (media_type, extension) = media::detect(Some(&head), &[media_hint], name);
        let (start, length) = match &range {
            Some(r) => (*r.start(), r.end() - r.start() + 1),
            None => (0, size),
        };
        let mut file = file;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ContentError::Unavailable(format!("reading failed ({})", e.kind())))?;
        let reader = tokio::fs::File::from_std(file).take(length);
        let body = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK).boxed();
        Ok(Content {
            size: Some(size),
            range,
            media_type,
            extension,
            body,
        })
    }
}
