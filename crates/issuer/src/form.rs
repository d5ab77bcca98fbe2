//! The token endpoint's request body: `application/x-www-form-urlencoded` only,
//! each parameter at most once (RFC 6749 section 3.2).

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use zeroize::Zeroize;

use super::errors::OAuthError;

/// Parsed form parameters. Values may hold passwords and secrets: there is no
/// `Debug`, and they are zeroed on drop.
pub(crate) struct Form(HashMap<String, String>);

impl Drop for Form {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

impl Form {
    /// Checks the content type and parses the body.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            let shown = if essence.is_empty() { "none" } else { essence };
            return Err(OAuthError::invalid_request(format!(
                "the token endpoint takes an application/x-www-form-urlencoded body (Content-Type was {shown})"
            )));
        }
        let mut params = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if params.contains_key(k.as_ref()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} appears more than once"
                )));
            }
            params.insert(k.into_owned(), v.into_owned());
        }
        Ok(Form(params))
    }

    /// A parameter's value; an empty value counts as absent (RFC 6749 section 3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A parameter that must be present.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("ascii"),
        );
        h
    }

    #[test]
    fn parses_form_bodies_with_or_without_charset() {
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        ] {
            let form = Form::parse(&headers(ct), b"grant_type=password&username=a%40b.c&x=")
                .unwrap_or_else(|e| panic!("{ct}: {e:?}"));
            assert_eq!(form.get("username"), Some("a@b.c"));
            assert_eq!(form.get("x"), None);
            assert!(form.require("password").is_err());
        }
    }

    #[test]
    fn refuses_other_content_types_and_repeated_parameters() {
        let e = Form::parse(&headers("application/json"), b"{}").err();
        assert_eq!(e.map(|e| e.error), Some("invalid_request"));
        let e = Form::parse(&HeaderMap::new(), b"a=b").err();
        assert_eq!(e.map(|e| e.error), Some("invalid_request"));
        let e = Form::parse(
            &headers("application/x-www-form-urlencoded"),
            b"grant_type=password&grant_type=client_credentials",
        )
        .err();
        assert_eq!(e.map(|e| e.error), Some("invalid_request"));
    }
}
