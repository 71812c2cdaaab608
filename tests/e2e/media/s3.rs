//! Media in an S3-compatible bucket.

use super::*;

/// A real S3-compatible server (`s3s-fs`, installed if missing) on a free port, over a
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
