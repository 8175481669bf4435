//! One server of `directory.servers`: its URL split into host, port and
//! LDAPS, and the per-connection limits taken from the configuration.

use std::time::Duration;

use mfasync_core::config::Directory;

/// One server URL, split.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) ldaps: bool,
    /// The server's DNS name when `url` names its address (a DC found by DNS
    /// SRV through `directory.dns_servers`): its Kerberos service name.
    pub(crate) name: Option<String>,
}

pub(crate) fn parse_target(url: &str) -> Result<Target, String> {
    let (ldaps, rest) = if let Some(r) = url.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with ldap:// or ldaps://"));
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    let default_port = if ldaps { 636 } else { 389 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unterminated IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            ),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok(Target {
        url: url.to_string(),
        host,
        port,
        ldaps,
        name: None,
    })
}

/// `directory.max_message_bytes` as a size (validated to at most 1 GiB).
pub(crate) fn max_message_bytes(dir: &Directory) -> usize {
    usize::try_from(dir.max_message_bytes).unwrap_or(usize::MAX)
}

pub(crate) fn timeout_of(dir: &Directory) -> Duration {
    Duration::from_secs(u64::from(dir.timeout_seconds.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("ldaps://dc1.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.ldaps),
            ("dc1.example.com", 636, true)
        );
        let t = parse_target("ldap://127.0.0.1:3389/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.ldaps),
            ("127.0.0.1", 3389, false)
        );
        let t = parse_target("ldap://[::1]:1389").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.host.as_str(), t.port), ("::1", 1389));
        assert!(parse_target("http://x").is_err());
        assert!(parse_target("ldap://x:notaport").is_err());
    }
}
