//! The store contract: every case runs once against SQLite (a file in a temp
//! dir) and once against PostgreSQL (a fresh database per test).
//!
//! PostgreSQL: by default a private cluster started by `mfasync-testkit`
//! (`shared_postgres()`, one per test binary) with a fresh database per test;
//! set `MFASYNC_TEST_PG` (e.g. `postgres://postgres@127.0.0.1:55432/postgres`)
//! to use an existing server instead (each test creates its own database on it).
//!
//! The 100,000-create timing cases are `#[ignore]`d: run them with
//! `cargo test -p mfasync-store --release --test contract -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use mfasync_core::plan::{Action, Change};
use mfasync_core::user::Source;
use mfasync_core::MfaUser;
use mfasync_store::{
    ApprovalStatus, AuthToken, HeldChange, PgStore, SqliteStore, Store, StoreError, SyncRun,
    UserDecision, UserStore, Watermark,
};

// ---------------------------------------------------------------- harness

async fn sqlite_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfa.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    (dir, store)
}

/// A fresh, empty database: on the server named by `MFASYNC_TEST_PG` when set,
/// else on the testkit's private cluster (started once per test binary).
async fn pg_store() -> PgStore {
    let url = match std::env::var("MFASYNC_TEST_PG") {
        Ok(base) => {
            use sqlx::Connection as _;
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            let name = format!("mfasync_store_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
        Err(_) => {
            tokio::task::spawn_blocking(|| mfasync_testkit::shared_postgres().fresh_database())
                .await
                .unwrap()
        }
    };
    PgStore::open(&url).await.unwrap()
}

/// Declare contract cases: each `async fn name(s: &dyn Store)` becomes
/// `sqlite::name` and `postgres::name`.
macro_rules! contract {
    ($( $(#[$attr:meta])* $name:ident ),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::pg_store().await;
                    super::$name(&store).await;
                }
            )*
        }
    };
}

contract!(
    empty_store,
    insert_and_read_back_every_field,
    users_are_ordered_by_username,
    username_unique_case_insensitively,
    directory_id_unique,
    apply_creates_updates_enables_disables_removes,
    apply_with_a_bad_change_commits_nothing,
    apply_failure_in_a_late_create_chunk_commits_nothing,
    watermark_set_and_replaced_with_changes,
    domain_watermarks_are_replaced_with_the_watermark,
    config_versions_newest_active,
    config_versions_rewritten_in_place,
    config_stored_only_over_the_active_version,
    sync_runs,
    audit_records_before_and_after,
    user_audit_by_username_or_directory_id,
    many_creates_cross_chunk_boundaries,
    many_updates_and_removes_cross_chunk_boundaries,
    bad_change_late_in_a_long_update_run_commits_nothing,
    two_changes_to_one_user_in_one_plan,
    concurrent_writers_wait_for_each_other,
    approvals_pending_superseded_and_decided,
    approvals_decisions_only_on_pending,
    approvals_superseded_when_no_longer_needed,
    approvals_decided_user_by_user,
    audit_events,
    users_by_key,
    inline_lookups_read_what_was_committed,
    admin_passwords,
    sessions_and_api_tokens,
    servers_register_heartbeat_and_forget,
    lease_taken_renewed_expired_and_taken_over,
    lease_pinned_to_one_server,
    sync_requests_coalesce_and_are_taken_once,
    fenced_writes_refused_after_takeover_or_expiry,
    user_digests_follow_every_write,
    raw_stamps_are_written_only_for_the_row_they_were_mapped_to,
    streamed_apply_is_one_transaction,
    outbox_rows_are_written_in_the_plan_transaction,
    outbox_welcome_once_per_directory_user,
    outbox_claim_send_retry_and_give_up,
    outbox_retry_requeues_failed_never_sent,
    outbox_summary_rows_belong_to_no_user,
    otp_secrets_follow_their_user_and_accept_each_step_once,
    removal_moves_the_user_into_the_bin_and_a_create_restores_it,
    bin_restore_and_purge_by_name,
    bin_retention_purges_by_age,
    #[ignore]
    hundred_thousand_creates,
);

// ---------------------------------------------------------------- helpers

async fn users_by_key(s: &dyn Store) {
    use mfasync_store::UserKey;
    let mut users: Vec<MfaUser> = (0..1200)
        .map(|i| dir_user(&format!("u{i:04}"), &format!("id-{i}")))
        .collect();
    users[1].sync_item = Some("CN=vip,DC=example,DC=com".into());
    users[2].username = "MixedCase".into();
    let changes: Vec<Change> = users.iter().map(create).collect();
    s.apply(&changes, None).await.unwrap();
    s.insert_user(&manual_user("Hand")).await.unwrap();
    // users_each: the same users in the same order as users()
    s.insert_user(&manual_user("Émile")).await.unwrap();
    s.insert_user(&manual_user("zed")).await.unwrap();
    let mut each = Vec::new();
    s.users_each(&mut |u| {
        each.push(u);
        true
    })
    .await
    .unwrap();
    assert_eq!(each, s.users().await.unwrap());
    let mut first = 0;
    s.users_each(&mut |_| {
        first += 1;
        false
    })
    .await
    .unwrap();
    assert_eq!(first, 1, "false stops");
    let names = |v: Vec<MfaUser>| {
        sorted(v)
            .into_iter()
            .map(|u| u.username)
            .collect::<Vec<_>>()
    };
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    assert_eq!(
        names(
            s.users_by(UserKey::DirectoryId, &v(&["id-0", "id-3", "nope"]))
                .await
                .unwrap()
        ),
        ["u0000", "u0003"]
    );
    assert_eq!(
        names(
            s.users_by(UserKey::Dn, &v(&["CN=u0005,OU=Staff,DC=example,DC=com"]))
                .await
                .unwrap()
        ),
        ["u0005"]
    );
    assert_eq!(
        names(
            s.users_by(UserKey::UsernameLower, &v(&["mixedcase", "hand"]))
                .await
                .unwrap()
        ),
        ["Hand", "MixedCase"]
    );
    assert_eq!(
        names(
            s.users_by(UserKey::SyncItem, &v(&["CN=vip,DC=example,DC=com"]))
                .await
                .unwrap()
        ),
        ["u0001"]
    );
    assert!(s.users_by(UserKey::Dn, &[]).await.unwrap().is_empty());
    // more values than one statement takes
    let ids: Vec<String> = (0..1200).map(|i| format!("id-{i}")).collect();
    assert_eq!(
        s.users_by(UserKey::DirectoryId, &ids).await.unwrap().len(),
        1200
    );
}

/// After `read_inline` (the service's password checks), small lookups give
/// exactly what the pool gives, every field, and see each commit at once.
async fn inline_lookups_read_what_was_committed(s: &dyn Store) {
    use mfasync_store::UserKey;
    s.read_inline();
    s.read_inline(); // (a second call changes nothing)
    let full = full_user();
    let lower = vec![full.username.to_lowercase()];
    assert!(s
        .users_by(UserKey::UsernameLower, &lower)
        .await
        .unwrap()
        .is_empty());
    s.apply(&[create(&full)], None).await.unwrap();
    assert_eq!(
        s.users_by(UserKey::UsernameLower, &lower).await.unwrap(),
        std::slice::from_ref(&full)
    );
    let mut enabled = full.clone();
    enabled.enabled = true;
    enabled.mobile_phone = Some("+15550000001".into());
    s.apply(&[change(Action::Update, &full, &enabled)], None)
        .await
        .unwrap();
    let ids = vec![full.directory_id.clone().unwrap()];
    assert_eq!(
        s.users_by(UserKey::DirectoryId, &ids).await.unwrap(),
        [enabled.clone()]
    );
    s.insert_user(&manual_user("Hand")).await.unwrap();
    let both = vec!["hand".to_string(), lower[0].clone()];
    assert_eq!(
        sorted(s.users_by(UserKey::UsernameLower, &both).await.unwrap()),
        sorted(vec![manual_user("Hand"), enabled.clone()])
    );
    s.apply(&[remove(&enabled)], None).await.unwrap();
    assert!(s
        .users_by(UserKey::DirectoryId, &ids)
        .await
        .unwrap()
        .is_empty());
    // more values than an inline lookup takes: the pool, same answer
    let many: Vec<String> = (0..=mfasync_store::INLINE_LOOKUP)
        .map(|i| format!("nobody{i}"))
        .chain(["hand".to_string()])
        .collect();
    assert_eq!(
        s.users_by(UserKey::UsernameLower, &many).await.unwrap(),
        [manual_user("Hand")]
    );
}

fn dir_user(name: &str, id: &str) -> MfaUser {
    MfaUser {
        username: name.to_string(),
        directory_id: Some(id.to_string()),
        dn: Some(format!("CN={name},OU=Staff,DC=example,DC=com")),
        email: Some(format!("{name}@example.com")),
        enabled: true,
        sync_item: Some("OU=Staff,DC=example,DC=com".to_string()),
        source: Source::Directory,
        ..MfaUser::default()
    }
}

fn manual_user(name: &str) -> MfaUser {
    MfaUser {
        username: name.to_string(),
        enabled: true,
        source: Source::Manual,
        ..MfaUser::default()
    }
}

/// A user with every field set, to distinct and partly non-ASCII values.
fn full_user() -> MfaUser {
    let mut u = MfaUser {
        username: "jürgen.øyvind".to_string(),
        enabled: false,
        source: Source::Directory,
        ..MfaUser::default()
    };
    let names: Vec<&str> = u.text_fields().iter().map(|(n, _)| *n).collect();
    for (i, name) in names.into_iter().enumerate() {
        *u.text_field_mut(name).unwrap() = Some(format!("{name}-{i} Ünïcødé 東京 😀 'quote\" ,;"));
    }
    u.directory_id = Some("0f8fad5b-d9cb-469f-a165-70867728950e".to_string());
    u.primary_phone = Some("+15551234567".to_string());
    u
}

fn create(u: &MfaUser) -> Change {
    Change {
        action: Action::Create,
        user: u.clone(),
        before: None,
        fields: vec![],
        reason: None,
        raw: None,
    }
}

fn change(action: Action, before: &MfaUser, after: &MfaUser) -> Change {
    Change {
        action,
        user: after.clone(),
        before: Some(before.clone()),
        fields: before.diff_fields(after),
        reason: Some("test".to_string()),
        raw: None,
    }
}

fn remove(u: &MfaUser) -> Change {
    Change {
        action: Action::Remove,
        user: u.clone(),
        before: Some(u.clone()),
        fields: vec![],
        reason: Some("no longer in the directory".to_string()),
        raw: None,
    }
}

fn wm(value: &str) -> Watermark {
    Watermark {
        kind: mfasync_store::MarkKind::DirSync,
        server: "dc1.example.com".to_string(),
        value: value.as_bytes().to_vec(),
        items_fingerprint: "fp-1".to_string(),
        mapping_fingerprint: "map-1".to_string(),
        domains: Vec::new(),
    }
}

fn sorted(mut users: Vec<MfaUser>) -> Vec<MfaUser> {
    users.sort_by(|a, b| {
        a.username
            .to_lowercase()
            .cmp(&b.username.to_lowercase())
            .then_with(|| a.username.cmp(&b.username))
    });
    users
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && t.ends_with('Z')
        && t[..4].chars().all(|c| c.is_ascii_digit())
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

// ---------------------------------------------------------------- cases

async fn empty_store(s: &dyn Store) {
    assert!(s.users().await.unwrap().is_empty());
    assert_eq!(s.watermark().await.unwrap(), None);
    assert_eq!(s.active_config().await.unwrap(), None);
    assert!(s.config_versions().await.unwrap().is_empty());
    assert!(s.runs(10).await.unwrap().is_empty());
    assert!(s.audit(10).await.unwrap().is_empty());
    // An empty plan without a watermark is a no-op.
    s.apply(&[], None).await.unwrap();
    assert!(s.users().await.unwrap().is_empty());
    assert_eq!(s.watermark().await.unwrap(), None);
}

async fn insert_and_read_back_every_field(s: &dyn Store) {
    let full = full_user();
    let bare = MfaUser {
        username: "bare".to_string(),
        ..MfaUser::default()
    };
    let manual = manual_user("Ünïcødé-manual");
    for u in [&full, &bare, &manual] {
        s.insert_user(u).await.unwrap();
    }
    let got = s.users().await.unwrap();
    assert_eq!(got, sorted(vec![full.clone(), bare, manual]));
    // every text field really came back set
    let f = got.iter().find(|u| u.username == full.username).unwrap();
    assert!(f.text_fields().iter().all(|(_, v)| v.is_some()));
    assert!(!f.enabled);
    // insert_user is audited
    let audit = s.audit(10).await.unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit
        .iter()
        .all(|a| a.action == "insert" && a.before.is_none()));
}

async fn users_are_ordered_by_username(s: &dyn Store) {
    for (n, id) in [("carol", "3"), ("Bob", "2"), ("alice", "1"), ("Émile", "4")] {
        s.insert_user(&dir_user(n, id)).await.unwrap();
    }
    let names: Vec<String> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "Bob", "carol", "Émile"]);
    // streamed one at a time, in the same order, with every field
    for (n, id) in [("Ärger", "5"), ("zeta", "6"), ("ZZ", "7"), ("a-b", "8")] {
        s.insert_user(&dir_user(n, id)).await.unwrap();
    }
    s.insert_user(&full_user()).await.unwrap();
    let mut streamed = Vec::new();
    s.users_each(&mut |u| {
        streamed.push(u);
        true
    })
    .await
    .unwrap();
    assert_eq!(streamed, s.users().await.unwrap());
    // and stopped when asked
    let mut first = Vec::new();
    s.users_each(&mut |u| {
        first.push(u.username);
        first.len() < 2
    })
    .await
    .unwrap();
    assert_eq!(first, ["a-b", "alice"]);
}

async fn username_unique_case_insensitively(s: &dyn Store) {
    s.insert_user(&manual_user("Alice")).await.unwrap();
    assert!(is_conflict(&s.insert_user(&manual_user("ALICE")).await));
    assert!(is_conflict(
        &s.insert_user(&dir_user("alice", "id-a")).await
    ));
    s.insert_user(&manual_user("Ärger")).await.unwrap();
    assert!(is_conflict(&s.insert_user(&manual_user("äRGER")).await));
    // through apply too, and nothing of that plan is kept
    let r = s
        .apply(
            &[
                create(&dir_user("bob", "id-b")),
                create(&dir_user("aLiCe", "id-c")),
            ],
            None,
        )
        .await;
    assert!(is_conflict(&r), "{r:?}");
    // two creates of the same plan colliding with each other
    let r = s
        .apply(
            &[
                create(&dir_user("dave", "id-d")),
                create(&dir_user("DAVE", "id-e")),
            ],
            None,
        )
        .await;
    assert!(is_conflict(&r), "{r:?}");
    let names: Vec<String> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["Alice", "Ärger"]);
}

async fn directory_id_unique(s: &dyn Store) {
    s.insert_user(&dir_user("alice", "guid-1")).await.unwrap();
    assert!(is_conflict(
        &s.insert_user(&dir_user("bob", "guid-1")).await
    ));
    assert!(is_conflict(
        &s.apply(&[create(&dir_user("bob", "guid-1"))], None).await
    ));
    // several users without a directory_id are fine
    s.insert_user(&manual_user("m1")).await.unwrap();
    s.insert_user(&manual_user("m2")).await.unwrap();
    assert_eq!(s.users().await.unwrap().len(), 3);
}

async fn apply_creates_updates_enables_disables_removes(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    let b = dir_user("bob", "id-b");
    let mut c = dir_user("carol", "id-c");
    c.enabled = false;
    let d = dir_user("dave", "id-d");
    let m = manual_user("manual");
    s.insert_user(&m).await.unwrap();
    s.apply(&[create(&a), create(&b), create(&c), create(&d)], None)
        .await
        .unwrap();
    assert_eq!(
        s.users().await.unwrap(),
        vec![a.clone(), b.clone(), c.clone(), d.clone(), m.clone()]
    );

    // update (incl. a rename and a field set to NULL), enable, disable, remove
    let mut a2 = a.clone();
    a2.username = "Alice.Smith".to_string();
    a2.email = None;
    a2.mobile_phone = Some("+4915112345678".to_string());
    let mut c2 = c.clone();
    c2.enabled = true;
    let mut b2 = b.clone();
    b2.enabled = false;
    s.apply(
        &[
            change(Action::Update, &a, &a2),
            change(Action::Enable, &c, &c2),
            change(Action::Disable, &b, &b2),
            remove(&d),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        s.users().await.unwrap(),
        vec![a2.clone(), b2.clone(), c2.clone(), m.clone()]
    );

    // a directory_id change: the row is found by before.directory_id
    let mut a3 = a2.clone();
    a3.directory_id = Some("id-a-new".to_string());
    s.apply(&[change(Action::Update, &a2, &a3)], None)
        .await
        .unwrap();
    assert_eq!(s.users().await.unwrap(), vec![a3, b2, c2, m]);
}

async fn otp_secrets_follow_their_user_and_accept_each_step_once(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    let b = dir_user("bob", "id-b");
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    assert!(!s.otp_enroll("nobody", "v1:x", "admin").await.unwrap());
    assert!(s.otp_enroll("ALICE", "v1:sealed-a", "admin").await.unwrap());
    assert!(s.otp_enroll("bob", "v1:sealed-b", "admin").await.unwrap());
    let got = s.otp_secret("alice").await.unwrap().unwrap();
    assert_eq!((got.sealed.as_str(), got.last_step), ("v1:sealed-a", None));
    assert!(!format!("{got:?}").contains("sealed-a"));
    // each step once, never an earlier one
    assert!(s.otp_accept_step("alice", 100).await.unwrap());
    assert!(!s.otp_accept_step("alice", 100).await.unwrap());
    assert!(!s.otp_accept_step("alice", 99).await.unwrap());
    assert!(s.otp_accept_step("alice", 101).await.unwrap());
    assert!(!s.otp_accept_step("nobody", 5).await.unwrap());
    // a rename keeps the secret; re-enrolling starts over
    let mut a2 = a.clone();
    a2.username = "alice.smith".into();
    s.apply(&[change(Action::Update, &a, &a2)], None)
        .await
        .unwrap();
    let got = s.otp_secret("Alice.Smith").await.unwrap().unwrap();
    assert_eq!(got.last_step, Some(101));
    assert!(s
        .otp_enroll("alice.smith", "v1:new", "admin")
        .await
        .unwrap());
    assert_eq!(
        s.otp_secret("alice.smith")
            .await
            .unwrap()
            .unwrap()
            .last_step,
        None
    );
    // re-sealed by row id
    let all = s.otp_all().await.unwrap();
    assert_eq!(all.len(), 2);
    let resealed: Vec<(i64, String)> = all.iter().map(|(id, v)| (*id, format!("{v}!"))).collect();
    s.otp_reseal(&resealed).await.unwrap();
    assert_eq!(
        s.otp_secret("bob").await.unwrap().unwrap().sealed,
        "v1:sealed-b!"
    );
    // removed with the user, and on its own
    s.apply(&[remove(&a2)], None).await.unwrap();
    assert!(s.otp_secret("alice.smith").await.unwrap().is_none());
    assert_eq!(s.otp_all().await.unwrap().len(), 1);
    assert!(s.otp_remove("bob", "admin").await.unwrap());
    assert!(!s.otp_remove("bob", "admin").await.unwrap());
    let actions: Vec<String> = s
        .audit(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("otp-"))
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "otp-enrolled").count(),
        3,
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| *a == "otp-removed").count(), 1);
}

async fn apply_with_a_bad_change_commits_nothing(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    let mut m = manual_user("manny");
    m.directory_id = Some("id-m".to_string());
    s.insert_user(&m).await.unwrap();
    s.apply(&[create(&a)], Some(&wm("w1"))).await.unwrap();
    let users0 = s.users().await.unwrap();
    let audit0 = s.audit(100).await.unwrap();

    let mut a2 = a.clone();
    a2.email = Some("new@example.com".to_string());
    let mut m_as_dir = m.clone();
    m_as_dir.source = Source::Directory;
    m_as_dir.enabled = false;
    let bad_plans: Vec<(&str, Vec<Change>)> = vec![
        (
            "update of a manual user",
            vec![
                create(&dir_user("bob", "id-b")),
                change(Action::Update, &a, &a2),
                change(Action::Disable, &m_as_dir, &m_as_dir),
            ],
        ),
        (
            "remove of a manual user",
            vec![change(Action::Update, &a, &a2), remove(&m)],
        ),
        (
            "create with a taken username",
            vec![
                change(Action::Update, &a, &a2),
                create(&dir_user("MANNY", "id-x")),
            ],
        ),
        (
            "update of a missing row",
            vec![
                create(&dir_user("bob", "id-b")),
                change(
                    Action::Update,
                    &dir_user("zed", "id-z"),
                    &dir_user("zed", "id-z"),
                ),
            ],
        ),
        (
            "remove of a missing row",
            vec![
                change(Action::Update, &a, &a2),
                remove(&dir_user("zed", "id-z")),
            ],
        ),
        (
            "update renaming onto a taken username",
            vec![
                create(&dir_user("bob", "id-b")),
                change(Action::Update, &a, &dir_user("Manny", "id-a")),
            ],
        ),
        (
            "create of a manual user",
            vec![create(&dir_user("bob", "id-b")), create(&manual_user("mo"))],
        ),
    ];
    for (what, plan) in bad_plans {
        let r = s.apply(&plan, Some(&wm("w2"))).await;
        assert!(r.is_err(), "{what}: {r:?}");
        assert_eq!(s.users().await.unwrap(), users0, "{what}");
        assert_eq!(s.watermark().await.unwrap(), Some(wm("w1")), "{what}");
        assert_eq!(s.audit(100).await.unwrap(), audit0, "{what}");
    }
}

async fn apply_failure_in_a_late_create_chunk_commits_nothing(s: &dyn Store) {
    s.insert_user(&manual_user("taken")).await.unwrap();
    let mut plan: Vec<Change> = (0..1200)
        .map(|i| create(&dir_user(&format!("u{i:05}"), &format!("id-{i}"))))
        .collect();
    plan.push(create(&dir_user("Taken", "id-taken")));
    let r = s.apply(&plan, Some(&wm("w"))).await;
    assert!(is_conflict(&r), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("create Taken") && msg.contains("manual user taken"),
        "{msg}"
    );
    assert_eq!(s.users().await.unwrap(), vec![manual_user("taken")]);
    assert_eq!(s.watermark().await.unwrap(), None);
    assert_eq!(s.audit(10).await.unwrap().len(), 1);
}

async fn watermark_set_and_replaced_with_changes(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    s.apply(&[create(&a)], Some(&wm("cookie-1"))).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(wm("cookie-1")));

    let b = dir_user("bob", "id-b");
    let mut w2 = wm("cookie-2");
    w2.kind = mfasync_store::MarkKind::Usn;
    w2.server = "dc2.example.com".to_string();
    w2.value = vec![0, 255, 1, 128];
    w2.items_fingerprint = "fp-2".to_string();
    w2.mapping_fingerprint = "map-2".to_string();
    s.apply(&[create(&b)], Some(&w2)).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(w2.clone()));

    // a plan without a watermark leaves it alone; a watermark alone replaces it
    s.apply(&[remove(&b)], None).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(w2));
    s.apply(&[], Some(&wm("cookie-3"))).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(wm("cookie-3")));
    assert_eq!(s.users().await.unwrap(), vec![a.clone()]);

    // a failing plan keeps the old watermark
    let r = s.apply(&[create(&a)], Some(&wm("cookie-4"))).await;
    assert!(r.is_err());
    assert_eq!(s.watermark().await.unwrap(), Some(wm("cookie-3")));
}

async fn domain_watermarks_are_replaced_with_the_watermark(s: &dyn Store) {
    let dom = |domain: &str, value: &[u8]| mfasync_store::DomainWatermark {
        domain: domain.to_string(),
        kind: mfasync_store::MarkKind::DirSync,
        server: format!("ldap://dc.{domain}:389"),
        value: value.to_vec(),
    };
    let mut w1 = wm("cookie-1");
    // stored and read back sorted by domain, bytes intact
    w1.domains = vec![dom("b.example", &[0, 255, 7]), dom("a.example", b"x")];
    s.apply(&[create(&dir_user("alice", "id-a"))], Some(&w1))
        .await
        .unwrap();
    let got = s.watermark().await.unwrap().unwrap();
    assert_eq!(
        got.domains,
        vec![dom("a.example", b"x"), dom("b.example", &[0, 255, 7])]
    );

    // a plan without a watermark leaves them; a failing plan keeps them
    s.apply(&[remove(&dir_user("alice", "id-a"))], None)
        .await
        .unwrap();
    assert_eq!(s.watermark().await.unwrap().unwrap().domains.len(), 2);
    let mut bad = wm("cookie-bad");
    bad.domains = vec![dom("c.example", b"c")];
    let r = s
        .apply(
            &[
                create(&dir_user("bob", "id-b")),
                create(&dir_user("bob", "id-b")),
            ],
            Some(&bad),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(s.watermark().await.unwrap().unwrap().domains.len(), 2);

    // a new watermark replaces the set as a whole (one domain left, then none)
    let mut w2 = wm("cookie-2");
    w2.domains = vec![dom("b.example", b"new")];
    s.apply(&[], Some(&w2)).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(w2));
    s.apply(&[], Some(&wm("cookie-3"))).await.unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(wm("cookie-3")));
}

async fn config_versions_newest_active(s: &dyn Store) {
    assert_eq!(s.put_config("a = 1\n").await.unwrap(), 1);
    assert_eq!(s.put_config("a = 2\n").await.unwrap(), 2);
    assert_eq!(s.put_config("a = \"ü\"\n").await.unwrap(), 3);
    let active = s.active_config().await.unwrap().unwrap();
    assert_eq!(active.version, 3);
    assert_eq!(active.toml, "a = \"ü\"\n");
    let all = s.config_versions().await.unwrap();
    assert_eq!(all.iter().map(|c| c.version).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(all[2].toml, "a = 1\n");
    assert!(is_rfc3339_utc(&all[0].created_at), "{}", all[0].created_at);
    let audit = s.audit(10).await.unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0].action, "config");
    assert_eq!(audit[0].detail.as_deref(), Some("config version 3"));
}

async fn config_stored_only_over_the_active_version(s: &dyn Store) {
    assert_eq!(s.put_config("a = 1\n").await.unwrap(), 1);
    let v = s
        .put_config_if_active("a = 2\n", 1, "sync", "sync.items[0] renamed")
        .await
        .unwrap();
    assert_eq!(v, Some(2));
    let audit = s.audit(1).await.unwrap();
    assert_eq!(audit[0].actor, "sync");
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("config version 2: sync.items[0] renamed")
    );
    // based on version 1, which is no longer active: nothing stored
    assert_eq!(
        s.put_config_if_active("a = 3\n", 1, "sync", "x")
            .await
            .unwrap(),
        None
    );
    let active = s.active_config().await.unwrap().unwrap();
    assert_eq!((active.version, active.toml.as_str()), (2, "a = 2\n"));
    assert_eq!(s.config_versions().await.unwrap().len(), 2);
}

async fn config_versions_rewritten_in_place(s: &dyn Store) {
    use mfasync_store::ConfigRewrite;
    for t in ["a = 1\n", "a = 2\n", "a = 3\n"] {
        s.put_config(t).await.unwrap();
    }
    let rewrite = |version: i64, old: &str, new: &str| ConfigRewrite {
        version,
        old: old.into(),
        new: new.into(),
    };
    s.rewrite_configs(
        &[
            rewrite(1, "a = 1\n", "a = 10\n"),
            rewrite(3, "a = 3\n", "a = 30\n"),
        ],
        "cli",
        "config-rekey",
        "2 versions",
    )
    .await
    .unwrap();
    let all = s.config_versions().await.unwrap();
    let texts: Vec<_> = all.iter().map(|c| (c.version, c.toml.as_str())).collect();
    assert_eq!(texts, [(3, "a = 30\n"), (2, "a = 2\n"), (1, "a = 10\n")]);
    assert_eq!(s.active_config().await.unwrap().unwrap().version, 3);
    let audit = s.audit(1).await.unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("config-rekey", "cli")
    );
    assert_eq!(audit[0].detail.as_deref(), Some("2 versions"));
    // a text changed since it was read: nothing rewritten, not even the first
    let r = s
        .rewrite_configs(
            &[
                rewrite(2, "a = 2\n", "a = 20\n"),
                rewrite(1, "a = 1\n", "a = 100\n"),
            ],
            "cli",
            "config-rekey",
            "2 versions",
        )
        .await;
    assert!(
        matches!(r, Err(mfasync_store::StoreError::Conflict(_))),
        "{r:?}"
    );
    let all = s.config_versions().await.unwrap();
    assert_eq!(
        (all[1].toml.as_str(), all[2].toml.as_str()),
        ("a = 2\n", "a = 10\n")
    );
    assert_eq!(s.audit(10).await.unwrap().len(), 4);
}

async fn sync_runs(s: &dyn Store) {
    let r1 = s.run_started("full").await.unwrap();
    let r2 = s.run_started("incremental").await.unwrap();
    assert_ne!(r1, r2);
    let runs = s.runs(10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, r2, "newest first");
    assert_eq!(runs[0].finished_at, None);
    assert_eq!(runs[1].mode, "full");

    let done = SyncRun {
        id: r1,
        started_at: runs[1].started_at.clone(),
        finished_at: None,
        mode: "full".to_string(),
        created: 5,
        updated: 4,
        enabled: 3,
        disabled: 2,
        removed: 1,
        unchanged: 1000,
        error: None,
        entries_read: None,
        interrupted: false,
        note: None,
    };
    s.run_finished(&done).await.unwrap();
    let failed = SyncRun {
        id: r2,
        mode: "incremental".to_string(),
        error: Some("LDAP server down: dc1 ✗".to_string()),
        finished_at: Some("2026-01-02T03:04:05Z".to_string()),
        entries_read: Some(42),
        note: Some("sync items changed: a full synchronization".to_string()),
        ..done.clone()
    };
    s.run_finished(&failed).await.unwrap();
    let runs = s.runs(10).await.unwrap();
    assert_eq!(runs[0].error.as_deref(), Some("LDAP server down: dc1 ✗"));
    assert_eq!(runs[0].finished_at.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(runs[0].entries_read, Some(42));
    assert_eq!(
        runs[0].note.as_deref(),
        Some("sync items changed: a full synchronization")
    );
    assert_eq!(runs[1].note, None);
    assert_eq!(runs[1].entries_read, None);
    let r = &runs[1];
    assert!(r.finished_at.is_some());
    assert_eq!(
        (
            r.created,
            r.updated,
            r.enabled,
            r.disabled,
            r.removed,
            r.unchanged
        ),
        (5, 4, 3, 2, 1, 1000)
    );
    assert_eq!(r.error, None);
    assert_eq!(s.runs(1).await.unwrap().len(), 1);
    assert_eq!(runs[1].status(true), "ok");
    assert_eq!(runs[0].status(true), "failed");
    // a run whose process died: "running" while a runner holds the lease,
    // "interrupted" once it is gone or the next holder marks it
    let r3 = s.run_started("full").await.unwrap();
    let open = s.runs(1).await.unwrap().remove(0);
    assert_eq!(
        (open.id, open.status(true), open.status(false)),
        (r3, "running", "interrupted")
    );
    assert_eq!(s.runs_interrupted().await.unwrap(), 1);
    assert_eq!(s.runs_interrupted().await.unwrap(), 0);
    let marked = s.runs(1).await.unwrap().remove(0);
    assert!(marked.interrupted);
    assert_eq!(marked.status(true), "interrupted");
    assert_eq!(
        s.runs(10)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.interrupted)
            .count(),
        1
    );
    assert!(s.run_finished(&SyncRun { id: 9999, ..done }).await.is_err());
}

async fn user_audit_by_username_or_directory_id(s: &dyn Store) {
    let a = dir_user("Alice", "id-a");
    let b = dir_user("bob", "id-b");
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    // renamed: the new name's rows and the old name's rows share the directory id
    let mut a2 = a.clone();
    a2.username = "alice2".to_string();
    s.apply(&[change(Action::Update, &a, &a2)], None)
        .await
        .unwrap();
    s.audit_event("admin", "config-applied", "x").await.unwrap();
    let names = |v: Vec<mfasync_store::AuditEntry>| {
        v.into_iter()
            .map(|e| (e.action, e.username))
            .collect::<Vec<_>>()
    };
    // by username, case-insensitively; never another user's rows nor rows
    // without a user (the update row carries the new name)
    assert_eq!(
        names(s.user_audit("ALICE", None, 10).await.unwrap()),
        vec![("create".to_string(), Some("Alice".to_string()))]
    );
    // with the directory id: the renamed user's whole history, newest first
    assert_eq!(
        names(s.user_audit("alice2", Some("id-a"), 10).await.unwrap()),
        vec![
            ("update".to_string(), Some("alice2".to_string())),
            ("create".to_string(), Some("Alice".to_string()))
        ]
    );
    // the limit keeps the newest
    assert_eq!(
        names(s.user_audit("bob", Some("id-b"), 1).await.unwrap()),
        vec![("create".to_string(), Some("bob".to_string()))]
    );
    assert!(s.user_audit("nobody", None, 10).await.unwrap().is_empty());
}

async fn audit_records_before_and_after(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    let b = dir_user("bob", "id-b");
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    let mut a2 = a.clone();
    a2.first_name = Some("Älice".to_string());
    s.apply(&[change(Action::Update, &a, &a2), remove(&b)], None)
        .await
        .unwrap();
    let audit = s.audit(10).await.unwrap();
    let json = |u: &MfaUser| serde_json::to_value(u).unwrap();
    let got: Vec<_> = audit
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.username.as_deref(),
                e.directory_id.as_deref(),
                e.before.clone(),
                e.after.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "remove",
                "sync",
                Some("bob"),
                Some("id-b"),
                Some(json(&b)),
                None
            ),
            (
                "update",
                "sync",
                Some("alice"),
                Some("id-a"),
                Some(json(&a)),
                Some(json(&a2))
            ),
            (
                "create",
                "sync",
                Some("bob"),
                Some("id-b"),
                None,
                Some(json(&b))
            ),
            (
                "create",
                "sync",
                Some("alice"),
                Some("id-a"),
                None,
                Some(json(&a))
            ),
        ]
    );
    assert_eq!(
        audit[0].detail.as_deref(),
        Some("no longer in the directory")
    );
    assert!(audit.windows(2).all(|w| w[0].id > w[1].id));
    assert!(is_rfc3339_utc(&audit[0].at), "{}", audit[0].at);
    assert_eq!(s.audit(2).await.unwrap().len(), 2);
}

async fn many_creates_cross_chunk_boundaries(s: &dyn Store) {
    let users: Vec<MfaUser> = (0..2345)
        .map(|i| {
            let mut u = dir_user(&format!("user{i:05}"), &format!("guid-{i}"));
            u.enabled = i % 3 != 0;
            u
        })
        .collect();
    let pre = dir_user("mid", "guid-mid");
    s.insert_user(&pre).await.unwrap();
    let mut pre2 = pre.clone();
    pre2.email = None;
    let mut plan: Vec<Change> = users.iter().map(create).collect();
    // an update between two runs of creates
    plan.insert(1000, change(Action::Update, &pre, &pre2));
    s.apply(&plan, Some(&wm("x"))).await.unwrap();
    let got = s.users().await.unwrap();
    assert_eq!(got.len(), 2346);
    let mut want = users.clone();
    want.push(pre2);
    assert_eq!(got, sorted(want));
    let audit = s.audit(5000).await.unwrap();
    assert_eq!(audit.len(), 2347);
    // audit rows follow the plan's order
    assert_eq!(audit[2345 - 1000].action, "update");
    // the digests come in pages of 2,000: every user once, across the boundary
    let d = digests(s).await;
    let names: std::collections::BTreeSet<&str> = d.iter().map(|x| x.username.as_str()).collect();
    assert_eq!((d.len(), names.len()), (2346, 2346));
    assert!(names.contains("user02344") && names.contains("mid"));
}

fn numbered(n: usize) -> Vec<MfaUser> {
    (0..n)
        .map(|i| dir_user(&format!("user{i:05}"), &format!("guid-{i}")))
        .collect()
}

async fn many_updates_and_removes_cross_chunk_boundaries(s: &dyn Store) {
    let users = numbered(3000);
    let plan: Vec<Change> = users.iter().map(create).collect();
    s.apply(&plan, None).await.unwrap();
    let mut want = Vec::new();
    let mut plan = Vec::new();
    for (i, u) in users.iter().enumerate() {
        match i % 3 {
            0 => {
                let mut u2 = u.clone();
                u2.enabled = false;
                plan.push(change(Action::Disable, u, &u2));
                want.push(u2);
            }
            1 => {
                let mut u2 = u.clone();
                u2.username = format!("renamed{i:05}");
                u2.dn = None;
                u2.language = Some("de".to_string());
                plan.push(change(Action::Update, u, &u2));
                want.push(u2);
            }
            _ => plan.push(remove(u)),
        }
    }
    // removes last, as the planner does
    plan.sort_by_key(|c| c.action == Action::Remove);
    s.apply(&plan, Some(&wm("y"))).await.unwrap();
    assert_eq!(s.users().await.unwrap(), sorted(want));
    assert_eq!(s.audit(10_000).await.unwrap().len(), 6000);
}

async fn bad_change_late_in_a_long_update_run_commits_nothing(s: &dyn Store) {
    let users = numbered(900);
    let plan: Vec<Change> = users.iter().map(create).collect();
    s.apply(&plan, None).await.unwrap();
    let mut m = manual_user("manny");
    m.directory_id = Some("guid-m".to_string());
    s.insert_user(&m).await.unwrap();
    let before = s.users().await.unwrap();
    let mut plan: Vec<Change> = users
        .iter()
        .map(|u| {
            let mut u2 = u.clone();
            u2.enabled = false;
            change(Action::Disable, u, &u2)
        })
        .collect();
    let mut m_dir = m.clone();
    m_dir.source = Source::Directory;
    plan.insert(850, change(Action::Update, &m_dir, &m_dir));
    let r = s.apply(&plan, Some(&wm("z"))).await;
    assert!(is_conflict(&r), "{r:?}");
    let msg = format!("{r:?}");
    assert!(msg.contains("manual"), "{msg}");
    // same with a remove of a missing user at the end of a long remove run
    let mut plan: Vec<Change> = users.iter().map(remove).collect();
    plan.push(remove(&dir_user("ghost", "guid-ghost")));
    let r = s.apply(&plan, Some(&wm("z"))).await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(s.users().await.unwrap(), before);
    assert_eq!(s.watermark().await.unwrap(), None);
}

async fn two_changes_to_one_user_in_one_plan(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    s.apply(&[create(&a)], None).await.unwrap();
    let mut a2 = a.clone();
    a2.email = Some("a2@example.com".to_string());
    let mut a3 = a2.clone();
    a3.enabled = false;
    s.apply(
        &[
            change(Action::Update, &a, &a2),
            change(Action::Disable, &a2, &a3),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.users().await.unwrap(), vec![a3.clone()]);
    // update then remove of the same user
    s.apply(&[change(Action::Enable, &a3, &a2), remove(&a2)], None)
        .await
        .unwrap();
    assert!(s.users().await.unwrap().is_empty());
}

async fn concurrent_writers_wait_for_each_other(s: &dyn Store) {
    let a: Vec<Change> = (0..800)
        .map(|i| create(&dir_user(&format!("a{i:04}"), &format!("ga-{i}"))))
        .collect();
    let b: Vec<Change> = (0..800)
        .map(|i| create(&dir_user(&format!("b{i:04}"), &format!("gb-{i}"))))
        .collect();
    let m = manual_user("m");
    let (wa, wb) = (wm("a"), wm("b"));
    let (ra, rb, rc, rm, rr) = tokio::join!(
        s.apply(&a, Some(&wa)),
        s.apply(&b, Some(&wb)),
        s.put_config("x = 1\n"),
        s.insert_user(&m),
        s.run_started("full"),
    );
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
    rm.unwrap();
    rr.unwrap();
    assert_eq!(s.users().await.unwrap().len(), 1601);
    let w = s.watermark().await.unwrap().unwrap();
    assert!(w == wm("a") || w == wm("b"));
}

async fn hundred_thousand_creates(s: &dyn Store) {
    let users: Vec<MfaUser> = (0..100_000)
        .map(|i| {
            let mut u = dir_user(&format!("user{i:06}"), &format!("{:032x}", i));
            u.first_name = Some(format!("First{i}"));
            u.last_name = Some(format!("Last{i}"));
            u.mobile_phone = Some(format!("+1555{i:07}"));
            u.primary_phone = u.mobile_phone.clone();
            u
        })
        .collect();
    let plan: Vec<Change> = users.iter().map(create).collect();
    let t = Instant::now();
    s.apply(&plan, Some(&wm("big"))).await.unwrap();
    let apply = t.elapsed();
    let t = Instant::now();
    let got = s.users().await.unwrap();
    let read = t.elapsed();
    assert_eq!(got.len(), 100_000);
    // and 100,000 updates (one statement each)
    let updates: Vec<Change> = users
        .iter()
        .map(|u| {
            let mut u2 = u.clone();
            u2.enabled = false;
            change(Action::Disable, u, &u2)
        })
        .collect();
    let t = Instant::now();
    s.apply(&updates, None).await.unwrap();
    let update = t.elapsed();
    eprintln!(
        "TIMING 100000 creates: apply {apply:?}, users() {read:?}; 100000 disables: apply {update:?}"
    );
}

// ---------------------------------------------------------------- approvals

fn held(action: &str, name: &str) -> HeldChange {
    HeldChange {
        action: action.to_string(),
        username: name.to_string(),
        directory_id: Some(format!("id-{name}")),
        reason: Some("no longer in ou=x".to_string()),
        limit: None,
        decision: None,
    }
}

async fn approvals_pending_superseded_and_decided(s: &dyn Store) {
    assert!(s.approvals(None).await.unwrap().is_empty());
    assert_eq!(s.approval("nope").await.unwrap(), None);
    let first = vec![held("disable", "a"), held("remove", "b")];
    let a1 = s.create_approval("ap1", "fp1", &first).await.unwrap();
    assert_eq!(a1.status, ApprovalStatus::Pending);
    assert!(is_rfc3339_utc(&a1.created_at), "{}", a1.created_at);
    assert_eq!(s.approval("ap1").await.unwrap(), Some(a1.clone()));
    // a newer one supersedes the older
    let second = vec![
        held("disable", "a"),
        held("remove", "b"),
        held("remove", "c"),
    ];
    let a2 = s.create_approval("ap2", "fp2", &second).await.unwrap();
    let pending = s.approvals(Some(ApprovalStatus::Pending)).await.unwrap();
    assert_eq!(pending, vec![a2.clone()]);
    assert_eq!(pending[0].changes, second);
    let old = s.approval("ap1").await.unwrap().unwrap();
    assert_eq!(old.status, ApprovalStatus::Superseded);
    assert_eq!(old.detail.as_deref(), Some("superseded by ap2"));
    let all = s.approvals(None).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec!["ap2", "ap1"],
        "newest first"
    );
    // decide
    let d = s
        .decide_approval("ap2", ApprovalStatus::Rejected, "carol", Some("not today"))
        .await
        .unwrap();
    assert_eq!(d.status, ApprovalStatus::Rejected);
    assert_eq!(d.decided_by.as_deref(), Some("carol"));
    assert_eq!(s.approval("ap2").await.unwrap(), Some(d.clone()));
    assert!(s
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .unwrap()
        .is_empty());
    let rejected = s.approvals(Some(ApprovalStatus::Rejected)).await.unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].fingerprint, "fp2");
    // every step audited, with who
    let audit = s.audit(10).await.unwrap();
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("approval-rejected", "carol"),
            ("approval-requested", "sync"),
            ("approval-superseded", "sync"),
            ("approval-requested", "sync"),
        ]
    );
    assert!(
        audit[0].detail.as_deref().unwrap().contains("ap2"),
        "{:?}",
        audit[0]
    );
}

async fn approvals_decided_user_by_user(s: &dyn Store) {
    let five: Vec<HeldChange> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| held("remove", n))
        .collect();
    s.create_approval("ap1", "fp-all", &five).await.unwrap();
    let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    // two approved: the others stay pending, with their own fingerprint
    let a = s
        .decide_users(
            "ap1",
            UserDecision::Approved,
            &names(&["a", "b"]),
            "carol",
            Some("2 of 2 applied"),
        )
        .await
        .unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.still_pending(), names(&["c", "d", "e"]));
    assert_eq!(a.fingerprint, "remove:id-c,remove:id-d,remove:id-e");
    assert_eq!(s.approval("ap1").await.unwrap(), Some(a.clone()));
    let listed = a.listed();
    assert_eq!(listed.remove, names(&["c", "d", "e"]));
    // a name not held undecided is refused, naming it; nothing changes
    for bad in [names(&["zed"]), names(&["a"]), names(&["c", "zed"])] {
        let r = s
            .decide_users("ap1", UserDecision::Rejected, &bad, "carol", None)
            .await;
        assert!(is_conflict(&r), "{r:?}");
        assert!(r
            .unwrap_err()
            .to_string()
            .contains(bad.last().unwrap().as_str()));
    }
    assert_eq!(s.approval("ap1").await.unwrap(), Some(a));
    // one rejected, then the last two approved: approved, partly
    s.decide_users("ap1", UserDecision::Rejected, &names(&["c"]), "dave", None)
        .await
        .unwrap();
    let a = s
        .decide_users(
            "ap1",
            UserDecision::Approved,
            &names(&["d", "e"]),
            "carol",
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, ApprovalStatus::Approved);
    assert_eq!(a.decided_by.as_deref(), Some("carol"));
    assert_eq!(
        a.detail.as_deref(),
        Some("partly approved: 4 approved, 1 rejected")
    );
    let rejected: Vec<&str> = a
        .decided(UserDecision::Rejected)
        .map(|h| h.username.as_str())
        .collect();
    assert_eq!(rejected, ["c"]);
    assert_eq!(s.approval("ap1").await.unwrap(), Some(a));
    let r = s
        .decide_users("ap1", UserDecision::Approved, &names(&["a"]), "x", None)
        .await;
    assert!(is_conflict(&r), "decided: {r:?}");
    // every decision audited with who and which users
    let audit = s.audit(3).await.unwrap();
    let got: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("approval-approved", "carol"),
            ("approval-rejected", "dave"),
            ("approval-approved", "carol"),
        ]
    );
    let detail = |i: usize| audit[i].detail.clone().unwrap_or_default();
    assert!(
        detail(2).contains("a, b") && detail(2).contains("3 still pending"),
        "{}",
        detail(2)
    );
    assert!(detail(1).contains("for c"), "{}", detail(1));
    assert!(detail(0).contains("partly approved"), "{}", detail(0));
    // all rejected one by one: rejected
    s.create_approval("ap2", "fp2", &[held("disable", "x")])
        .await
        .unwrap();
    let a = s
        .decide_users("ap2", UserDecision::Rejected, &names(&["x"]), "dave", None)
        .await
        .unwrap();
    assert_eq!(a.status, ApprovalStatus::Rejected);
}

async fn approvals_decisions_only_on_pending(s: &dyn Store) {
    s.create_approval("ap1", "fp1", &[held("disable", "a")])
        .await
        .unwrap();
    s.create_approval("ap2", "fp2", &[held("disable", "b")])
        .await
        .unwrap();
    let r = s
        .decide_approval("ap1", ApprovalStatus::Approved, "x", None)
        .await;
    assert!(is_conflict(&r), "superseded: {r:?}");
    assert!(r.unwrap_err().to_string().contains("superseded"));
    let r = s
        .decide_approval("zzz", ApprovalStatus::Approved, "x", None)
        .await;
    assert!(is_conflict(&r), "unknown: {r:?}");
    let r = s
        .decide_approval("ap2", ApprovalStatus::Pending, "x", None)
        .await;
    assert!(is_conflict(&r), "not a decision: {r:?}");
    s.decide_approval("ap2", ApprovalStatus::Approved, "x", Some("2 applied"))
        .await
        .unwrap();
    let r = s
        .decide_approval("ap2", ApprovalStatus::Rejected, "x", None)
        .await;
    assert!(is_conflict(&r), "decided twice: {r:?}");
    assert_eq!(
        s.approval("ap2").await.unwrap().unwrap().status,
        ApprovalStatus::Approved
    );
    // ids are unique
    let r = s.create_approval("ap2", "fp3", &[]).await;
    assert!(r.is_err(), "{r:?}");
}

async fn audit_events(s: &dyn Store) {
    s.audit_event("sync", "notify", "sent to a@example.com")
        .await
        .unwrap();
    let a = s.audit(1).await.unwrap();
    assert_eq!(a[0].action, "notify");
    assert_eq!(a[0].actor, "sync");
    assert_eq!(a[0].detail.as_deref(), Some("sent to a@example.com"));
    assert_eq!((a[0].username.clone(), a[0].before.clone()), (None, None));
}

// ---------------------------------------------------------------- backend-specific

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_open_url_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-dir-less.db");
    let url = format!("sqlite://{}", path.display());
    {
        let s = mfasync_store::open(&url).await.unwrap();
        s.apply(&[create(&dir_user("alice", "id-a"))], Some(&wm("w")))
            .await
            .unwrap();
        s.put_config("a = 1\n").await.unwrap();
    }
    let s = mfasync_store::open(&url).await.unwrap();
    assert_eq!(s.users().await.unwrap(), vec![dir_user("alice", "id-a")]);
    assert_eq!(s.watermark().await.unwrap(), Some(wm("w")));
    assert_eq!(s.active_config().await.unwrap().unwrap().version, 1);
    // WAL mode is on
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(matches!(
        mfasync_store::open("mysql://x").await,
        Err(StoreError::BadUrl(_))
    ));
}

/// A stored watermark kind this version does not know (written by a newer
/// one, or by hand) reads as `MarkKind::None`: the next cycle is full.
#[tokio::test]
async fn unknown_stored_watermark_kinds_read_as_none() {
    let (dir, s) = sqlite_store().await;
    let mut w = wm("w");
    w.domains = vec![mfasync_store::DomainWatermark {
        domain: "other.example.com".into(),
        kind: mfasync_store::MarkKind::Usn,
        server: "dc9".into(),
        value: b"42".to_vec(),
    }];
    s.apply(&[], Some(&w)).await.unwrap();
    let raw =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("mfa.db").display()))
            .await
            .unwrap();
    sqlx::query("UPDATE watermark SET kind = 'carrier-pigeon'")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE domain_watermarks SET kind = ''")
        .execute(&raw)
        .await
        .unwrap();
    let read = s.watermark().await.unwrap().unwrap();
    assert_eq!(read.kind, mfasync_store::MarkKind::None);
    assert_eq!(read.domains[0].kind, mfasync_store::MarkKind::None);
    assert_eq!(read.value, b"w".to_vec(), "the rest is read as stored");
    // every known kind reads back as itself
    for k in [
        mfasync_store::MarkKind::Full,
        mfasync_store::MarkKind::None,
        mfasync_store::MarkKind::DirSync,
        mfasync_store::MarkKind::SyncRepl,
        mfasync_store::MarkKind::Usn,
    ] {
        assert_eq!(mfasync_store::MarkKind::from_stored(k.as_str()), k);
    }
}

#[tokio::test]
async fn sqlite_in_memory() {
    let s = SqliteStore::open(":memory:").await.unwrap();
    s.insert_user(&manual_user("m")).await.unwrap();
    assert_eq!(s.users().await.unwrap().len(), 1);
}

/// `open_current` (for `mfasync auth`): a new database is migrated; a current
/// one is opened without the migration run; one that is not current goes
/// through the migration run (here refused, like `open`, as dirty).
#[tokio::test]
async fn sqlite_open_current_migrates_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.db");
    let url = format!("sqlite://{}", path.display());
    {
        let s = mfasync_store::open_current(&url).await.unwrap();
        s.put_config("a = 1\n").await.unwrap();
        s.insert_user(&manual_user("m")).await.unwrap();
    }
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let sql = |q: &'static str| sqlx::query(q).execute(&raw);
    // a wrong checksum: `open` (the migration run) refuses it, so a store
    // that opens was not migrated again
    sql("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1")
        .await
        .unwrap();
    assert!(matches!(
        mfasync_store::open(&url).await,
        Err(StoreError::Migrate(_))
    ));
    let s = mfasync_store::open_current(&url).await.unwrap();
    assert_eq!(s.active_config().await.unwrap().unwrap().version, 1);
    assert_eq!(
        s.users_by(mfasync_store::UserKey::UsernameLower, &["m".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    drop(s);
    // the last migration marked failed: not current, so the migration run
    // decides (and refuses the dirty database)
    sql("UPDATE _sqlx_migrations SET success = false WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .await
        .unwrap();
    assert!(mfasync_store::open_current(&url).await.is_err());
}

/// Migration 18 on SQLite rebuilds the outbox for the new kind: the rows of
/// a version-17 database keep their ids and values, the indexes come back.
#[tokio::test]
async fn sqlite_migration_18_keeps_outbox_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    drop(mfasync_store::open(&url).await.unwrap());
    // back to version 17: the outbox as migration 14 made it, with rows
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    for q in [
        "DELETE FROM _sqlx_migrations WHERE version = 18",
        "DROP TABLE outbox",
        include_str!("../migrations/sqlite/0014_outbox.sql"),
        "INSERT INTO outbox (id, kind, username, directory_id, recipient, subject, text_body, \
         status, attempts, last_error, created_ms, queued_ms, due_ms, sent_ms) VALUES \
         (7, 'welcome', 'ann', 'id-a', 'ann@example.com', 'Hi', 'Hello', 'sent', 1, NULL, 5, 5, 5, 6), \
         (9, 'update', 'bob', 'id-b', 'bob@example.com', 'Changed', 'Body', 'failed', 3, 'refused', 8, 8, 9, NULL)",
    ] {
        sqlx::raw_sql(q).execute(&raw).await.unwrap();
    }
    let summary = "INSERT INTO outbox (kind, username, recipient, subject, text_body, status, \
                   created_ms, queued_ms, due_ms) VALUES ('summary', '(summary)', 'o@x.y', 's', 't', 'pending', 1, 1, 1)";
    assert!(
        sqlx::query(summary).execute(&raw).await.is_err(),
        "refused at 17"
    );
    raw.close().await;
    let s = mfasync_store::open(&url).await.unwrap();
    let rows = s.outbox(None, 10).await.unwrap();
    let seen: Vec<String> = rows
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {:?} {:?}",
                e.id,
                e.kind.as_str(),
                e.status.as_str(),
                e.sent_ms,
                e.last_error
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            "9 update failed None Some(\"refused\")",
            "7 welcome sent Some(6) None",
        ]
    );
    drop(s);
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox' ORDER BY name",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(indexes, ["outbox_due", "outbox_welcome"]);
    sqlx::query(summary).execute(&raw).await.unwrap();
    let next: i64 = sqlx::query_scalar("SELECT MAX(id) FROM outbox")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(next, 10, "ids continue after the kept rows");
}

async fn approvals_superseded_when_no_longer_needed(s: &dyn Store) {
    assert!(s.supersede_pending("not needed").await.unwrap().is_empty());
    assert!(
        s.audit(10).await.unwrap().is_empty(),
        "nothing to do, nothing audited"
    );
    s.create_approval("ap1", "fp1", &[held("disable", "a")])
        .await
        .unwrap();
    s.create_approval("ap2", "fp2", &[held("disable", "b")])
        .await
        .unwrap();
    s.decide_approval("ap2", ApprovalStatus::Rejected, "x", None)
        .await
        .unwrap();
    s.create_approval("ap3", "fp3", &[held("disable", "c")])
        .await
        .unwrap();
    assert_eq!(
        s.supersede_pending("no longer needed").await.unwrap(),
        vec!["ap3".to_string()]
    );
    let ap3 = s.approval("ap3").await.unwrap().unwrap();
    assert_eq!(ap3.status, ApprovalStatus::Superseded);
    assert_eq!(ap3.detail.as_deref(), Some("no longer needed"));
    assert_eq!(
        s.approval("ap2").await.unwrap().unwrap().status,
        ApprovalStatus::Rejected,
        "decided ones stay as they are"
    );
    assert!(s
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .unwrap()
        .is_empty());
    let last = &s.audit(1).await.unwrap()[0];
    assert_eq!(last.action, "approval-superseded");
    assert_eq!(
        last.detail.as_deref(),
        Some("approval ap3: no longer needed")
    );
}

async fn admin_passwords(s: &dyn Store) {
    assert_eq!(s.admin_password_hash("admin").await.unwrap(), None);
    s.admin_set_password("admin", "$argon2id$one")
        .await
        .unwrap();
    assert_eq!(
        s.admin_password_hash("admin").await.unwrap().as_deref(),
        Some("$argon2id$one")
    );
    s.admin_set_password("admin", "$argon2id$two")
        .await
        .unwrap();
    assert_eq!(
        s.admin_password_hash("admin").await.unwrap().as_deref(),
        Some("$argon2id$two"),
        "set again replaces"
    );
    assert_eq!(s.admin_password_hash("Admin").await.unwrap(), None);
    let last = &s.audit(1).await.unwrap()[0];
    assert_eq!(last.action, "admin-password");
    assert!(
        !last.detail.as_deref().unwrap_or("").contains("argon2"),
        "the hash is not audited"
    );
}

fn token(hash: &str, kind: &str, created: &str, expires: Option<&str>) -> AuthToken {
    let kind = mfasync_store::TokenKind::parse(kind).unwrap();
    AuthToken {
        token_hash: hash.to_string(),
        kind,
        username: "admin".to_string(),
        label: (kind == mfasync_store::TokenKind::Api).then(|| "backup script".to_string()),
        csrf: (kind == mfasync_store::TokenKind::Session).then(|| format!("csrf-{hash}")),
        created_at: created.to_string(),
        expires_at: expires.map(str::to_string),
    }
}

async fn sessions_and_api_tokens(s: &dyn Store) {
    let s1 = token(
        "aaaa1111",
        "session",
        "2026-01-01T00:00:00Z",
        Some("2026-01-01T08:00:00Z"),
    );
    let s2 = token(
        "bbbb2222",
        "session",
        "2026-01-02T00:00:00Z",
        Some("2099-01-01T00:00:00Z"),
    );
    let a1 = token("cccc3333", "api", "2026-01-03T00:00:00Z", None);
    for t in [&s1, &s2, &a1] {
        s.token_create(t).await.unwrap();
    }
    assert!(is_conflict(&s.token_create(&s1).await), "same hash twice");
    assert_eq!(s.token_get("aaaa1111").await.unwrap().as_ref(), Some(&s1));
    assert_eq!(s.token_get("cccc3333").await.unwrap().as_ref(), Some(&a1));
    assert_eq!(s.token_get("nope").await.unwrap(), None);
    assert_eq!(
        s.tokens(mfasync_store::TokenKind::Session).await.unwrap(),
        vec![s2.clone(), s1.clone()]
    );
    assert_eq!(
        s.tokens(mfasync_store::TokenKind::Api).await.unwrap(),
        vec![a1.clone()]
    );
    assert_eq!(
        s.audit(1).await.unwrap()[0].action,
        "token-created",
        "API tokens are audited"
    );

    assert_eq!(
        s.tokens_delete_expired("2026-06-01T00:00:00Z")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.token_get("aaaa1111").await.unwrap(),
        None,
        "expired one gone"
    );
    assert!(s.token_get("bbbb2222").await.unwrap().is_some());
    assert!(
        s.token_get("cccc3333").await.unwrap().is_some(),
        "no expiry"
    );

    assert!(s.token_delete("bbbb2222").await.unwrap());
    assert!(!s.token_delete("bbbb2222").await.unwrap(), "already gone");
    assert!(s.token_delete("cccc3333").await.unwrap());
    assert_eq!(s.audit(1).await.unwrap()[0].action, "token-revoked");
    assert!(s
        .tokens(mfasync_store::TokenKind::Api)
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- several servers (issue 8)

fn server(name: &str, instance: &str, heartbeat_ms: i64) -> mfasync_store::ServerInfo {
    mfasync_store::ServerInfo {
        name: name.to_string(),
        instance: instance.to_string(),
        address: format!("{name}.example.com:8080"),
        version: "1.2.3".to_string(),
        started_ms: 1_000,
        heartbeat_ms,
        lease_ms: 30_000,
    }
}

fn real_now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn servers_register_heartbeat_and_forget(s: &dyn Store) {
    assert!(s.servers().await.unwrap().is_empty());
    s.server_heartbeat(&server("srv-b", "i1", 2_000))
        .await
        .unwrap();
    s.server_heartbeat(&server("srv-a", "i2", 2_000))
        .await
        .unwrap();
    s.server_heartbeat(&server("srv-b", "i3", 5_000))
        .await
        .unwrap();
    let list = s.servers().await.unwrap();
    assert_eq!(
        list,
        vec![server("srv-a", "i2", 2_000), server("srv-b", "i3", 5_000)]
    );
    assert!(s.server_forget("srv-a").await.unwrap());
    assert!(!s.server_forget("srv-a").await.unwrap(), "already gone");
    assert_eq!(
        s.servers().await.unwrap(),
        vec![server("srv-b", "i3", 5_000)]
    );
    let last = &s.audit(1).await.unwrap()[0];
    assert_eq!(
        (last.action.as_str(), last.detail.as_deref()),
        ("server-forgotten", Some("server srv-a forgotten"))
    );
}

async fn lease_taken_renewed_expired_and_taken_over(s: &dyn Store) {
    let l = s.lease().await.unwrap();
    assert_eq!(
        (l.holder, l.token, l.pinned),
        (None, 0, None),
        "free at first"
    );

    // A takes it (token 1) for 100 ms
    let l = s.lease_acquire("A", "a1", 1_000, 100).await.unwrap();
    assert!(l.held_by("A", "a1", 1_000));
    assert_eq!((l.token, l.expires_ms), (1, 1_100));
    // B cannot while it runs
    let l = s.lease_acquire("B", "b1", 1_050, 100).await.unwrap();
    assert!(!l.held_by("B", "b1", 1_050));
    assert_eq!((l.holder.as_deref(), l.token), (Some("A"), 1));
    // A renews: same token, later expiry
    let l = s.lease_acquire("A", "a1", 1_080, 100).await.unwrap();
    assert_eq!((l.token, l.expires_ms), (1, 1_180));
    assert_eq!(s.lease().await.unwrap(), l, "stored as returned");
    // expired (at exactly expires_ms): B takes it with the next token
    let l = s.lease_acquire("B", "b1", 1_180, 100).await.unwrap();
    assert!(l.held_by("B", "b1", 1_180));
    assert_eq!(l.token, 2);
    // A is out: it cannot renew
    let l = s.lease_acquire("A", "a1", 1_190, 100).await.unwrap();
    assert!(!l.held_by("A", "a1", 1_190));
    assert_eq!((l.holder.as_deref(), l.token), (Some("B"), 2));
    // B restarted (same name, new process): takes it back at once, new token
    let l = s.lease_acquire("B", "b2", 1_200, 100).await.unwrap();
    assert!(l.held_by("B", "b2", 1_200));
    assert_eq!(l.token, 3);
    // a clean shutdown gives it up; only the holder can
    assert!(!s.lease_release("B", "b1").await.unwrap());
    assert!(s.lease_release("B", "b2").await.unwrap());
    assert!(!s.lease_release("B", "b2").await.unwrap());
    let l = s.lease().await.unwrap();
    assert_eq!((l.holder, l.token), (None, 3), "free, the token kept");
    let l = s.lease_acquire("A", "a1", 1_210, 100).await.unwrap();
    assert!(l.held_by("A", "a1", 1_210));
    assert_eq!(l.token, 4, "never reused");
    // every change of holder is audited, renewals are not
    let events: Vec<String> = s
        .audit(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "sync-lease")
        .filter_map(|a| a.detail)
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events[0].starts_with("server A took the sync lease, fencing token 4"),
        "{events:?}"
    );
    assert!(
        events[2].contains("fencing token 2 (the lease of server A had expired)"),
        "{events:?}"
    );
}

async fn lease_pinned_to_one_server(s: &dyn Store) {
    let l = s.lease_acquire("A", "a1", 1_000, 100).await.unwrap();
    assert_eq!(l.token, 1);
    let l = s.lease_pin(Some("B"), "admin").await.unwrap();
    assert_eq!(l.pinned.as_deref(), Some("B"));
    assert_eq!(s.lease().await.unwrap().pinned.as_deref(), Some("B"));
    // B cannot take it before it expires or is given up
    let l = s.lease_acquire("B", "b1", 1_010, 100).await.unwrap();
    assert_eq!(l.holder.as_deref(), Some("A"));
    // A's next renewal gives it up instead
    let l = s.lease_acquire("A", "a1", 1_020, 100).await.unwrap();
    assert!(!l.held_by("A", "a1", 1_020));
    assert_eq!(l.holder, None);
    // and nobody but B takes it, even when free
    let l = s.lease_acquire("C", "c1", 1_030, 100).await.unwrap();
    assert_eq!(l.holder, None);
    let l = s.lease_acquire("B", "b1", 1_040, 100).await.unwrap();
    assert!(l.held_by("B", "b1", 1_040));
    assert_eq!(l.token, 2);
    // unpinned: automatic again; C takes over once B's lease expired
    s.lease_pin(None, "admin").await.unwrap();
    assert!(s
        .lease_acquire("C", "c1", 1_200, 100)
        .await
        .unwrap()
        .held_by("C", "c1", 1_200));
    let pins: Vec<(String, Option<String>)> = s
        .audit(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "servers-pin")
        .map(|a| (a.actor, a.detail))
        .collect();
    assert_eq!(
        pins,
        vec![
            (
                "admin".to_string(),
                Some("synchronization no longer pinned: any server may run it".to_string())
            ),
            (
                "admin".to_string(),
                Some("synchronization pinned to server B".to_string())
            ),
        ]
    );
}

async fn fenced_writes_refused_after_takeover_or_expiry(s: &dyn Store) {
    let now = real_now_ms();
    let a = s.lease_acquire("A", "a1", now, 600_000).await.unwrap();
    assert!(a.held_by("A", "a1", now));
    let fence_a = mfasync_store::Fence {
        holder: "A".into(),
        instance: "a1".into(),
        token: a.token,
        period_ms: 600_000,
    };
    s.set_fence(Some(fence_a.clone()));
    // the holder writes
    s.apply(&[create(&dir_user("alice", "id-a"))], Some(&wm("w1")))
        .await
        .unwrap();
    s.create_approval("ap1", "fp1", &[held("disable", "alice")])
        .await
        .unwrap();
    // B takes over (A's lease expired as far as B's clock says)
    let b = s
        .lease_acquire("B", "b1", now + 700_000, 600_000)
        .await
        .unwrap();
    assert_eq!(b.token, a.token + 1);
    // A's writes are refused now, and nothing of them is committed
    let r = s
        .apply(&[create(&dir_user("bob", "id-b"))], Some(&wm("w2")))
        .await;
    match &r {
        Err(StoreError::Fenced(m)) => {
            assert!(m.contains("server A does not hold the sync lease"), "{m}");
            assert!(
                m.contains(&format!(
                    "fencing token {} is not the current {}",
                    a.token, b.token
                )),
                "{m}"
            );
            assert!(m.contains("now held by server B"), "{m}");
        }
        other => panic!("not fenced: {other:?}"),
    }
    assert_eq!(s.users().await.unwrap(), vec![dir_user("alice", "id-a")]);
    assert_eq!(s.watermark().await.unwrap(), Some(wm("w1")));
    assert!(matches!(
        s.create_approval("ap2", "fp2", &[held("disable", "alice")])
            .await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        s.supersede_pending("not needed").await,
        Err(StoreError::Fenced(_))
    ));
    assert!(s.approval("ap2").await.unwrap().is_none());
    assert_eq!(
        s.approval("ap1").await.unwrap().unwrap().status,
        ApprovalStatus::Pending
    );
    // B's fence passes
    s.set_fence(Some(mfasync_store::Fence {
        holder: "B".into(),
        instance: "b1".into(),
        token: b.token,
        period_ms: 600_000,
    }));
    s.apply(&[create(&dir_user("bob", "id-b"))], Some(&wm("w2")))
        .await
        .unwrap();
    // an expired lease is refused too, even with the current token
    let old = now - 1_200_000;
    s.lease_release("B", "b1").await.unwrap();
    let c = s.lease_acquire("C", "c1", old, 600_000).await.unwrap();
    s.set_fence(Some(mfasync_store::Fence {
        holder: "C".into(),
        instance: "c1".into(),
        token: c.token,
        period_ms: 600_000,
    }));
    match s.apply(&[create(&dir_user("carol", "id-c"))], None).await {
        Err(StoreError::Fenced(m)) => assert!(m.contains("the sync lease of server C"), "{m}"),
        other => panic!("not fenced: {other:?}"),
    }
    // no fence (one-shot commands): no check
    s.set_fence(None);
    s.apply(&[create(&dir_user("carol", "id-c"))], None)
        .await
        .unwrap();
    assert_eq!(s.users().await.unwrap().len(), 3);
}

/// A sync's write transaction on SQLite keeps every other writer out, its
/// holder's lease renewal task included: the transaction renews the lease
/// itself at each write, so a sync longer than the lease period still
/// commits; a lease that expired before a write is not renewed and refused.
#[tokio::test]
async fn sqlite_sync_transaction_renews_its_lease() {
    let (_dir, store) = sqlite_store().await;
    let s: &dyn Store = &store;
    let period = 600_000;
    let fence = |token| mfasync_store::Fence {
        holder: "A".into(),
        instance: "a1".into(),
        token,
        period_ms: period,
    };
    // taken long ago: it runs out 2 s from now
    let now = real_now_ms();
    let a = s
        .lease_acquire("A", "a1", now - period + 2_000, period)
        .await
        .unwrap();
    s.set_fence(Some(fence(a.token)));
    let mut w = s.begin_apply().await.unwrap();
    w.write(&[create(&dir_user("alice", "id-a"))])
        .await
        .unwrap();
    // past the lease as it was taken
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    w.commit(Some(&wm("w1"))).await.unwrap();
    assert_eq!(s.users().await.unwrap(), vec![dir_user("alice", "id-a")]);
    let l = s.lease().await.unwrap();
    assert!(l.held_by("A", "a1", real_now_ms()), "{l:?}");
    assert_eq!(l.token, a.token);

    // a lease already run out is not renewed by a write: refused at commit
    s.lease_release("A", "a1").await.unwrap();
    let b = s
        .lease_acquire("A", "a2", real_now_ms() - period - 1, period)
        .await
        .unwrap();
    s.set_fence(Some(mfasync_store::Fence {
        instance: "a2".into(),
        ..fence(b.token)
    }));
    let mut w = s.begin_apply().await.unwrap();
    w.write(&[create(&dir_user("bob", "id-b"))]).await.unwrap();
    match w.commit(Some(&wm("w2"))).await {
        Err(StoreError::Fenced(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("not fenced: {other:?}"),
    }
    assert_eq!(s.users().await.unwrap(), vec![dir_user("alice", "id-a")]);
    assert_eq!(s.watermark().await.unwrap(), Some(wm("w1")));
}

// ---------------------------------------------------------------- digests and streamed apply (full sync)

async fn digests(s: &dyn Store) -> Vec<mfasync_core::plan::StoredDigest> {
    let mut out = Vec::new();
    s.user_digests(&mut |d| out.push(d)).await.unwrap();
    out
}

fn digest_of(s: &[mfasync_core::plan::StoredDigest], name: &str) -> Option<String> {
    s.iter()
        .find(|d| d.username == name)
        .unwrap_or_else(|| panic!("no {name} in {s:?}"))
        .digest
        .clone()
}

async fn user_digests_follow_every_write(s: &dyn Store) {
    use mfasync_core::plan::digest;
    assert!(digests(s).await.is_empty());
    s.insert_user(&manual_user("boss")).await.unwrap();
    let a = dir_user("alice", "id-a");
    let mut b = full_user();
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    let d = digests(s).await;
    assert_eq!(d.len(), 3);
    assert_eq!(
        s.directory_user_count().await.unwrap(),
        2,
        "the manual user is not counted"
    );
    assert_eq!(digest_of(&d, "boss"), Some(digest(&manual_user("boss"))));
    assert_eq!(digest_of(&d, "alice"), Some(digest(&a)));
    assert_eq!(digest_of(&d, &b.username), Some(digest(&b)));
    let alice = d.iter().find(|x| x.username == "alice").unwrap();
    assert_eq!(alice.directory_id.as_deref(), Some("id-a"));
    assert_eq!(alice.source, Source::Directory);
    assert_eq!(alice.sync_item, a.sync_item);
    assert!(alice.enabled);
    let boss = d.iter().find(|x| x.username == "boss").unwrap();
    assert_eq!(boss.source, Source::Manual);
    // an update and a disable move the digest with the row
    let mut a2 = a.clone();
    a2.email = Some("new@example.com".into());
    let before_b = b.clone();
    b.enabled = true;
    s.apply(
        &[
            change(Action::Update, &a, &a2),
            change(Action::Enable, &before_b, &b),
        ],
        None,
    )
    .await
    .unwrap();
    let d = digests(s).await;
    assert_eq!(digest_of(&d, "alice"), Some(digest(&a2)));
    assert_ne!(digest(&a2), digest(&a));
    assert_eq!(digest_of(&d, &b.username), Some(digest(&b)));
    assert!(d.iter().find(|x| x.username == b.username).unwrap().enabled);
    // every stored row's digest is the digest of the row as read back
    for u in s.users().await.unwrap() {
        assert_eq!(
            digest_of(&d, &u.username),
            Some(digest(&u)),
            "{}",
            u.username
        );
    }
    s.apply(&[remove(&a2)], None).await.unwrap();
    assert_eq!(digests(s).await.len(), 2);
    // more users than one page (20,000) are all listed, once each
    let many = numbered(20_500);
    s.apply(&many.iter().map(create).collect::<Vec<_>>(), None)
        .await
        .unwrap();
    let d = digests(s).await;
    assert_eq!(d.len(), 20_502);
    let ids: std::collections::HashSet<_> = d.iter().map(|x| x.username.clone()).collect();
    assert_eq!(ids.len(), 20_502);
    assert_eq!(
        digest_of(&d, "user20499"),
        Some(digest(&many[20_499])),
        "last page"
    );
}

async fn streamed_apply_is_one_transaction(s: &dyn Store) {
    let old = dir_user("old", "id-old");
    s.apply(&[create(&old)], None).await.unwrap();
    // chunks written one after another, committed together with the watermark
    let many = numbered(1200);
    let mut w = s.begin_apply().await.unwrap();
    for chunk in many.chunks(500) {
        let creates: Vec<Change> = chunk.iter().map(create).collect();
        w.write(&creates).await.unwrap();
    }
    let mut old2 = old.clone();
    old2.email = Some("moved@example.com".into());
    w.write(&[change(Action::Update, &old, &old2)])
        .await
        .unwrap();
    w.commit(Some(&wm("streamed"))).await.unwrap();
    assert_eq!(s.users().await.unwrap().len(), 1201);
    assert_eq!(s.watermark().await.unwrap(), Some(wm("streamed")));
    assert_eq!(
        s.users_by(mfasync_store::UserKey::DirectoryId, &["id-old".into()])
            .await
            .unwrap(),
        vec![old2.clone()]
    );
    let audit = s.audit(5000).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "create").count(), 1201);
    assert_eq!(audit.iter().filter(|e| e.action == "update").count(), 1);

    // dropped without commit: nothing of any chunk is written
    let mut w = s.begin_apply().await.unwrap();
    w.write(&[create(&dir_user("ghost", "id-ghost"))])
        .await
        .unwrap();
    w.write(&[remove(&old2)]).await.unwrap();
    drop(w);
    assert_eq!(s.users().await.unwrap().len(), 1201);
    assert!(s
        .users_by(mfasync_store::UserKey::DirectoryId, &["id-ghost".into()])
        .await
        .unwrap()
        .is_empty());

    // a clash in a later chunk (with a row of an earlier chunk): an error naming it, nothing committed
    let mut w = s.begin_apply().await.unwrap();
    w.write(&[create(&dir_user("fresh", "id-fresh"))])
        .await
        .unwrap();
    let err = w
        .write(&[create(&dir_user("FRESH", "id-other"))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FRESH"), "{err}");
    drop(w);
    assert!(s
        .users_by(mfasync_store::UserKey::DirectoryId, &["id-fresh".into()])
        .await
        .unwrap()
        .is_empty());
    // a clash in the middle of one write: the creates before it are not
    // committed either, even by a caller that tries to commit anyway
    let mut w = s.begin_apply().await.unwrap();
    let err = w
        .write(&[
            create(&dir_user("early", "id-early")),
            create(&dir_user("OLD", "id-clash")),
            create(&dir_user("late", "id-late")),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("OLD"), "{err}");
    assert!(
        w.write(&[]).await.is_err(),
        "a failed transaction takes no more writes"
    );
    assert!(w.commit(Some(&wm("half"))).await.is_err());
    assert_ne!(s.watermark().await.unwrap(), Some(wm("half")));
    for id in ["id-early", "id-late"] {
        assert!(s
            .users_by(mfasync_store::UserKey::DirectoryId, &[id.into()])
            .await
            .unwrap()
            .is_empty());
    }

    // and the store is usable afterwards
    s.apply(
        &[create(&dir_user("fresh", "id-fresh"))],
        Some(&wm("after")),
    )
    .await
    .unwrap();
    assert_eq!(s.watermark().await.unwrap(), Some(wm("after")));
}

/// Rows written before the digest column existed get their digest when the store opens.
#[tokio::test]
async fn sqlite_fills_missing_digests_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.db");
    let a = full_user();
    {
        let s = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        s.apply(&[create(&a)], None).await.unwrap();
        s.insert_user(&manual_user("boss")).await.unwrap();
        // more than two pages of the fill
        let many: Vec<_> = (0..2100)
            .map(|i| create(&dir_user(&format!("u{i}"), &format!("id-{i}"))))
            .collect();
        s.apply(&many, None).await.unwrap();
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE users SET digest = NULL")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let s = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let d = digests(&s).await;
    assert_eq!(
        digest_of(&d, &a.username),
        Some(mfasync_core::plan::digest(&a))
    );
    assert_eq!(
        digest_of(&d, "boss"),
        Some(mfasync_core::plan::digest(&manual_user("boss")))
    );
    for i in [0, 999, 1000, 2099] {
        let u = dir_user(&format!("u{i}"), &format!("id-{i}"));
        assert_eq!(
            digest_of(&d, &u.username),
            Some(mfasync_core::plan::digest(&u))
        );
    }
}

async fn sync_requests_coalesce_and_are_taken_once(s: &dyn Store) {
    assert_eq!(s.sync_request_take().await.unwrap(), None, "none yet");
    s.lease_acquire("A", "a1", 1_000, 100).await.unwrap();
    let l = s.sync_request(false, "root", "B", 1_010).await.unwrap();
    assert_eq!(l.holder.as_deref(), Some("A"), "the lease says who runs it");
    // a second request before the runner takes them: one cycle, full
    s.sync_request(true, "ops", "C", 1_020).await.unwrap();
    s.sync_request(false, "root", "B", 1_030).await.unwrap();
    let r = s.sync_request_take().await.unwrap();
    assert_eq!(
        r,
        Some(mfasync_store::SyncRequest {
            full: true,
            by: "root".into(),
            on: "B".into(),
            at_ms: 1_030,
        })
    );
    assert_eq!(s.sync_request_take().await.unwrap(), None, "taken once");
    // the lease itself is untouched
    let l = s.lease().await.unwrap();
    assert_eq!((l.holder.as_deref(), l.token), (Some("A"), 1));
    s.sync_request(false, "root", "B", 1_040).await.unwrap();
    assert_eq!(
        s.sync_request_take().await.unwrap().map(|r| r.full),
        Some(false)
    );
    let audit = s.audit(10).await.unwrap();
    let asked: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "sync-requested")
        .map(|a| (a.actor.as_str(), a.detail.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert_eq!(
        asked[2],
        (
            "ops",
            "full synchronization requested on server C, handed to server A"
        )
    );
}

/// The raw stamps of stored users, by username.
async fn stamps(s: &dyn Store) -> std::collections::BTreeMap<String, Option<String>> {
    let mut out = std::collections::BTreeMap::new();
    s.user_digests(&mut |d| {
        out.insert(d.username, d.raw_stamp);
    })
    .await
    .unwrap();
    out
}

async fn raw_stamps_are_written_only_for_the_row_they_were_mapped_to(s: &dyn Store) {
    use mfasync_core::plan::{digest_bits, raw_stamp, RawMark};
    let a = dir_user("ann", "id-a");
    let b = dir_user("bob", "id-b");
    let mark = |u: &MfaUser, raw: u128| RawMark {
        raw,
        digest: digest_bits(u),
    };
    let mut ca = create(&a);
    ca.raw = Some(mark(&a, 1));
    let mut cb = create(&b);
    // mapped to another row than the one written: no stamp
    cb.raw = Some(RawMark {
        raw: 2,
        digest: digest_bits(&a),
    });
    s.apply(&[ca, cb], None).await.unwrap();
    let got = stamps(s).await;
    assert_eq!(got["ann"], Some(raw_stamp(1, digest_bits(&a))));
    assert_eq!(got["bob"], None);

    // an update with its entry stamps the new row; one without clears it
    let mut a2 = a.clone();
    a2.email = Some("ann@new.example.com".into());
    let mut up = change(Action::Update, &a, &a2);
    up.raw = Some(mark(&a2, 3));
    s.apply(&[up], None).await.unwrap();
    assert_eq!(stamps(s).await["ann"], Some(raw_stamp(3, digest_bits(&a2))));
    let mut a3 = a2.clone();
    a3.email = Some("ann@third.example.com".into());
    s.apply(&[change(Action::Update, &a2, &a3)], None)
        .await
        .unwrap();
    assert_eq!(stamps(s).await["ann"], None);

    // restamp: only rows that still have the digest they were mapped to
    s.restamp(&[
        ("id-a".to_string(), mark(&a2, 4)),
        ("id-b".to_string(), mark(&b, 5)),
        ("id-none".to_string(), mark(&b, 6)),
    ])
    .await
    .unwrap();
    let got = stamps(s).await;
    assert_eq!(got["ann"], None, "ann's row is a3 now, not a2");
    assert_eq!(got["bob"], Some(raw_stamp(5, digest_bits(&b))));
    assert_eq!(got.len(), 2);
    // never a change of a user
    let users = s.users().await.unwrap();
    assert_eq!(users.iter().find(|u| u.username == "ann"), Some(&a3));
    assert_eq!(users.iter().find(|u| u.username == "bob"), Some(&b));
    // manual users are never stamped
    let mut m = dir_user("manual", "id-m");
    m.source = Source::Manual;
    s.insert_user(&m).await.unwrap();
    s.restamp(&[("id-m".to_string(), mark(&m, 7))])
        .await
        .unwrap();
    assert_eq!(stamps(s).await.get("manual"), Some(&None));
    // the store checks whole chunks
    let many: Vec<(String, RawMark)> = (0..2500)
        .map(|i| (format!("id-x{i}"), mark(&b, i)))
        .chain(std::iter::once(("id-b".to_string(), mark(&b, 9))))
        .collect();
    s.restamp(&many).await.unwrap();
    assert_eq!(stamps(s).await["bob"], Some(raw_stamp(9, digest_bits(&b))));
}

// ---------------------------------------------------------------- outbox (issue 19)

/// One welcome email per created user, as the binary's composer would render it.
struct WelcomeEveryCreate;

impl mfasync_store::Composer for WelcomeEveryCreate {
    fn compose(&self, changes: &[Change]) -> Vec<mfasync_store::NewEmail> {
        changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| email(EmailKind::Welcome, &c.user))
            .collect()
    }
}

use mfasync_core::email::EmailKind;
use mfasync_store::{OutboxStatus, RetryTarget};

fn email(kind: EmailKind, u: &MfaUser) -> mfasync_store::NewEmail {
    mfasync_store::NewEmail {
        kind,
        username: u.username.clone(),
        directory_id: u.directory_id.clone(),
        recipient: u.email.clone().unwrap_or_default(),
        subject: format!("{} {}", kind.as_str(), u.username),
        text: "Hello 東京\n".into(),
        html: (kind == EmailKind::Welcome).then(|| "<p>Hello</p>".into()),
    }
}

async fn outbox_rows_are_written_in_the_plan_transaction(s: &dyn Store) {
    s.set_composer(Some(std::sync::Arc::new(WelcomeEveryCreate)));
    let (a, b) = (dir_user("ann", "id-a"), dir_user("bob", "id-b"));
    // a plan that fails commits neither its users nor its emails
    let clash = vec![create(&a), create(&dir_user("ANN", "id-x"))];
    assert!(s.apply(&clash, Some(&wm("1"))).await.is_err());
    assert!(s.outbox(None, 10).await.unwrap().is_empty());
    // a streamed transaction dropped before its commit: nothing either
    {
        let mut w = s.begin_apply().await.unwrap();
        w.write(&[create(&a)]).await.unwrap();
    }
    assert!(s.outbox(None, 10).await.unwrap().is_empty());
    // committed: one pending row per create, rendered as given
    let mut w = s.begin_apply().await.unwrap();
    w.write(&[create(&a)]).await.unwrap();
    w.write(&[create(&b)]).await.unwrap();
    w.commit(Some(&wm("2"))).await.unwrap();
    let rows = s.outbox(None, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].username, "bob", "newest first");
    let ann = &rows[1];
    assert_eq!(ann.kind, EmailKind::Welcome);
    assert_eq!(ann.status, OutboxStatus::Pending);
    assert_eq!(ann.recipient, "ann@example.com");
    assert_eq!(ann.directory_id.as_deref(), Some("id-a"));
    assert_eq!(ann.text, "Hello 東京\n");
    assert_eq!(ann.html.as_deref(), Some("<p>Hello</p>"));
    assert_eq!(
        (ann.attempts, ann.last_error.clone(), ann.sent_ms),
        (0, None, None)
    );
    // without a composer, plans queue nothing
    s.set_composer(None);
    s.apply(&[create(&dir_user("cy", "id-c"))], None)
        .await
        .unwrap();
    assert_eq!(s.outbox(None, 10).await.unwrap().len(), 2);
}

async fn outbox_welcome_once_per_directory_user(s: &dyn Store) {
    let a = dir_user("ann", "id-a");
    assert_eq!(
        s.outbox_enqueue(&[email(EmailKind::Welcome, &a)])
            .await
            .unwrap(),
        1
    );
    // a second welcome (a re-enable, a re-run) is not queued; updates are
    let again = [email(EmailKind::Welcome, &a), email(EmailKind::Update, &a)];
    assert_eq!(s.outbox_enqueue(&again).await.unwrap(), 1);
    let kinds: Vec<EmailKind> = s
        .outbox(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec![EmailKind::Update, EmailKind::Welcome]);
    // through a sync's composer too
    s.set_composer(Some(std::sync::Arc::new(WelcomeEveryCreate)));
    s.apply(&[create(&a)], None).await.unwrap();
    assert_eq!(
        s.outbox(Some(OutboxStatus::Pending), 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn outbox_claim_send_retry_and_give_up(s: &dyn Store) {
    let (a, b) = (dir_user("ann", "id-a"), dir_user("bob", "id-b"));
    s.outbox_enqueue(&[email(EmailKind::Welcome, &a), email(EmailKind::Update, &b)])
        .await
        .unwrap();
    let now = s.outbox(None, 10).await.unwrap()[0].due_ms;
    assert!(
        s.outbox_claim(now - 1, now + 60_000)
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );
    let first = s.outbox_claim(now, now + 60_000).await.unwrap().unwrap();
    assert_eq!((first.username.as_str(), first.attempts), ("ann", 1));
    // claimed: another sender gets the other row, then nothing
    let second = s.outbox_claim(now, now + 60_000).await.unwrap().unwrap();
    assert_eq!(second.username, "bob");
    assert!(s.outbox_claim(now, now + 60_000).await.unwrap().is_none());
    // ann delivered: sent and audited
    s.outbox_sent(first.id, now + 5).await.unwrap();
    // bob's attempt failed: pending again with the error, due later
    s.outbox_attempt_failed(second.id, "connection refused", Some(now + 1_000))
        .await
        .unwrap();
    let pending = s.outbox(Some(OutboxStatus::Pending), 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!((pending[0].due_ms, pending[0].attempts), (now + 1_000, 1));
    assert!(s
        .outbox_claim(now + 999, now + 60_000)
        .await
        .unwrap()
        .is_none());
    let again = s
        .outbox_claim(now + 1_000, now + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempts), (second.id, 2));
    // given up: failed with the error, audited
    s.outbox_attempt_failed(again.id, "still refused", None)
        .await
        .unwrap();
    let sent = s.outbox(Some(OutboxStatus::Sent), 10).await.unwrap();
    assert_eq!((sent.len(), sent[0].sent_ms), (1, Some(now + 5)));
    let failed = s.outbox(Some(OutboxStatus::Failed), 10).await.unwrap();
    assert_eq!(failed[0].last_error.as_deref(), Some("still refused"));
    assert!(s
        .outbox_claim(now + 10_000_000, now + 20_000_000)
        .await
        .unwrap()
        .is_none());
    let audit = s.audit(10).await.unwrap();
    let events: Vec<(&str, Option<&str>)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.username.as_deref()))
        .collect();
    assert_eq!(
        events,
        vec![("email-failed", Some("bob")), ("email-sent", Some("ann"))]
    );
    assert!(audit[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("still refused"));
    assert!(audit[1]
        .detail
        .as_deref()
        .unwrap()
        .contains("welcome email to ann@example.com"));
    // an expired claim (a sender killed mid-delivery) is taken again
    s.outbox_enqueue(&[email(EmailKind::Update, &a)])
        .await
        .unwrap();
    let t = s.outbox(Some(OutboxStatus::Pending), 1).await.unwrap()[0].due_ms;
    let c = s.outbox_claim(t, t + 100).await.unwrap().unwrap();
    assert!(s.outbox_claim(t + 99, t + 200).await.unwrap().is_none());
    assert_eq!(
        s.outbox_claim(t + 100, t + 200).await.unwrap().unwrap().id,
        c.id
    );
}

/// A cycle's summary email (issue 22, migration 18): kind "summary", no
/// directory user; several per run, never collapsed like welcomes; its
/// delivery is audited under no username.
async fn outbox_summary_rows_belong_to_no_user(s: &dyn Store) {
    let summary = |to: &str| mfasync_store::NewEmail {
        kind: EmailKind::Summary,
        username: mfasync_store::SUMMARY_USERNAME.into(),
        directory_id: None,
        recipient: to.into(),
        subject: "mfasync: sync cycle".into(),
        text: "created: 1\n".into(),
        html: None,
    };
    let a = dir_user("ann", "id-a");
    let queued = s
        .outbox_enqueue(&[
            summary("ops@example.com"),
            summary("ops@example.com"),
            email(EmailKind::Welcome, &a),
        ])
        .await
        .unwrap();
    assert_eq!(queued, 3);
    let rows = s.outbox(None, 10).await.unwrap();
    let kinds: Vec<(EmailKind, &str, Option<&str>)> = rows
        .iter()
        .map(|e| (e.kind, e.username.as_str(), e.directory_id.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EmailKind::Welcome, "ann", Some("id-a")),
            (EmailKind::Summary, "(summary)", None),
            (EmailKind::Summary, "(summary)", None),
        ]
    );
    // delivered: audited with no username, so no user's history shows it
    let now = rows[0].due_ms;
    let first = s.outbox_claim(now, now + 60_000).await.unwrap().unwrap();
    assert_eq!(first.kind, EmailKind::Summary);
    s.outbox_sent(first.id, now).await.unwrap();
    let audit = s.audit(10).await.unwrap();
    assert_eq!(audit[0].action, "email-sent");
    assert_eq!(audit[0].username, None);
    assert!(audit[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("summary email to ops@example.com"));
    assert!(s
        .user_audit("(summary)", None, 10)
        .await
        .unwrap()
        .is_empty());
    // a welcome for the same user is still refused once queued
    assert_eq!(
        s.outbox_enqueue(&[email(EmailKind::Welcome, &a)])
            .await
            .unwrap(),
        0
    );
}

async fn outbox_retry_requeues_failed_never_sent(s: &dyn Store) {
    let (a, b) = (dir_user("ann", "id-a"), dir_user("bob", "id-b"));
    s.outbox_enqueue(&[email(EmailKind::Welcome, &a), email(EmailKind::Welcome, &b)])
        .await
        .unwrap();
    let now = s.outbox(None, 10).await.unwrap()[0].due_ms;
    let x = s.outbox_claim(now, now + 1).await.unwrap().unwrap();
    s.outbox_sent(x.id, now).await.unwrap();
    let y = s.outbox_claim(now, now + 1).await.unwrap().unwrap();
    s.outbox_attempt_failed(y.id, "refused", None)
        .await
        .unwrap();
    // a sent row cannot be re-queued, nor an unknown one; nothing changes
    let r = s
        .outbox_retry(&RetryTarget::Ids(vec![y.id, x.id]), now + 50, "admin")
        .await;
    assert!(is_conflict(&r), "{r:?}");
    assert!(is_conflict(
        &s.outbox_retry(&RetryTarget::Ids(vec![999]), now, "admin")
            .await
    ));
    assert_eq!(
        s.outbox(Some(OutboxStatus::Failed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // every failed row: pending, due now, give-up time counted from now
    let done = s
        .outbox_retry(&RetryTarget::Failed, now + 50, "admin")
        .await
        .unwrap();
    assert_eq!(done, vec![y.id]);
    let p = s.outbox(Some(OutboxStatus::Pending), 10).await.unwrap();
    assert_eq!(
        (p[0].id, p[0].due_ms, p[0].queued_ms),
        (y.id, now + 50, now + 50)
    );
    assert_eq!(
        p[0].last_error.as_deref(),
        Some("refused"),
        "the last error stays shown"
    );
    let audit = s.audit(1).await.unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("email-requeued", "admin")
    );
    assert!(s
        .outbox_retry(&RetryTarget::Failed, now, "admin")
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- recycle bin

/// A directory user with phones, a method and a language (the MFA data a restore brings back).
fn phoned_user(name: &str, id: &str) -> MfaUser {
    MfaUser {
        mobile_phone: Some("+4915112345678".into()),
        primary_phone: Some("+4915112345678".into()),
        backup_phone: Some("+15551234567".into()),
        method: Some("oath_token".into()),
        language: Some("de".into()),
        ..dir_user(name, id)
    }
}

async fn removal_moves_the_user_into_the_bin_and_a_create_restores_it(s: &dyn Store) {
    let a = phoned_user("alice", "id-a");
    let b = full_user();
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    assert!(s.otp_enroll("alice", "v1:sealed-a", "admin").await.unwrap());
    s.apply(&[remove(&a), remove(&b)], None).await.unwrap();
    assert!(s.users().await.unwrap().is_empty());
    assert!(s.otp_secret("alice").await.unwrap().is_none());
    let bin = s.binned().await.unwrap();
    assert_eq!(bin.len(), 2);
    let ba = bin.iter().find(|x| x.user.username == "alice").unwrap();
    assert_eq!(ba.user, a, "the complete row");
    assert!(ba.otp);
    assert_eq!(ba.reason, "no longer in the directory");
    assert!(is_rfc3339_utc(&ba.deleted_at));
    let bb = bin.iter().find(|x| x.user.username == b.username).unwrap();
    assert_eq!(bb.user, b, "every field, enabled = false included");
    assert!(!bb.otp);
    let last = s.audit(1).await.unwrap();
    assert_eq!(last[0].action, "remove");

    // usernames are unique among live users only
    let other = dir_user("ALICE", "id-other");
    s.apply(&[create(&other)], None).await.unwrap();
    s.apply(&[remove(&other)], None).await.unwrap();
    assert_eq!(s.binned().await.unwrap().len(), 3);

    // the same directory_id created again: restored, secret included, then as the directory says
    let mut back = a.clone();
    back.dn = Some("CN=alice,OU=Moved,DC=example,DC=com".into());
    s.apply(&[create(&back)], None).await.unwrap();
    assert_eq!(s.users().await.unwrap(), vec![back.clone()]);
    let secret = s.otp_secret("alice").await.unwrap().unwrap();
    assert_eq!(secret.sealed, "v1:sealed-a");
    let bin = s.binned().await.unwrap();
    assert_eq!(bin.len(), 2);
    assert!(bin
        .iter()
        .all(|x| x.user.directory_id.as_deref() != Some("id-a")));
    let last = s.audit(1).await.unwrap();
    assert_eq!(last[0].action, "restore");
    assert_eq!(last[0].actor, "sync");
    assert_eq!(last[0].username.as_deref(), Some("alice"));
    assert!(last[0].before.is_some() && last[0].after.is_some());
    assert!(last[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("restored from the recycle bin"));
    // and removed again: one bin entry per directory id
    s.apply(&[remove(&back)], None).await.unwrap();
    let bin = s.binned().await.unwrap();
    assert_eq!(bin.len(), 3);
    assert_eq!(bin[0].user, back, "most recently removed first");
    assert!(bin[0].otp);
}

async fn bin_restore_and_purge_by_name(s: &dyn Store) {
    let a = phoned_user("alice", "id-a");
    let b = dir_user("bob", "id-b");
    s.apply(&[create(&a), create(&b)], None).await.unwrap();
    assert!(s.otp_enroll("alice", "v1:sealed-a", "admin").await.unwrap());
    s.apply(&[remove(&a), remove(&b)], None).await.unwrap();

    // db rekey reseals the binned secrets too
    let binned = s.bin_otp_all().await.unwrap();
    assert_eq!(binned.len(), 1);
    assert_eq!(binned[0].1, "v1:sealed-a");
    s.bin_otp_reseal(&[(binned[0].0, "v2:resealed".into())])
        .await
        .unwrap();

    assert!(s.bin_restore("nobody", "admin").await.unwrap().is_none());
    let restored = s.bin_restore("ALICE", "admin").await.unwrap().unwrap();
    assert_eq!(restored.user, a);
    assert_eq!(s.users().await.unwrap(), vec![a.clone()]);
    assert_eq!(
        s.otp_secret("alice").await.unwrap().unwrap().sealed,
        "v2:resealed"
    );
    let last = s.audit(1).await.unwrap();
    assert_eq!(
        (last[0].action.as_str(), last[0].actor.as_str()),
        ("restore", "admin")
    );

    // refused while a live user has the username
    s.apply(&[remove(&a)], None).await.unwrap();
    let taker = dir_user("Alice", "id-taker");
    s.apply(&[create(&taker)], None).await.unwrap();
    let refused = s.bin_restore("alice", "admin").await;
    assert!(is_conflict(&refused), "{refused:?}");
    assert_eq!(s.binned().await.unwrap().len(), 2, "nothing moved");
    // by directory id too
    assert!(is_conflict(&s.bin_restore("id-a", "admin").await));

    // purge: gone for good, audited
    assert!(s.bin_purge("nobody", "admin").await.unwrap().is_none());
    let purged = s.bin_purge("id-a", "admin").await.unwrap().unwrap();
    assert_eq!(purged.user.username, "alice");
    let last = s.audit(1).await.unwrap();
    assert_eq!(last[0].action, "purge");
    assert!(last[0].before.is_some());
    let left: Vec<String> = s
        .binned()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.user.username)
        .collect();
    assert_eq!(left, vec!["bob".to_string()]);

    // two entries with one username: named by directory id
    s.apply(&[remove(&taker)], None).await.unwrap();
    s.apply(&[create(&a)], None).await.unwrap();
    s.apply(&[remove(&a)], None).await.unwrap();
    assert!(is_conflict(&s.bin_purge("alice", "admin").await));
    assert!(s.bin_purge("id-taker", "admin").await.unwrap().is_some());
    assert!(s.bin_restore("alice", "admin").await.unwrap().is_some());
}

async fn bin_retention_purges_by_age(s: &dyn Store) {
    let a = dir_user("alice", "id-a");
    s.apply(&[create(&a)], None).await.unwrap();
    s.apply(&[remove(&a)], None).await.unwrap();
    assert_eq!(
        s.bin_purge_before("2000-01-01T00:00:00Z", "test")
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.binned().await.unwrap().len(), 1);
    assert_eq!(
        s.bin_purge_before("2100-01-01T00:00:00Z", "sync.retention = \"30d\"")
            .await
            .unwrap(),
        1
    );
    assert!(s.binned().await.unwrap().is_empty());
    let last = s.audit(1).await.unwrap();
    assert_eq!(
        (last[0].action.as_str(), last[0].actor.as_str()),
        ("bin-purged", "retention")
    );
    // a purged user comes back as a new one
    s.apply(&[create(&a)], None).await.unwrap();
    assert_eq!(s.audit(1).await.unwrap()[0].action, "create");
}
