//! URL previews.

use super::*;

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
