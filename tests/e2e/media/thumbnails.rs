//! Thumbnails made once, and animated ones.

use super::*;

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
