//! HMAC-SHA256 signatures on tasks, so that a consumer holding the shared key applies only
//! tasks its producers wrote.
//!
//! The signature covers the message payload exactly as sent and travels in the Kafka header
//! [`SIGNATURE_HEADER`] as `v1=<hex>`. A consumer with a key dead-letters unsigned or forged
//! messages with reason `unauthenticated`; re-published retries are signed again, since their
//! payload changes.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::errors::SetupError;

/// Kafka header carrying the signature.
pub const SIGNATURE_HEADER: &str = "redis-retry-signature";

/// Shortest key accepted: shorter shared secrets are guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// A shared signing key.
///
/// ```
/// use redis_retry_runtime::signing::SigningKey;
/// let key = SigningKey::new("a shared secret of some length")?;
/// let sig = key.sign(b"{\"type\":\"simple\"}");
/// assert!(key.verify(b"{\"type\":\"simple\"}", sig.as_bytes()));
/// assert!(!key.verify(b"{\"type\":\"lua\"}", sig.as_bytes()));
/// assert!(SigningKey::new("short").is_err());
/// # Ok::<(), redis_retry_runtime::SetupError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

// The key is a secret: never print it.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// A key from the secret's bytes (at least 16).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, SetupError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_KEY_BYTES {
            return Err(SetupError::Config(format!(
                "signing_key: at least {MIN_KEY_BYTES} bytes are needed, got {}",
                secret.len()
            )));
        }
        Ok(SigningKey(Arc::from(secret)))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The header value for `payload`: `v1=` and the hex HMAC-SHA256.
    pub fn sign(&self, payload: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(payload);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `signature` (a header value) signs `payload`; compared in constant time.
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> bool {
        let Some(hex_sig) = signature.strip_prefix(b"v1=") else { return false };
        let Ok(raw) = hex::decode(hex_sig) else { return false };
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(&raw).is_ok()
    }
}
