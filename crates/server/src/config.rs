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
    pub public_base_url: Option<String>,
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it.
    pub log: String,
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
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimits {
    pub enabled: bool,
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Limits {
    pub max_body_bytes: usize,
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
            public_base_url: None,
            // ruma logs every auth check at info; that would be two lines per event.
            log: "info,ruma_state_res=warn".into(),
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
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 10.0,
            burst: 50,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
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
        let rate = self.rate_limits.per_second;
        if !rate.is_finite() || rate <= 0.0 || self.rate_limits.burst == 0 {
            bail!("rate_limits.per_second and rate_limits.burst must be positive");
        }
        if self.limits.max_body_bytes == 0 {
            bail!("limits.max_body_bytes must be positive");
        }
        Ok(())
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
        core.max_sync_timeout_ms = self.sync.max_timeout_ms;
        core.public_base_url = self.public_base_url.clone();
        Ok(core)
    }

    pub fn api(&self) -> tessera_api::ApiConfig {
        tessera_api::ApiConfig {
            rate_limits_enabled: self.rate_limits.enabled,
            rate_limit_per_second: self.rate_limits.per_second,
            rate_limit_burst: self.rate_limits.burst,
            max_body_bytes: self.limits.max_body_bytes,
        }
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
