//! Tokens signed here with RS256 (a fixed test key), ES256 and EdDSA keys
//! made by rcgen, checked against JWKS and key files written per test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vakt_api::config::{ApiKeyAuth, Auth, JwtAuth};

use super::*;
use http::request::Parts;

const NOW: u64 = 1_800_000_000;
const RSA_PEM: &str = include_str!("testdata/rsa-2048.pem");
const OTHER_RSA_PEM: &str = include_str!("testdata/rsa-2048-other.pem");

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn rsa(kid: &str) -> Signer {
    let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    Signer {
        alg: Algorithm::RS256,
        key,
        jwk: serde_json::to_value(jwk).unwrap(),
    }
}

fn ec(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = kp.public_key_raw();
    Signer {
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..])}),
    }
}

fn ed(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&kp.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid,
            "x": b64url(kp.public_key_raw())}),
    }
}

impl Signer {
    fn sign(&self, claims: Value) -> String {
        let kid = self.jwk["kid"].as_str().map(str::to_string);
        self.sign_with_kid(claims, kid)
    }

    fn sign_with_kid(&self, claims: Value, kid: Option<String>) -> String {
        let header = Header {
            kid,
            ..Header::new(self.alg)
        };
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": "api", "sub": "alice",
        "exp": NOW + 300, "scope": "read write", "tier": "gold"})
}

fn with(mut base: Value, key: &str, v: Value) -> Value {
    base[key] = v;
    base
}

fn tmpdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vakt-edge-auth-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_jwks(path: &PathBuf, signers: &[&Signer]) {
    let keys: Vec<&Value> = signers.iter().map(|s| &s.jwk).collect();
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

fn jwt_auth(jwks: &Path) -> Auth {
    Auth {
        jwt: Some(JwtAuth {
            issuer: "https://issuer.test".into(),
            audiences: vec!["api".into(), "admin".into()],
            jwks_file: jwks.to_str().unwrap().into(),
            forward_claims: [("sub".to_string(), "x-user-id".to_string())].into(),
            required_claims: Default::default(),
            leeway: vakt_api::Duration::from_secs(30),
        }),
        api_keys: None,
    }
}

fn request(headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri("/r");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn bearer_req(token: &str) -> Parts {
    request(&[("authorization", &format!("Bearer {token}"))])
}

fn outcome(r: Result<Identity, AuthError>) -> AuthOutcome {
    match r {
        Ok(_) => AuthOutcome::Allowed,
        Err(e) => e.outcome(),
    }
}

#[test]
fn rs256_es256_and_eddsa_tokens_are_accepted() {
    let dir = tmpdir();
    let (r, e, d) = (rsa("r1"), ec("e1"), ed("d1"));
    write_jwks(&dir.join("jwks.json"), &[&r, &e, &d]);
    let auth = Authenticator::from_config(&jwt_auth(&dir.join("jwks.json"))).unwrap();
    for s in [&r, &e, &d] {
        let id = auth
            .check_at(&bearer_req(&s.sign(claims())).headers, NOW)
            .unwrap();
        assert_eq!(id.method, AuthMethod::Jwt);
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.headers()[0].0, "x-user-id");
        assert_eq!(id.headers()[0].1, "alice");
    }
    // Without a kid, every key of the token's algorithm is tried.
    let token = e.sign_with_kid(claims(), None);
    assert!(auth.check_at(&bearer_req(&token).headers, NOW).is_ok());
    // Real clock: a token valid now passes `check`.
    let live = r.sign(with(claims(), "exp", json!(u64::MAX / 2)));
    assert!(auth.check(&bearer_req(&live).headers).is_ok());
}

#[test]
fn expiry_and_not_before_allow_the_leeway_and_no_more() {
    let dir = tmpdir();
    let s = ec("k");
    write_jwks(&dir.join("jwks.json"), &[&s]);
    let auth = Authenticator::from_config(&jwt_auth(&dir.join("jwks.json"))).unwrap();
    let at = |c: Value| outcome(auth.check_at(&bearer_req(&s.sign(c)).headers, NOW));

    assert_eq!(
        at(with(claims(), "exp", json!(NOW - 29))),
        AuthOutcome::Allowed
    );
    assert_eq!(
        at(with(claims(), "exp", json!(NOW - 30))),
        AuthOutcome::Expired
    );
    assert_eq!(
        at(with(claims(), "exp", json!(NOW - 3600))),
        AuthOutcome::Expired
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(at(no_exp), AuthOutcome::Invalid);

    assert_eq!(
        at(with(claims(), "nbf", json!(NOW + 30))),
        AuthOutcome::Allowed
    );
    assert_eq!(
        at(with(claims(), "nbf", json!(NOW + 31))),
        AuthOutcome::NotYetValid
    );
    assert_eq!(
        at(with(claims(), "nbf", json!(NOW - 5))),
        AuthOutcome::Allowed
    );
}

#[test]
fn issuer_audience_and_signature_are_enforced() {
    let dir = tmpdir();
    let s = rsa("k");
    write_jwks(&dir.join("jwks.json"), &[&s]);
    let auth = Authenticator::from_config(&jwt_auth(&dir.join("jwks.json"))).unwrap();
    let at = |c: Value| outcome(auth.check_at(&bearer_req(&s.sign(c)).headers, NOW));

    assert_eq!(
        at(with(claims(), "iss", json!("https://evil.test"))),
        AuthOutcome::WrongIssuer
    );
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(at(no_iss), AuthOutcome::WrongIssuer);
    assert_eq!(
        at(with(claims(), "aud", json!("other"))),
        AuthOutcome::WrongAudience
    );
    assert_eq!(
        at(with(claims(), "aud", json!(["other", "admin"]))),
        AuthOutcome::Allowed
    );

    // The kid of an RS256 key on an EdDSA token: no key of that algorithm.
    let token = ed("k").sign(claims());
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&token).headers, NOW)),
        AuthOutcome::UnknownKey
    );
    // The kid of an RS256 key on a token signed by another RSA key.
    let other = Signer {
        key: EncodingKey::from_rsa_pem(OTHER_RSA_PEM.as_bytes()).unwrap(),
        ..rsa("k")
    };
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&other.sign(claims())).headers, NOW)),
        AuthOutcome::Invalid
    );
    let mut tampered = s.sign(claims());
    tampered.insert(tampered.rfind('.').unwrap() + 1, 'A');
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&tampered).headers, NOW)),
        AuthOutcome::Invalid
    );

    // HS256 with the public key as the secret is refused outright.
    let n = s.jwk["n"].as_str().unwrap();
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("k".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(),
        &EncodingKey::from_secret(n.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&hs).headers, NOW)),
        AuthOutcome::Invalid
    );
    assert_eq!(
        outcome(auth.check_at(&bearer_req("not.a.jwt").headers, NOW)),
        AuthOutcome::Invalid
    );
}

#[test]
fn unknown_kid_is_refused_and_a_rotated_jwks_is_picked_up() {
    let dir = tmpdir();
    let path = dir.join("jwks.json");
    let (old, new) = (ec("2024"), ed("2025"));
    write_jwks(&path, &[&old]);
    let auth = Authenticator::from_config(&jwt_auth(&path)).unwrap();
    let old_token = old.sign(claims());
    let new_token = new.sign(claims());
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&new_token).headers, NOW)),
        AuthOutcome::UnknownKey
    );

    write_jwks(&path, &[&new]);
    auth.reload();
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&new_token).headers, NOW)),
        AuthOutcome::Allowed
    );
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&old_token).headers, NOW)),
        AuthOutcome::UnknownKey
    );

    // A broken or empty JWKS keeps the loaded keys.
    std::fs::write(&path, "{\"keys\": [").unwrap();
    auth.reload();
    std::fs::write(&path, "{\"keys\": []}").unwrap();
    auth.reload();
    assert_eq!(
        outcome(auth.check_at(&bearer_req(&new_token).headers, NOW)),
        AuthOutcome::Allowed
    );
}

#[tokio::test(start_paused = true)]
async fn the_reload_task_follows_the_jwks_file() {
    let dir = tmpdir();
    let path = dir.join("jwks.json");
    let (old, new) = (ec("a"), ec("b"));
    write_jwks(&path, &[&old]);
    let auth = Authenticator::from_config(&jwt_auth(&path)).unwrap();
    let tasks = auth.spawn_reload(Duration::from_secs(1));
    write_jwks(&path, &[&new]);
    let req = bearer_req(&new.sign(claims()));
    let mut waited = 0;
    while auth.check_at(&req.headers, NOW).is_err() {
        assert!(waited < 30, "jwks not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    drop(auth);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
    }
}

#[test]
fn required_claims_decide_403_and_forwarded_headers_replace_client_copies() {
    let dir = tmpdir();
    let s = ed("k");
    write_jwks(&dir.join("jwks.json"), &[&s]);
    let mut cfg = jwt_auth(&dir.join("jwks.json"));
    let jwt = cfg.jwt.as_mut().unwrap();
    jwt.required_claims = [("scope".to_string(), "write".to_string())].into();
    jwt.forward_claims.insert("tier".into(), "x-tier".into());
    jwt.forward_claims
        .insert("groups".into(), "x-groups".into());
    let auth = Authenticator::from_config(&cfg).unwrap();

    let token = s.sign(with(claims(), "groups", json!(["a", "b"])));
    let mut parts = request(&[
        ("authorization", &format!("Bearer {token}")),
        ("x-user-id", "mallory"),
        ("x-tier", "platinum"),
    ]);
    let id = auth.check_at(&parts.headers, NOW).unwrap();
    id.apply(&mut parts.headers);
    assert_eq!(parts.headers["x-user-id"], "alice");
    assert_eq!(parts.headers["x-tier"], "gold");
    assert_eq!(parts.headers["x-groups"], r#"["a","b"]"#);
    assert_eq!(parts.headers.get_all("x-user-id").iter().count(), 1);

    let read_only = s.sign(with(claims(), "scope", json!("read")));
    let err = auth
        .check_at(&bearer_req(&read_only).headers, NOW)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert!(err.challenge().is_none());
    let as_array = s.sign(with(claims(), "scope", json!(["read", "write"])));
    assert!(auth.check_at(&bearer_req(&as_array).headers, NOW).is_ok());
}

#[test]
fn missing_or_malformed_credentials_get_a_challenge() {
    let dir = tmpdir();
    let s = ec("k");
    write_jwks(&dir.join("jwks.json"), &[&s]);
    let auth = Authenticator::from_config(&jwt_auth(&dir.join("jwks.json"))).unwrap();

    let err = auth.check_at(&request(&[]).headers, NOW).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(err.outcome(), AuthOutcome::Missing);
    assert_eq!(err.challenge().unwrap(), "Bearer");

    let basic = request(&[("authorization", "Basic YTpi")]);
    assert_eq!(
        outcome(auth.check_at(&basic.headers, NOW)),
        AuthOutcome::Missing
    );
    let token = s.sign(claims());
    let auth_h = format!("bearer {token}");
    let two = request(&[("authorization", &auth_h), ("authorization", &auth_h)]);
    let err = auth.check_at(&two.headers, NOW).unwrap_err();
    assert_eq!(err.outcome(), AuthOutcome::Invalid);
    assert_eq!(err.challenge().unwrap(), "Bearer error=\"invalid_token\"");
    assert!(
        auth.check_at(&request(&[("authorization", &auth_h)]).headers, NOW)
            .is_ok()
    );
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_auth(path: &Path) -> ApiKeyAuth {
    ApiKeyAuth {
        header: "x-api-key".into(),
        keys_file: path.to_str().unwrap().into(),
    }
}

#[test]
fn api_keys_are_checked_by_hash_and_reloaded() {
    let dir = tmpdir();
    let path = dir.join("keys.txt");
    let file = format!(
        "# partners\n{}  # acme\n\n{}\n",
        sha256_hex("k-acme"),
        sha256_hex("k-globex").to_uppercase()
    );
    std::fs::write(&path, file).unwrap();
    let auth = Authenticator::from_config(&Auth {
        jwt: None,
        api_keys: Some(key_auth(&path)),
    })
    .unwrap();

    for key in ["k-acme", "k-globex"] {
        let mut parts = request(&[("x-api-key", key)]);
        let id = auth.check_at(&parts.headers, NOW).unwrap();
        assert_eq!(id.method, AuthMethod::ApiKey);
        assert_eq!(id.subject.as_deref(), Some(&sha256_hex(key)[..16]));
        id.apply(&mut parts.headers);
        assert!(parts.headers.get("x-api-key").is_none());
    }
    let err = auth
        .check_at(&request(&[("x-api-key", "k-guess")]).headers, NOW)
        .unwrap_err();
    assert_eq!(
        (err.status(), err.outcome()),
        (StatusCode::UNAUTHORIZED, AuthOutcome::Invalid)
    );
    assert_eq!(err.challenge().unwrap(), "ApiKey header=\"x-api-key\"");
    // The hash itself is not a key.
    let hash = sha256_hex("k-acme");
    assert!(
        auth.check_at(&request(&[("x-api-key", &hash)]).headers, NOW)
            .is_err()
    );

    std::fs::write(&path, format!("{}\nnot-hex\n", sha256_hex("k-new"))).unwrap();
    auth.reload();
    assert!(
        auth.check_at(&request(&[("x-api-key", "k-acme")]).headers, NOW)
            .is_ok()
    );
    std::fs::write(&path, sha256_hex("k-new")).unwrap();
    auth.reload();
    assert!(
        auth.check_at(&request(&[("x-api-key", "k-new")]).headers, NOW)
            .is_ok()
    );
    assert!(
        auth.check_at(&request(&[("x-api-key", "k-acme")]).headers, NOW)
            .is_err()
    );

    std::fs::write(&path, "zz\n").unwrap();
    let err = Authenticator::from_config(&Auth {
        jwt: None,
        api_keys: Some(key_auth(&path)),
    })
    .unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn either_credential_is_enough_when_both_are_configured() {
    let dir = tmpdir();
    let s = ec("k");
    write_jwks(&dir.join("jwks.json"), &[&s]);
    std::fs::write(dir.join("keys.txt"), sha256_hex("k-1")).unwrap();
    let mut cfg = jwt_auth(&dir.join("jwks.json"));
    cfg.api_keys = Some(key_auth(&dir.join("keys.txt")));
    let auth = Authenticator::from_config(&cfg).unwrap();

    let err = auth.check_at(&request(&[]).headers, NOW).unwrap_err();
    assert_eq!(
        err.challenge().unwrap(),
        "Bearer, ApiKey header=\"x-api-key\""
    );
    let expired = s.sign(with(claims(), "exp", json!(NOW - 100)));
    let both = request(&[
        ("authorization", &format!("Bearer {expired}")),
        ("x-api-key", "k-1"),
    ]);
    assert_eq!(
        auth.check_at(&both.headers, NOW).unwrap().method,
        AuthMethod::ApiKey
    );
    let bad_both = request(&[
        ("authorization", &format!("Bearer {expired}")),
        ("x-api-key", "no"),
    ]);
    assert_eq!(
        outcome(auth.check_at(&bad_both.headers, NOW)),
        AuthOutcome::Expired
    );
    assert!(Authenticator::from_config(&Auth::default()).is_err());
}
