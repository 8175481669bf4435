//! The servers sharing the database (issue 8): `GET /api/v1/servers` and the
//! portal's Servers page, read straight from the store (registry and sync
//! lease). The JSON document is the one `mfasync servers list --json` prints
//! ([`servers_json`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use mfasync_store::{rfc3339_ms, Lease, ServerInfo};
use serde::Deserialize;
use serde_json::{json, Value};

use askama::Template;

use crate::auth::{csrf_refusal, Admin};
use crate::kit::{db_error, render_with, Choice, Chrome, Flash, When};
use crate::App;

pub(crate) fn api_routes() -> utoipa_axum::router::OpenApiRouter<App> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(api_servers))
}

pub(crate) fn portal_routes() -> Router<App> {
    Router::new()
        .route("/servers", get(servers_get))
        .route("/servers/pin", post(pin))
}

/// Now, as Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Whether the lease is held (by anyone) at `now_ms`.
fn held(l: &Lease, now_ms: i64) -> bool {
    l.holder.is_some() && l.expires_ms > now_ms
}

/// `{"servers": [...], "lease": {...}}`: every registered server (name,
/// address, version, started_at, last_heartbeat, alive, runner, pinned) and
/// the lease (runner, token, expires_at, pinned).
pub fn servers_json(servers: &[ServerInfo], lease: &Lease, now_ms: i64) -> Value {
    let list: Vec<Value> = servers
        .iter()
        .map(|s| {
            let runner = held(lease, now_ms)
                && lease.holder.as_deref() == Some(s.name.as_str())
                && lease.instance.as_deref() == Some(s.instance.as_str());
            json!({
                "name": s.name,
                "address": s.address,
                "version": s.version,
                "started_at": rfc3339_ms(s.started_ms),
                "last_heartbeat": rfc3339_ms(s.heartbeat_ms),
                "alive": s.alive(now_ms),
                "runner": runner,
                "pinned": lease.pinned.as_deref() == Some(s.name.as_str()),
            })
        })
        .collect();
    let h = held(lease, now_ms);
    json!({
        "servers": list,
        "lease": {
            "runner": if h { lease.holder.clone() } else { None },
            "token": lease.token,
            "expires_at": if h { Some(rfc3339_ms(lease.expires_ms)) } else { None },
            "pinned": lease.pinned,
        },
    })
}

async fn load(app: &App) -> Result<Value, mfasync_store::StoreError> {
    let servers = app.store.servers().await?;
    let lease = app.store.lease().await?;
    Ok(servers_json(&servers, &lease, now_ms()))
}

#[utoipa::path(
    get,
    path = "/servers",
    operation_id = "servers",
    summary = "The servers sharing the database and the sync lease (`mfasync servers list --json`)",
    responses(
        (status = 200, description = "Servers and lease", body = crate::schemas::Servers),
        (status = 401, description = "Not signed in: no or unknown bearer token", body = crate::schemas::Error),
    ),
)]
async fn api_servers(State(app): State<App>) -> Response {
    match load(&app).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::error!("store: {e}");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "database error"})),
            )
                .into_response()
        }
    }
}

async fn servers_get(State(app): State<App>, Extension(admin): Extension<Admin>) -> Response {
    servers_page(&app, &admin, StatusCode::OK, Vec::new()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PinForm {
    csrf: String,
    /// A server name, or empty for automatic.
    server: String,
}

/// The seed's choice of "the" synchronization server: pin (or unpin, with
/// an empty name), audited with the administrator's name.
async fn pin(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<PinForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let name = form.server.trim();
    if !name.is_empty() {
        match app.store.servers().await {
            Ok(list) if list.iter().any(|s| s.name == name) => {}
            Ok(_) => {
                let msg = Flash::error(format!("No server named {name} has registered."));
                return servers_page(&app, &admin, StatusCode::UNPROCESSABLE_ENTITY, vec![msg])
                    .await;
            }
            Err(e) => return db_error(Some(&admin), e),
        }
    }
    let pinned = (!name.is_empty()).then_some(name);
    if let Err(e) = app.store.lease_pin(pinned, &admin.username).await {
        return db_error(Some(&admin), e);
    }
    tracing::info!("synchronization pinned to {pinned:?} by {}", admin.username);
    let msg = match pinned {
        Some(n) => Flash::ok(format!(
            "Synchronization pinned to server {n}: it takes over within one lease period."
        )),
        None => Flash::ok("Synchronization is automatic again."),
    };
    servers_page(&app, &admin, StatusCode::OK, vec![msg]).await
}

/// One registered server as listed.
struct ServerRow {
    name: String,
    address: String,
    version: String,
    started: When,
    heartbeat: When,
    alive: bool,
    role: String,
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    chrome: Chrome,
    flash: Vec<Flash>,
    pinned: Option<String>,
    /// (runner, fencing token, lease until)
    runner: Option<(String, String, When)>,
    servers: Vec<ServerRow>,
    choices: Vec<Choice>,
}

async fn servers_page(app: &App, admin: &Admin, status: StatusCode, flash: Vec<Flash>) -> Response {
    let v = match load(app).await {
        Ok(v) => v,
        Err(e) => return db_error(Some(admin), e),
    };
    let text = |x: &Value| x.as_str().unwrap_or("").to_string();
    let pinned = v["lease"]["pinned"].as_str().map(str::to_string);
    let runner = v["lease"]["runner"].as_str().map(|r| {
        (
            r.to_string(),
            v["lease"]["token"].to_string(),
            When::of(&text(&v["lease"]["expires_at"])),
        )
    });
    let list = v["servers"].as_array().cloned().unwrap_or_default();
    let servers = list
        .iter()
        .map(|s| {
            let mut role = Vec::new();
            if s["runner"] == true {
                role.push("runs synchronization");
            }
            if s["pinned"] == true {
                role.push("pinned");
            }
            ServerRow {
                name: text(&s["name"]),
                address: text(&s["address"]),
                version: text(&s["version"]),
                started: When::of(&text(&s["started_at"])),
                heartbeat: When::of(&text(&s["last_heartbeat"])),
                alive: s["alive"] == true,
                role: role.join(", "),
            }
        })
        .collect::<Vec<_>>();
    // the seed's choice: which server synchronizes
    let chosen = pinned.clone().unwrap_or_default();
    let mut choices = vec![Choice {
        value: String::new(),
        label: "Automatic (any server, failover)".into(),
        selected: chosen.is_empty(),
    }];
    choices.extend(servers.iter().map(|s| Choice {
        value: s.name.clone(),
        label: s.name.clone(),
        selected: s.name == chosen,
    }));
    render_with(
        status,
        &ServersPage {
            chrome: Chrome::new("Servers", Some(admin), "/servers"),
            flash,
            pinned,
            runner,
            servers,
            choices,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, instance: &str, heartbeat_ms: i64) -> ServerInfo {
        ServerInfo {
            name: name.into(),
            instance: instance.into(),
            address: format!("{name}:8080"),
            version: "0.1.0".into(),
            started_ms: 0,
            heartbeat_ms,
            lease_ms: 30_000,
        }
    }

    #[test]
    fn runner_alive_and_pinned() {
        let lease = Lease {
            holder: Some("a".into()),
            instance: Some("i1".into()),
            token: 7,
            expires_ms: 100_000,
            pinned: Some("b".into()),
        };
        let v = servers_json(
            &[server("a", "i1", 90_000), server("b", "i2", 10_000)],
            &lease,
            95_000,
        );
        assert_eq!(v["servers"][0]["runner"], true);
        assert_eq!(v["servers"][0]["alive"], true);
        assert_eq!(v["servers"][1]["runner"], false);
        assert_eq!(v["servers"][1]["alive"], false, "85 s without heartbeat");
        assert_eq!(v["servers"][1]["pinned"], true);
        assert_eq!(v["lease"]["runner"], "a");
        assert_eq!(v["lease"]["token"], 7);
        assert_eq!(v["lease"]["expires_at"], "1970-01-01T00:01:40Z");
        // an older process of the same name is not the runner
        let v = servers_json(&[server("a", "i0", 90_000)], &lease, 95_000);
        assert_eq!(v["servers"][0]["runner"], false);
        // expired: nobody runs
        let v = servers_json(&[server("a", "i1", 90_000)], &lease, 100_000);
        assert_eq!(v["lease"]["runner"], Value::Null);
        assert_eq!(v["servers"][0]["runner"], false);
    }
}
