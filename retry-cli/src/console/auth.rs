//! Who may act through the console: requests from the console's own page (never another
//! site's), carrying the configured token.
//!
//! A browser sends `Origin` and `Sec-Fetch-Site` with every POST, so a page on another site
//! is recognised and refused before its token is even looked at; and since actions take JSON
//! and an `Authorization` header, a cross-site `fetch` needs a CORS preflight, which the
//! console never answers. Tools like curl send neither header and are judged by the token.

use axum::http::{header, HeaderMap, StatusCode};

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

/// The console token: compared in constant time, never printed.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token as configured (`console_token`, already checked for length and characters).
    pub fn new(token: String) -> Token {
        Token(token)
    }

    /// Whether `offered` is the token, taking as long for a near miss as for a far one.
    fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        // The length is not a secret worth the complexity of hiding it.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why an action was refused: the status to answer with and the message the page shows.
pub type Refusal = (StatusCode, String);

/// Checks that an action request comes from the console's own page or a tool (not another
/// site) and carries the token.
pub fn authorize(headers: &HeaderMap, token: Option<&Token>) -> Result<(), Refusal> {
    if let Some(reason) = cross_site(headers) {
        return Err(error(StatusCode::FORBIDDEN, format!("cross-site request refused: {reason}")));
    }
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions take a JSON body (Content-Type: application/json)",
        ));
    }
    let Some(token) = token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the console is read-only: no console token is configured \
             (start `redis-retry consume` with --console-token-file, REDIS_RETRY_CONSOLE_TOKEN or console_token)",
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match offered {
        Some(offered) if token.matches(offered) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong console token")),
        None => {
            Err(error(StatusCode::UNAUTHORIZED, "the console token is missing (Authorization: Bearer TOKEN)"))
        }
    }
}

/// Whether `host` (a `Host` header) names this machine's loopback: `localhost`, `127.x.y.z`
/// or `[::1]`, with or without a port.
pub fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(addr, _)| addr),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why the request comes from another site, if it does.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)").to_string());
    if let Some(site) = text("sec-fetch-site") {
        // `none`: typed by the user; `same-origin`: the console's own page.
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site is {site}"));
        }
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let own =
            ["http://", "https://"].iter().any(|scheme| origin.strip_prefix(scheme) == Some(host.as_str()));
        if !own {
            return Some(format!(
                "Origin {} is not this console's ({host})",
                crate::cli::escape_controls(&origin)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const JSON: (&str, &str) = ("content-type", "application/json");
    const HOST: (&str, &str) = ("host", "127.0.0.1:9464");

    fn status(r: Result<(), Refusal>) -> Option<StatusCode> {
        r.err().map(|(status, _)| status)
    }

    #[test]
    fn the_token_opens_actions_and_nothing_else_does() {
        let token = Token::new("a-token-of-enough-length".into());
        let ok = headers(&[JSON, HOST, ("authorization", "Bearer a-token-of-enough-length")]);
        assert_eq!(status(authorize(&ok, Some(&token))), None);
        let wrong = headers(&[JSON, HOST, ("authorization", "Bearer a-token-of-enough-lengtH")]);
        assert_eq!(status(authorize(&wrong, Some(&token))), Some(StatusCode::UNAUTHORIZED));
        let none = headers(&[JSON, HOST]);
        assert_eq!(status(authorize(&none, Some(&token))), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(status(authorize(&ok, None)), Some(StatusCode::FORBIDDEN), "read-only without a token");
    }

    #[test]
    fn other_sites_are_refused_even_with_the_token() {
        let token = Token::new("a-token-of-enough-length".into());
        let auth = ("authorization", "Bearer a-token-of-enough-length");
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:9465"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let h = headers(&[JSON, HOST, auth, (name, value)]);
            assert_eq!(status(authorize(&h, Some(&token))), Some(StatusCode::FORBIDDEN), "{name}: {value}");
        }
        let own = headers(&[
            JSON,
            HOST,
            auth,
            ("origin", "http://127.0.0.1:9464"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(status(authorize(&own, Some(&token))), None);
        let form = headers(&[HOST, auth, ("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(status(authorize(&form, Some(&token))), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }

    #[test]
    fn loopback_names_are_local_and_others_are_not() {
        for host in ["127.0.0.1:9464", "localhost:9464", "LOCALHOST", "[::1]:9464", "127.0.0.2"] {
            assert!(local_host(host), "{host}");
        }
        for host in ["evil.example:9464", "10.0.0.1:9464", "", "[::2]:80", "localhost.evil.example"] {
            assert!(!local_host(host), "{host}");
        }
    }

    #[test]
    fn the_token_is_never_printed() {
        assert_eq!(format!("{:?}", Token::new("a-token-of-enough-length".into())), "Token(***)");
    }
}
