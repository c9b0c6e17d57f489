//! The participant token in `User-to-User` (RFC 7433).
//!
//! Items may be comma-separated in one header or spread over repeated headers
//! (the header name is case-insensitive); each is `data;param=value…`. The
//! token is the data of the item whose `encoding` parameter is `jwt`; other
//! items (Bandwidth Voice puts its call id first as `…;encoding=base64`) are
//! ignored.

/// The `encoding=jwt` item's data among all `User-to-User` header values.
pub fn jwt_token<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for item in split_items(text) {
            let mut parts = item.split(';');
            let data = parts.next().unwrap_or("").trim();
            let is_jwt = parts.any(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                k.trim().eq_ignore_ascii_case("encoding")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("jwt")
            });
            let data = data.trim_matches('"');
            if is_jwt && !data.is_empty() {
                return Some(data.to_string());
            }
        }
    }
    None
}

/// Split on commas outside quoted strings.
fn split_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(values: &[&str]) -> Option<String> {
        jwt_token(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn bandwidth_transfer_form() {
        assert_eq!(
            tok(&["93d6f3c0be5845960b744fa28015d8ede84bd1a4;encoding=base64,eyJhbGciOiJIUzI1NiJ9.e30.sig;encoding=jwt"]),
            Some("eyJhbGciOiJIUzI1NiJ9.e30.sig".into())
        );
    }

    #[test]
    fn token_alone_and_repeated_headers() {
        assert_eq!(
            tok(&["abc.def.ghi;encoding=jwt"]),
            Some("abc.def.ghi".into())
        );
        assert_eq!(
            tok(&[
                "93d6;encoding=base64",
                " abc.def.ghi ; purpose=call ; encoding=JWT "
            ]),
            Some("abc.def.ghi".into())
        );
        assert_eq!(
            tok(&["\"abc.def.ghi\";encoding=\"jwt\""]),
            Some("abc.def.ghi".into())
        );
    }

    #[test]
    fn no_jwt_item() {
        assert_eq!(tok(&["93d6;encoding=base64"]), None);
        assert_eq!(tok(&["abc.def.ghi"]), None);
        assert_eq!(tok(&[";encoding=jwt"]), None);
        assert_eq!(tok(&[]), None);
        assert_eq!(jwt_token([&[0xff, 0xfe][..]]), None);
    }
}
