//! Welcome and update emails rendered from templates (issue 19 item 2): the
//! built-in ones (`emails/*.txt`) or the files `[email]` names, text and
//! optionally HTML (every value HTML-escaped there). `Armed` gives the
//! store, for one cycle, a `Composer` that renders what
//! `core::email::decide` calls for, so each email is queued in the
//! transaction that makes its user change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::Config;
use mfasync_core::email::{self, EmailKind};
use mfasync_core::plan::Change;
use mfasync_core::MfaUser;
use mfasync_store::{NewEmail, Store};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

const WELCOME: &str = include_str!("emails/welcome.txt");
const UPDATE: &str = include_str!("emails/update.txt");

/// The largest template file read.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The compiled templates of both kinds.
pub struct Templates {
    env: Environment<'static>,
    html: [bool; 3],
}

fn slot(kind: EmailKind) -> usize {
    match kind {
        EmailKind::Welcome => 0,
        EmailKind::Update => 1,
        // (never rendered from a template: `summary.rs` writes it)
        EmailKind::Summary => 2,
    }
}

/// What a rendered email is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

impl Templates {
    /// The built-in templates.
    pub fn builtin() -> Templates {
        let mut t = Templates::empty();
        for (kind, text) in [(EmailKind::Welcome, WELCOME), (EmailKind::Update, UPDATE)] {
            // (the built-in templates are tested: they always compile)
            if let Err(e) = t.add_text(kind, text.to_string()) {
                tracing::error!(target: "mfasync::emails", "built-in {} template: {e:#}", kind.as_str());
            }
        }
        t
    }

    fn empty() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| match name.ends_with(".html") {
            true => AutoEscape::Html,
            false => AutoEscape::None,
        });
        Templates {
            env,
            html: [false; 3],
        }
    }

    /// The templates `cfg.email` names, each checked by rendering a sample
    /// user; a file that cannot be read or used is reported and the
    /// built-in template of its kind is used instead (an email is never
    /// lost to a template error).
    pub fn load(cfg: &Config) -> (Templates, Vec<String>) {
        let mut t = Templates::builtin();
        let mut problems = Vec::new();
        let e = &cfg.email;
        for (kind, text_key, text, html_key, html) in [
            (
                EmailKind::Welcome,
                "email.welcome_template",
                &e.welcome_template,
                "email.welcome_html_template",
                &e.welcome_html_template,
            ),
            (
                EmailKind::Update,
                "email.update_template",
                &e.update_template,
                "email.update_html_template",
                &e.update_html_template,
            ),
        ] {
            let mut candidate = Templates::builtin();
            let mut ok = true;
            if let Some(path) = text {
                if let Err(e) = read(path).and_then(|s| candidate.add_text(kind, s)) {
                    problems.push(format!("{text_key} {path}: {e:#}"));
                    ok = false;
                }
            }
            if let Some(path) = html {
                if let Err(e) = read(path).and_then(|s| candidate.add_html(kind, s)) {
                    problems.push(format!("{html_key} {path}: {e:#}"));
                    ok = false;
                }
            }
            if ok && (text.is_some() || html.is_some()) {
                let sample = sample_user();
                let before = (kind == EmailKind::Update).then_some(&sample);
                match candidate.render(kind, &sample, before) {
                    Ok(_) => t.take(kind, candidate),
                    Err(e) => problems.push(format!(
                        "the {} templates ({text_key}{}): {e:#}",
                        kind.as_str(),
                        if html.is_some() {
                            format!(", {html_key}")
                        } else {
                            String::new()
                        }
                    )),
                }
            }
        }
        (t, problems)
    }

    /// Use `other`'s templates of `kind`.
    fn take(&mut self, kind: EmailKind, other: Templates) {
        for part in ["subject", "txt", "html"] {
            let name = name(kind, part);
            if let Ok(t) = other.env.get_template(&name) {
                let source = t.source().to_string();
                let _ = self.env.add_template_owned(name, source);
            }
        }
        self.html[slot(kind)] = other.html[slot(kind)];
    }

    /// A text template: its first line `Subject: ...`, the rest the body.
    fn add_text(&mut self, kind: EmailKind, source: String) -> Result<()> {
        let source = source.replace("\r\n", "\n");
        let (first, body) = source.split_once('\n').unwrap_or((source.as_str(), ""));
        let Some(subject) = first.strip_prefix("Subject:") else {
            return Err(EngineError::Other(
                "the first line must be \"Subject: ...\"".into(),
            ));
        };
        self.env
            .add_template_owned(name(kind, "subject"), subject.trim().to_string())
            .map_err(|e| EngineError::Other(format!("subject: {e}")))?;
        self.env
            .add_template_owned(name(kind, "txt"), body.to_string())
            .map_err(|e| EngineError::Other(e.to_string()))?;
        Ok(())
    }

    fn add_html(&mut self, kind: EmailKind, source: String) -> Result<()> {
        self.env
            .add_template_owned(name(kind, "html"), source)
            .map_err(|e| EngineError::Other(e.to_string()))?;
        self.html[slot(kind)] = true;
        Ok(())
    }

    /// Render the email of `kind` for `user` (`before`: the user before an update).
    pub fn render(
        &self,
        kind: EmailKind,
        user: &MfaUser,
        before: Option<&MfaUser>,
    ) -> Result<Rendered> {
        let ctx = context(user, before);
        let get = |part| {
            self.env
                .get_template(&name(kind, part))
                .and_then(|t| t.render(&ctx))
                .map_err(|e| EngineError::Other(e.to_string()))
        };
        // a header: no line breaks or control characters from directory values
        let subject: String = get("subject")?
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Ok(Rendered {
            subject: subject.trim().to_string(),
            text: get("txt")?,
            html: match self.html[slot(kind)] {
                true => Some(get("html")?),
                false => None,
            },
        })
    }
}

fn name(kind: EmailKind, part: &str) -> String {
    format!("{}.{part}", kind.as_str())
}

fn read(path: &str) -> Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).context("cannot open")?;
    let mut text = String::new();
    file.take(MAX_TEMPLATE_BYTES + 1)
        .read_to_string(&mut text)
        .context("cannot read it as UTF-8 text")?;
    if text.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(EngineError::Other(format!(
            "larger than {MAX_TEMPLATE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// The template's variables: the user's export fields (PRODUCT.md section
/// 3), `method_text`, and for an update `previous` (the same of the user
/// before) and `changed` (which of primary_phone, backup_phone, method).
fn context(user: &MfaUser, before: Option<&MfaUser>) -> minijinja::Value {
    let fields = |u: &MfaUser| {
        let mut v = serde_json::to_value(u).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "method_text".into(),
                method_text(u.method.as_deref()).into(),
            );
        }
        v
    };
    let mut v = fields(user);
    if let Some(map) = v.as_object_mut() {
        let changed: Vec<&str> = match before {
            Some(b) => email::SEEN_FIELDS
                .iter()
                .copied()
                .filter(|f| {
                    let (x, y) = (fields(b), fields(user));
                    x.get(f) != y.get(f)
                })
                .collect(),
            None => Vec::new(),
        };
        map.insert("changed".into(), changed.into());
        map.insert(
            "previous".into(),
            before.map(fields).unwrap_or(serde_json::Value::Null),
        );
    }
    minijinja::Value::from_serialize(&v)
}

/// The method as the user reads it.
fn method_text(method: Option<&str>) -> &'static str {
    match method {
        Some("phone-call") => "a phone call",
        Some("text-message") => "a text message",
        Some("mobile-app") => "the mobile app",
        Some("oath-token") => "an OATH token",
        _ => "the method your administrator chose",
    }
}

fn sample_user() -> MfaUser {
    MfaUser {
        username: "sample".into(),
        first_name: Some("Sam".into()),
        email: Some("sample@example.com".into()),
        primary_phone: Some("+15551230000".into()),
        method: Some("phone-call".into()),
        enabled: true,
        ..MfaUser::default()
    }
}

/// Renders a cycle's emails for the store (`Store::set_composer`) and counts.
pub struct UserEmails {
    templates: Templates,
    welcoming: Vec<String>,
    queued: AtomicUsize,
    without_address: AtomicUsize,
}

impl mfasync_store::Composer for UserEmails {
    fn compose(&self, changes: &[Change]) -> Vec<NewEmail> {
        let decision = email::decide(changes, |dn| self.welcoming.iter().any(|w| w == dn));
        let mut out = Vec::with_capacity(decision.emails.len());
        let mut without = decision.without_address;
        for e in decision.emails {
            // an address lettre accepts, or counted as none
            let Some(to) = email::address(e.user).filter(|a| a.parse::<lettre::Address>().is_ok())
            else {
                without += 1;
                continue;
            };
            let rendered = self
                .templates
                .render(e.kind, e.user, e.before)
                .or_else(|err| {
                    tracing::error!(target: "mfasync::emails",
                        user = %e.user.username,
                        "cannot render the {} email ({err:#}): the built-in template is used",
                        e.kind.as_str()
                    );
                    Templates::builtin().render(e.kind, e.user, e.before)
                });
            match rendered {
                Ok(r) => out.push(NewEmail {
                    kind: e.kind,
                    username: e.user.username.clone(),
                    directory_id: e.user.directory_id.clone(),
                    recipient: to.to_string(),
                    subject: r.subject,
                    text: r.text,
                    html: r.html,
                }),
                Err(err) => tracing::error!(target: "mfasync::emails",
                    user = %e.user.username,
                    "cannot render the {} email: {err:#}",
                    e.kind.as_str()
                ),
            }
        }
        self.queued.fetch_add(out.len(), Ordering::Relaxed);
        self.without_address.fetch_add(without, Ordering::Relaxed);
        out
    }
}

/// What the store asks on each plan write of one cycle: the user emails
/// (when armed) and the summary's [`Tally`] of usernames (when
/// `sync.summary` is set).
struct CycleComposer {
    emails: Option<Arc<UserEmails>>,
    tally: Option<Arc<crate::summary::Tally>>,
}

impl mfasync_store::Composer for CycleComposer {
    fn compose(&self, changes: &[Change]) -> Vec<NewEmail> {
        if let Some(t) = &self.tally {
            t.record(changes);
        }
        match &self.emails {
            Some(e) => mfasync_store::Composer::compose(e.as_ref(), changes),
            None => Vec::new(),
        }
    }
}

/// The store's composer for one cycle; taken away (and the counts logged)
/// when dropped.
pub struct Armed<'a> {
    store: &'a dyn Store,
    armed: bool,
    emails: Option<Arc<UserEmails>>,
}

impl<'a> Armed<'a> {
    /// Give `store` the composer of `cfg`'s items with `welcome_email = true`
    /// (no emails when there is no such item, or no `[smtp]` to send with),
    /// recording the usernames written into `tally` (the summary email's).
    pub fn arm(
        store: &'a dyn Store,
        cfg: &Config,
        tally: Option<Arc<crate::summary::Tally>>,
    ) -> Armed<'a> {
        let emails = user_emails(cfg);
        let armed = emails.is_some() || tally.is_some();
        if armed {
            store.set_composer(Some(Arc::new(CycleComposer {
                emails: emails.clone(),
                tally,
            })));
        }
        Armed {
            store,
            armed,
            emails,
        }
    }
}

/// The user emails of `cfg`'s items with `welcome_email = true`, if any.
fn user_emails(cfg: &Config) -> Option<Arc<UserEmails>> {
    let welcoming: Vec<String> = cfg
        .sync
        .items
        .iter()
        .filter(|i| i.user.welcome_email)
        .map(|i| i.dn.clone())
        .collect();
    if welcoming.is_empty() {
        return None;
    }
    if cfg.smtp.is_none() {
        crate::notify::warning(
            "welcome_email = true but no [smtp] is configured: no user emails are queued",
        );
        return None;
    }
    let (templates, problems) = Templates::load(cfg);
    for p in problems {
        crate::notify::error(format_args!("{p} (the built-in template is used)"));
    }
    Some(Arc::new(UserEmails {
        templates,
        welcoming,
        queued: AtomicUsize::new(0),
        without_address: AtomicUsize::new(0),
    }))
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.set_composer(None);
        }
        let Some(e) = self.emails.take() else { return };
        let (queued, without) = (
            e.queued.load(Ordering::Relaxed),
            e.without_address.load(Ordering::Relaxed),
        );
        if queued + without > 0 {
            tracing::info!(target: "mfasync::emails",
                queued,
                without_address = without,
                "user emails of this cycle (queued with its changes)"
            );
        }
        if without > 0 {
            crate::notify::notice(format_args!(
                "{without} users would have had a welcome or update email but have no email address"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> MfaUser {
        MfaUser {
            username: "jdoe".into(),
            first_name: Some("Jane".into()),
            email: Some("jdoe@example.com".into()),
            primary_phone: Some("+15551230000".into()),
            extension: Some("12".into()),
            method: Some("text-message".into()),
            enabled: true,
            ..MfaUser::default()
        }
    }

    #[test]
    fn builtin_templates_name_the_users_settings() {
        let t = Templates::builtin();
        let w = t.render(EmailKind::Welcome, &user(), None).unwrap();
        assert_eq!(w.subject, "Multi-factor authentication is set up for jdoe");
        assert!(w.text.starts_with("Hello Jane,"), "{}", w.text);
        assert!(w.text.contains("with a text message."), "{}", w.text);
        assert!(
            w.text.contains("Primary phone: +15551230000 ext. 12"),
            "{}",
            w.text
        );
        assert!(!w.text.contains("Backup phone"), "{}", w.text);
        assert_eq!(w.html, None);
        let mut after = user();
        after.primary_phone = Some("+15559990000".into());
        let u = t.render(EmailKind::Update, &after, Some(&user())).unwrap();
        assert!(
            u.text
                .contains("Primary phone: +15559990000 (was +15551230000)"),
            "{}",
            u.text
        );
        assert!(
            u.text.contains("Method:        a text message\n"),
            "{}",
            u.text
        );
        assert!(u.text.contains("Backup phone:  none\n"), "{}", u.text);
    }

    #[test]
    fn override_files_with_html_escape_directory_values() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("w.txt");
        let html = dir.path().join("w.html");
        std::fs::write(
            &text,
            "Subject: Hi {{ first_name }}\nYour phone: {{ primary_phone }}",
        )
        .unwrap();
        std::fs::write(&html, "<p>Hi {{ first_name }} {{ description }}</p>").unwrap();
        let mut cfg = Config::default();
        cfg.email.welcome_template = Some(text.to_string_lossy().into());
        cfg.email.welcome_html_template = Some(html.to_string_lossy().into());
        let (t, problems) = Templates::load(&cfg);
        assert!(problems.is_empty(), "{problems:?}");
        let mut u = user();
        u.first_name = Some("<b>Jane</b>\r\nBcc: x@evil.test".into());
        u.description = Some("\"&'".into());
        let r = t.render(EmailKind::Welcome, &u, None).unwrap();
        assert_eq!(
            r.subject, "Hi <b>Jane</b>  Bcc: x@evil.test",
            "no line break in a header"
        );
        assert_eq!(r.text, "Your phone: +15551230000");
        assert_eq!(
            r.html.as_deref(),
            Some("<p>Hi &lt;b&gt;Jane&lt;&#x2f;b&gt;\r\nBcc: x@evil.test &quot;&amp;&#x27;</p>")
        );
        // the update templates stay the built-in ones
        assert!(t
            .render(EmailKind::Update, &u, Some(&user()))
            .unwrap()
            .html
            .is_none());
    }

    #[test]
    fn bad_override_files_fall_back_to_the_builtin_templates() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("no-subject.txt", "Hello {{ username }}", "first line"),
            ("syntax.txt", "Subject: x\n{% if %}", "syntax"),
            (
                "unknown.txt",
                "Subject: x\n{{ no_such_field }}",
                "undefined",
            ),
        ];
        for (file, text, why) in cases {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            let mut cfg = Config::default();
            cfg.email.update_template = Some(path.to_string_lossy().into());
            let (t, problems) = Templates::load(&cfg);
            assert_eq!(problems.len(), 1, "{file}: {problems:?}");
            assert!(
                problems[0].starts_with("email.update_template")
                    || problems[0].contains("email.update_template"),
                "{problems:?}"
            );
            assert!(
                problems[0].to_lowercase().contains(why),
                "{file}: {problems:?}"
            );
            let r = t.render(EmailKind::Update, &user(), Some(&user())).unwrap();
            assert!(r
                .subject
                .starts_with("Your multi-factor authentication settings changed"));
        }
        let mut cfg = Config::default();
        cfg.email.welcome_template = Some("/nonexistent/welcome.txt".into());
        let (_, problems) = Templates::load(&cfg);
        assert!(
            problems[0].contains("/nonexistent/welcome.txt"),
            "{problems:?}"
        );
    }
}
