//! `[radius]`: the RADIUS server of `serve` (not a seed setting): where it
//! listens and which clients (VPN concentrators, network devices) it answers.

use serde::{Deserialize, Serialize};

use super::{err, ConfigError};

/// `[radius]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Radius {
    /// Address and UDP port ("0.0.0.0:1812").
    pub listen: String,
    /// `[[radius.clients]]`: a request from any other address is dropped unanswered.
    pub clients: Vec<RadiusClient>,
}

impl Default for Radius {
    fn default() -> Self {
        Radius {
            listen: "0.0.0.0:1812".into(),
            clients: Vec::new(),
        }
    }
}

/// One `[[radius.clients]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RadiusClient {
    /// Shown in the log, the audit and the metrics; blank: the address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// An IP address or a network ("10.0.0.0/24", "2001:db8::/64").
    pub address: String,
    /// A file holding the shared secret (its first line; read when `serve` starts).
    pub secret_file: String,
    /// Drop requests without a Message-Authenticator (RFC 3579; the
    /// BLAST-RADIUS fix). Turn off only for a client that cannot send one.
    pub require_message_authenticator: bool,
    /// How users with the method "oath-token" give their code.
    pub second_factor: SecondFactor,
    /// Between the password and an appended code (`second_factor = "append"`).
    pub separator: String,
    /// What users with another method than "oath-token" get.
    pub other_methods: OtherMethods,
}

impl Default for RadiusClient {
    fn default() -> Self {
        RadiusClient {
            name: String::new(),
            address: String::new(),
            secret_file: String::new(),
            require_message_authenticator: true,
            second_factor: SecondFactor::Challenge,
            separator: ",".into(),
            other_methods: OtherMethods::Reject,
        }
    }
}

impl RadiusClient {
    /// The name the log, the audit and the metrics use.
    pub fn label(&self) -> &str {
        if self.name.trim().is_empty() {
            self.address.trim()
        } else {
            self.name.trim()
        }
    }

    /// The client's network (validated by `validate`).
    pub fn network(&self) -> Option<ipnet::IpNet> {
        let a = self.address.trim();
        a.parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| a.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
    }
}

/// How the code of an "oath-token" user is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SecondFactor {
    /// An Access-Challenge after the right password; the VPN prompts for the code.
    #[default]
    Challenge,
    /// The code after the password and the separator ("password,123456").
    Append,
}

/// What a user whose method is not "oath-token" gets after the right password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OtherMethods {
    /// Access-Reject: this server asks no telephone or app second factor.
    #[default]
    Reject,
    /// Access-Accept on the password alone.
    Password,
}

pub(super) fn validate(r: &Radius, out: &mut Vec<ConfigError>) {
    if r.listen.trim().parse::<std::net::SocketAddr>().is_err() {
        out.push(err(
            "radius.listen",
            format!(
                "\"{}\" is not an address and port (\"0.0.0.0:1812\")",
                r.listen
            ),
        ));
    }
    if r.clients.is_empty() {
        out.push(err(
            "radius.clients",
            "no client: add a [[radius.clients]] with address and secret_file",
        ));
    }
    let mut labels = std::collections::HashSet::new();
    for (i, c) in r.clients.iter().enumerate() {
        let key = |k: &str| format!("radius.clients[{i}].{k}");
        if c.network().is_none() {
            out.push(err(
                key("address"),
                format!(
                    "\"{}\" is not an IP address or network (\"10.0.0.0/24\")",
                    c.address
                ),
            ));
        }
        if c.secret_file.trim().is_empty() {
            out.push(err(
                key("secret_file"),
                "is empty: name the file that holds the shared secret",
            ));
        }
        if c.separator.is_empty() || c.separator.bytes().any(|b| b.is_ascii_digit()) {
            out.push(err(
                key("separator"),
                "must be one or more characters, none of them a digit",
            ));
        }
        if !labels.insert(c.label().to_ascii_lowercase()) {
            out.push(err(
                key("name"),
                format!("\"{}\" names two clients", c.label()),
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_address_or_a_network() {
        let c = |a: &str| RadiusClient {
            address: a.into(),
            ..RadiusClient::default()
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(c("10.0.0.0/24")
            .network()
            .unwrap()
            .contains(&ip("10.0.0.9")));
        assert!(!c("10.0.0.0/24")
            .network()
            .unwrap()
            .contains(&ip("10.0.1.9")));
        assert!(c("127.0.0.1").network().unwrap().contains(&ip("127.0.0.1")));
        assert!(c("::1").network().unwrap().contains(&ip("::1")));
        assert!(c("vpn.example.com").network().is_none());
        assert_eq!(c("10.0.0.0/24").label(), "10.0.0.0/24");
    }

    #[test]
    fn bad_settings_are_named_by_key() {
        let r = Radius {
            listen: "1812".into(),
            clients: vec![
                RadiusClient {
                    address: "10.0.0.300".into(),
                    separator: "1".into(),
                    name: "vpn".into(),
                    ..RadiusClient::default()
                },
                RadiusClient {
                    address: "10.0.0.1".into(),
                    secret_file: "/s".into(),
                    name: "VPN".into(),
                    ..RadiusClient::default()
                },
            ],
        };
        let mut out = Vec::new();
        validate(&r, &mut out);
        let keys: Vec<&str> = out.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "radius.listen",
                "radius.clients[0].address",
                "radius.clients[0].secret_file",
                "radius.clients[0].separator",
                "radius.clients[1].name"
            ]
        );
        let mut out = Vec::new();
        validate(&Radius::default(), &mut out);
        assert_eq!(out[0].key, "radius.clients");
    }
}
