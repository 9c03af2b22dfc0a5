//! `PUBLIC_URL` and `ALLOWED_HOSTS`: the host names the HTTP API answers
//! besides the loopback ones (the `Host` check against DNS rebinding is in
//! `http::host`).

use std::net::IpAddr;

/// Host names answered besides the loopback ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `ALLOWED_HOSTS=*`: no check at all.
    pub any: bool,
    /// Lowercase names without port (IPv6 addresses without brackets).
    pub names: Vec<String>,
}

/// A bad `PUBLIC_URL` or `ALLOWED_HOSTS` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub name: &'static str,
    pub value: String,
    pub message: &'static str,
}

impl AllowedHosts {
    /// From the `PUBLIC_URL` (its host) and `ALLOWED_HOSTS` (comma-separated names, or `*`) settings.
    pub fn parse(public_url: Option<&str>, allowed_hosts: Option<&str>) -> Result<AllowedHosts, SettingError> {
        let mut hosts = AllowedHosts::default();
        if let Some(url) = public_url {
            let bad = || SettingError {
                name: "PUBLIC_URL",
                value: url.to_owned(),
                message: "expected an http:// or https:// URL such as https://ff.example.com",
            };
            let rest =
                url.trim().strip_prefix("https://").or_else(|| url.trim().strip_prefix("http://")).ok_or_else(bad)?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let name = host_name(authority).filter(|n| valid_name(n) && !authority.contains('@')).ok_or_else(bad)?;
            hosts.names.push(name);
        }
        for entry in allowed_hosts.unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                hosts.any = true;
                continue;
            }
            let name = entry.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
            if !valid_name(&name) {
                return Err(SettingError {
                    name: "ALLOWED_HOSTS",
                    value: allowed_hosts.unwrap_or("").to_owned(),
                    message: "expected comma-separated host names (no scheme or port), or `*`",
                });
            }
            hosts.names.push(name);
        }
        Ok(hosts)
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) is served.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(name) = host_name(host) else { return false };
        name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) || self.names.contains(&name)
    }
}

/// The name part of a `Host` value, lowercase, without port, brackets or final dot.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        inside
    } else {
        match host.split_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok()
}

/// A DNS name or an IP address.
fn valid_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_always_pass() {
        let hosts = AllowedHosts::default();
        for host in ["localhost", "LOCALHOST:8000", "127.0.0.1", "127.4.5.6:80", "[::1]", "[::1]:8000", "localhost."] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["", "evil.example", "evil.example:8000", "10.0.0.1", "localhost.evil.example", "[::2]:80", "a:b:c"]
        {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn public_url_and_allowed_hosts_add_names() {
        let hosts =
            AllowedHosts::parse(Some("https://FF.example.com:8443/base"), Some(" ci.internal , 10.0.0.5,[fd00::1]"))
                .expect("valid settings");
        for host in ["ff.example.com", "ff.example.com:443", "ci.internal:8000", "10.0.0.5", "[fd00::1]:8000"] {
            assert!(hosts.allows(host), "{host}");
        }
        assert!(!hosts.allows("example.com"));
        assert!(AllowedHosts::parse(None, Some("*")).expect("valid").allows("anything.example"));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let err = AllowedHosts::parse(Some("ff.example.com"), None).err().map(|e| e.name);
        assert_eq!(err, Some("PUBLIC_URL"));
        let err = AllowedHosts::parse(Some("https://user@ff.example.com"), None).err().map(|e| e.name);
        assert_eq!(err, Some("PUBLIC_URL"));
        let err = AllowedHosts::parse(None, Some("ok.example, http://bad.example")).err().map(|e| e.name);
        assert_eq!(err, Some("ALLOWED_HOSTS"));
        let err = AllowedHosts::parse(None, Some("host.example:8000")).err().map(|e| e.name);
        assert_eq!(err, Some("ALLOWED_HOSTS"));
    }
}
