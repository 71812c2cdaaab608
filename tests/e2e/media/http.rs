//! Raw HTTP: headers, ranges, dedup, too-large and cut uploads, reserved IDs, remote
//! media, the freeze, refused thumbnails, quarantine.

use super::*;

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
