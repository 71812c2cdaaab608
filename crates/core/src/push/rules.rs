//! Push rules (spec: "Push Rules"), kept as the `m.push_rules` account data with the
//! server-default rules until a user changes them.

use ruma::{push::Ruleset, UserId};
use serde_json::{json, Value as Json};

use crate::{Error, Homeserver, Result};

impl Homeserver {
    pub async fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        match self.get_account_data(user, None, "m.push_rules").await {
            Ok(v) => serde_json::from_value(v["global"].clone()).map_err(Error::internal),
            Err(Error::Matrix(ruma::api::error::ErrorKind::NotFound, _)) => {
                Ok(Ruleset::server_default(user))
            }
            Err(e) => Err(e),
        }
    }

    /// The `m.push_rules` account data event content.
    pub async fn push_rules_content(&self, user: &UserId) -> Result<Json> {
        Ok(json!({ "global": self.push_rules(user).await? }))
    }

    /// Applies `change` to the user's rules and stores the result.
    pub async fn update_push_rules(
        &self,
        user: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        let mut rules = self.push_rules(user).await?;
        change(&mut rules)?;
        let set = self
            .set_account_data(user, None, "m.push_rules", &json!({ "global": rules }))
            .await;
        // Whatever the outcome, the next event reads the rules anew (`evaluate.rs`).
        self.forget_rules(user);
        set
    }
}
