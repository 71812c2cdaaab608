//! The content repository (spec: client-server API, "Content repository"): uploads stream
//! from the request body, downloads stream from the store, with the headers the spec asks
//! for (type as uploaded, `inline` only for the safe types, a sandboxing CSP), byte ranges
//! for audio and video, and caching (contents never change).

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json,
};
use futures_util::StreamExt;
use ruma::{
    api::error::ErrorKind,
    http_headers::{ContentDisposition, ContentDispositionType},
};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{
    media::{
        download::Access,
        serves_inline,
        thumbnail::{Method, Thumbnail, ThumbnailRequest},
        upload::UploadMeta,
    },
    ports::{BlobError, ByteStream},
    Error,
};

use super::Auth;
use crate::{
    extract::{Path, Query},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r
        .route("/_matrix/client/v1/media/config", get(config))
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}",
            get(download_as),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
            get(thumbnail),
        )
        .limited("/_matrix/media/v1/create", post(create), Class::Media)
        .route("/_matrix/client/v1/media/preview_url", get(preview_url));
    for v in ["v3", "r0"] {
        r = r
            .route(&format!("/_matrix/media/{v}/config"), get(config))
            .route(&format!("/_matrix/media/{v}/preview_url"), get(preview_url))
            .limited(
                &format!("/_matrix/media/{v}/upload"),
                post(upload),
                Class::Media,
            )
            // Deprecated and unauthenticated: media from before the freeze only.
            .route(
                &format!("/_matrix/media/{v}/download/{{server}}/{{media_id}}"),
                get(download_unauthenticated),
            )
            .route(
                &format!("/_matrix/media/{v}/download/{{server}}/{{media_id}}/{{file_name}}"),
                get(download_unauthenticated_as),
            )
            .route(
                &format!("/_matrix/media/{v}/thumbnail/{{server}}/{{media_id}}"),
                get(thumbnail_unauthenticated),
            );
    }
    r.limited(
        "/_matrix/media/v3/upload/{server}/{media_id}",
        put(upload_reserved),
        Class::Media,
    )
}

/// Spec: `Content-Security-Policy` for everything served from the repository.
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

async fn config(State(s): State<AppState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": s.hs.config.media.max_upload_bytes }))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// The upload's stream, refused at once when it says it is too large.
fn body_stream(s: &AppState, headers: &HeaderMap, body: Body) -> Result<ByteStream, ApiError> {
    let max = s.hs.config.media.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError(Error::Matrix(
            ErrorKind::TooLarge,
            format!("Cannot upload files larger than {max} bytes"),
        )));
    }
    // A client that stops sending holds an upload slot and a buffer: after a while
    // without a byte, the upload fails (and leaves nothing).
    let chunks = body.into_data_stream();
    Ok(Box::pin(futures_util::stream::unfold(
        Some(chunks),
        |chunks| async move {
            let mut chunks = chunks?;
            match tokio::time::timeout(UPLOAD_IDLE, chunks.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
                Ok(Some(Err(e))) => Some((Err(BlobError::Other(e.to_string())), None)),
                Ok(None) => None,
                Err(_) => Some((Err(BlobError::Other("no data for 30 seconds".into())), None)),
            }
        },
    )))
}

/// How long an upload may send nothing before it fails.
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

fn upload_meta<'a>(headers: &'a HeaderMap, q: &'a UploadQuery) -> UploadMeta<'a> {
    UploadMeta {
        // Spec: `application/octet-stream` when the client gives none.
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty()),
        filename: q.filename.as_deref().filter(|f| !f.is_empty()),
    }
}

async fn upload(
    State(s): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let stream = body_stream(&s, &headers, body)?;
    let uri =
        s.hs.upload_media(&session.user_id, upload_meta(&headers, &q), stream)
            .await?;
    Ok(Json(json!({ "content_uri": uri })))
}

async fn create(State(s): State<AppState>, Auth(session): Auth) -> Result<Json<Value>, ApiError> {
    let (uri, expires) = s.hs.create_media(&session.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": expires }),
    ))
}

async fn upload_reserved(
    State(s): State<AppState>,
    Auth(session): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let stream = body_stream(&s, &headers, body)?;
    s.hs.upload_reserved_media(
        &session.user_id,
        &server,
        &media_id,
        upload_meta(&headers, &q),
        stream,
    )
    .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct PreviewQuery {
    url: String,
    /// Spec: the preferred time of the preview; a newer one may answer (the cache's).
    #[allow(dead_code)]
    ts: Option<i64>,
}

async fn preview_url(
    State(s): State<AppState>,
    Auth(session): Auth,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<Value>, ApiError> {
    // Each preview may fetch and store an image: it spends the media budget.
    if !s.limiter.exempt(Some(&session)) {
        s.limiter.check(Class::Media, session.user_id.as_str())?;
    }
    Ok(Json(s.hs.preview_url(&session.user_id, &q.url).await?))
}

#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<u64>,
}

async fn download(
    State(s): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(
        &s,
        &server,
        &media_id,
        None,
        q,
        &headers,
        Access::Authenticated,
    )
    .await
}

async fn download_as(
    State(s): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = Some(file_name);
    serve(
        &s,
        &server,
        &media_id,
        name,
        q,
        &headers,
        Access::Authenticated,
    )
    .await
}

async fn download_unauthenticated(
    State(s): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(
        &s,
        &server,
        &media_id,
        None,
        q,
        &headers,
        Access::Unauthenticated,
    )
    .await
}

async fn download_unauthenticated_as(
    State(s): State<AppState>,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = Some(file_name);
    serve(
        &s,
        &server,
        &media_id,
        name,
        q,
        &headers,
        Access::Unauthenticated,
    )
    .await
}

/// One download: the whole file, or the one byte range asked (`Range: bytes=…`).
async fn serve(
    s: &AppState,
    server: &str,
    media_id: &str,
    file_name: Option<String>,
    q: DownloadQuery,
    headers: &HeaderMap,
    access: Access,
) -> Result<Response, ApiError> {
    let info =
        s.hs.media_to_serve(server, media_id, q.timeout_ms, access)
            .await?;
    let size = info.size.unwrap_or(0);
    let etag = format!("\"{}\"", info.sha256.as_deref().unwrap_or_default());
    let mut out = HeaderMap::new();
    let content_type = info
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let inline = serves_inline(content_type.to_str().unwrap_or_default());
    out.insert(header::CONTENT_TYPE, content_type);
    out.insert(
        header::CONTENT_DISPOSITION,
        disposition(inline, file_name.or_else(|| info.filename.clone())),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::ETAG, header_value(&etag));
    add_safety_headers(&mut out);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        // RFC 9110: weak comparison for If-None-Match.
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match byte_range(r, size) {
            Ok(range) => range,
            Err(()) => {
                out.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{size}")),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
            }
        },
    };
    let body = s.hs.read_media(&info, range.clone()).await?;
    let status = match &range {
        Some(r) => {
            out.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            );
            out.insert(
                header::CONTENT_LENGTH,
                header_value(&(r.end - r.start).to_string()),
            );
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            out.insert(header::CONTENT_LENGTH, header_value(&size.to_string()));
            StatusCode::OK
        }
    };
    Ok((status, out, Body::from_stream(body)).into_response())
}

/// A single byte range within `size` bytes; several ranges are served whole (RFC 9110
/// lets a server ignore `Range`), an unsatisfiable one is `Err` (416).
fn byte_range(value: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    // No byte of an empty file can be asked for.
    if size == 0 {
        return Err(());
    }
    let parsed = match http_range_header::parse_range_header(value) {
        Ok(p) => p,
        // Not a byte range we read: ignored, the whole file answers.
        Err(_) => return Ok(None),
    };
    let ranges = parsed.validate(size).map_err(|_| ())?;
    match ranges.as_slice() {
        [one] if *one.start() < size && one.end() >= one.start() => {
            Ok(Some(*one.start()..(one.end() + 1).min(size)))
        }
        [_] => Err(()),
        _ => Ok(None),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// Spec: `inline` for the safe types, `attachment` otherwise, with the upload's (or the
/// path's) file name, encoded per RFC 6266 / 8187.
fn disposition(inline: bool, file_name: Option<String>) -> HeaderValue {
    let kind = if inline {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let value = ContentDisposition::new(kind).with_filename(file_name);
    header_value(&value.to_string())
}

/// Spec ("Content repository"): a sandboxing CSP and cross-origin embedding; and no type
/// sniffing, so what was uploaded as one type is never run as another.
fn add_safety_headers(out: &mut HeaderMap) {
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    // Contents never change under a media ID.
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
    timeout_ms: Option<u64>,
    /// Spec v1.11: an animated thumbnail where possible; never unless asked.
    animated: Option<bool>,
}

async fn thumbnail(
    State(s): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&s, &server, &media_id, q, Access::Authenticated).await
}

async fn thumbnail_unauthenticated(
    State(s): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&s, &server, &media_id, q, Access::Unauthenticated).await
}

async fn serve_thumbnail(
    s: &AppState,
    server: &str,
    media_id: &str,
    q: ThumbnailQuery,
    access: Access,
) -> Result<Response, ApiError> {
    let method = match q.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(_) => {
            return Err(ApiError(Error::invalid_param(
                "method must be crop or scale",
            )))
        }
    };
    let Thumbnail {
        content_type,
        size,
        body,
    } =
        s.hs.thumbnail(
            server,
            media_id,
            ThumbnailRequest {
                width: q.width,
                height: q.height,
                method,
                animated: q.animated.unwrap_or(false),
                timeout_ms: q.timeout_ms,
                access,
            },
        )
        .await?;
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, header_value(&content_type));
    // Spec: a thumbnail is always `inline`.
    let ext = content_type.rsplit('/').next().unwrap_or("jpeg");
    out.insert(
        header::CONTENT_DISPOSITION,
        disposition(true, Some(format!("thumbnail.{ext}"))),
    );
    out.insert(header::CONTENT_LENGTH, header_value(&size.to_string()));
    add_safety_headers(&mut out);
    Ok((StatusCode::OK, out, Body::from_stream(body)).into_response())
}
