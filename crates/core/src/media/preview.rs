//! URL previews (spec: `GET /_matrix/client/v1/media/preview_url`), off unless configured.
//! The page is fetched through the [`UrlFetcher`](crate::ports::UrlFetcher) port, bounded in
//! size and time, never from a loopback, private, link-local, multicast or unspecified
//! address ([`crate::outbound::address_allowed`], checked by the host at DNS resolution and at every
//! redirect); OpenGraph and `<title>`/`<meta>` are read with a real HTML parser (ruma's,
//! html5ever); the page's image becomes local media. Previews are cached by URL.

use ruma::{api::error::ErrorKind, UserId};
use serde_json::{Map, Value as Json};

use super::upload::UploadMeta;
use crate::{
    outbound::AddressPolicy,
    ports::{FetchError, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// The content repository's URL-preview settings (README, `media.url_preview.*`).
#[derive(Clone, Debug, Default)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    /// Where previews may fetch from.
    pub addresses: AddressPolicy,
}

/// Pages read at most (HTML or an image), and the image of a page.
const MAX_PAGE_BYTES: u64 = 2 * 1024 * 1024;
const MAX_IMAGE_BYTES: u64 = 8 * 1024 * 1024;
/// A cached preview serves for this long.
const CACHE_MS: i64 = 3600 * 1000;
/// HTML nodes read at most (a page is bounded in size; this bounds the walk too).
const MAX_NODES: usize = 50_000;

fn refused(e: FetchError) -> Error {
    match e {
        FetchError::Refused(why) => Error::forbidden(format!("Cannot preview this URL: {why}")),
        FetchError::TooLarge => Error::Matrix(ErrorKind::TooLarge, "The page is too large".into()),
        FetchError::Failed(why) => Error::WithStatus {
            status: 502,
            kind: ErrorKind::Unknown,
            message: format!("Could not fetch the URL: {why}"),
        },
    }
}

impl Homeserver {
    /// The OpenGraph data of `url`, for `user` (who is recorded as the image's uploader).
    pub async fn preview_url(&self, user: &UserId, url: &str) -> Result<Json> {
        if !self.config.media.url_preview.enabled {
            return Err(Error::Matrix(
                ErrorKind::Unrecognized,
                "URL previews are not enabled on this server".into(),
            ));
        }
        crate::input::text("url", url, 2048)?;
        let parsed = url::Url::parse(url).map_err(|_| Error::invalid_param("Invalid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        let now = self.now();
        let cached = query_opt(
            self.db.as_ref(),
            "SELECT og, fetched_ts FROM url_previews WHERE url = $1",
            vec![url.into()],
        )
        .await?;
        if let Some(row) = cached {
            if row.int(1)? > now - CACHE_MS {
                return Ok(serde_json::from_str(&row.text(0)?)?);
            }
        }
        let fetcher = self
            .fetcher
            .as_ref()
            .ok_or_else(|| Error::internal("no URL fetcher"))?;
        let page = fetcher
            .get(parsed.as_str(), MAX_PAGE_BYTES)
            .await
            .map_err(refused)?;
        let essence = page
            .content_type
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mut og = Map::new();
        let mut image_url = None;
        if essence == "text/html" || essence == "application/xhtml+xml" {
            let html = String::from_utf8_lossy(&page.body);
            let (tags, title) = open_graph(&html);
            for (k, v) in tags {
                if k == "og:image" {
                    image_url = Some(v);
                } else {
                    og.entry(k).or_insert(Json::String(v));
                }
            }
            if !og.contains_key("og:title") {
                if let Some(t) = title {
                    og.insert("og:title".into(), Json::String(t));
                }
            }
        } else if essence.starts_with("image/") {
            // The URL is an image: it is its own preview.
            self.attach_image(user, &mut og, page.body.clone(), &essence)
                .await?;
        }
        if let Some(image) = image_url {
            // Relative to the page (after its redirects).
            let base = url::Url::parse(&page.url).unwrap_or(parsed.clone());
            if let Ok(image) = base.join(&image) {
                if matches!(image.scheme(), "http" | "https") {
                    // A page whose image cannot be fetched still has a preview.
                    if let Ok(img) = fetcher.get(image.as_str(), MAX_IMAGE_BYTES).await {
                        let t = img.content_type.clone().unwrap_or_default();
                        if t.starts_with("image/") {
                            self.attach_image(user, &mut og, img.body, &t).await?;
                        }
                    }
                }
            }
        }
        let og = Json::Object(og);
        self.db
            .execute(
                "INSERT INTO url_previews (url, og, fetched_ts) VALUES ($1, $2, $3)
                 ON CONFLICT (url) DO UPDATE SET og = excluded.og, fetched_ts = excluded.fetched_ts",
                vec![url.into(), og.to_string().into(), Value::Int(now)],
            )
            .await?;
        Ok(og)
    }

    /// Stores a preview's image as media and names it in `og`.
    async fn attach_image(
        &self,
        user: &UserId,
        og: &mut Map<String, Json>,
        bytes: bytes::Bytes,
        content_type: &str,
    ) -> Result<()> {
        let size = bytes.len();
        let dims = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        let body: crate::ports::ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
        let meta = UploadMeta {
            content_type: Some(content_type),
            filename: None,
        };
        let uri = self.upload_media(user, meta, body).await?;
        og.insert("og:image".into(), Json::String(uri.to_string()));
        og.insert(
            "og:image:type".into(),
            Json::String(content_type.to_owned()),
        );
        og.insert("matrix:image:size".into(), Json::from(size));
        if let Some((w, h)) = dims {
            og.insert("og:image:width".into(), Json::from(w));
            og.insert("og:image:height".into(), Json::from(h));
        }
        Ok(())
    }
}

/// The page's `og:*` (and `description`) meta tags, first of each kept, and its title.
/// The tree is walked with an explicit stack, bounded in nodes.
fn open_graph(html: &str) -> (Vec<(String, String)>, Option<String>) {
    let doc = ruma::html::Html::parse(html);
    let mut tags = Vec::new();
    let mut title = None;
    let mut description = None;
    let mut stack: Vec<ruma::html::NodeRef> = doc.children().collect();
    stack.reverse();
    let mut seen = 0;
    while let Some(node) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES {
            break;
        }
        if let Some(el) = node.as_element() {
            let name = el.name.local.as_ref();
            let attrs = el.attrs.borrow();
            let attr = |key: &str| {
                attrs
                    .iter()
                    .find(|a| a.name.local.as_ref() == key)
                    .map(|a| a.value.to_string())
            };
            match name {
                "meta" => {
                    let key = attr("property").or_else(|| attr("name"));
                    if let (Some(key), Some(content)) = (key, attr("content")) {
                        let key = key.trim().to_ascii_lowercase();
                        if key.starts_with("og:") && key.len() <= 64 {
                            tags.push((key, truncate(&content)));
                        } else if key == "description" && description.is_none() {
                            description = Some(truncate(&content));
                        }
                    }
                }
                "title" if title.is_none() => {
                    let text: String = node
                        .children()
                        .filter_map(|c| c.as_text().map(|t| t.borrow().to_string()))
                        .collect();
                    let text = text.trim();
                    if !text.is_empty() {
                        title = Some(truncate(text));
                    }
                }
                _ => {}
            }
        }
        let mut children: Vec<_> = node.children().collect();
        children.reverse();
        stack.extend(children);
    }
    if let Some(d) = description {
        if !tags.iter().any(|(k, _)| k == "og:description") {
            tags.push(("og:description".into(), d));
        }
    }
    (tags, title)
}

/// Values are kept short: a preview is a summary.
fn truncate(s: &str) -> String {
    s.trim().chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_open_graph_with_an_html_parser() {
        let html = r#"<!doctype html><html><head><title> The page </title>
            <meta property="og:title" content="OG title"><meta name="description" content="About it">
            <meta property="og:image" content="/img.png"><meta property="og:title" content="second">
            </head><body><p>text <b>bold</b></p></body></html>"#;
        let (tags, title) = open_graph(html);
        assert_eq!(title.as_deref(), Some("The page"));
        assert!(tags.contains(&("og:title".into(), "OG title".into())));
        assert!(tags.contains(&("og:image".into(), "/img.png".into())));
        assert!(tags.contains(&("og:description".into(), "About it".into())));
        // Deeply nested input is walked without recursion.
        let deep = "<div>".repeat(20_000);
        let _ = open_graph(&deep);
    }
}
