//! The content repository: matrix-sdk uploads, downloads and thumbnails, avatars and
//! `m.image` messages; raw HTTP for headers, ranges, limits, reserved IDs, the freeze and
//! refusals; thumbnails; an S3 bucket; URL previews. Both engines (the harness picks).

mod http;
mod limits;
mod previews;
mod s3;
mod sdk;
mod thumbnails;

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
