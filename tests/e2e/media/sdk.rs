//! What a client does, through matrix-sdk.

use super::*;

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
