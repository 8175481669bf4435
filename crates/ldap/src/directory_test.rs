//! The `directory test` report: every connection step on each server
//! tried, what the server supports, DNS discovery and trusted domains.

use mfasync_core::config::{Bind, Directory};

use crate::bind::windows_credentials;
use crate::connect::{attempt, is_fatal, precheck, reason_of, Attempt, Step, TestStep};
use crate::discovery;
use crate::error::LdapError;
use crate::proto::{Capabilities, Vendor};
use crate::target::{parse_target, Target};

pub use mfasync_core::report::directory::{Supports, TestReport, TriedServer};

impl From<&Capabilities> for Supports {
    fn from(c: &Capabilities) -> Self {
        Supports {
            paged_results: c.paged_results,
            dirsync: c.dirsync,
            attribute_scoped_query: c.attribute_scoped_query,
            syncrepl: c.syncrepl,
            usn: c.usn,
        }
    }
}

/// The seed's "Test" button: connect, TLS, bind and RootDSE as separate
/// steps. Servers are tried in order like [`crate::connect()`]; the report is of the
/// first that works, else of the last failure.
pub async fn test(dir: &Directory, bind: &Bind, password: Option<&str>) -> TestReport {
    let mut report = test_servers(dir, bind, password).await;
    report.warnings = mfasync_core::config::server_warnings(dir)
        .iter()
        .map(ToString::to_string)
        .collect();
    report
}

async fn test_servers(dir: &Directory, bind: &Bind, password: Option<&str>) -> TestReport {
    let failed = |server: String, step: Step, e: &LdapError| TestReport {
        ok: false,
        server,
        vendor: Vendor::Other,
        steps: vec![TestStep {
            step: step.as_str().into(),
            ok: false,
            detail: e.to_string(),
        }],
        supports: Supports::default(),
        discovery: None,
        tried: Vec::new(),
        domains: None,
        warnings: Vec::new(),
    };
    let discovered = if discovery::wanted(dir) {
        match discovery::discover(dir).await {
            Ok(d) => Some(d),
            Err(e) => return failed(String::new(), Step::Connect, &e),
        }
    } else {
        None
    };
    let with_dcs;
    let dir = match &discovered {
        Some(d) => {
            with_dcs = Directory {
                servers: d.urls(),
                ..dir.clone()
            };
            &with_dcs
        }
        None => dir,
    };
    let first = dir.servers.first().cloned().unwrap_or_default();
    let failed = |server: String, step: Step, e: &LdapError| TestReport {
        discovery: discovered.as_ref().map(|d| d.report.clone()),
        ..failed(server, step, e)
    };
    let mut tried: Vec<TriedServer> = Vec::new();
    if let Err((step, e)) = precheck(dir, bind, password) {
        return failed(first, step, &e);
    }
    let connector = match crate::tls::client_config(dir) {
        Ok(c) => c,
        Err(e) => return failed(first, Step::Tls, &e),
    };
    let win = match windows_credentials(dir, bind, password).await {
        Ok(k) => k,
        Err(e) => return failed(first, Step::Bind, &e),
    };
    let mut last = None;
    for url in &dir.servers {
        let target = match parse_target(url) {
            Ok(t) => Target {
                name: discovered.as_ref().and_then(|d| d.name_for(url)),
                ..t
            },
            Err(m) => {
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: false,
                    step: Some(Step::Connect.as_str().into()),
                    detail: m.clone(),
                });
                last = Some(failed(url.clone(), Step::Connect, &LdapError::Config(m)));
                continue;
            }
        };
        let a = Attempt {
            target: &target,
            dir,
            bind,
            password,
            win: win.as_ref(),
            connector: connector.as_ref(),
            bind_only: false,
        };
        let (mut steps, res) = attempt(a, None).await;
        match res {
            Ok(mut client) => {
                let base = client.base_dn.clone();
                let mut ok = true;
                if !base.is_empty() {
                    match client.read(&base, &["1.1".to_string()]).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            ok = false;
                            steps.push(TestStep {
                                step: Step::RootDse.as_str().into(),
                                ok: false,
                                detail: format!("base DN {base:?} does not exist on {url}"),
                            });
                        }
                        Err(e) => {
                            ok = false;
                            steps.push(TestStep {
                                step: Step::RootDse.as_str().into(),
                                ok: false,
                                detail: format!("cannot read the base DN {base:?}: {e}"),
                            });
                        }
                    }
                }
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: true,
                    step: None,
                    detail: "used".into(),
                });
                let domains = if ok
                    && dir.include_trusted_domains
                    && client.caps.vendor == Vendor::ActiveDirectory
                {
                    Some(discovery::trusted_domains(&mut client, dir).await)
                } else {
                    None
                };
                let report = TestReport {
                    ok,
                    server: url.clone(),
                    vendor: client.caps.vendor,
                    steps,
                    supports: Supports::from(&client.caps),
                    discovery: discovered.as_ref().map(|d| d.report.clone()),
                    tried,
                    domains,
                    warnings: Vec::new(),
                };
                client.unbind().await;
                return report;
            }
            Err((step, e)) => {
                tried.push(TriedServer {
                    server: url.clone(),
                    ok: false,
                    step: Some(step.as_str().into()),
                    detail: reason_of(url, &e),
                });
                last = Some(TestReport {
                    ok: false,
                    server: url.clone(),
                    vendor: Vendor::Other,
                    steps,
                    supports: Supports::default(),
                    discovery: discovered.as_ref().map(|d| d.report.clone()),
                    tried: Vec::new(),
                    domains: None,
                    warnings: Vec::new(),
                });
                if is_fatal(&e) {
                    break;
                }
            }
        }
    }
    let mut report = last.unwrap_or_else(|| {
        failed(
            first,
            Step::Connect,
            &LdapError::Config("no LDAP servers configured".into()),
        )
    });
    report.tried = tried;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{connect, test, Client, Scope};
    use mfasync_core::Entry;

    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    async fn futures_are_send(c: &mut Client, dir: &Directory, bind: &Bind) {
        let attrs = Vec::new();
        let mut f = |_e: Entry| {};
        assert_send(&c.search_each("", Scope::Base, "(x=*)", &attrs, &mut f));
        assert_send(&c.read_all_values("", "member"));
        assert_send(&connect(dir, bind, None));
        assert_send(&test(dir, bind, None));
    }
}
