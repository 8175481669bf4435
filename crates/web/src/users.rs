//! The Users pages: the MFA users in the store, searched (`q`), filtered by
//! user group and paged (`/users`), and one user with its sync history
//! (`/users/{username}`). Fields are shown by their labels, never by their
//! key names.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use mfasync_core::MfaUser;
use mfasync_store::AuditEntry;
use serde::Deserialize;

use crate::auth::{csrf_refusal, Admin};
use crate::kit::{db_error, message, render, Chrome, Flash, When};
use crate::App;

/// Users on one page of the list.
const PAGE_SIZE: usize = 100;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/users", get(users))
        .route("/users/{username}", get(user_detail))
        .route("/users/{username}/otp", post(otp_enroll))
        .route("/users/{username}/otp/confirm", post(otp_confirm))
}

/// The label of a user field (`MfaUser::text_fields` and the audit's keys).
pub(crate) fn field_label(key: &str) -> &str {
    match key {
        "username" => "Username",
        "enabled" => "State",
        "source" => "Source",
        "directory_id" => "Directory id",
        "dn" => "Distinguished name",
        "first_name" => "First name",
        "last_name" => "Last name",
        "email" => "Email",
        "user_group" => "User group",
        "description" => "Description",
        "phone_call_language" => "Phone call language",
        "text_message_language" => "Text message language",
        "mobile_app_language" => "Mobile app language",
        "oath_token_language" => "OATH token language",
        "business_phone" => "Business phone",
        "home_phone" => "Home phone",
        "pager" => "Pager",
        "mobile_phone" => "Mobile phone",
        "fax" => "Fax",
        "ip_phone" => "IP phone",
        "custom_phone" => "Custom phone",
        "primary_phone" => "Primary phone",
        "extension" => "Extension",
        "backup_phone" => "Backup phone",
        "method" => "Method",
        "language" => "Language",
        "sync_item" => "Sync item",
        other => other,
    }
}

/// `/users?q=..&user_group=..&page=..` (page from 1).
#[derive(Deserialize, Default)]
#[serde(default)]
struct UsersQuery {
    q: String,
    user_group: String,
    page: Option<usize>,
}

impl UsersQuery {
    fn matches(&self, u: &MfaUser) -> bool {
        crate::api::user_matches(u, &self.q) && crate::api::in_user_group(u, &self.user_group)
    }

    /// The list's link to page `page`, keeping the search and the filter.
    fn link(&self, page: usize) -> String {
        let mut url = String::from("/users?");
        url.push_str(&format!("page={page}"));
        if !self.q.is_empty() {
            url.push_str(&format!("&q={}", crate::kit::url_component(&self.q)));
        }
        if !self.user_group.is_empty() {
            url.push_str(&format!(
                "&user_group={}",
                crate::kit::url_component(&self.user_group)
            ));
        }
        url
    }
}

/// One row of the list.
struct UserRow {
    username: String,
    name: String,
    email: String,
    primary_phone: String,
    method: String,
    user_group: String,
    description: String,
    enabled: bool,
    source: String,
    sync_item: String,
    /// The sync item's first RDN value ("Sales" of "OU=Sales,DC=x"); the
    /// whole DN is on hover.
    sync_item_name: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    q: String,
    groups: Vec<crate::kit::Choice>,
    total: usize,
    found: usize,
    /// 1-based numbers of the first and last user shown.
    first: usize,
    last: usize,
    rows: Vec<UserRow>,
    previous: Option<String>,
    next: Option<String>,
    page: usize,
    pages: usize,
}

async fn users(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Query(query): Query<UsersQuery>,
) -> Response {
    let all = match app.store.users().await {
        Ok(u) => u,
        Err(e) => return db_error(Some(&admin), e),
    };
    let found: Vec<&MfaUser> = all.iter().filter(|u| query.matches(u)).collect();
    let pages = found.len().div_ceil(PAGE_SIZE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let skip = (page - 1) * PAGE_SIZE;
    let rows: Vec<UserRow> = found
        .iter()
        .skip(skip)
        .take(PAGE_SIZE)
        .map(|u| UserRow {
            username: u.username.clone(),
            name: [u.first_name.as_deref(), u.last_name.as_deref()]
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            email: u.email.clone().unwrap_or_default(),
            primary_phone: u.primary_phone.clone().unwrap_or_default(),
            method: u.method.clone().unwrap_or_default(),
            user_group: u.user_group.clone().unwrap_or_default(),
            description: u.description.clone().unwrap_or_default(),
            enabled: u.enabled,
            source: u.source.as_str().to_string(),
            sync_item: u.sync_item.clone().unwrap_or_default(),
            sync_item_name: u.sync_item.as_deref().map(rdn_value).unwrap_or_default(),
        })
        .collect();
    render(&UsersPage {
        chrome: Chrome::new("Users", Some(&admin), "/users"),
        groups: user_group_choices(&all, &query.user_group),
        total: all.len(),
        found: found.len(),
        first: if rows.is_empty() { 0 } else { skip + 1 },
        last: skip + rows.len(),
        rows,
        previous: (page > 1).then(|| query.link(page - 1)),
        next: (page < pages).then(|| query.link(page + 1)),
        page,
        pages,
        q: query.q,
    })
}

/// The value of a DN's first RDN ("Sales" of "OU=Sales,DC=x"), or the
/// whole text when it is not a DN.
fn rdn_value(dn: &str) -> String {
    let first = dn.split(',').next().unwrap_or(dn);
    match first.split_once('=') {
        Some((_, v)) if !v.trim().is_empty() => v.trim().to_string(),
        _ => dn.to_string(),
    }
}

/// The user-group filter's options: "All" and every user group the stored
/// users have (sorted, once each regardless of case), `chosen` selected.
fn user_group_choices(users: &[MfaUser], chosen: &str) -> Vec<crate::kit::Choice> {
    use crate::kit::Choice;
    let mut groups: Vec<&str> = users
        .iter()
        .filter_map(|u| u.user_group.as_deref().map(str::trim))
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort_by_key(|g| g.to_lowercase());
    groups.dedup_by(|a, b| a.to_lowercase() == b.to_lowercase());
    let chosen = chosen.trim();
    let mut out = vec![Choice {
        value: String::new(),
        label: "All".into(),
        selected: chosen.is_empty(),
    }];
    let mut seen = chosen.is_empty();
    for g in groups {
        let selected = g.to_lowercase() == chosen.to_lowercase();
        seen |= selected;
        out.push(Choice {
            value: g.to_string(),
            label: g.to_string(),
            selected,
        });
    }
    if !seen {
        // A group no stored user has (a bookmarked link): kept, matches nobody.
        out.push(Choice {
            value: chosen.to_string(),
            label: chosen.to_string(),
            selected: true,
        });
    }
    out
}

/// One audit row of the user's history.
struct HistoryRow {
    at: When,
    action: String,
    actor: String,
    fields: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    chrome: Chrome,
    /// (label, value)
    fields: Vec<(&'static str, String)>,
    history: Vec<HistoryRow>,
    /// The username as a URL path segment.
    path: String,
    /// When the user's OATH secret was enrolled (None: not enrolled).
    otp: Option<When>,
}

async fn user_detail(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
) -> Response {
    let found = match app
        .store
        .users_by(
            mfasync_store::UserKey::UsernameLower,
            &[username.to_lowercase()],
        )
        .await
    {
        Ok(f) => f,
        Err(e) => return db_error(Some(&admin), e),
    };
    let Some(u) = found.into_iter().next() else {
        return message(
            StatusCode::NOT_FOUND,
            "User",
            Some(&admin),
            "/users",
            vec![Flash::error("No such MFA user.")],
        );
    };
    let mut fields: Vec<(&'static str, String)> = vec![
        ("Username", u.username.clone()),
        (
            "State",
            if u.enabled { "enabled" } else { "disabled" }.into(),
        ),
        ("Source", u.source.as_str().to_string()),
    ];
    for (name, value) in u.text_fields() {
        fields.push((static_label(name), value.clone().unwrap_or_default()));
    }
    // The user's audit rows (sync changes, manual inserts), newest first, by
    // username or directory id (indexed: the whole trail is searched).
    let audit = match app
        .store
        .user_audit(
            &u.username,
            u.directory_id.as_deref(),
            crate::charts::USER_HISTORY_ROWS,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return db_error(Some(&admin), e),
    };
    let otp = match app.store.otp_secret(&u.username).await {
        Ok(s) => s.map(|s| When::of(&s.enrolled_at)),
        Err(e) => return db_error(Some(&admin), e),
    };
    render(&UserPage {
        chrome: Chrome::new(format!("User {}", u.username), Some(&admin), "/users"),
        fields,
        history: audit.iter().map(history_row).collect(),
        path: crate::kit::url_component(&u.username),
        otp,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OtpForm {
    csrf: String,
    code: String,
}

/// The enrollment, shown once: the QR code, the URI, and a form to confirm a first code.
#[derive(Template)]
#[template(path = "otp.html")]
struct OtpPage {
    chrome: Chrome,
    username: String,
    path: String,
    uri: String,
    qr_svg: String,
}

/// `POST /users/{username}/otp`: a new OATH secret for the user.
async fn otp_enroll(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
    Form(form): Form<OtpForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    match app.backend.otp_enroll(&username, &admin.username).await {
        Ok(e) => render(&OtpPage {
            chrome: Chrome::new(
                format!("OATH token of {}", e.username),
                Some(&admin),
                "/users",
            ),
            path: crate::kit::url_component(&e.username),
            username: e.username,
            uri: e.uri,
            qr_svg: e.qr_svg,
        }),
        Err(why) => message(
            StatusCode::BAD_REQUEST,
            "OATH token",
            Some(&admin),
            "/users",
            vec![Flash::error(format!("Not enrolled: {why}."))],
        ),
    }
}

/// `POST /users/{username}/otp/confirm`: a code of the user's app, checked as
/// the RADIUS server checks it (and so used up).
async fn otp_confirm(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(username): Path<String>,
    Form(form): Form<OtpForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&admin, &form.csrf) {
        return r;
    }
    let (status, flash) = match app.backend.otp_check(&username, form.code.trim()).await {
        Ok(None) => (
            StatusCode::OK,
            Flash::ok("Code accepted: the authenticator app is set up."),
        ),
        Ok(Some(reason)) => (
            StatusCode::BAD_REQUEST,
            Flash::error(format!(
                "Code refused ({reason}): enter the next code the app shows."
            )),
        ),
        Err(why) => (StatusCode::BAD_REQUEST, Flash::error(why)),
    };
    message(status, "OATH token", Some(&admin), "/users", vec![flash])
}

/// `field_label` of a `'static` key.
fn static_label(key: &'static str) -> &'static str {
    field_label(key)
}

fn history_row(e: &AuditEntry) -> HistoryRow {
    HistoryRow {
        at: When::of(&e.at),
        action: e.action.clone(),
        actor: e.actor.clone(),
        fields: crate::charts::changed_fields(e)
            .iter()
            .map(|f| field_label(f))
            .collect::<Vec<_>>()
            .join(", "),
        detail: e.detail.clone().unwrap_or_default(),
    }
}
