//! Keyset pagination shared by the listings (runs, audit events): newest first on
//! (time, id), one extra row fetched to tell whether another page exists, and an
//! opaque `next_cursor` (base64url of `<micros>:<id>`) to pass back as `cursor`.

use super::error::Error;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Display;
use std::str::FromStr;

/// A page of a listing, newest first.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// From rows fetched with a limit of `wanted + 1`: the extra row, if any, is
    /// dropped and the last row kept becomes the cursor (`key`: its time and id).
    pub fn from_rows<R, K: Display>(
        mut rows: Vec<R>,
        wanted: i64,
        key: impl Fn(&R) -> (DateTime<Utc>, K),
        into: impl FnMut(R) -> T,
    ) -> Page<T> {
        let wanted = usize::try_from(wanted).unwrap_or(0);
        let next_cursor = if rows.len() > wanted {
            rows.truncate(wanted);
            rows.last().map(|row| {
                let (at, id) = key(row);
                encode_cursor(at, id)
            })
        } else {
            None
        };
        Page { items: rows.into_iter().map(into).collect(), next_cursor }
    }
}

/// Bytes of JSON reserved per item before serialising a page: a run is ~450. axum's
/// `Json` starts from 128 bytes and doubles, copying a 50-run page eight times over.
const JSON_BYTES_PER_ITEM: usize = 512;

impl<T: Serialize> axum::response::IntoResponse for Page<T> {
    fn into_response(self) -> axum::response::Response {
        let mut body = Vec::with_capacity(64 + self.items.len() * JSON_BYTES_PER_ITEM);
        match serde_json::to_writer(&mut body, &self) {
            Ok(()) => ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => Error::internal(format!("serialising a page: {e}")).into_response(),
        }
    }
}

pub fn encode_cursor(at: DateTime<Utc>, id: impl Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// The (time, id) of a cursor this API returned; 400 naming `cursor` otherwise.
pub fn decode_cursor<K: FromStr>(raw: &str) -> Result<(DateTime<Utc>, K), Error> {
    let bad = || Error::invalid("cursor", "cursor is not one this API returned");
    let text = URL_SAFE_NO_PAD.decode(raw).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let at = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor::<Uuid>(&encode_cursor(at, id)).ok(), Some((at, id)));
        assert_eq!(decode_cursor::<i64>(&encode_cursor(at, 42)).ok(), Some((at, 42)));
        assert!(decode_cursor::<Uuid>("not-a-cursor").is_err());
        assert!(decode_cursor::<Uuid>(&URL_SAFE_NO_PAD.encode("12:nope")).is_err());
    }

    #[test]
    fn the_extra_row_becomes_the_cursor() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_000).expect("time");
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| (at, *n), |n| n * 10);
        assert_eq!(page.items, vec![10, 20]);
        assert_eq!(page.next_cursor, Some(encode_cursor(at, 2)));
        let last = Page::from_rows(vec![1, 2], 2, |n| (at, *n), |n| n);
        assert_eq!(last.next_cursor, None);
    }
}
