//! The Climate Engine API calls the daemon makes for a profile's user:
//! `GET /api/v1/users/me` (`whoami`) and `POST /api/v1/clients/` (`login`).

use super::scrub::Scrub;
use super::{Client, TokenError, send, status_error};
use crate::secret::Secret;

/// The API client returned by `POST /api/v1/clients/`.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub user_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

fn bearer(token: &Secret) -> Result<reqwest::header::HeaderValue, TokenError> {
    let mut hv = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| {
            TokenError::permanent("the access token is not a valid header value".into())
        })?;
    hv.set_sensitive(true);
    Ok(hv)
}

/// `GET {api_url}/api/v1/users/me` with a bearer token.
pub async fn users_me(
    client: &Client,
    api_url: &str,
    token: &Secret,
) -> Result<serde_json::Value, TokenError> {
    let url = format!("{}/api/v1/users/me", api_url.trim_end_matches('/'));
    let req = client
        .inner
        .get(&url)
        .header(reqwest::header::AUTHORIZATION, bearer(token)?)
        .header(reqwest::header::ACCEPT, "application/json");
    let (status, headers, body) = send(client, req, &url).await?;
    if !status.is_success() {
        return Err(status_error(
            status,
            &headers,
            &body,
            &url,
            "users/me",
            &Scrub::of(&[token.expose()]),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|_| TokenError::transient(format!("{url}: the answer is not JSON")))
}

/// `POST {api_url}/api/v1/clients/` with a bearer token: a new API client.
pub async fn create_client(
    client: &Client,
    api_url: &str,
    token: &Secret,
) -> Result<NewClient, TokenError> {
    let url = format!("{}/api/v1/clients/", api_url.trim_end_matches('/'));
    let req = client
        .inner
        .post(&url)
        .header(reqwest::header::AUTHORIZATION, bearer(token)?)
        .header(reqwest::header::ACCEPT, "application/json");
    let (status, headers, body) = send(client, req, &url).await?;
    if !status.is_success() {
        return Err(status_error(
            status,
            &headers,
            &body,
            &url,
            "creating a client",
            &Scrub::of(&[token.expose()]),
        ));
    }
    let bad = || {
        TokenError::transient(format!(
            "{url}: unexpected answer (no client_id/client_secret)"
        ))
    };
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| bad())?;
    let text = |k: &str| -> Option<String> {
        match v.get(k)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    Ok(NewClient {
        user_id: text("user_id").unwrap_or_default(),
        client_id: text("client_id").ok_or_else(bad)?,
        client_secret: Secret::new(text("client_secret").ok_or_else(bad)?),
    })
}
