//! Configuration: defaults ← optional TOML file ← `TESSERA_*` environment variables.
//! Key names are a public interface (README, deployment harnesses).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub server_name: String,
    pub listen: Listen,
    pub data_dir: PathBuf,
    pub database: Database,
    pub registration: Registration,
    pub rate_limits: RateLimits,
    pub limits: Limits,
    pub sync: Sync,
    pub media: Media,
    pub room_directory: RoomDirectory,
    pub user_directory: UserDirectory,
    pub push: Push,
    pub voip: Voip,
    pub support: Support,
    pub server_notices: ServerNotices,
    pub public_base_url: Option<String>,
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it.
    pub log: String,
    pub bench: Bench,
}

/// Settings for benchmarks only (README).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Bench {
    /// Hash new passwords at argon2's minimum cost, so thousands of users register fast.
    /// Never on a server people use: stolen hashes become cheap to crack.
    pub insecure_fast_password_hashing: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Listen {
    /// Client-server API address; port 0 picks a free port.
    pub client: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Database {
    /// `sqlite://PATH` or `postgres://…`; unset means `sqlite://{data_dir}/tessera.db`.
    pub url: Option<String>,
    /// SQLite only: `full` syncs the log on every commit, so an acknowledged write
    /// survives power loss; `normal` survives a crash of the process only.
    pub sqlite_synchronous: crate::db::sqlite::Synchronous,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Registration {
    pub open: bool,
    pub token_required: bool,
    /// `kind=guest` registration (spec: "Guest Access").
    pub allow_guests: bool,
}

/// README, `rate_limits.*`. `per_second` and `burst` are every user's budget for all
/// requests; the tables below add budgets for particular actions.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimits {
    pub enabled: bool,
    pub per_second: f64,
    pub burst: u32,
    pub exempt_admins: bool,
    pub exempt_users: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    pub per_ip: Budget,
    pub messages: Budget,
    pub joins: Budget,
    pub invites: Budget,
    pub registration: Budget,
    pub login: Budget,
    pub login_account: Budget,
    pub to_device: Budget,
    pub ephemeral: Budget,
    pub profile: Budget,
    pub media: Budget,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Budget {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            per_second: 1.0,
            burst: 10,
        }
    }
}

impl From<tessera_api::Budget> for Budget {
    fn from(b: tessera_api::Budget) -> Self {
        Self {
            per_second: b.per_second,
            burst: b.burst,
        }
    }
}

impl From<Budget> for tessera_api::Budget {
    fn from(b: Budget) -> Self {
        tessera_api::Budget::new(b.per_second, b.burst)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address (trusted proxies excepted).
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers, in ms.
    pub header_timeout_ms: u64,
}

/// README, `user_directory.*`: whom `/user_directory/search` finds.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct UserDirectory {
    /// Every local user, not only those sharing a room with the searcher or in a public
    /// room.
    pub search_all_users: bool,
}

/// README, `push.*`: HTTP pushers' notifications to push gateways; never to private
/// networks unless a range is allowed (a gateway on the same machine, say).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Push {
    pub enabled: bool,
    /// Address ranges never sent to, besides loopback, private, link-local, multicast,
    /// unspecified and other reserved ranges (always refused).
    pub ip_range_blacklist: Vec<String>,
    /// Address ranges sent to even if refused otherwise.
    pub ip_range_whitelist: Vec<String>,
}

impl Default for Push {
    fn default() -> Self {
        Self {
            enabled: true,
            ip_range_blacklist: Vec::new(),
            ip_range_whitelist: Vec::new(),
        }
    }
}

/// README, `support.*`: `/.well-known/matrix/support`, served when either is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Support {
    pub contacts: Vec<SupportContact>,
    pub page: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    pub matrix_id: Option<String>,
    pub email_address: Option<String>,
    /// `m.role.admin`, `m.role.security`, or a namespaced role of one's own.
    pub role: String,
}

/// README, `server_notices.*`: the user and room server notices come from; off until
/// `localpart` is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerNotices {
    pub localpart: Option<String>,
    pub display_name: String,
    pub room_name: String,
}

impl Default for ServerNotices {
    fn default() -> Self {
        Self {
            localpart: None,
            display_name: "Server Notices".into(),
            room_name: "Server Notices".into(),
        }
    }
}

/// README, `voip.*`: TURN servers for calls (`/voip/turnServer`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Voip {
    pub turn_uris: Vec<String>,
    /// Shared with the TURN server (coturn's `static-auth-secret`).
    pub turn_shared_secret: Option<String>,
    /// Fixed credentials instead of a shared secret.
    pub turn_username: Option<String>,
    pub turn_password: Option<String>,
    pub turn_user_lifetime_ms: u64,
}

impl Default for Voip {
    fn default() -> Self {
        Self {
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_username: None,
            turn_password: None,
            turn_user_lifetime_ms: 24 * 3600 * 1000,
        }
    }
}

/// README, `room_directory.*`: the public room directory.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomDirectory {
    /// Who may publish which room, first match decides (as Synapse's
    /// `room_list_publication_rules`); none: every room admin may.
    pub publication_rules: Vec<PublicationRule>,
}

/// One publication rule: globs (`*`, `?`) on the user, the room ID and the room's aliases,
/// each matching anything when absent.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationRule {
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub alias: Option<String>,
    pub action: RuleAction,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Deny,
}

/// README, `media.*`: the content repository.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Media {
    /// Folder of the media files; unset means `{data_dir}/media`.
    pub dir: Option<PathBuf>,
    /// An S3-compatible bucket instead of the folder (AWS S3, Cloudflare R2, MinIO).
    pub s3: Option<S3>,
    pub max_upload_bytes: u64,
    /// Bytes one user may upload in all; unset means no quota.
    pub quota_bytes: Option<u64>,
    /// Media IDs a user may hold reserved (`/create`) and not uploaded.
    pub max_pending_uploads: usize,
    /// Largest file thumbnailed.
    pub max_thumbnail_source_bytes: u64,
    /// The deprecated unauthenticated downloads (`/_matrix/media/v3/download`, `/thumbnail`)
    /// serve media uploaded before this time, in ms since the Unix epoch; unset means none
    /// (spec v1.11, the freeze).
    pub unauthenticated_before_ms: Option<u64>,
    pub url_preview: UrlPreview,
}

/// README, `media.url_preview.*`: off unless enabled; never to private networks.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct UrlPreview {
    pub enabled: bool,
    /// Address ranges never fetched from, besides loopback, private, link-local,
    /// multicast, unspecified and other reserved ranges (always refused).
    pub ip_range_blacklist: Vec<String>,
    /// Address ranges fetched from even if refused otherwise.
    pub ip_range_whitelist: Vec<String>,
}

/// README, `media.s3.*`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct S3 {
    pub bucket: String,
    /// `auto` for R2.
    pub region: Option<String>,
    /// The service's URL, for anything but AWS (R2, MinIO); path-style requests then.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Keys are put under this prefix.
    pub prefix: Option<String>,
    /// Plain `http://` endpoints (local testing only).
    pub allow_http: bool,
}

impl Default for Media {
    fn default() -> Self {
        let d = tessera_core::MediaConfig::default();
        Self {
            dir: None,
            s3: None,
            max_upload_bytes: d.max_upload_bytes,
            quota_bytes: d.quota_bytes,
            max_pending_uploads: d.max_pending_uploads,
            max_thumbnail_source_bytes: d.max_thumbnail_source_bytes,
            unauthenticated_before_ms: d.unauthenticated_before_ms,
            url_preview: UrlPreview::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Sync {
    pub max_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: Listen::default(),
            data_dir: PathBuf::from("./tessera-data"),
            database: Database::default(),
            registration: Registration::default(),
            rate_limits: RateLimits::default(),
            limits: Limits::default(),
            sync: Sync::default(),
            media: Media::default(),
            room_directory: RoomDirectory::default(),
            user_directory: UserDirectory::default(),
            push: Push::default(),
            voip: Voip::default(),
            support: Support::default(),
            server_notices: ServerNotices::default(),
            public_base_url: None,
            // ruma logs every auth check at info; that would be two lines per event.
            log: "info,ruma_state_res=warn".into(),
            bench: Bench::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            client: "127.0.0.1:8008".into(),
        }
    }
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            open: false,
            token_required: true,
            allow_guests: false,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let d = tessera_api::RateLimits::default();
        Self {
            enabled: d.enabled,
            per_second: d.requests.per_second,
            burst: d.requests.burst,
            exempt_admins: d.exempt_admins,
            exempt_users: Vec::new(),
            trusted_proxies: Vec::new(),
            per_ip: d.requests_per_ip.into(),
            messages: d.messages.into(),
            joins: d.joins.into(),
            invites: d.invites.into(),
            registration: d.registration.into(),
            login: d.login.into(),
            login_account: d.login_account.into(),
            to_device: d.to_device.into(),
            ephemeral: d.ephemeral.into(),
            profile: d.profile.into(),
            media: d.media.into(),
        }
    }
}

impl RateLimits {
    fn budgets(&self) -> [(&'static str, Budget); 12] {
        [
            (
                "",
                Budget {
                    per_second: self.per_second,
                    burst: self.burst,
                },
            ),
            ("per_ip.", self.per_ip),
            ("messages.", self.messages),
            ("joins.", self.joins),
            ("invites.", self.invites),
            ("registration.", self.registration),
            ("login.", self.login),
            ("login_account.", self.login_account),
            ("to_device.", self.to_device),
            ("ephemeral.", self.ephemeral),
            ("profile.", self.profile),
            ("media.", self.media),
        ]
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_timeout_ms: 30_000,
        }
    }
}

impl Default for Sync {
    fn default() -> Self {
        Self {
            max_timeout_ms: 60_000,
        }
    }
}

impl Config {
    /// Loads the layers; `file`, when given, must exist.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                bail!("configuration file {} not found", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("TESSERA_").split("__"))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.core()?;
        for (name, b) in self.rate_limits.budgets() {
            // One token a day at the slowest.
            if !b.per_second.is_finite() || b.per_second < 1.0 / 86_400.0 || b.burst == 0 {
                bail!("rate_limits.{name}per_second must be at least 1/86400 and rate_limits.{name}burst positive");
            }
        }
        for proxy in &self.rate_limits.trusted_proxies {
            parse_net(proxy).with_context(|| {
                format!("rate_limits.trusted_proxies: {proxy:?} is not an address or CIDR range")
            })?;
        }
        for user in &self.rate_limits.exempt_users {
            ruma::UserId::parse(user)
                .with_context(|| format!("rate_limits.exempt_users: {user:?} is not a user ID"))?;
        }
        if self.limits.max_body_bytes == 0
            || self.limits.max_connections == 0
            || self.limits.max_connections_per_ip == 0
            || self.limits.header_timeout_ms == 0
        {
            bail!("limits.max_body_bytes, limits.max_connections, limits.max_connections_per_ip and limits.header_timeout_ms must be positive");
        }
        Ok(())
    }

    pub fn media_dir(&self) -> PathBuf {
        self.media
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("media"))
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("tessera.db").display()),
        }
    }

    /// The part the Matrix logic needs.
    pub fn core(&self) -> anyhow::Result<tessera_core::Config> {
        let name = ruma::ServerName::parse(&self.server_name).with_context(|| {
            format!(
                "server_name {:?} is not a valid server name",
                self.server_name
            )
        })?;
        let mut core = tessera_core::Config::new(name);
        core.registration_open = self.registration.open;
        core.registration_token_required = self.registration.token_required;
        core.guest_access = self.registration.allow_guests;
        core.max_sync_timeout_ms = self.sync.max_timeout_ms;
        core.public_base_url = self.public_base_url.clone();
        core.fast_password_hashing = self.bench.insecure_fast_password_hashing;
        core.user_directory_all_users = self.user_directory.search_all_users;
        let m = &self.media;
        core.media.max_upload_bytes = m.max_upload_bytes;
        core.media.quota_bytes = m.quota_bytes;
        core.media.max_pending_uploads = m.max_pending_uploads;
        core.media.max_thumbnail_source_bytes = m.max_thumbnail_source_bytes;
        core.media.unauthenticated_before_ms = m.unauthenticated_before_ms;
        let nets = |what: &str, list: &[String]| nets(&format!("media.url_preview.{what}"), list);
        let glob = |what: &str, p: &Option<String>| -> anyhow::Result<Option<regex::Regex>> {
            p.as_deref()
                .map(|p| {
                    tessera_core::rooms::directory::glob(p).with_context(|| {
                        format!(
                            "room_directory.publication_rules: {what} {p:?} is not a usable glob"
                        )
                    })
                })
                .transpose()
        };
        core.publication_rules = self
            .room_directory
            .publication_rules
            .iter()
            .map(|r| {
                Ok(tessera_core::rooms::directory::PublicationRule {
                    user_id: glob("user_id", &r.user_id)?,
                    room_id: glob("room_id", &r.room_id)?,
                    alias: glob("alias", &r.alias)?.map(|re| (re, r.alias.as_deref() == Some("*"))),
                    allow: r.action == RuleAction::Allow,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        core.media.url_preview = tessera_core::media::preview::UrlPreviewConfig {
            enabled: m.url_preview.enabled,
            addresses: tessera_core::outbound::AddressPolicy {
                deny: nets("ip_range_blacklist", &m.url_preview.ip_range_blacklist)?,
                allow: nets("ip_range_whitelist", &m.url_preview.ip_range_whitelist)?,
            },
        };
        self.push_addresses()?;
        let v = &self.voip;
        for uri in &v.turn_uris {
            if !(uri.starts_with("turn:") || uri.starts_with("turns:")) {
                bail!("voip.turn_uris: {uri:?} is not a turn: or turns: URI");
            }
        }
        if !v.turn_uris.is_empty()
            && v.turn_shared_secret.is_none()
            && (v.turn_username.is_none() || v.turn_password.is_none())
        {
            bail!("voip.turn_uris needs voip.turn_shared_secret, or voip.turn_username and voip.turn_password");
        }
        core.support = self.support_json()?;
        core.server_notices = match &self.server_notices.localpart {
            None => None,
            Some(localpart) => {
                let user_id =
                    ruma::UserId::parse_with_server_name(localpart.as_str(), &core.server_name)
                        .with_context(|| {
                            format!(
                                "server_notices.localpart {localpart:?} is not a valid localpart"
                            )
                        })?;
                Some(tessera_core::server_notices::ServerNoticesConfig {
                    user_id,
                    display_name: self.server_notices.display_name.clone(),
                    room_name: self.server_notices.room_name.clone(),
                })
            }
        };
        core.turn = tessera_core::voip::TurnConfig {
            uris: v.turn_uris.clone(),
            shared_secret: v.turn_shared_secret.clone(),
            username: v.turn_username.clone(),
            password: v.turn_password.clone(),
            user_lifetime_ms: v.turn_user_lifetime_ms,
        };
        Ok(core)
    }

    /// `support.*` as the spec's body, checked: each contact has a role and a Matrix ID
    /// or an email address.
    fn support_json(&self) -> anyhow::Result<Option<serde_json::Value>> {
        let s = &self.support;
        if s.contacts.is_empty() && s.page.is_none() {
            return Ok(None);
        }
        let mut contacts = Vec::new();
        for c in &s.contacts {
            if c.matrix_id.is_none() && c.email_address.is_none() {
                bail!("support.contacts: each contact needs matrix_id or email_address");
            }
            if let Some(id) = &c.matrix_id {
                ruma::UserId::parse(id.as_str())
                    .with_context(|| format!("support.contacts: {id:?} is not a user ID"))?;
            }
            if c.role.is_empty() {
                bail!("support.contacts: each contact needs a role");
            }
            let mut v = serde_json::json!({ "role": c.role });
            if let Some(id) = &c.matrix_id {
                v["matrix_id"] = id.as_str().into();
            }
            if let Some(e) = &c.email_address {
                v["email_address"] = e.as_str().into();
            }
            contacts.push(v);
        }
        let mut body = serde_json::json!({});
        if !contacts.is_empty() {
            body["contacts"] = contacts.into();
        }
        if let Some(page) = &s.page {
            url::Url::parse(page)
                .with_context(|| format!("support.page: {page:?} is not a URL"))?;
            body["support_page"] = page.as_str().into();
        }
        Ok(Some(body))
    }

    /// Where push gateways may be reached (`push.ip_range_*`).
    pub fn push_addresses(&self) -> anyhow::Result<tessera_core::outbound::AddressPolicy> {
        Ok(tessera_core::outbound::AddressPolicy {
            deny: nets("push.ip_range_blacklist", &self.push.ip_range_blacklist)?,
            allow: nets("push.ip_range_whitelist", &self.push.ip_range_whitelist)?,
        })
    }

    /// `rate_limits.trusted_proxies`, parsed (validated at load).
    fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.rate_limits
            .trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p).ok())
            .collect()
    }

    pub fn api(&self) -> tessera_api::ApiConfig {
        let r = &self.rate_limits;
        tessera_api::ApiConfig {
            rate_limits: tessera_api::RateLimits {
                enabled: r.enabled,
                exempt_admins: r.exempt_admins,
                exempt_users: r.exempt_users.iter().cloned().collect(),
                trusted_proxies: self.trusted_proxies(),
                requests: tessera_api::Budget::new(r.per_second, r.burst),
                requests_per_ip: r.per_ip.into(),
                messages: r.messages.into(),
                joins: r.joins.into(),
                invites: r.invites.into(),
                registration: r.registration.into(),
                login: r.login.into(),
                login_account: r.login_account.into(),
                to_device: r.to_device.into(),
                ephemeral: r.ephemeral.into(),
                profile: r.profile.into(),
                media: r.media.into(),
            },
            max_body_bytes: self.limits.max_body_bytes,
        }
    }
}

/// A config list of addresses and ranges, `what` naming it in errors.
fn nets(what: &str, list: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|n| {
            parse_net(n).with_context(|| format!("{what}: {n:?} is not an address or CIDR range"))
        })
        .collect()
}

/// An address (`10.0.0.1`, `::1`) or a range (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, std::net::AddrParseError> {
    match s.parse::<ipnet::IpNet>() {
        Ok(net) => Ok(net),
        Err(_) => s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite::Synchronous;

    #[test]
    // figment's `Jail` fixes the closure's (large) error type.
    #[allow(clippy::result_large_err)]
    fn file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "server_name = \"example.org\"\n[database]\nsqlite_synchronous = \"normal\"\n",
            )?;
            let c = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server_name, "example.org");
            assert_eq!(c.database.sqlite_synchronous, Synchronous::Normal);
            jail.set_env("TESSERA_DATABASE__SQLITE_SYNCHRONOUS", "full");
            jail.set_env("TESSERA_LISTEN__CLIENT", "127.0.0.1:0");
            let c = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.database.sqlite_synchronous, Synchronous::Full);
            assert_eq!(c.listen.client, "127.0.0.1:0");
            jail.set_env("TESSERA_DATABASE__SQLITE_SYNCHRONOUS", "sometimes");
            assert!(Config::load(None).is_err(), "an unknown mode is refused");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_durable_and_closed() {
        let c = Config::default();
        assert_eq!(c.database.sqlite_synchronous, Synchronous::Full);
        assert!(!c.registration.open);
        assert!(c.rate_limits.enabled);
    }
}
