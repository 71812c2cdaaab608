//! The [`PushGateway`] over reqwest (spec: Push Gateway API). No open proxying: the
//! gateway's addresses are checked against `push.ip_range_*` at resolution and as IP
//! literals, no proxy from the environment, no redirects, a deadline, and the answer read
//! up to a bound.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{header, Url};
use tessera_core::{
    outbound::AddressPolicy,
    ports::{FetchError, PushError, PushGateway},
};

use crate::fetch::{check_literal, check_name, checked_client};

/// A gateway's whole answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// A gateway's answer read at most.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct HttpPushGateway {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl HttpPushGateway {
    pub fn new(policy: AddressPolicy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let client = checked_client(&policy, DEADLINE, "push")?;
        Ok(Self { client, policy })
    }
}

#[async_trait]
impl PushGateway for HttpPushGateway {
    async fn notify(&self, url: &str, body: Vec<u8>) -> Result<Vec<String>, PushError> {
        let url = Url::parse(url).map_err(|e| PushError::Refused(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PushError::Refused("only http and https".into()));
        }
        check_literal(&url, &self.policy).map_err(PushError::Refused)?;
        match check_name(&url, &self.policy).await {
            Ok(()) => {}
            Err(FetchError::Refused(why)) => return Err(PushError::Refused(why)),
            Err(e) => return Err(PushError::Failed(e.to_string())),
        }
        let mut res = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| PushError::Failed(e.to_string()))?;
        let status = res.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(PushError::Failed(format!("status {status}")));
        }
        if !status.is_success() {
            // A redirect or another 4xx: sending it again would not help.
            return Err(PushError::Refused(format!("status {status}")));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| PushError::Failed(e.to_string()))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                // Taken (2xx); only the list of rejected keys is lost.
                return Ok(Vec::new());
            }
            answer.extend_from_slice(&chunk);
        }
        // Spec: `{"rejected": [pushkey, …]}`; anything else rejects nothing.
        let rejected = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("rejected").and_then(|r| r.as_array()).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        Ok(rejected)
    }
}
