//! One ACME order (RFC 8555 §7.4): new order, answer each pending authorization's
//! challenge, wait for the order to be ready, finalize with a CSR for a fresh key, and
//! download the chain. Challenges are withdrawn whatever the outcome.

use std::sync::Arc;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::challenge::{Armed, Challenges};
use super::config::{AcmeSettings, ChallengeKind};
use super::AcmeError;

/// What an order yields: the PEM chain and the PEM key (never logged).
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

fn retry_policy(settings: &AcmeSettings) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(std::time::Duration::from_millis(250))
        .backoff(1.5)
        .timeout(settings.order_timeout)
}

/// Orders a certificate for the configured domains.
pub async fn order(
    account: &Account,
    settings: &AcmeSettings,
    challenges: &Arc<Challenges>,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(AcmeError::from_ca)?;
    // Held until the order is ready or failed.
    let mut armed: Vec<Armed> = Vec::new();
    let mut auths = order.authorizations();
    while let Some(auth) = auths.next().await {
        let mut auth = auth.map_err(AcmeError::from_ca)?;
        match auth.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(AcmeError::Authorization(format!("{other:?}"))),
        }
        let kind = match settings.challenge {
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        };
        let mut ch = auth
            .challenge(kind.clone())
            .ok_or(AcmeError::NoChallenge(kind))?;
        let domain = match ch.identifier().identifier {
            Identifier::Dns(d) => d.clone(),
            other => return Err(AcmeError::Authorization(format!("{other:?}"))),
        };
        let key_auth = ch.key_authorization();
        armed.push(match settings.challenge {
            ChallengeKind::TlsAlpn01 => {
                challenges.arm_tls_alpn(&domain, key_auth.digest().as_ref())?
            }
            ChallengeKind::Http01 => challenges.arm_http(&ch.token, key_auth.as_str()),
        });
        tracing::debug!(%domain, "ACME challenge ready");
        ch.set_ready().await.map_err(AcmeError::from_ca)?;
    }
    let status = order
        .poll_ready(&retry_policy(settings))
        .await
        .map_err(AcmeError::from_ca)?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Invalid(why_invalid(&mut order).await));
    }
    drop(armed);
    finalize(&mut order, settings).await
}

/// The CA's reasons for failed challenges, for the log.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut why = Vec::new();
    let mut auths = order.authorizations();
    while let Some(Ok(mut auth)) = auths.next().await {
        let Ok(state) = auth.refresh().await else {
            continue;
        };
        for c in &state.challenges {
            if let Some(p) = &c.error {
                why.push(p.to_string());
            }
        }
    }
    if why.is_empty() {
        "no reason given".to_owned()
    } else {
        why.join("; ")
    }
}

async fn finalize(
    order: &mut instant_acme::Order,
    settings: &AcmeSettings,
) -> Result<Issued, AcmeError> {
    let mut params =
        rcgen::CertificateParams::new(settings.domains.clone()).map_err(AcmeError::Csr)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate().map_err(AcmeError::Csr)?;
    let csr = params.serialize_request(&key).map_err(AcmeError::Csr)?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(AcmeError::from_ca)?;
    let chain_pem = order
        .poll_certificate(&retry_policy(settings))
        .await
        .map_err(AcmeError::from_ca)?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}
