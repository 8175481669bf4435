//! The outbox of user emails.

use async_trait::async_trait;

use crate::{Composer, NewEmail, OutboxEmail, OutboxStatus, Result, RetryTarget};

/// The outbox of user emails.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// From now on, every write of a plan (`apply`, `Applying::write`) asks
    /// `composer` for the emails its changes call for and inserts them into
    /// the outbox IN THE SAME TRANSACTION (a welcome email only when the
    /// directory user never had one). None (the default): no emails.
    fn set_composer(&self, composer: Option<std::sync::Arc<dyn Composer>>);
    /// Queue emails outside a sync (same rules as through the composer);
    /// how many were queued.
    async fn outbox_enqueue(&self, emails: &[NewEmail]) -> Result<u64>;
    /// Outbox rows with `status` (all when None), newest first, at most `limit`.
    async fn outbox(&self, status: Option<OutboxStatus>, limit: i64) -> Result<Vec<OutboxEmail>>;
    /// Claim the pending row due soonest (due at or before `now_ms`, not
    /// claimed by another sender) until `claim_until_ms`, counting an
    /// attempt; None when nothing is due.
    async fn outbox_claim(&self, now_ms: i64, claim_until_ms: i64) -> Result<Option<OutboxEmail>>;
    /// A claimed row was delivered: sent, audited ("email-sent"), in one transaction.
    async fn outbox_sent(&self, id: i64, now_ms: i64) -> Result<()>;
    /// A claimed row's attempt failed with `error`: pending again, due at
    /// `retry_at_ms`; or, when None, given up: failed, audited ("email-failed").
    async fn outbox_attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<()>;
    /// Queue again (pending, due at `now_ms`, give-up time counted from
    /// now) the rows `target` names; audited ("email-requeued") by `actor`.
    /// A sent row, or an unknown id, is a `Conflict` and nothing changes.
    /// Returns the ids re-queued.
    async fn outbox_retry(
        &self,
        target: &RetryTarget,
        now_ms: i64,
        actor: &str,
    ) -> Result<Vec<i64>>;
}

/// The `OutboxStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_outbox_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::OutboxStore for $store {
            fn set_composer(&self, composer: Option<std::sync::Arc<dyn $crate::Composer>>) {
                self.composer.set(composer);
            }

            async fn outbox_enqueue(&self, emails: &[$crate::NewEmail]) -> Result<u64> {
                self.outbox_enqueue_impl(emails).await
            }

            async fn outbox(
                &self,
                status: Option<$crate::OutboxStatus>,
                limit: i64,
            ) -> Result<Vec<$crate::OutboxEmail>> {
                self.outbox_list_impl(status, limit).await
            }

            async fn outbox_claim(
                &self,
                now_ms: i64,
                claim_until_ms: i64,
            ) -> Result<Option<$crate::OutboxEmail>> {
                self.outbox_claim_impl(now_ms, claim_until_ms).await
            }

            async fn outbox_sent(&self, id: i64, now_ms: i64) -> Result<()> {
                self.outbox_sent_impl(id, now_ms).await
            }

            async fn outbox_attempt_failed(
                &self,
                id: i64,
                error: &str,
                retry_at_ms: Option<i64>,
            ) -> Result<()> {
                self.outbox_attempt_failed_impl(id, error, retry_at_ms)
                    .await
            }

            async fn outbox_retry(
                &self,
                target: &$crate::RetryTarget,
                now_ms: i64,
                actor: &str,
            ) -> Result<Vec<i64>> {
                self.outbox_retry_impl(target, now_ms, actor).await
            }
        }
    };
}
pub(crate) use impl_outbox_store;
