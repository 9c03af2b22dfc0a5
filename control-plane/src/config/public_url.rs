//! `PUBLIC_URL`: where users reach the API (often an https proxy in front of it).
//! It names the one origin a cookie-authenticated browser request may come from
//! (the CSRF check in `http::authn`), and whether the session cookie must be
//! `Secure` (then it also takes the `__Host-` prefix, which browsers accept only
//! on secure cookies).

/// The scheme and authority of `PUBLIC_URL`, as a browser writes them in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://ff.example.com` (lowercase, default port left out, no path).
    pub origin: String,
    pub https: bool,
}

impl PublicUrl {
    /// `None` for a value that is not an `http://` or `https://` URL with a host
    /// (`AllowedHosts::parse` reports that error with the setting's name).
    pub fn parse(raw: &str) -> Option<PublicUrl> {
        let raw = raw.trim();
        let lower = raw.to_ascii_lowercase();
        let (https, rest) = match (lower.strip_prefix("https://"), lower.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return None,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        // Browsers leave the scheme's default port out of `Origin`.
        let default_port = if https { ":443" } else { ":80" };
        let authority = authority.strip_suffix(default_port).unwrap_or(authority);
        let scheme = if https { "https" } else { "http" };
        Some(PublicUrl { origin: format!("{scheme}://{authority}"), https })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_authority() {
        let url = PublicUrl::parse("HTTPS://FF.example.com:443/app/?x#y").expect("valid");
        assert_eq!(url, PublicUrl { origin: "https://ff.example.com".into(), https: true });
        let url = PublicUrl::parse("http://10.0.0.5:8000").expect("valid");
        assert_eq!(url, PublicUrl { origin: "http://10.0.0.5:8000".into(), https: false });
        for bad in ["ff.example.com", "ftp://x", "https://", "https://u@x"] {
            assert_eq!(PublicUrl::parse(bad), None, "{bad}");
        }
    }
}
