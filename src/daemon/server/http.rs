//! The minimal HTTP/1.x face of the socket, for `curl --unix-socket`:
//! `GET /v1/token` and `GET /v1/status`, one request per connection.

use super::*;
use crate::protocol::{StatusReply, TokenReply};

/// Reads one request head (at most [`MAX_LINE`] bytes), answers it, and returns.
pub(super) async fn serve(
    writer: &mut WriteHalf<'_>,
    reader: &mut ZeroingReader<ReadHalf<'_>>,
    shared: &Shared,
    limits: Limits,
) {
    let deadline = tokio::time::Instant::now() + limits.line;
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let (status, body) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("");
                let target = req.path.unwrap_or("");
                break route(shared, method, target).await;
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                break error(431, ErrorCode::BadRequest, "too many request headers");
            }
            Err(e) => {
                break error(
                    400,
                    ErrorCode::BadRequest,
                    &format!("malformed HTTP request: {e}"),
                );
            }
        }
        if head.len() >= MAX_LINE {
            break error(
                431,
                ErrorCode::LineTooLong,
                &format!("request head longer than {MAX_LINE} bytes"),
            );
        }
        let avail = match tokio::time::timeout_at(deadline, reader.fill_buf()).await {
            Ok(Ok(a)) if !a.is_empty() => a,
            Ok(_) => return,
            Err(_) => {
                break error(
                    408,
                    ErrorCode::BadRequest,
                    "request head not finished in time",
                );
            }
        };
        let n = avail.len().min(MAX_LINE - head.len());
        head.extend_from_slice(&avail[..n]);
        reader.consume(n);
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    flush(writer, &mut out, limits.write).await;
}

async fn route(shared: &Shared, method: &str, target: &str) -> (u16, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    tracing::debug!(method, path, "http request");
    let known = matches!(path, "/v1/token" | "/v1/status");
    if known && method != "GET" {
        return error(
            405,
            ErrorCode::BadRequest,
            &format!("{path} accepts GET only"),
        );
    }
    match path {
        "/v1/token" => {
            let mut profile = None;
            let mut min_ttl = None;
            let mut wait = None;
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                let secs = |name: &str| {
                    v.parse::<u64>().map_err(|_| {
                        error(
                            400,
                            ErrorCode::BadRequest,
                            &format!("{name} must be a number of seconds"),
                        )
                    })
                };
                match &*k {
                    "profile" => profile = Some(v.clone().into_owned()),
                    "min_ttl" => match secs("min_ttl") {
                        Ok(n) => min_ttl = Some(n),
                        Err(e) => return e,
                    },
                    "wait" => match secs("wait") {
                        Ok(n) => wait = Some(n),
                        Err(e) => return e,
                    },
                    other => {
                        return error(
                            400,
                            ErrorCode::BadRequest,
                            &format!(
                                "unknown query parameter `{}`; use profile, min_ttl and wait",
                                other.escape_debug()
                            ),
                        );
                    }
                }
            }
            reply::<TokenReply>(ops::token(shared, profile.as_deref(), min_ttl, wait).await)
        }
        "/v1/status" => reply::<StatusReply>(ops::status(shared, None, None)),
        _ => error(
            404,
            ErrorCode::BadRequest,
            "no such endpoint; try GET /v1/token?profile=NAME&min_ttl=SECS or GET /v1/status",
        ),
    }
}

fn reply<T: serde::Serialize>(r: Result<T, WireError>) -> (u16, Vec<u8>) {
    let status = match &r {
        Ok(_) => 200,
        Err(e) => status_of(e.code),
    };
    let mut body = Vec::new();
    ops::respond(&mut body, r);
    (status, body)
}

fn error(status: u16, code: ErrorCode, message: &str) -> (u16, Vec<u8>) {
    let mut body = Vec::new();
    crate::protocol::write_err(&mut body, &WireError::new(code, message));
    (status, body)
}

/// The HTTP status for an error code (documented in docs/PROTOCOL.md).
pub(crate) fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => 400,
        ErrorCode::PermissionDenied => 403,
        ErrorCode::UnknownProfile => 404,
        ErrorCode::ProfileExists => 409,
        ErrorCode::LineTooLong => 431,
        ErrorCode::ConfigError | ErrorCode::Internal => 500,
        ErrorCode::CredentialsRejected => 502,
        ErrorCode::IssuerUnavailable | ErrorCode::Busy | ErrorCode::ShuttingDown => 503,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
