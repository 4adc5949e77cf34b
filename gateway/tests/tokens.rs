//! Forged and stale tokens are refused at the exchange.

#![allow(clippy::unwrap_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::TestGateway;
use serde_json::json;

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn parts(token: &str) -> (serde_json::Value, serde_json::Value, String) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let c = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (h, c, it.next().unwrap().to_owned())
}

async fn refused(gw: &TestGateway, token: &str) -> (u16, serde_json::Value) {
    let (s, cookie, v) = gw.exchange(token, None).await;
    assert!(cookie.is_none());
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused() {
    let gw = TestGateway::start_with(
        "[links]\nleeway_secs = 0\n[limits]\nexchanges_per_ip_per_minute = 1000\n",
    )
    .await;
    gw.start_firmware_vm("tk").await;
    let link = gw
        .create_link(json!({"vm": "tk", "ttl_seconds": 600}))
        .await;
    let token = link["token"].as_str().unwrap().to_owned();
    let (header, claims, sig) = parts(&token);
    assert_eq!(header["alg"], "HS256");
    assert!(header["kid"].is_string());

    // tampered claims (another VM), signature kept
    let mut c = claims.clone();
    c["vm"] = json!("other");
    let t = format!("{}.{}.{}", b64(&header), b64(&c), sig);
    assert_eq!(refused(&gw, &t).await.0, 401);

    // alg: none, with and without a signature
    let mut h = header.clone();
    h["alg"] = json!("none");
    for t in [
        format!("{}.{}.", b64(&h), b64(&claims)),
        format!("{}.{}.{}", b64(&h), b64(&claims), sig),
    ] {
        assert_eq!(refused(&gw, &t).await.0, 401);
    }
    // algorithm confusion
    let mut h = header.clone();
    h["alg"] = json!("RS256");
    assert_eq!(
        refused(&gw, &format!("{}.{}.{}", b64(&h), b64(&claims), sig))
            .await
            .0,
        401
    );
    // unknown, missing and oversized kid, and a path as kid
    for kid in [
        json!("nope"),
        serde_json::Value::Null,
        json!("k".repeat(500)),
        json!("../../etc/passwd"),
    ] {
        let mut h = header.clone();
        h["kid"] = kid;
        assert_eq!(
            refused(&gw, &format!("{}.{}.{}", b64(&h), b64(&claims), sig))
                .await
                .0,
            401
        );
    }
    // wrong JSON type for exp
    let mut c = claims.clone();
    c["exp"] = json!("never");
    assert_eq!(
        refused(&gw, &format!("{}.{}.{}", b64(&header), b64(&c), sig))
            .await
            .0,
        401
    );

    // a token of another gateway (its own key) for a link id that exists here
    let other = TestGateway::start().await;
    other.start_firmware_vm("tk").await;
    let foreign = other
        .create_link(json!({"vm": "tk", "ttl_seconds": 600}))
        .await;
    let (fh, mut fc, _) = parts(foreign["token"].as_str().unwrap());
    fc["jti"] = claims["jti"].clone();
    let resigned = {
        let key = other.app.store().signing_keys().await.unwrap();
        let k = key
            .iter()
            .find(|k| Some(k.kid.as_str()) == fh["kid"].as_str())
            .unwrap();
        let mut jh = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jh.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&jh, &fc, &jsonwebtoken::EncodingKey::from_secret(&k.secret)).unwrap()
    };
    assert_eq!(refused(&gw, &resigned).await.0, 401);

    // signed with our own key but for another audience / issuer
    let keys = gw.app.store().signing_keys().await.unwrap();
    let k = keys
        .iter()
        .find(|k| Some(k.kid.as_str()) == header["kid"].as_str())
        .unwrap();
    let sign = |claims: &serde_json::Value| {
        let mut jh = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jh.kid = Some(k.kid.clone());
        jsonwebtoken::encode(
            &jh,
            claims,
            &jsonwebtoken::EncodingKey::from_secret(&k.secret),
        )
        .unwrap()
    };
    let mut c = claims.clone();
    c["aud"] = json!("someone-else");
    assert_eq!(refused(&gw, &sign(&c)).await.0, 401);
    let mut c = claims.clone();
    c["iss"] = json!("someone-else");
    assert_eq!(refused(&gw, &sign(&c)).await.0, 401);
    // our key, our audience, but expired
    let mut c = claims.clone();
    c["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 10);
    let (s, v) = refused(&gw, &sign(&c)).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("expired")));
    // and the genuine token still works
    assert_eq!(gw.exchange(&token, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_token_is_refused() {
    let gw = TestGateway::start_with("[links]\nleeway_secs = 0\n").await;
    gw.start_firmware_vm("old").await;
    let link = gw.create_link(json!({"vm": "old", "ttl_seconds": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, v) = refused(&gw, link["token"].as_str().unwrap()).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("expired")));
}
