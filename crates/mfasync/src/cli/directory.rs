//! `directory test`.

use crate::{active_config, open_store, print_json, terminal, CmdResult, Failure};
use mfasync_engine::secrets;

/// `directory test`.
pub async fn test(database: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    let cfg = active_config(store.as_ref()).await?;
    let password = secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(Failure::Refused)?;
    let report = mfasync_ldap::test(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await;
    if json {
        print_json(&report)?;
    } else {
        if let Some(d) = &report.discovery {
            terminal::say!(
                "domain   {} (from {}), asked {}: {}",
                d.domain,
                d.domain_from,
                d.dns,
                d.queries.join(", ")
            );
            for dc in &d.domain_controllers {
                terminal::say!(
                    "found    {}:{} priority {} weight {}{} {}",
                    dc.name,
                    dc.port,
                    dc.priority,
                    dc.weight,
                    if dc.in_site { " (site)" } else { "" },
                    dc.error.as_deref().unwrap_or(&dc.servers.join(" "))
                );
            }
        }
        if report.tried.len() > 1 {
            for t in &report.tried {
                terminal::say!(
                    "tried    {} {}",
                    t.server,
                    match &t.step {
                        Some(step) => format!("FAIL at {step}: {}", t.detail),
                        None => t.detail.clone(),
                    }
                );
            }
        }
        for s in &report.steps {
            terminal::say!(
                "{:8} {:4} {}",
                s.step,
                if s.ok { "ok" } else { "FAIL" },
                s.detail
            );
        }
        if let Some(t) = &report.domains {
            for d in &t.domains {
                terminal::say!(
                    "domain   {} ({}{}{}): {}",
                    d.name,
                    d.netbios.as_deref().unwrap_or("-"),
                    match &d.direction {
                        Some(dir) => format!(", {} {dir}", d.relation),
                        None => format!(", {}", d.relation),
                    },
                    if d.reachable { "" } else { ", UNREACHABLE" },
                    d.detail
                );
            }
            if let Some(e) = &t.error {
                terminal::say!("domains  FAIL {e}");
            }
        }
        for w in &report.warnings {
            terminal::say!("warning  {w}");
        }
        if report.ok {
            terminal::say!(
                "server {} ({:?}): paged={} dirsync={} asq={} syncrepl={} usn={}",
                report.server,
                report.vendor,
                report.supports.paged_results,
                report.supports.dirsync,
                report.supports.attribute_scoped_query,
                report.supports.syncrepl,
                report.supports.usn
            );
        }
    }
    if report.ok {
        Ok(())
    } else {
        let why = report.steps.iter().rev().find(|s| !s.ok);
        Err(Failure::Refused(match why {
            Some(s) => format!("directory test failed: {}", s.detail),
            None => "directory test failed".into(),
        }))
    }
}
