//! Thumbnails (spec: `GET /_matrix/client/v1/media/thumbnail`, "Thumbnails"). Made in the
//! sizes the spec suggests, on first request, once per content and size (under a lock),
//! and kept in the blob store; any other size is served by the nearest larger one. A
//! thumbnail is never larger than its original (no upscaling): when the original is
//! smaller, the original is served. Decoding is bounded in pixels and memory
//! (`image::Limits`), so a decompression bomb or a truncated file is refused cleanly.

use std::io::Cursor;

use bytes::Bytes;
use futures_util::StreamExt;
use image::{imageops::FilterType, DynamicImage, ImageError, ImageFormat};
use ruma::api::error::ErrorKind;

use super::{download::Access, too_large, upload::blob_error, MediaInfo};
use crate::{
    ports::{ByteStream, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// Spec ("Thumbnails"): the sizes servers are suggested to make.
pub const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// Types whose thumbnails are made (the decoders built in).
const SOURCE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Types whose thumbnails may stay animated (when they have several frames).
const ANIMATED_TYPES: &[&str] = &["image/gif", "image/webp"];
/// Animated thumbnails only up to 320×240, of at most 100 frames from a canvas of at most
/// 1920×1080: every frame is decoded, so the work is bounded by these.
const MAX_ANIMATED_PIXELS: u32 = 320 * 240;
const MAX_FRAMES: usize = 100;
const MAX_ANIMATED_CANVAS: u32 = 1920 * 1080;

/// Decoding bounds: a 12,000-pixel side and 128 MiB of buffers at most.
const MAX_SIDE: u32 = 12_000;
const MAX_DECODE_BYTES: u64 = 128 << 20;

/// The `content_type` of a thumbnail that cannot be made (its `size` holds the status).
const REFUSED: &str = "!";

/// A thumbnail (or the original, when it is no larger) to serve.
pub struct Thumbnail {
    pub content_type: String,
    pub size: u64,
    pub body: ByteStream,
}

/// The smallest suggested size at least as large as asked, of the method asked if one
/// is, else of the other; `None` when asked for more than the largest.
pub fn pick(width: u32, height: u32, method: Method) -> Option<(u32, u32, Method)> {
    let fits = |(w, h, _): &&(u32, u32, Method)| *w >= width && *h >= height;
    SIZES
        .iter()
        .filter(|s| s.2 == method)
        .find(fits)
        .or_else(|| SIZES.iter().find(fits))
        .copied()
}

fn essence(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn cannot_thumbnail() -> Error {
    Error::WithStatus {
        status: 400,
        kind: ErrorKind::Unknown,
        message: "Cannot generate thumbnails for the requested content".into(),
    }
}

/// What a thumbnail request asks for (spec: the query of `/media/v1/thumbnail`).
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    /// Animated where it can be; never unless asked.
    pub animated: bool,
    pub timeout_ms: Option<u64>,
    /// The freeze applies to thumbnails as to downloads.
    pub access: Access,
}

impl Homeserver {
    /// A thumbnail of `mxc://{server}/{media_id}` at least as large as asked.
    pub async fn thumbnail(
        &self,
        server: &str,
        media_id: &str,
        req: ThumbnailRequest,
    ) -> Result<Thumbnail> {
        let ThumbnailRequest {
            width,
            height,
            method,
            animated,
            timeout_ms,
            access,
        } = req;
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let info = self
            .media_to_serve(server, media_id, timeout_ms, access)
            .await?;
        let source_type = essence(info.content_type.as_deref());
        if !SOURCE_TYPES.contains(&source_type.as_str()) {
            return Err(cannot_thumbnail());
        }
        let size = info.size.unwrap_or(0);
        if size > self.config.media.max_thumbnail_source_bytes {
            return Err(too_large("The media is too large to thumbnail"));
        }
        let sha = info.sha256.clone().unwrap_or_default();
        let Some((w, h, m)) = pick(width, height, method) else {
            return self.original(&info, source_type).await;
        };
        // Spec (v1.11 `animated`): animated where it can be; still otherwise, and never
        // unless asked.
        let animated = animated
            && ANIMATED_TYPES.contains(&source_type.as_str())
            && w * h <= MAX_ANIMATED_PIXELS;
        let label = match (m, animated) {
            (_, false) => m.as_str().to_owned(),
            (_, true) => format!("{}-animated", m.as_str()),
        };
        let key = format!("thumbnails/{sha}/{w}x{h}-{label}");
        if let Some(t) = self.stored_thumbnail(&info, &key, (w, h, &label)).await? {
            return Ok(t);
        }
        // Made once: whoever asks meanwhile waits, then finds it stored.
        let lock = self.media_lock(&key);
        let _held = lock.lock().await;
        if let Some(t) = self.stored_thumbnail(&info, &key, (w, h, &label)).await? {
            return Ok(t);
        }
        // One made at a time, the original read only then: memory and CPU stay bounded
        // whatever is asked at once.
        let _making = self.thumbnailing.acquire().await;
        let original = self.read_whole(&info, size).await?;
        let made = self
            .run_media_job(move || match animated {
                true => make_animated(&original, w, h, m),
                false => make(&original, w, h, m),
            })
            .await?;
        self.thumbnails_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (content_type, bytes) = match made {
            Ok(Some(made)) => made,
            // The original is no larger: recorded as such (no type), so it is not decoded
            // again.
            Ok(None) => (String::new(), Bytes::new()),
            // Not an image we can read: recorded, so it is not decoded again either.
            Err(e) => {
                let status = match &e {
                    Error::Matrix(ErrorKind::TooLarge, _) => 413,
                    _ => 400,
                };
                self.record_thumbnail(&sha, (w, h, &label), REFUSED, status)
                    .await?;
                return Err(e);
            }
        };
        if !bytes.is_empty() {
            let mut writer = self.blobs()?.create().await.map_err(blob_error)?;
            writer.write(bytes.clone()).await.map_err(blob_error)?;
            writer.keep(&key).await.map_err(blob_error)?;
        }
        self.record_thumbnail(&sha, (w, h, &label), &content_type, bytes.len() as i64)
            .await?;
        if content_type.is_empty() {
            return self.original(&info, source_type).await;
        }
        let size = bytes.len() as u64;
        Ok(Thumbnail {
            content_type,
            size,
            body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
        })
    }

    async fn record_thumbnail(
        &self,
        sha: &str,
        (w, h, label): (u32, u32, &str),
        content_type: &str,
        size: i64,
    ) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO media_thumbnails (sha256, width, height, method, content_type, size)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                vec![
                    sha.into(),
                    Value::Int(w.into()),
                    Value::Int(h.into()),
                    label.into(),
                    content_type.into(),
                    Value::Int(size),
                ],
            )
            .await?;
        Ok(())
    }

    /// Runs a thumbnail's decoding and encoding off the request threads, apart from
    /// password hashing.
    async fn run_media_job<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let offload = self
            .media_offload
            .as_ref()
            .ok_or_else(|| Error::internal("no media store"))?;
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        offload
            .run(Box::new(move || {
                let value = job();
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            }))
            .await;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| Error::internal("the thumbnail job did not finish"))
    }

    async fn stored_thumbnail(
        &self,
        info: &MediaInfo,
        key: &str,
        (w, h, label): (u32, u32, &str),
    ) -> Result<Option<Thumbnail>> {
        let Some(row) = query_opt(
            self.db.as_ref(),
            "SELECT content_type, size FROM media_thumbnails
             WHERE sha256 = $1 AND width = $2 AND height = $3 AND method = $4",
            vec![
                info.sha256.as_deref().unwrap_or_default().into(),
                Value::Int(w.into()),
                Value::Int(h.into()),
                label.into(),
            ],
        )
        .await?
        else {
            return Ok(None);
        };
        let content_type = row.text(0)?;
        if content_type == REFUSED {
            return Err(match row.int(1)? {
                413 => too_large("The image is too large to thumbnail"),
                _ => cannot_thumbnail(),
            });
        }
        if content_type.is_empty() {
            let source_type = essence(info.content_type.as_deref());
            return self.original(info, source_type).await.map(Some);
        }
        let body = self.blobs()?.read(key, None).await.map_err(blob_error)?;
        Ok(Some(Thumbnail {
            content_type,
            size: row.int(1)?.max(0) as u64,
            body,
        }))
    }

    /// The original, served as its own thumbnail (spec: no upscaling).
    async fn original(&self, info: &MediaInfo, content_type: String) -> Result<Thumbnail> {
        Ok(Thumbnail {
            content_type,
            size: info.size.unwrap_or(0),
            body: self.read_media(info, None).await?,
        })
    }

    /// The whole original, at most `size` bytes (bounded by the thumbnail source limit).
    async fn read_whole(&self, info: &MediaInfo, size: u64) -> Result<Vec<u8>> {
        let mut body = self.read_media(info, None).await?;
        let mut out =
            Vec::with_capacity(size.min(self.config.media.max_thumbnail_source_bytes) as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(blob_error)?;
            if (out.len() + chunk.len()) as u64 > self.config.media.max_thumbnail_source_bytes {
                return Err(too_large("The media is too large to thumbnail"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Decodes `original` within bounds and makes the `w`×`h` thumbnail by `m`: PNG when the
/// image has transparency, else JPEG. `None` when the original is no larger.
fn make(original: &[u8], w: u32, h: u32, m: Method) -> Result<Option<(String, Bytes)>> {
    let mut reader = image::ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|_| cannot_thumbnail())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        ImageError::Limits(_) => too_large("The image is too large to thumbnail"),
        _ => cannot_thumbnail(),
    })?;
    let (iw, ih) = (img.width(), img.height());
    let thumb = match m {
        // Never upscaled: an original within the box is its own thumbnail.
        Method::Scale if iw <= w && ih <= h => return Ok(None),
        Method::Scale => img.resize(w, h, FilterType::Triangle),
        Method::Crop if iw < w || ih < h => return Ok(None),
        Method::Crop => img.resize_to_fill(w, h, FilterType::Triangle),
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if thumb.color().has_alpha() {
        thumb
            .write_to(&mut out, ImageFormat::Png)
            .map_err(Error::internal)?;
        "image/png"
    } else {
        let rgb = DynamicImage::ImageRgb8(thumb.to_rgb8());
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        encoder.encode_image(&rgb).map_err(Error::internal)?;
        "image/jpeg"
    };
    Ok(Some((
        content_type.to_owned(),
        Bytes::from(out.into_inner()),
    )))
}

/// An animated GIF thumbnail of an animated GIF or WebP, frame by frame (each resized as
/// it is decoded, so only small frames are kept); a still one ([`make`]) when the image
/// has one frame, too many, or too large a canvas.
fn make_animated(original: &[u8], w: u32, h: u32, m: Method) -> Result<Option<(String, Bytes)>> {
    use image::{codecs::gif, AnimationDecoder, Frame};
    let (iw, ih) = image::ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|_| cannot_thumbnail())?
        .into_dimensions()
        .map_err(|_| cannot_thumbnail())?;
    if iw.saturating_mul(ih) > MAX_ANIMATED_CANVAS || (iw <= w && ih <= h) {
        return make(original, w, h, m);
    }
    let frames: Box<dyn Iterator<Item = image::ImageResult<Frame>>> =
        match image::guess_format(original).map_err(|_| cannot_thumbnail())? {
            ImageFormat::Gif => Box::new(
                gif::GifDecoder::new(Cursor::new(original))
                    .map_err(|_| cannot_thumbnail())?
                    .into_frames(),
            ),
            ImageFormat::WebP => {
                let d = image::codecs::webp::WebPDecoder::new(Cursor::new(original))
                    .map_err(|_| cannot_thumbnail())?;
                if !d.has_animation() {
                    return make(original, w, h, m);
                }
                Box::new(d.into_frames())
            }
            _ => return make(original, w, h, m),
        };
    let mut small = Vec::new();
    for frame in frames.take(MAX_FRAMES + 1) {
        let frame = frame.map_err(|_| cannot_thumbnail())?;
        if small.len() == MAX_FRAMES {
            return make(original, w, h, m);
        }
        let delay = frame.delay();
        let img = DynamicImage::ImageRgba8(frame.into_buffer());
        let resized = match m {
            Method::Scale => img.resize(w, h, FilterType::Triangle),
            Method::Crop if iw < w || ih < h => return make(original, w, h, m),
            Method::Crop => img.resize_to_fill(w, h, FilterType::Triangle),
        };
        small.push(Frame::from_parts(resized.to_rgba8(), 0, 0, delay));
    }
    if small.len() < 2 {
        return make(original, w, h, m);
    }
    let mut out = Vec::new();
    {
        let mut encoder = gif::GifEncoder::new(&mut out);
        encoder
            .set_repeat(gif::Repeat::Infinite)
            .map_err(Error::internal)?;
        encoder.encode_frames(small).map_err(Error::internal)?;
    }
    Ok(Some(("image/gif".to_owned(), Bytes::from(out))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_nearest_larger_size() {
        assert_eq!(pick(32, 32, Method::Crop), Some((32, 32, Method::Crop)));
        assert_eq!(pick(33, 20, Method::Crop), Some((96, 96, Method::Crop)));
        assert_eq!(
            pick(100, 100, Method::Crop),
            Some((320, 240, Method::Scale))
        );
        assert_eq!(
            pick(200, 200, Method::Scale),
            Some((320, 240, Method::Scale))
        );
        assert_eq!(
            pick(641, 100, Method::Scale),
            Some((800, 600, Method::Scale))
        );
        assert_eq!(pick(801, 600, Method::Scale), None);
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10])));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).expect("png");
        out.into_inner()
    }

    #[test]
    fn thumbnails_have_the_size_asked_and_never_upscale() {
        let (ct, bytes) = make(&png(1000, 500), 96, 96, Method::Crop)
            .expect("made")
            .expect("smaller");
        assert_eq!(ct, "image/jpeg");
        let t = image::load_from_memory(&bytes).expect("decodes");
        assert_eq!((t.width(), t.height()), (96, 96));
        let (_, bytes) = make(&png(1000, 500), 320, 240, Method::Scale)
            .expect("made")
            .expect("smaller");
        let t = image::load_from_memory(&bytes).expect("decodes");
        assert_eq!((t.width(), t.height()), (320, 160));
        assert!(make(&png(50, 50), 96, 96, Method::Crop)
            .expect("ok")
            .is_none());
    }

    #[test]
    fn truncated_and_oversized_images_are_refused() {
        let full = png(64, 64);
        assert!(matches!(
            make(&full[..full.len() / 2], 32, 32, Method::Crop),
            Err(Error::WithStatus { status: 400, .. })
        ));
        // Wider than the decoder's bound: refused as too large, before pixels are read
        // (a decompression bomb declares its size in the same header).
        assert!(matches!(
            make(&png(MAX_SIDE + 1, 1), 32, 32, Method::Crop),
            Err(Error::Matrix(ErrorKind::TooLarge, _))
        ));
    }
}
