//! Quota, reservations, the freeze's other side, and odd inputs.

use super::*;

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
