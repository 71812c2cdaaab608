//! The media store ([`Blobs`]) over `object_store`: a folder by default. A blob is written
//! as a multipart upload to `tmp/…` (a few MiB in memory at most, whatever its size), then
//! renamed to its key; one dropped before that is deleted.

use std::{ops::Range, path::Path as FsPath, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{
    aws::AmazonS3Builder, local::LocalFileSystem, path::Path, prefix::PrefixStore, GetOptions,
    GetRange, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use tessera_core::ports::{BlobError, BlobWriter, Blobs, ByteStream};

/// Parts kept in flight while an upload streams in.
const PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// Bytes buffered before a part is stored: small for a folder, S3's minimum part
    /// otherwise.
    part_bytes: usize,
}

impl ObjectBlobs {
    /// Blobs in a folder (created if missing); temporary files of a previous run that
    /// stopped mid-upload are removed.
    pub async fn folder(dir: &FsPath) -> anyhow::Result<Self> {
        // Uploads a previous run left midway (the store's own listing hides its staging
        // files, so the folder goes whole).
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        std::fs::create_dir_all(dir)?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir)?);
        Ok(Self {
            store,
            part_bytes: 256 * 1024,
        })
    }

    /// Blobs in an S3-compatible bucket (`media.s3`).
    pub async fn s3(c: &crate::config::S3) -> anyhow::Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&c.bucket)
            .with_region(c.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(c.allow_http);
        if let Some(endpoint) = &c.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &c.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &c.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(b.build()?);
        let store = match c.prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Arc::new(PrefixStore::new(s3, p)) as Arc<dyn ObjectStore>,
            None => s3,
        };
        let blobs = Self {
            store,
            part_bytes: 5 * 1024 * 1024,
        };
        blobs.remove_temporary().await;
        Ok(blobs)
    }

    async fn remove_temporary(&self) {
        let tmp = Path::from("tmp");
        let stale: Vec<Path> = self
            .store
            .list(Some(&tmp))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        for path in stale {
            let _ = self.store.delete(&path).await;
        }
    }
}

fn other(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e => BlobError::Other(e.to_string()),
    }
}

/// Blob keys are chosen by the core; each part must be a valid path segment.
fn path(key: &str) -> Result<Path, BlobError> {
    Path::parse(key).map_err(|e| BlobError::Other(format!("bad key {key:?}: {e}")))
}

#[async_trait]
impl Blobs for ObjectBlobs {
    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let tmp = Path::from(format!(
            "tmp/{}",
            tessera_core::accounts::tokens::random_string(24)
        ));
        let upload = self.store.put_multipart(&tmp).await.map_err(other)?;
        Ok(Box::new(ObjectWriter {
            store: self.store.clone(),
            tmp,
            upload: Some(WriteMultipart::new_with_chunk_size(upload, self.part_bytes)),
            written: false,
        }))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&path(key)?, options)
            .await
            .map_err(other)?;
        Ok(Box::pin(got.into_stream().map_err(other)))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(e)),
        }
    }
}

struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    tmp: Path,
    /// Until finished.
    upload: Option<WriteMultipart>,
    /// Finished under `tmp`, not yet renamed.
    written: bool,
}

#[async_trait]
impl BlobWriter for ObjectWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| BlobError::Other("written after it was finished".into()))?;
        // Back-pressure: the body is read no faster than parts are stored.
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(other)?;
        upload.put(chunk);
        Ok(())
    }

    async fn keep(mut self: Box<Self>, key: &str) -> Result<(), BlobError> {
        let to = path(key)?;
        if let Some(upload) = self.upload.take() {
            upload.finish().await.map_err(other)?;
            self.written = true;
        }
        // A blob already there has the same content (keys name contents).
        self.store.rename(&self.tmp, &to).await.map_err(other)?;
        self.written = false;
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let upload = self.upload.take();
        if upload.is_none() && !self.written {
            return;
        }
        let (store, tmp) = (self.store.clone(), self.tmp.clone());
        // Dropped mid-upload (refused, cut, or the request went away): nothing stays.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(upload) = upload {
                    let _ = upload.abort().await;
                }
                let _ = store.delete(&tmp).await;
            });
        }
    }
}
