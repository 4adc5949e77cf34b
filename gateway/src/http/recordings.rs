//! The admin API's recordings and audit query: query-string parsing and the answers
//! (JSON, JSON lines, the recording file). The decisions are the engine's.

use http::{header, HeaderValue, Response, StatusCode};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{json_ok, ApiError, Body};
use crate::engine::App;
use crate::store::{AuditKind, AuditQuery};

/// Default and largest page of `GET /api/v1/audit`.
pub const AUDIT_PAGE_DEFAULT: usize = 1000;

/// Decodes `%XX` escapes and `+` (a space) of a query-string value.
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("bad percent-encoding in the query string".into());
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The decoded, non-empty value of `key` (the first one).
pub fn param(query: &str, key: &str) -> Result<Option<String>, ApiError> {
    match query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
    {
        Some((_, v)) if !v.is_empty() => Ok(Some(percent_decode(v)?)),
        _ => Ok(None),
    }
}

fn time_param(query: &str, key: &'static str) -> Result<Option<OffsetDateTime>, ApiError> {
    param(query, key)?
        .map(|v| {
            OffsetDateTime::parse(&v, &Rfc3339)
                .map_err(|_| ApiError::BadRequest(format!("{key} must be an RFC 3339 time")))
        })
        .transpose()
}

/// `GET /api/v1/audit?link=&vm=&kind=&client=&since=&until=&before=&limit=&format=`.
pub async fn audit(app: &App, query: &str) -> Result<Response<Body>, ApiError> {
    let kind = param(query, "kind")?
        .map(|k| {
            AuditKind::parse(&k).ok_or_else(|| ApiError::BadRequest(format!("unknown kind {k:?}")))
        })
        .transpose()?;
    let number = |key: &'static str| -> Result<Option<i64>, ApiError> {
        param(query, key)?
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::BadRequest(format!("{key} must be a positive integer"))
                })
            })
            .transpose()
    };
    let limit = number("limit")?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .unwrap_or(AUDIT_PAGE_DEFAULT)
        .min(crate::store::MAX_AUDIT_LIST);
    let q = AuditQuery {
        link_id: param(query, "link")?,
        vm: param(query, "vm")?,
        kind,
        client: param(query, "client")?,
        since: time_param(query, "since")?,
        until: time_param(query, "until")?,
        before_id: number("before")?,
        limit,
    };
    let entries = app.audit_query(&q).await?;
    match param(query, "format")?.as_deref() {
        None | Some("json") => json_ok(StatusCode::OK, &entries),
        Some("jsonl") => {
            let mut body = Vec::new();
            for e in &entries {
                serde_json::to_writer(&mut body, e).map_err(|e| ApiError::Internal(Box::new(e)))?;
                body.push(b'\n');
            }
            Ok(file(body, "application/x-ndjson", None))
        }
        Some(_) => Err(ApiError::BadRequest("format must be json or jsonl".into())),
    }
}

/// `GET /api/v1/recordings?link=&session=`.
pub async fn list(app: &App, query: &str) -> Result<Response<Body>, ApiError> {
    let link = param(query, "link")?;
    let session = param(query, "session")?;
    json_ok(
        StatusCode::OK,
        &app.list_recordings(link.as_deref(), session.as_deref())
            .await?,
    )
}

/// Bytes of a recording's file read at a time for its download.
const DOWNLOAD_CHUNK: u64 = 64 * 1024;

/// `GET /api/v1/recordings/{id}/file`: the file, from the gateway that holds it, streamed
/// (read a chunk at a time as the client takes it: memory does not grow with the file).
/// A recording still being written is served as far as it was when the request came.
pub async fn download(app: &App, id: &str) -> Result<Response<Body>, ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    let (rec, f, len) = app.open_recording_file(id).await?;
    let chunks = futures::stream::try_unfold((f, len), |(mut f, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left.min(DOWNLOAD_CHUNK)).unwrap_or(0);
        let mut buf = bytes::BytesMut::with_capacity(want);
        while buf.len() < want {
            if f.read_buf(&mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let n = u64::try_from(buf.len()).unwrap_or(left);
        let frame = hyper::body::Frame::data(buf.freeze());
        Ok(Some((frame, (f, left.saturating_sub(n)))))
    });
    let body = http_body_util::StreamBody::new(chunks).boxed_unsync();
    let mut r = Response::new(http_body_util::Either::Right(body));
    set_file_headers(&mut r, "application/octet-stream", Some(&rec.file));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(r)
}

fn file(body: Vec<u8>, content_type: &'static str, name: Option<&str>) -> Response<Body> {
    let mut r = Response::new(super::error::full(body));
    set_file_headers(&mut r, content_type, name);
    r
}

fn set_file_headers(r: &mut Response<Body>, content_type: &'static str, name: Option<&str>) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(v) =
        name.and_then(|n| HeaderValue::from_str(&format!("attachment; filename=\"{n}\"")).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let q = "client=%3A%3A1&since=2030-01-01T00%3A00%3A00%2B01%3A00&x=a+b&e=";
        assert_eq!(param(q, "client").unwrap().as_deref(), Some("::1"));
        assert_eq!(
            param(q, "since").unwrap().as_deref(),
            Some("2030-01-01T00:00:00+01:00")
        );
        assert_eq!(param(q, "x").unwrap().as_deref(), Some("a b"));
        assert_eq!(param(q, "e").unwrap(), None);
        assert!(param("a=%zz", "a").is_err());
        assert!(param("a=%4", "a").is_err());
    }
}
