//! The content repository: matrix-sdk uploads, downloads and thumbnails, avatars and
//! `m.image` messages; raw HTTP for headers, ranges, limits, reserved IDs, the freeze and
//! refusals. Both engines (the harness picks).

use std::{io::Cursor, path::Path};

use matrix_sdk::{
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{
        api::client::media::get_content_thumbnail::v3::Method, events::room::MediaSource,
        OwnedMxcUri,
    },
};
use serde_json::{json, Value};

use crate::harness::{self, urlencode, Options, TestServer};

/// A `w`×`h` PNG (opaque, so its thumbnails are JPEG).
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// Files under `dir` (recursively).
fn files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files(&p)
            } else {
                1
            }
        })
        .sum()
}

async fn upload(
    s: &TestServer,
    token: &str,
    content_type: &str,
    query: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let res = s
        .http
        .post(format!("{}/_matrix/media/v3/upload{query}", s.url))
        .bearer_auth(token)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `mxc://server/id` → `server/id`.
fn mxc_path(uri: &str) -> String {
    uri.trim_start_matches("mxc://").to_owned()
}

async fn get(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = s.http.get(format!("{}{path}", s.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_uploads_downloads_thumbnails_and_avatars() {
    let s = harness::start().await;
    let (_, alice_token) = s.register("alice").await;
    let (_, bob_token) = s.register("bob").await;
    let alice = s.sdk_client("alice").await;
    let bob = s.sdk_client("bob").await;

    let original = png(400, 300);
    let uri = alice
        .media()
        .upload(&"image/png".parse().expect("mime"), original.clone(), None)
        .await
        .expect("upload")
        .content_uri;

    // Bob downloads it (authenticated media), whole and as thumbnails of the asked size.
    let source = MediaSource::Plain(uri.clone());
    let file = bob
        .media()
        .get_media_content(
            &MediaRequestParameters {
                source: source.clone(),
                format: MediaFormat::File,
            },
            false,
        )
        .await
        .expect("download");
    assert_eq!(file, original);
    for (method, (w, h), want) in [
        // (method, asked, served)
        (Method::Crop, (96u32, 96u32), (96u32, 96u32)),
        (Method::Crop, (32, 32), (32, 32)),
        (Method::Scale, (320, 240), (320, 240)),
        // Nearest larger: 100×100 is served by 320×240 (scaled into it: the whole image).
        (Method::Scale, (100, 100), (320, 240)),
    ] {
        let thumb = bob
            .media()
            .get_media_content(
                &MediaRequestParameters {
                    source: source.clone(),
                    format: MediaFormat::Thumbnail(MediaThumbnailSettings::with_method(
                        method.clone(),
                        u32::into(w),
                        u32::into(h),
                    )),
                },
                false,
            )
            .await
            .expect("thumbnail");
        let img = image::load_from_memory(&thumb).expect("a thumbnail decodes");
        assert_eq!((img.width(), img.height()), want, "{method:?} {w}x{h}");
        assert_eq!(
            image::guess_format(&thumb).expect("format"),
            image::ImageFormat::Jpeg
        );
    }
    // Asked larger than the original: the original itself (never upscaled).
    let big = get(
        &s,
        &format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=800&height=600&method=scale",
            mxc_path(uri.as_str())
        ),
        Some(&bob_token),
        &[],
    )
    .await;
    assert_eq!(big.status(), 200);
    assert_eq!(big.headers()["content-type"], "image/png");
    assert_eq!(big.bytes().await.expect("body").to_vec(), original);

    // As alice's avatar: bob sees it in her member event and profile.
    alice
        .account()
        .set_avatar_url(Some(&uri))
        .await
        .expect("avatar");
    let room = s
        .create_room(&alice_token, json!({ "preset": "public_chat" }))
        .await;
    s.membership(&bob_token, &room, "join").await;
    let (status, member) = s
        .req(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                urlencode(&room),
                urlencode("@alice:localhost")
            ),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["avatar_url"], uri.as_str());

    // An `m.image` message: bob downloads the file it names.
    let photo = png(64, 48);
    let photo_uri = alice
        .media()
        .upload(&"image/png".parse().expect("mime"), photo.clone(), None)
        .await
        .expect("upload")
        .content_uri;
    let body = json!({ "msgtype": "m.image", "body": "photo.png", "url": photo_uri,
        "info": { "mimetype": "image/png", "w": 64, "h": 48, "size": photo.len() } });
    s.ok(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/img1",
            urlencode(&room)
        ),
        &alice_token,
        Some(body),
    )
    .await;
    let (_, messages) = s
        .req(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5",
                urlencode(&room)
            ),
            Some(&bob_token),
            None,
        )
        .await;
    let url = messages["chunk"]
        .as_array()
        .and_then(|c| c.iter().find(|e| e["content"]["msgtype"] == "m.image"))
        .and_then(|e| e["content"]["url"].as_str())
        .expect("the image message")
        .to_owned();
    let got = bob
        .media()
        .get_media_content(
            &MediaRequestParameters {
                source: MediaSource::Plain(OwnedMxcUri::from(url)),
                format: MediaFormat::File,
            },
            false,
        )
        .await
        .expect("download the image");
    assert_eq!(got, photo);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_headers_ranges_limits_and_refusals() {
    let s = harness::start_with(Options {
        configure: |c| c.media.max_upload_bytes = 1 << 20,
        ..Default::default()
    })
    .await;
    let (_, alice) = s.register("alice").await;
    let (_, bob) = s.register("bob").await;
    let media_dir = s.config.media_dir();

    let (status, config) = s
        .req("GET", "/_matrix/client/v1/media/config", Some(&alice), None)
        .await;
    assert_eq!(
        (status, config["m.upload.size"].clone()),
        (200, json!(1 << 20))
    );
    let (status, _) = upload(&s, "", "text/plain", "", b"x".to_vec()).await;
    assert_eq!(status, 401);

    // Headers: HTML is an attachment, with its name encoded; images are inline.
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let (status, up) = upload(
        &s,
        &alice,
        "text/html",
        "?filename=caf%C3%A9%20%22x%22.html",
        html.clone(),
    )
    .await;
    assert_eq!(status, 200, "{up}");
    let html_path = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{html_path}"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/html");
    let cd = h["content-disposition"].to_str().expect("ascii");
    assert!(cd.starts_with("attachment;"), "{cd}");
    assert!(cd.contains("filename*=utf-8''caf%C3%A9"), "{cd}");
    assert!(h["content-security-policy"]
        .to_str()
        .expect("csp")
        .starts_with("sandbox;"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(res.bytes().await.expect("body").to_vec(), html);

    let image = png(40, 30);
    let (_, up) = upload(&s, &alice, "image/png", "?filename=dot.png", image.clone()).await;
    let img_path = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}/renamed.png"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(
        res.headers()["content-disposition"],
        "inline; filename=renamed.png"
    );
    let etag = res.headers()["etag"].to_str().expect("etag").to_owned();

    // Ranges (audio and video seek with them), and caching.
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        Some(&bob),
        &[("Range", "bytes=0-9")],
    )
    .await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 0-9/{}", image.len()).as_str()
    );
    assert_eq!(
        res.bytes().await.expect("body").to_vec(),
        image[..10].to_vec()
    );
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        Some(&bob),
        &[("Range", "bytes=10-")],
    )
    .await;
    assert_eq!(
        res.bytes().await.expect("body").to_vec(),
        image[10..].to_vec()
    );
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        Some(&bob),
        &[("Range", "bytes=999999-")],
    )
    .await;
    assert_eq!(res.status(), 416);
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        Some(&bob),
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(res.status(), 304);

    // Identical files are stored once.
    let blobs_before = files(&media_dir.join("content"));
    let (_, again) = upload(&s, &alice, "image/png", "", image.clone()).await;
    assert_ne!(
        mxc_path(again["content_uri"].as_str().expect("uri")),
        img_path
    );
    assert_eq!(files(&media_dir.join("content")), blobs_before);

    // Too large: refused as it streams (no length given) or at once (length given), and
    // nothing is left behind.
    let big = vec![7u8; (1 << 20) + 1];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let res = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.url))
        .bearer_auth(&alice)
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(body["errcode"], "M_TOO_LARGE");
    // A declared length over the limit is answered before any of the body is sent.
    let mut conn = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes())
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut conn, &mut answer),
    )
    .await
    .expect("answered without the body")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
    // Cut short: the client goes away halfway through its body.
    let rows_before = media_rows(&s).await;
    let mut conn = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/octet-stream\r\nContent-Length: 500000\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes())
        .await
        .expect("write");
    tokio::io::AsyncWriteExt::write_all(&mut conn, &vec![3u8; 300_000])
        .await
        .expect("write");
    drop(conn);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(media_rows(&s).await, rows_before, "a cut upload left a row");
    assert_eq!(files(&media_dir.join("content")), blobs_before);
    assert_eq!(
        files(&media_dir.join("tmp")),
        0,
        "a refused upload left a file"
    );

    // Reserved IDs: not yet uploaded (504), waited for, uploaded once, by their owner only.
    let (status, created) = s
        .req(
            "POST",
            "/_matrix/media/v1/create",
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert!(created["unused_expires_at"].as_i64().expect("expiry") > 0);
    let reserved = mxc_path(created["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{reserved}?timeout_ms=100"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 504);
    assert_eq!(
        res.json::<Value>().await.expect("json")["errcode"],
        "M_NOT_YET_UPLOADED"
    );
    let (status, _, body) = s
        .req_raw(
            "PUT",
            &format!("/_matrix/media/v3/upload/{reserved}"),
            Some(&bob),
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (403, json!("M_FORBIDDEN"))
    );
    let waiting = {
        let (http, url, bob) = (s.http.clone(), s.url.clone(), bob.clone());
        let path = format!("/_matrix/client/v1/media/download/{reserved}?timeout_ms=10000");
        tokio::spawn(async move {
            let res = http
                .get(format!("{url}{path}"))
                .bearer_auth(bob)
                .send()
                .await
                .expect("get");
            (
                res.status().as_u16(),
                res.bytes().await.expect("body").to_vec(),
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let res = s
        .http
        .put(format!(
            "{}/_matrix/media/v3/upload/{reserved}?filename=late.txt",
            s.url
        ))
        .bearer_auth(&alice)
        .header("Content-Type", "text/plain")
        .body("arrived late")
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    assert_eq!(
        waiting.await.expect("task"),
        (200, b"arrived late".to_vec())
    );
    let res = s
        .http
        .put(format!("{}/_matrix/media/v3/upload/{reserved}", s.url))
        .bearer_auth(&alice)
        .body("again")
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 409);
    assert_eq!(
        res.json::<Value>().await.expect("json")["errcode"],
        "M_CANNOT_OVERWRITE_MEDIA"
    );
    for path in ["localhost/neverCreated", "elsewhere.example/abc"] {
        let res = s
            .http
            .put(format!("{}/_matrix/media/v3/upload/{path}", s.url))
            .bearer_auth(&alice)
            .body("x")
            .send()
            .await
            .expect("put");
        assert_eq!(res.status(), 404, "{path}");
    }

    // Other servers' media: not fetched over federation (yet); a clear 404.
    let res = get(
        &s,
        "/_matrix/client/v1/media/download/elsewhere.example/abc",
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("federation"));
    // Bad media IDs never reach storage.
    let res = get(
        &s,
        "/_matrix/client/v1/media/download/localhost/..%2F..%2Fetc",
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 400);

    // The deprecated unauthenticated download is frozen: nothing uploaded here is on it.
    let res = get(
        &s,
        &format!("/_matrix/media/v3/download/{img_path}"),
        None,
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = get(
        &s,
        &format!("/_matrix/media/v3/thumbnail/{img_path}?width=32&height=32"),
        None,
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        None,
        &[],
    )
    .await;
    assert_eq!(res.status(), 401);

    // Thumbnails: only of images, sensible sizes; a truncated image is refused cleanly.
    for (path, query, want) in [
        (&html_path, "width=32&height=32", 400),
        (&img_path, "width=0&height=32", 400),
        (&img_path, "width=32&height=32&method=zoom", 400),
        (&img_path, "height=32", 400),
    ] {
        let res = get(
            &s,
            &format!("/_matrix/client/v1/media/thumbnail/{path}?{query}"),
            Some(&bob),
            &[],
        )
        .await;
        assert_eq!(res.status(), want, "{path} {query}");
    }
    let big = png(300, 200);
    let (_, up) = upload(&s, &alice, "image/png", "", big[..big.len() / 2].to_vec()).await;
    let truncated = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/thumbnail/{truncated}?width=32&height=32&method=crop"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 400);

    // Quarantined media is gone for everyone.
    let id = img_path.rsplit('/').next().expect("id").to_owned();
    assert!(s
        .hs()
        .set_media_quarantined(&id, true)
        .await
        .expect("quarantine"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{img_path}"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/thumbnail/{img_path}?width=32&height=32"),
        Some(&bob),
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    s.stop().await;
}

/// Concurrent first requests for one thumbnail make it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbnail_is_made_once_under_concurrent_requests() {
    let s = harness::start().await;
    let (_, alice) = s.register("alice").await;
    let (_, up) = upload(&s, &alice, "image/png", "", png(500, 500)).await;
    let path = mxc_path(up["content_uri"].as_str().expect("uri"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, token, path) = (s.http.clone(), s.url.clone(), alice.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .get(format!(
                    "{url}/_matrix/client/v1/media/thumbnail/{path}?width=96&height=96&method=crop"
                ))
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            assert_eq!(res.status(), 200);
            res.bytes().await.expect("body").to_vec()
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.expect("task"));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let thumbs = files(&s.config.media_dir().join("thumbnails"));
    assert_eq!(thumbs, 1, "one thumbnail file");
    let made = s
        .hs()
        .thumbnails_made
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(made, 1, "the thumbnail was made more than once");

    assert_eq!(thumbnail_rows(&s).await, 1);

    // Deleted: the row, the file and its thumbnails go (no other media ID holds them).
    let id = path.rsplit('/').next().expect("id").to_owned();
    assert!(s.hs().delete_media(&id).await.expect("delete"));
    assert_eq!(files(&s.config.media_dir().join("thumbnails")), 0);
    assert_eq!(files(&s.config.media_dir().join("content")), 0);
    let res = s
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", s.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
    assert_eq!(thumbnail_rows(&s).await, 0);
    s.stop().await;
}

async fn media_rows(s: &TestServer) -> i64 {
    let rows = s
        .hs()
        .db
        .query("SELECT COUNT(*) FROM media", vec![])
        .await
        .expect("rows");
    rows[0].int(0).expect("count")
}

async fn thumbnail_rows(s: &TestServer) -> i64 {
    let rows = s
        .hs()
        .db
        .query("SELECT COUNT(*) FROM media_thumbnails", vec![])
        .await
        .expect("rows");
    rows[0].int(0).expect("count")
}

/// A real S3-compatible server (`s3s-fs`, installed by `.ci/run`) on a free port, over a
/// folder; killed when dropped.
struct S3Server {
    child: std::process::Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    async fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        // s3s-fs keeps a bucket as a folder of its root.
        std::fs::create_dir_all(root.path().join(bucket)).expect("bucket");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let bin = tokio::task::spawn_blocking(s3s_fs).await.expect("s3s-fs");
        let child = std::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "tessera", "--secret-key", "tessera-secret"])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Self { child, port, root }
    }
}

/// The `s3s-fs` binary: `$S3S_FS`, on the `PATH`, in `~/.cargo/bin`, or installed there
/// now (once per machine; the README's test command needs nothing else).
fn s3s_fs() -> String {
    if let Ok(bin) = std::env::var("S3S_FS") {
        return bin;
    }
    let on_path = std::process::Command::new("s3s-fs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return "s3s-fs".into();
    }
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let installed = format!("{home}/bin/s3s-fs");
    if !Path::new(&installed).exists() {
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args([
                "install",
                "s3s-fs",
                "--version",
                "0.14.1",
                "--locked",
                "--features",
                "binary",
            ])
            .status()
            .expect("cargo install s3s-fs");
        assert!(status.success(), "cargo install s3s-fs failed");
    }
    installed
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `media.s3`, files live in the bucket (not the folder): uploads, ranges, thumbnails
/// and reserved IDs work the same, and survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_in_an_s3_bucket() {
    let s3 = S3Server::start("media").await;
    let port = s3.port;
    let mut s = harness::start_configured(Options::default(), |c| {
        c.media.s3 = Some(tessera_server::config::S3 {
            bucket: "media".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("tessera".into()),
            secret_access_key: Some("tessera-secret".into()),
            prefix: Some("tessera".into()),
            allow_http: true,
            ..Default::default()
        });
    })
    .await;
    let (_, alice) = s.register("alice").await;
    let image = png(200, 100);
    let (status, up) = upload(&s, &alice, "image/png", "?filename=a.png", image.clone()).await;
    assert_eq!(status, 200, "{up}");
    let path = mxc_path(up["content_uri"].as_str().expect("uri"));
    assert_eq!(files(&s.config.media_dir()), 0, "nothing in the folder");
    assert!(
        files(&s3.root.path().join("media")) >= 1,
        "the file is in the bucket"
    );

    s.restart().await;
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{path}"),
        Some(&alice),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("body").to_vec(), image);
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{path}"),
        Some(&alice),
        &[("Range", "bytes=5-14")],
    )
    .await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("body").to_vec(),
        image[5..15].to_vec()
    );
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32&method=crop"),
        Some(&alice),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let thumb = image::load_from_memory(&res.bytes().await.expect("body")).expect("decodes");
    assert_eq!((thumb.width(), thumb.height()), (32, 32));
    s.stop().await;
}

/// Quota, reservations, the freeze's other side, and odd inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_quota_reservations_and_odd_inputs() {
    let s = harness::start_with(Options {
        configure: |c| {
            c.media.quota_bytes = Some(100_000);
            c.media.max_pending_uploads = 2;
            // Uploads stream: the limit on other request bodies does not apply to them.
            c.limits.max_body_bytes = 4096;
            // Everything counts as uploaded before the freeze.
            c.media.unauthenticated_before_ms = Some(u64::MAX / 2);
        },
        ..Default::default()
    })
    .await;
    let (_, alice) = s.register("alice").await;
    let (_, bob) = s.register("bob").await;

    // Larger than other bodies may be, within the media limit.
    let (status, up) = upload(
        &s,
        &alice,
        "application/octet-stream",
        "",
        vec![1u8; 16_384],
    )
    .await;
    assert_eq!(status, 200, "{up}");
    // Before the freeze: served unauthenticated too.
    let path = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(&s, &format!("/_matrix/media/v3/download/{path}"), None, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("body").len(), 16_384);

    // The quota: 100,000 bytes; three concurrent uploads of 40,000 cannot all pass it.
    let mut tasks = Vec::new();
    for i in 0..3u8 {
        let (http, url, token) = (s.http.clone(), s.url.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/_matrix/media/v3/upload"))
                .bearer_auth(token)
                .header("Content-Type", "application/octet-stream")
                .body(vec![i; 40_000])
                .send()
                .await
                .expect("upload")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 403],
        "16,384 + 2 × 40,000 fit, a third does not"
    );
    let (status, body) = upload(&s, &alice, "text/plain", "", vec![b'x'; 1000]).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (200, Value::Null),
        "{body}"
    );
    let (status, body) = upload(&s, &alice, "text/plain", "", vec![b'x'; 20_000]).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (403, json!("M_FORBIDDEN"))
    );
    // Others have their own quota.
    let (status, _) = upload(&s, &bob, "text/plain", "", vec![b'x'; 20_000]).await;
    assert_eq!(status, 200);

    // Reservations: two at a time.
    for _ in 0..2 {
        let (status, _) = s
            .req(
                "POST",
                "/_matrix/media/v1/create",
                Some(&bob),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, body) = s
        .req(
            "POST",
            "/_matrix/media/v1/create",
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (429, json!("M_LIMIT_EXCEEDED"))
    );
    // The frozen endpoint does not wait for a reserved ID.
    let (_, created) = s
        .req(
            "POST",
            "/_matrix/media/v1/create",
            Some(&alice),
            Some(json!({})),
        )
        .await;
    let reserved = mxc_path(created["content_uri"].as_str().expect("uri"));
    let t = std::time::Instant::now();
    let res = get(
        &s,
        &format!("/_matrix/media/v3/download/{reserved}?timeout_ms=5000"),
        None,
        &[],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert!(t.elapsed() < std::time::Duration::from_secs(3));

    // An empty file: served, but no byte of it can be asked for.
    let (_, up) = upload(&s, &bob, "text/plain", "", Vec::new()).await;
    let empty = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{empty}"),
        Some(&alice),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.expect("body").is_empty());
    for range in ["bytes=0-0", "bytes=0-", "bytes=-1"] {
        let res = get(
            &s,
            &format!("/_matrix/client/v1/media/download/{empty}"),
            Some(&alice),
            &[("Range", range)],
        )
        .await;
        assert_eq!(res.status(), 416, "{range}");
    }

    // A list of types smuggles nothing inline: stored as an octet stream.
    let (_, up) = upload(&s, &bob, "text/plain, text/html", "", b"<b>hi</b>".to_vec()).await;
    let listed = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{listed}"),
        Some(&alice),
        &[],
    )
    .await;
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .starts_with("attachment"));
    // Parameters are kept, the inline rule reads the essence.
    let (_, up) = upload(&s, &bob, "Text/Plain; charset=utf-8", "", b"hello".to_vec()).await;
    let text = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{text}"),
        Some(&alice),
        &[],
    )
    .await;
    assert!(res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .starts_with("inline"));

    // A picture that cannot be read is refused, and not decoded again.
    let bad = png(120, 90);
    let (_, up) = upload(&s, &bob, "image/png", "", bad[..bad.len() / 3].to_vec()).await;
    let broken = mxc_path(up["content_uri"].as_str().expect("uri"));
    for _ in 0..2 {
        let res = get(
            &s,
            &format!("/_matrix/client/v1/media/thumbnail/{broken}?width=32&height=32&method=crop"),
            Some(&alice),
            &[],
        )
        .await;
        assert_eq!(res.status(), 400);
    }
    let made = s
        .hs()
        .thumbnails_made
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(made, 1);
    s.stop().await;
}

/// A web server for previews to fetch, on all of 127/8 (so a fetch that reached a refused
/// address would be seen); counts the requests per path.
struct Pages {
    port: u16,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pages {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counted = hits.clone();
        let image = png(120, 80);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (hits, image) = (counted.clone(), image.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let page =
                        |body: String| (200, "text/html; charset=utf-8", body.into_bytes(), None);
                    let (status, kind, body, location): (u16, &str, Vec<u8>, Option<String>) =
                        match path.as_str() {
                            "/page" => page(
                                r#"<html><head><title>Ignored</title>
                                <meta property="og:title" content="Hello &amp; welcome">
                                <meta property="og:description" content="A page to preview">
                                <meta property="og:image" content="/img.png"></head><body>hi</body></html>"#
                                    .into(),
                            ),
                            "/titled" => page("<html><head><title>Just a title</title></head></html>".into()),
                            "/img.png" => (200, "image/png", image, None),
                            "/big" => page("x".repeat(3 << 20)),
                            "/to-private" => (302, "text/plain", Vec::new(), Some(format!("http://127.0.0.2:{port}/secret"))),
                            "/to-mapped" => (302, "text/plain", Vec::new(), Some(format!("http://[::ffff:10.0.0.1]:{port}/secret"))),
                            _ => (404, "text/plain", Vec::new(), None),
                        };
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    if let Some(l) = location {
                        head.push_str(&format!("Location: {l}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        Self { port, hits, task }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// URL previews: OpenGraph through a real HTML parser, the image stored as local media,
/// cached; never a loopback, private, mapped or unspecified address, directly or by
/// redirect; bounded in size. Off unless configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_read_open_graph_and_refuse_private_networks() {
    let pages = Pages::start().await;
    let port = pages.port;
    let s = harness::start_configured(Options::default(), |c| {
        c.media.url_preview.enabled = true;
        // The test's pages are on loopback: that one address only.
        c.media.url_preview.ip_range_whitelist = vec!["127.0.0.1/32".into()];
    })
    .await;
    let (_, alice) = s.register("alice").await;
    let preview = |url: String| {
        let (s, alice) = (&s, alice.clone());
        async move {
            s.req(
                "GET",
                &format!(
                    "/_matrix/client/v1/media/preview_url?url={}",
                    urlencode(&url)
                ),
                Some(&alice),
                None,
            )
            .await
        }
    };

    let (status, og) = preview(format!("http://127.0.0.1:{port}/page")).await;
    assert_eq!(status, 200, "{og}");
    assert_eq!(og["og:title"], "Hello & welcome");
    assert_eq!(og["og:description"], "A page to preview");
    assert_eq!(
        (og["og:image:width"].clone(), og["og:image:height"].clone()),
        (json!(120), json!(80))
    );
    let image = og["og:image"].as_str().expect("an mxc URI");
    assert!(image.starts_with("mxc://localhost/"), "{image}");
    let res = get(
        &s,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(image)),
        Some(&alice),
        &[],
    )
    .await;
    let bytes = res.bytes().await.expect("body").to_vec();
    assert_eq!(bytes, png(120, 80));
    assert_eq!(og["matrix:image:size"], json!(bytes.len()));
    // Cached: the page is not fetched again.
    let (status, again) = preview(format!("http://127.0.0.1:{port}/page")).await;
    assert_eq!((status, &again), (200, &og));
    assert_eq!(pages.hits("/page"), 1);
    let (_, og) = preview(format!("http://127.0.0.1:{port}/titled")).await;
    assert_eq!(og["og:title"], "Just a title");

    // Refused, directly or through a redirect, before any connection to them.
    for url in [
        format!("http://127.0.0.1:{port}/to-private"),
        format!("http://127.0.0.1:{port}/to-mapped"),
        format!("http://127.0.0.2:{port}/secret"),
        format!("http://[::ffff:127.0.0.2]:{port}/secret"),
        format!("http://0.0.0.0:{port}/secret"),
        format!("http://[::1]:{port}/secret"),
        format!("http://10.0.0.1:{port}/secret"),
        format!("http://169.254.169.254:{port}/secret"),
    ] {
        let (status, body) = preview(url.clone()).await;
        assert_eq!(
            (status, body["errcode"].clone()),
            (403, json!("M_FORBIDDEN")),
            "{url}: {body}"
        );
    }
    assert_eq!(pages.hits("/secret"), 0, "a refused address was fetched");
    let (status, body) = preview(format!("http://127.0.0.1:{port}/big")).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (413, json!("M_TOO_LARGE"))
    );
    let (status, _) = preview("ftp://127.0.0.1/file".into()).await;
    assert_eq!(status, 400);
    let (status, _) = s
        .req(
            "GET",
            "/_matrix/client/v1/media/preview_url?url=http%3A%2F%2F127.0.0.1%2F",
            None,
            None,
        )
        .await;
    assert_eq!(status, 401);
    s.stop().await;

    // Off by default.
    let s = harness::start().await;
    let (_, alice) = s.register("alice").await;
    let (status, body) = s
        .req(
            "GET",
            &format!(
                "/_matrix/client/v1/media/preview_url?url={}",
                urlencode(&format!("http://127.0.0.1:{port}/page"))
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (404, json!("M_UNRECOGNIZED"))
    );
    assert_eq!(pages.hits("/page"), 1);
    s.stop().await;
}

/// A 3-frame animated GIF, `w`×`h`.
fn animated_gif(w: u32, h: u32) -> Vec<u8> {
    use image::{codecs::gif, Delay, Frame};
    let mut out = Vec::new();
    {
        let mut encoder = gif::GifEncoder::new(&mut out);
        encoder.set_repeat(gif::Repeat::Infinite).expect("repeat");
        let frames = (0..3u8).map(|i| {
            let buf = image::RgbaImage::from_pixel(w, h, image::Rgba([80 * i, 40, 200, 255]));
            Frame::from_parts(buf, 0, 0, Delay::from_numer_denom_ms(100, 1))
        });
        encoder.encode_frames(frames).expect("gif");
    }
    out
}

/// `animated=true` keeps an animated GIF animated (a GIF of the asked size, every frame);
/// without it, or for a still image, the thumbnail is still.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animated_thumbnails_only_when_asked() {
    use image::AnimationDecoder;
    let s = harness::start().await;
    let (_, alice) = s.register("alice").await;
    let (_, up) = upload(&s, &alice, "image/gif", "", animated_gif(200, 150)).await;
    let path = mxc_path(up["content_uri"].as_str().expect("uri"));
    let thumb = |query: &'static str| {
        let (s, alice, path) = (&s, alice.clone(), path.clone());
        async move {
            let res = get(
                s,
                &format!("/_matrix/client/v1/media/thumbnail/{path}?{query}"),
                Some(&alice),
                &[],
            )
            .await;
            assert_eq!(res.status(), 200, "{query}");
            let kind = res.headers()["content-type"]
                .to_str()
                .expect("type")
                .to_owned();
            (kind, res.bytes().await.expect("body").to_vec())
        }
    };
    let (kind, body) = thumb("width=96&height=96&method=crop&animated=true").await;
    assert_eq!(kind, "image/gif");
    let frames = image::codecs::gif::GifDecoder::new(Cursor::new(&body))
        .expect("gif")
        .into_frames()
        .collect_frames()
        .expect("frames");
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.buffer().dimensions() == (96, 96)));
    for query in [
        "width=96&height=96&method=crop",
        "width=96&height=96&method=crop&animated=false",
    ] {
        let (kind, body) = thumb(query).await;
        assert_ne!(kind, "image/gif", "{query}");
        let img = image::load_from_memory(&body).expect("still");
        assert_eq!((img.width(), img.height()), (96, 96));
    }
    // A still image asked animated: still (spec: as if `animated` were false).
    let (_, up) = upload(&s, &alice, "image/png", "", png(200, 150)).await;
    let still = mxc_path(up["content_uri"].as_str().expect("uri"));
    let res = get(&s, &format!("/_matrix/client/v1/media/thumbnail/{still}?width=32&height=32&method=crop&animated=true"), Some(&alice), &[]).await;
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    s.stop().await;
}
