//! The [`UrlFetcher`] for URL previews, over reqwest. No open proxying: every address a
//! name resolves to, and every IP literal, is checked against the preview policy before a
//! connection is made, at each redirect too (followed here, a few at most); no proxy from
//! the environment; the body is read up to a bound and the whole fetch has a deadline.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header, redirect, Url,
};
use tessera_core::{
    outbound::{address_allowed, AddressPolicy},
    ports::{FetchError, Fetched, UrlFetcher},
};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// Resolving a name before the checks.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);
/// A whole fetch, redirects included.
const DEADLINE: Duration = Duration::from_secs(15);

pub struct PreviewFetcher {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

/// Resolves names, keeping only the addresses the policy allows.
pub(crate) struct CheckedResolver {
    pub(crate) policy: Arc<AddressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| address_allowed(a.ip(), &policy))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address previews may reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A client for the server's own outbound requests: names resolve through
/// [`CheckedResolver`], no proxy from the environment, no redirects followed (callers that
/// follow them check each hop), a connection and a whole-request deadline.
pub(crate) fn checked_client(
    policy: &Arc<AddressPolicy>,
    deadline: Duration,
    purpose: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: policy.clone(),
        }))
        .connect_timeout(Duration::from_secs(5))
        .timeout(deadline)
        .user_agent(format!("Tessera (Matrix homeserver; {purpose})"))
        .build()
}

/// Refuses a URL whose host is an IP literal the policy refuses (literals are connected
/// to without resolution) or that has no host. Names are checked as they resolve
/// ([`CheckedResolver`], at connection: a name that resolves anew cannot slip past).
pub(crate) fn check_literal(url: &Url, policy: &AddressPolicy) -> Result<(), String> {
    let private = || "the address is private or reserved".to_owned();
    match url.host() {
        Some(url::Host::Ipv4(ip)) if !address_allowed(ip.into(), policy) => Err(private()),
        Some(url::Host::Ipv6(ip)) if !address_allowed(ip.into(), policy) => Err(private()),
        Some(_) => Ok(()),
        None => Err("no host".into()),
    }
}

/// A name none of whose addresses the policy allows is refused outright, for a clear
/// refusal rather than a failed connection.
pub(crate) async fn check_name(url: &Url, policy: &AddressPolicy) -> Result<(), FetchError> {
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    // A slow name server must not hold the caller past its own deadline.
    let lookup = tokio::net::lookup_host((name, url.port_or_known_default().unwrap_or(0)));
    let found: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_DEADLINE, lookup)
        .await
        .map_err(|_| FetchError::Failed(format!("{name}: name resolution timed out")))?
        .map_err(|e| FetchError::Failed(format!("{name}: {e}")))?
        .collect();
    if found.iter().any(|a| address_allowed(a.ip(), policy)) {
        Ok(())
    } else {
        Err(FetchError::Refused(format!(
            "{name} resolves to private or reserved addresses only"
        )))
    }
}

impl PreviewFetcher {
    pub fn new(policy: AddressPolicy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let client = checked_client(&policy, DEADLINE, "URL previews")?;
        Ok(Self { client, policy })
    }

    /// IP literals are connected to without resolution: checked here.
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused("only http and https".into()));
        }
        check_literal(url, &self.policy).map_err(FetchError::Refused)
    }

    async fn check_name(&self, url: &Url) -> Result<(), FetchError> {
        check_name(url, &self.policy).await
    }

    async fn fetch(&self, url: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::Refused(e.to_string()))?;
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url)?;
            self.check_name(&url).await?;
            let res = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Failed(e.to_string()))?;
            if res.status().is_redirection() {
                let next = res
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| FetchError::Failed("a redirect without a location".into()))?;
                url = next;
                continue;
            }
            if !res.status().is_success() {
                return Err(FetchError::Failed(format!("status {}", res.status())));
            }
            if res.content_length().is_some_and(|n| n > max_bytes) {
                return Err(FetchError::TooLarge);
            }
            let content_type = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut res = res;
            let mut body = Vec::new();
            while let Some(chunk) = res
                .chunk()
                .await
                .map_err(|e| FetchError::Failed(e.to_string()))?
            {
                if (body.len() + chunk.len()) as u64 > max_bytes {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                url: url.to_string(),
                content_type,
                body: body.into(),
            });
        }
        Err(FetchError::Failed("too many redirects".into()))
    }
}

#[async_trait]
impl UrlFetcher for PreviewFetcher {
    async fn get(&self, url: &str, max_bytes: u64) -> Result<Fetched, FetchError> {
        self.fetch(url, max_bytes).await
    }
}
