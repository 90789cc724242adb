//! Hiding the password of a Redis URL, for `Debug` and every log line.

/// What a redacted secret prints as.
const REDACTED: &str = "***";

/// Query parameters that carry a password (`redis+unix:///path?pass=...`).
const SECRET_QUERY_KEYS: &[&str] = &["pass", "password"];

/// Replaces the password of a Redis URL with `***`.
///
/// Errs on the side of hiding too much: everything between the first `:` of
/// the user info and the *last* `@` is hidden, so a password holding an
/// unescaped `@`, `/` or `?` does not leak either. Text that does not look
/// like a URL is returned as is when it has no `@`, and hidden whole when it
/// has one.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            REDACTED.to_owned()
        } else {
            url.to_owned()
        };
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (user_info, after) = rest.split_at(at);
            match user_info.split_once(':') {
                Some((user, _password)) => format!("{user}:{REDACTED}{after}"),
                None => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    format!("{scheme}://{}", redact_query(&rest))
}

/// Hides the values of password-carrying query parameters.
fn redact_query(rest: &str) -> String {
    let Some((before, query)) = rest.split_once('?') else {
        return rest.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_QUERY_KEYS.contains(&key) => format!("{key}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{before}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_and_password() {
        assert_eq!(
            redact_url("redis://user:pass@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
    }

    #[test]
    fn redacts_rediss_urls_like_redis_ones() {
        let cases = [
            ("rediss://:pass@host:6380", "rediss://:***@host:6380"),
            (
                "rediss://crew:pass@host:6380/2",
                "rediss://crew:***@host:6380/2",
            ),
            (
                "rediss://u:p@ss/w@127.0.0.1:1/0",
                "rediss://u:***@127.0.0.1:1/0",
            ),
            (
                "rediss://u:pass@host/0?protocol=resp3#insecure",
                "rediss://u:***@host/0?protocol=resp3#insecure",
            ),
            (
                "rediss://host:6380/0#insecure",
                "rediss://host:6380/0#insecure",
            ),
            ("rediss://user@host:6380", "rediss://user@host:6380"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn keeps_urls_without_password() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://user@host/0",
            "redis://host/0?protocol=resp3",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn hides_passwords_with_reserved_characters() {
        let redacted = redact_url("redis://u:p@ss/w?rd@host:1/0");
        assert_eq!(redacted, "redis://u:***@host:1/0");
        assert!(!redact_url("redis://u:a%40b@h").contains("a%40b"));
    }

    #[test]
    fn hides_query_passwords() {
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?db=1&user=u&pass=secret"),
            "redis+unix:///tmp/r.sock?db=1&user=u&pass=***"
        );
        assert_eq!(
            redact_url("redis+unix:///s?password=x#frag"),
            "redis+unix:///s?password=***#frag"
        );
    }

    #[test]
    fn hides_text_that_is_not_a_url() {
        assert_eq!(redact_url("secret@host"), "***");
        assert_eq!(redact_url("host:6379"), "host:6379");
    }
}
