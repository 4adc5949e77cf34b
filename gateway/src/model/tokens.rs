//! Signed link tokens: JWTs with one algorithm (HS256), 256-bit random secrets, keys
//! identified by an exact `kid`.
//!
//! Rotation: the newest non-retired key signs; every key in the set verifies, so tokens
//! signed by an older key stay valid until that key is removed from the set.
//!
//! Verification is strict: size cap before any decoding, header `alg` must be HS256
//! (`none`, RS*/ES*/PS*/EdDSA are rejected before a key is chosen, so there is no
//! algorithm confusion), `kid` must be present, at most 64 bytes and match a key exactly
//! (a map lookup, never a path), header fields that point at other keys (`jku`, `jwk`,
//! `x5u`, `x5c`) and any `crit` are rejected, `exp`/`aud`/`iss` are required, `nbf` is
//! checked when present, the leeway is small, and claims are typed (`"exp":"never"` is
//! malformed).
//!
//! Error values and their messages never contain the token or a secret.
//!
//! Crypto: jsonwebtoken is built without a crypto backend (its `rust_crypto` backend
//! pulls in `rsa`, RUSTSEC-2023-0071; `aws_lc_rs` would add a C build). [`hs256`]
//! installs a process-wide provider that does HMAC-SHA-256 with RustCrypto's `hmac`
//! and refuses every other algorithm, even below our own header checks.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::links::{random_token, ConsoleType, Link};

/// Bytes of a generated HS256 secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 64;
/// Default cap on the size of a token, checked before anything is decoded.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 4096;
/// Default leeway for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// Token errors. The HTTP layer answers visitors with one generic status for all of
/// them; the variants are for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm is not accepted (only HS256 is)")]
    WrongAlgorithm,
    #[error("token has no key id")]
    MissingKid,
    #[error("token key id is longer than {MAX_KID_LEN} bytes")]
    KidTooLong,
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid before {opens_at}")]
    NotYetValid { opens_at: OffsetDateTime },
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token is from another issuer")]
    WrongIssuer,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("no key is available for signing")]
    NoSigningKey,
    #[error("invalid signing key: {0}")]
    InvalidKey(&'static str),
    #[error("token could not be encoded")]
    Encode,
}

/// The claims of a link token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The link id.
    pub jti: String,
    pub vm: String,
    pub console: ConsoleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    pub iat: i64,
    pub aud: String,
    pub iss: String,
}

/// One HS256 key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// A retired key still verifies but never signs.
    pub retired: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retired", &self.retired)
            .finish()
    }
}

impl SigningKey {
    /// A fresh key: a random 96-bit `kid` (16 URL-safe characters) and a 256-bit secret,
    /// both from the OS CSPRNG.
    pub fn generate(created_at: OffsetDateTime) -> SigningKey {
        let mut secret = vec![0u8; SECRET_BYTES];
        crate::model::links::os_random(&mut secret);
        SigningKey {
            kid: random_token(12),
            secret,
            created_at,
            retired: false,
        }
    }

    fn check(&self) -> Result<(), TokenError> {
        if self.kid.is_empty() {
            return Err(TokenError::InvalidKey("empty kid"));
        }
        if self.kid.len() > MAX_KID_LEN {
            return Err(TokenError::InvalidKey("kid longer than 64 bytes"));
        }
        if self.secret.len() < SECRET_BYTES {
            return Err(TokenError::InvalidKey("secret shorter than 256 bits"));
        }
        Ok(())
    }
}

/// Issuer, audience and verification limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// `iss` written and required.
    pub issuer: String,
    /// `aud` written and required.
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf` (whole seconds are used).
    pub leeway: Duration,
    /// Tokens longer than this are rejected before decoding.
    pub max_token_len: usize,
}

impl TokenConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> TokenConfig {
        TokenConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig::new("vm-gateway", "vm-gateway/share")
    }
}

struct VerifyKey {
    key: DecodingKey,
}

/// The key set: signs with the newest non-retired key, verifies with any.
pub struct TokenKeys {
    config: TokenConfig,
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, VerifyKey>,
    validation: Validation,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.verifiers.keys().collect();
        kids.sort();
        f.debug_struct("TokenKeys")
            .field("config", &self.config)
            .field("signing_kid", &self.signer.as_ref().map(|(k, _)| k))
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Builds the set. Fails on a key with an empty or oversized `kid`, a secret shorter
    /// than 256 bits, or two keys with the same `kid`. A set with only retired keys can
    /// verify but not sign.
    pub fn new(keys: &[SigningKey], config: TokenConfig) -> Result<TokenKeys, TokenError> {
        // Every sign/verify goes through a TokenKeys: install the provider before them.
        hs256::install();
        let mut verifiers = HashMap::with_capacity(keys.len());
        let mut newest: Option<&SigningKey> = None;
        for k in keys {
            k.check()?;
            let dup = verifiers.insert(
                k.kid.clone(),
                VerifyKey {
                    key: DecodingKey::from_secret(&k.secret),
                },
            );
            if dup.is_some() {
                return Err(TokenError::InvalidKey("duplicate kid"));
            }
            if !k.retired && newest.is_none_or(|n| k.created_at >= n.created_at) {
                newest = Some(k);
            }
        }
        let signer = newest.map(|k| (k.kid.clone(), EncodingKey::from_secret(&k.secret)));

        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.validate_aud = true;
        // Time claims are checked below against the caller's `now`, with our leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = config.leeway.as_secs();

        Ok(TokenKeys {
            config,
            signer,
            verifiers,
            validation,
        })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// The `kid` that [`TokenKeys::sign`] uses, if any key may sign.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|(k, _)| k.as_str())
    }

    /// Claims for a link: `jti` = link id, its VM and console, `nbf`/`exp` from the link,
    /// `iat` = `now`, `aud`/`iss` from the configuration.
    pub fn claims_for(&self, link: &Link, now: OffsetDateTime) -> Claims {
        Claims {
            jti: link.id.clone(),
            vm: link.vm.clone(),
            console: link.console,
            nbf: link.not_before.map(|t| t.unix_timestamp()),
            exp: link.expires_at.unix_timestamp(),
            iat: now.unix_timestamp(),
            aud: self.config.audience.clone(),
            iss: self.config.issuer.clone(),
        }
    }

    /// Signs `claims` with the newest non-retired key (its `kid` goes in the header).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let (kid, key) = self.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|_| TokenError::Encode)
    }

    /// Verifies `token` at time `now` and returns its claims.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
        if token.len() > self.config.max_token_len {
            return Err(TokenError::TooLong {
                max: self.config.max_token_len,
            });
        }
        if token.split('.').count() != 3 {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(TokenError::Malformed("not URL-safe base64"));
        }
        // The header is unauthenticated until the signature checks: use it only to pick
        // the algorithm (must be ours) and the key (exact kid lookup).
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed("header"))?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::WrongAlgorithm);
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed("unsupported `crit` header"));
        }
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Malformed("embedded or remote key reference"));
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        if kid.len() > MAX_KID_LEN {
            return Err(TokenError::KidTooLong);
        }
        let vk = self.verifiers.get(&kid).ok_or(TokenError::UnknownKey)?;

        let data = jsonwebtoken::decode::<Claims>(token, &vk.key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;

        // The library checked `aud`/`iss` membership; check exact equality as well.
        if claims.aud != self.config.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.iss != self.config.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let now_s = now.unix_timestamp();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
        if now_s >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf {
            if now_s.saturating_add(leeway) < nbf {
                let opens_at = OffsetDateTime::from_unix_timestamp(nbf)
                    .map_err(|_| TokenError::Malformed("nbf out of range"))?;
                return Err(TokenError::NotYetValid { opens_at });
            }
        }
        Ok(claims)
    }
}

pub mod hs256 {
    //! The jsonwebtoken crypto provider: HS256 only (HMAC-SHA-256, constant-time
    //! verification by `hmac`). Any other algorithm or key family is an error.

    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{Error, ErrorKind};
    use jsonwebtoken::signature::{self, Signer, Verifier};
    use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
    use sha2::Sha256;

    type HmacSha256 = Hmac<Sha256>;

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: new_signer,
        verifier_factory: new_verifier,
        // JWK helpers (RSA/EC components, thumbprints) are never used here.
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// Installs the HS256 provider for this process; idempotent. Must run before any
    /// `jsonwebtoken::encode`/`decode` ([`super::TokenKeys::new`] calls it).
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err only if another provider was installed first; ours is the only one.
            let _ = PROVIDER.install_default();
        });
    }

    struct Hs256(HmacSha256);

    fn hs256(alg: &Algorithm, family: AlgorithmFamily, secret: &[u8]) -> Result<Hs256, Error> {
        if *alg != Algorithm::HS256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        if family != AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        HmacSha256::new_from_slice(secret)
            .map(Hs256)
            .map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }

    fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
        Ok(Box::new(hs256(alg, key.family(), key.as_bytes())?))
    }

    fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
        Ok(Box::new(hs256(alg, key.family(), key.try_get_as_bytes()?)?))
    }

    impl Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            Ok(mac.finalize().into_bytes().to_vec())
        }
    }

    impl Verifier<Vec<u8>> for Hs256 {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            mac.verify_slice(sig).map_err(|_| signature::Error::new())
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed("claim of the wrong type"),
        ErrorKind::Json(_) => TokenError::Malformed("JSON"),
        ErrorKind::Base64(_) => TokenError::Malformed("base64"),
        ErrorKind::Utf8(_) => TokenError::Malformed("UTF-8"),
        _ => TokenError::Malformed("token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

    fn key(kid: &str, secs: i64, retired: bool) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            secret: kid.as_bytes().iter().cycle().take(32).copied().collect(),
            created_at: NOW + time::Duration::seconds(secs),
            retired,
        }
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(&[key("k1", 0, false)], TokenConfig::default()).expect("keys")
    }

    fn claims() -> Claims {
        Claims {
            jti: "link-1".into(),
            vm: "web-01".into(),
            console: ConsoleType::Vnc,
            nbf: None,
            exp: NOW.unix_timestamp() + 3600,
            iat: NOW.unix_timestamp(),
            aud: "vm-gateway/share".into(),
            iss: "vm-gateway".into(),
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s.as_bytes())
    }

    /// HMAC-SHA-256 (RFC 2104), written out so the tests do not trust the library.
    fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        assert!(key.len() <= 64);
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    /// Hand-made HS256 token over raw header/payload JSON.
    fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
        let msg = format!("{}.{}", b64(header), b64(payload));
        let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, msg.as_bytes()));
        format!("{msg}.{sig}")
    }

    fn secret_of(kid: &str) -> Vec<u8> {
        key(kid, 0, false).secret
    }

    fn payload(extra: &str) -> String {
        let c = claims();
        let base = format!(
            r#""jti":"{}","vm":"{}","console":"vnc","iat":{},"aud":"{}","iss":"{}""#,
            c.jti, c.vm, c.iat, c.aud, c.iss
        );
        format!("{{{base}{extra}}}")
    }

    fn good_payload() -> String {
        payload(&format!(r#","exp":{}"#, NOW.unix_timestamp() + 3600))
    }

    const HDR: &str = r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;

    /// The installed provider does HS256 and nothing else: another algorithm fails at
    /// the crypto layer too, not only at our header checks.
    #[test]
    fn provider_is_hs256_only() {
        let _ = keys();
        let secret = secret_of("k1");
        let enc = EncodingKey::from_secret(&secret);
        let signed =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &enc).expect("HS256");
        let msg = signed.rsplit_once('.').expect("dot").0;
        let want = URL_SAFE_NO_PAD.encode(hmac_sha256(&secret, msg.as_bytes()));
        assert!(signed.ends_with(&want), "signature is HMAC-SHA-256");
        for alg in [Algorithm::HS384, Algorithm::HS512, Algorithm::RS256] {
            assert!(jsonwebtoken::encode(&Header::new(alg), &claims(), &enc).is_err());
        }
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let t = k.sign(&claims()).expect("sign");
        assert_eq!(k.verify(&t, NOW).expect("verify"), claims());
        let header = jsonwebtoken::decode_header(&t).expect("header");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.alg, Algorithm::HS256);
        // With nbf, and through a generated key.
        let g = SigningKey::generate(NOW);
        assert_eq!(g.secret.len(), 32);
        assert!(g.kid.len() <= MAX_KID_LEN);
        let k = TokenKeys::new(std::slice::from_ref(&g), TokenConfig::default()).expect("keys");
        let mut c = claims();
        c.nbf = Some(NOW.unix_timestamp() - 10);
        let t = k.sign(&c).expect("sign");
        assert_eq!(k.verify(&t, NOW).expect("verify"), c);
    }

    #[test]
    fn hand_made_token_verifies() {
        // Sanity check of the forging helper, so the negative tests below test what
        // they say.
        let t = forge(HDR, &good_payload(), &secret_of("k1"));
        assert_eq!(keys().verify(&t, NOW).expect("verify"), claims());
    }

    #[test]
    fn claims_for_link() {
        let link = crate::model::links::LinkRequest {
            vm: "db".into(),
            console: Some(ConsoleType::Spice),
            expires_at: None,
            ttl_seconds: Some(600),
            not_before: Some(NOW + time::Duration::seconds(60)),
            password: None,
            max_uses: None,
            max_viewers: None,
            view_only: true,
            allow_power: false,
            note: None,
            clipboard: None,
            record: None,
        }
        .validate(NOW, &crate::model::links::LinkPolicy::default())
        .expect("valid")
        .into_link("id1".into(), NOW, None)
        .expect("link");
        let k = keys();
        let c = k.claims_for(&link, NOW);
        assert_eq!(c.jti, "id1");
        assert_eq!(c.vm, "db");
        assert_eq!(c.console, ConsoleType::Spice);
        assert_eq!(c.exp, NOW.unix_timestamp() + 600);
        assert_eq!(c.nbf, Some(NOW.unix_timestamp() + 60));
        let t = k.sign(&c).expect("sign");
        assert!(matches!(
            k.verify(&t, NOW),
            Err(TokenError::NotYetValid { opens_at }) if opens_at == NOW + time::Duration::seconds(60)
        ));
        assert_eq!(
            k.verify(&t, NOW + time::Duration::seconds(60)).expect("ok"),
            c
        );
    }

    #[test]
    fn rotation() {
        let old = key("old", 0, false);
        let new = key("new", 10, false);
        let k1 = TokenKeys::new(std::slice::from_ref(&old), TokenConfig::default()).expect("k1");
        let t_old = k1.sign(&claims()).expect("sign");
        // Add a newer key: it signs, the old token still verifies.
        let k2 = TokenKeys::new(&[old.clone(), new.clone()], TokenConfig::default()).expect("k2");
        assert_eq!(k2.signing_kid(), Some("new"));
        let t_new = k2.sign(&claims()).expect("sign");
        assert!(k2.verify(&t_old, NOW).is_ok());
        assert!(k2.verify(&t_new, NOW).is_ok());
        // Order in the list does not matter.
        let k2b = TokenKeys::new(&[new.clone(), old.clone()], TokenConfig::default()).expect("k2b");
        assert_eq!(k2b.signing_kid(), Some("new"));
        // A retired newer key verifies but does not sign.
        let mut retired = key("ret", 20, true);
        let k3 =
            TokenKeys::new(&[old.clone(), retired.clone()], TokenConfig::default()).expect("k3");
        assert_eq!(k3.signing_kid(), Some("old"));
        retired.retired = false;
        let t_ret = TokenKeys::new(std::slice::from_ref(&retired), TokenConfig::default())
            .expect("k")
            .sign(&claims())
            .expect("sign");
        retired.retired = true;
        assert!(k3.verify(&t_ret, NOW).is_ok());
        // Remove the old key: its tokens die.
        let k4 = TokenKeys::new(std::slice::from_ref(&new), TokenConfig::default()).expect("k4");
        assert_eq!(k4.verify(&t_old, NOW), Err(TokenError::UnknownKey));
        assert!(k4.verify(&t_new, NOW).is_ok());
        // Only retired keys: cannot sign.
        let k5 = TokenKeys::new(&[key("r", 0, true)], TokenConfig::default()).expect("k5");
        assert_eq!(k5.sign(&claims()), Err(TokenError::NoSigningKey));
        let k6 = TokenKeys::new(&[], TokenConfig::default()).expect("k6");
        assert_eq!(k6.sign(&claims()), Err(TokenError::NoSigningKey));
        assert_eq!(k6.verify(&t_new, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn bad_key_sets() {
        let cfg = TokenConfig::default;
        let mut short = key("a", 0, false);
        short.secret.truncate(31);
        assert!(matches!(
            TokenKeys::new(&[short], cfg()),
            Err(TokenError::InvalidKey(_))
        ));
        assert!(matches!(
            TokenKeys::new(&[key("", 0, false)], cfg()),
            Err(TokenError::InvalidKey(_))
        ));
        assert!(matches!(
            TokenKeys::new(&[key(&"k".repeat(65), 0, false)], cfg()),
            Err(TokenError::InvalidKey(_))
        ));
        assert!(matches!(
            TokenKeys::new(&[key("a", 0, false), key("a", 1, false)], cfg()),
            Err(TokenError::InvalidKey(_))
        ));
        let dbg = format!("{:?} {:?}", key("zz", 0, false), keys());
        assert!(!dbg.contains("zzzz"), "{dbg}");
    }

    #[test]
    fn tampering_and_wrong_key() {
        let k = keys();
        let t = k.sign(&claims()).expect("sign");
        // Same kid, other secret.
        let forged = forge(HDR, &good_payload(), &[7u8; 32]);
        assert_eq!(k.verify(&forged, NOW), Err(TokenError::BadSignature));
        // Payload swapped (vm B) under the original signature.
        let parts: Vec<&str> = t.split('.').collect();
        let other = payload(&format!(r#","exp":{}"#, NOW.unix_timestamp() + 3600))
            .replace("web-01", "db-02");
        let swapped = format!("{}.{}.{}", parts[0], b64(&other), parts[2]);
        assert_eq!(k.verify(&swapped, NOW), Err(TokenError::BadSignature));
        // Signature stripped / truncated.
        let stripped = format!("{}.{}.", parts[0], parts[1]);
        assert!(k.verify(&stripped, NOW).is_err());
        let trunc = &t[..t.len() - 2];
        assert!(k.verify(trunc, NOW).is_err());
    }

    #[test]
    fn alg_none_and_confusion_rejected() {
        let k = keys();
        let p = good_payload();
        for alg in ["none", "None", "NONE", ""] {
            let h = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#);
            let unsigned = format!("{}.{}.", b64(&h), b64(&p));
            assert!(
                matches!(k.verify(&unsigned, NOW), Err(TokenError::Malformed(_))),
                "{alg}"
            );
            // Even with a valid HMAC appended.
            let signed = forge(&h, &p, &secret_of("k1"));
            assert!(k.verify(&signed, NOW).is_err(), "{alg}");
        }
        // Asymmetric algorithms, "signed" with the HMAC secret as if it were a public key.
        for alg in [
            "RS256", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS384", "HS512",
        ] {
            let h = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#);
            let t = forge(&h, &p, &secret_of("k1"));
            assert_eq!(k.verify(&t, NOW), Err(TokenError::WrongAlgorithm), "{alg}");
        }
        // Missing alg.
        let t = forge(r#"{"typ":"JWT","kid":"k1"}"#, &p, &secret_of("k1"));
        assert!(matches!(k.verify(&t, NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn kid_rules() {
        let k = keys();
        let p = good_payload();
        let s = secret_of("k1");
        let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &p, &s);
        assert_eq!(k.verify(&t, NOW), Err(TokenError::MissingKid));
        for kid in ["k2", "K1", "k1 ", "../k1", "/etc/passwd", "k1\u{0}", ""] {
            let h = serde_json::json!({"alg":"HS256","kid":kid}).to_string();
            let t = forge(&h, &p, &s);
            assert_eq!(k.verify(&t, NOW), Err(TokenError::UnknownKey), "{kid:?}");
        }
        let h = serde_json::json!({"alg":"HS256","kid":"k".repeat(65)}).to_string();
        assert_eq!(
            k.verify(&forge(&h, &p, &s), NOW),
            Err(TokenError::KidTooLong)
        );
        // Wrong JSON type for kid.
        let t = forge(r#"{"alg":"HS256","kid":1}"#, &p, &s);
        assert!(matches!(k.verify(&t, NOW), Err(TokenError::Malformed(_))));
        // Key references and crit are refused even with a valid signature.
        for extra in [
            r#","jku":"https://evil/jwks""#,
            r#","x5u":"https://evil/cert""#,
            r#","x5c":["MIIB"]"#,
            r#","jwk":{"kty":"oct","k":"AAAA"}"#,
            r#","crit":["exp"]"#,
        ] {
            let h = format!(r#"{{"alg":"HS256","kid":"k1"{extra}}}"#);
            assert!(
                matches!(
                    k.verify(&forge(&h, &p, &s), NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{extra}"
            );
        }
    }

    #[test]
    fn required_claims_and_types() {
        let k = keys();
        let s = secret_of("k1");
        let exp = NOW.unix_timestamp() + 3600;
        let v = |p: &str| k.verify(&forge(HDR, p, &s), NOW);
        // exp missing, null, or of the wrong type.
        assert!(v(&payload("")).is_err());
        assert!(v(&payload(r#","exp":null"#)).is_err());
        for bad in [
            r#","exp":"never""#,
            r#","exp":"1999999999""#,
            r#","exp":1.9e9"#,
            r#","exp":true"#,
            r#","exp":[1999999999]"#,
            r#","exp":99999999999999999999999"#,
        ] {
            assert!(
                matches!(v(&payload(bad)), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
        // nbf of the wrong type.
        for bad in [r#","nbf":"later""#, r#","nbf":{}"#] {
            let p = payload(&format!(r#","exp":{exp}{bad}"#));
            assert!(matches!(v(&p), Err(TokenError::Malformed(_))), "{bad}");
        }
        // aud / iss: missing, wrong, wrong type (array form is not accepted either).
        let c = claims();
        let mk = |aud: &str, iss: &str| {
            format!(
                r#"{{"jti":"{}","vm":"{}","console":"vnc","iat":{},"exp":{exp}{aud}{iss}}}"#,
                c.jti, c.vm, c.iat
            )
        };
        let aud = r#","aud":"vm-gateway/share""#;
        let iss = r#","iss":"vm-gateway""#;
        assert!(v(&mk(aud, iss)).is_ok());
        assert!(matches!(
            v(&mk("", iss)),
            Err(TokenError::MissingClaim(_) | TokenError::Malformed(_))
        ));
        assert!(matches!(
            v(&mk(aud, "")),
            Err(TokenError::MissingClaim(_) | TokenError::Malformed(_))
        ));
        assert_eq!(
            v(&mk(r#","aud":"other""#, iss)),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            v(&mk(aud, r#","iss":"evil""#)),
            Err(TokenError::WrongIssuer)
        );
        assert!(v(&mk(r#","aud":["vm-gateway/share","x"]"#, iss)).is_err());
        assert!(v(&mk(aud, r#","iss":7"#)).is_err());
        // Console of an unknown kind; missing jti / vm.
        assert!(v(&good_payload().replace(r#""vnc""#, r#""rdp""#)).is_err());
        assert!(v(&good_payload().replace(r#""jti":"link-1","#, "")).is_err());
        assert!(v(&good_payload().replace(r#""vm":"web-01","#, "")).is_err());
    }

    #[test]
    fn time_claims_with_small_leeway() {
        let k = keys();
        let mut c = claims();
        let t = k.sign(&c).expect("sign");
        let exp = OffsetDateTime::from_unix_timestamp(c.exp).expect("ts");
        assert!(k.verify(&t, exp + time::Duration::seconds(4)).is_ok());
        assert_eq!(
            k.verify(&t, exp + time::Duration::seconds(5)),
            Err(TokenError::Expired)
        );
        // Well past the library's default 60 s leeway.
        assert_eq!(
            k.verify(&t, exp + time::Duration::seconds(30)),
            Err(TokenError::Expired)
        );
        c.nbf = Some(NOW.unix_timestamp() + 100);
        let t = k.sign(&c).expect("sign");
        assert!(matches!(
            k.verify(&t, NOW + time::Duration::seconds(94)),
            Err(TokenError::NotYetValid { .. })
        ));
        assert!(k.verify(&t, NOW + time::Duration::seconds(95)).is_ok());
        // Configurable leeway.
        let cfg = TokenConfig {
            leeway: Duration::ZERO,
            ..TokenConfig::default()
        };
        let k0 = TokenKeys::new(&[key("k1", 0, false)], cfg).expect("k0");
        assert_eq!(
            k0.verify(&t, NOW + time::Duration::seconds(99)).map(|_| ()),
            Err(TokenError::NotYetValid {
                opens_at: NOW + time::Duration::seconds(100)
            })
        );
        assert_eq!(k0.verify(&t, exp), Err(TokenError::Expired));
    }

    #[test]
    fn size_and_shape_limits() {
        let k = keys();
        let long = "a".repeat(4097);
        assert_eq!(k.verify(&long, NOW), Err(TokenError::TooLong { max: 4096 }));
        // A validly signed but oversized token is refused before decoding.
        let big = payload(&format!(
            r#","exp":{},"pad":"{}""#,
            NOW.unix_timestamp() + 60,
            "x".repeat(4000)
        ));
        let t = forge(HDR, &big, &secret_of("k1"));
        assert!(matches!(k.verify(&t, NOW), Err(TokenError::TooLong { .. })));
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "a.b.c",
            "a b.c.d",
            "é.é.é",
            "a+b.c/d.e=",
        ] {
            assert!(
                matches!(k.verify(bad, NOW), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
        // Header that is not JSON / not base64.
        let t = format!("{}.{}.sig", b64("not json"), b64(&good_payload()));
        assert!(matches!(k.verify(&t, NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn errors_do_not_contain_the_token() {
        let k = keys();
        let t = k.sign(&claims()).expect("sign");
        let e = k
            .verify(&t, NOW + time::Duration::days(1))
            .expect_err("expired");
        assert!(!e.to_string().contains(&t[..20]));
        assert!(!format!("{e:?}").contains(&t[..20]));
    }
}
