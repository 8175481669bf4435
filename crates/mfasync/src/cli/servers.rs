//! `servers list|pin|unpin|forget` and `db migrate`.

use mfasync_engine::cluster::now_ms;
use mfasync_store::rfc3339_ms;
use mfasync_store::Store;
use mfasync_web::servers::servers_json;

/// `mfasync servers list|pin|unpin|forget`.
pub async fn cli(store: &dyn Store, cmd: crate::ServersCmd, json: bool) -> crate::CmdResult {
    use crate::{Failure, ServersCmd};
    let refused = |e: mfasync_store::StoreError| Failure::Refused(e.to_string());
    match cmd {
        ServersCmd::List => {
            let servers = store.servers().await.map_err(refused)?;
            let lease = store.lease().await.map_err(refused)?;
            // the document of `GET /api/v1/servers`
            let v = servers_json(&servers, &lease, now_ms());
            if json {
                return crate::print_json(&v);
            }
            if servers.is_empty() {
                crate::terminal::say!(
                    "no server has registered yet (servers register when `mfasync serve` starts)"
                );
            }
            for s in v["servers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                let mut flags = Vec::new();
                if s["runner"] == true {
                    flags.push("runs synchronization");
                }
                if s["pinned"] == true {
                    flags.push("pinned");
                }
                if s["alive"] != true {
                    flags.push("DOWN");
                }
                crate::terminal::say!(
                    "{:20} {:24} {:10} last heartbeat {}{}",
                    text("name"),
                    text("address"),
                    text("version"),
                    text("last_heartbeat"),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", flags.join(", "))
                    }
                );
            }
            match &lease.pinned {
                Some(p) => println!("synchronization is pinned to server {p}"),
                None => println!("synchronization: automatic (any server may run it)"),
            }
            if v["lease"]["runner"].is_null() {
                crate::terminal::say!("no server runs synchronization right now");
            }
            Ok(())
        }
        ServersCmd::Pin { name } => {
            let servers = store.servers().await.map_err(refused)?;
            if let Some(s) = servers.iter().find(|s| s.name == name) {
                if !s.alive(now_ms()) {
                    crate::logging::warning(format_args!(
                        "server {name} is down (last heartbeat {}): no server synchronizes until it is back or `mfasync servers unpin`",
                        rfc3339_ms(s.heartbeat_ms)
                    ));
                }
            }
            if !servers.iter().any(|s| s.name == name) {
                let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure::Refused(format!(
                    "no server named {name:?} has registered (known: {}); start it with `mfasync serve --name {name}` first",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
            let lease = store
                .lease_pin(Some(&name), "admin")
                .await
                .map_err(refused)?;
            if json {
                crate::print_json(&servers_json(&[], &lease, now_ms())["lease"])
            } else {
                crate::terminal::say!("synchronization pinned to server {name}: only it runs synchronization (it takes over within one lease period)");
                Ok(())
            }
        }
        ServersCmd::Unpin => {
            let lease = store.lease_pin(None, "admin").await.map_err(refused)?;
            if json {
                crate::print_json(&servers_json(&[], &lease, now_ms())["lease"])
            } else {
                crate::terminal::say!("synchronization no longer pinned: any server may run it");
                Ok(())
            }
        }
        ServersCmd::Forget { name } => {
            let servers = store.servers().await.map_err(refused)?;
            if let Some(s) = servers.iter().find(|s| s.name == name) {
                if s.alive(now_ms()) {
                    return Err(Failure::Refused(format!(
                        "server {name} is alive (last heartbeat {}): stop it first",
                        rfc3339_ms(s.heartbeat_ms)
                    )));
                }
            }
            let found = store.server_forget(&name).await.map_err(refused)?;
            if !found {
                return Err(Failure::Refused(format!("no server named {name:?}")));
            }
            if json {
                crate::print_json(&serde_json::json!({"ok": true, "forgotten": name}))
            } else {
                crate::terminal::say!("server {name} forgotten");
                Ok(())
            }
        }
    }
}

/// `mfasync db migrate --to postgres://...`: copy the SQLite database into
/// PostgreSQL, verified table by table (`mfasync_store::copy_to_postgres`).
pub async fn cli_migrate(from: &str, to: &str, overwrite: bool, json: bool) -> crate::CmdResult {
    let report = mfasync_store::copy_to_postgres(from, to, overwrite)
        .await
        .map_err(|e| crate::Failure::Refused(format!("db migrate: {e}")))?;
    if json {
        return crate::print_json(&report);
    }
    for t in &report.tables {
        crate::terminal::say!(
            "{:16} {:>8} rows  checksum {}  ok",
            t.table,
            t.rows,
            t.checksum
        );
    }
    crate::terminal::say!(
        "copied and verified {} tables (not copied: {}); point every server at the new database with --database",
        report.tables.len(),
        report.skipped.join(", ")
    );
    Ok(())
}
