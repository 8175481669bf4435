//! The configuration types are the only list of keys: every key they write
//! is read back, and every other key is named as unknown wherever it is.

use super::*;

/// Every field of every configuration struct set to a value that is
/// written. Struct literals without `..`: a new field does not compile until
/// it is set here, and then the round trip below proves it is accepted.
fn every_key_set() -> Config {
    let bind = |kind| Bind {
        kind,
        dn: "cn=query,dc=example,dc=com".into(),
        // never written (secrets): their keys are checked by `secrets_are_accepted_keys`
        password: None,
        password_encrypted: None,
        password_file: Some("/etc/mfasync/pw".into()),
        password_env: Some("MFA_BIND_PW".into()),
    };
    Config {
        directory: Directory {
            source: DirectorySource::Ldap,
            domain: "example.com".into(),
            servers: vec!["ldaps://dc1.example.com".into()],
            dns_servers: vec!["192.0.2.53".into()],
            site: "Main".into(),
            base_dn: "dc=example,dc=com".into(),
            include_trusted_domains: false,
            use_attribute_scope_queries: false,
            query_size_limit: 500,
            timeout_seconds: 20,
            max_message_bytes: 2 << 20,
            starttls: true,
            tls_ca_file: Some("/etc/ssl/ca.pem".into()),
            tls_verify: false,
            query_bind: bind(BindType::Simple),
            auth_bind: bind(BindType::Ssl),
            domains: vec![DomainBind {
                name: "other.example.com".into(),
                query_bind: bind(BindType::Anonymous),
            }],
        },
        filters: Filters {
            container: "(objectClass=organizationalUnit)".into(),
            security_group: "(objectClass=groupOfNames)".into(),
            user: "(objectClass=person)".into(),
            // not a key: which filters were blank in the text
            blank: BlankFilters::default(),
        },
        attributes: Attributes {
            unique_id: "entryUUID".into(),
            unique_id_type: UniqueIdType::String,
            distinguished_name: "entryDN".into(),
            container_name: AttrList(vec!["ou".into()]),
            security_group_name: "cn".into(),
            username: AttrList(vec!["uid".into()]),
            first_name: "gn".into(),
            last_name: "surname".into(),
            email: "mailbox".into(),
            user_group: "departmentNumber".into(),
            description: "title".into(),
            phone_call_language: "preferredLanguage".into(),
            text_message_language: "smsLanguage".into(),
            mobile_app_language: "appLanguage".into(),
            oath_token_language: "tokenLanguage".into(),
            business_phone: "officePhone".into(),
            home_phone: "homeTelephoneNumber".into(),
            pager: "pagerNumber".into(),
            mobile_phone: "mobileTelephoneNumber".into(),
            fax: "fax".into(),
            ip_phone: "voip".into(),
            custom_phone: "otherPhone".into(),
            extension: "ext".into(),
        },
        sync: Sync {
            enabled: false,
            interval: "10m".into(),
            remove_deleted_users: false,
            always_full: true,
            change_tracking: ChangeTracking::Usn,
            approval_threshold: Some(Threshold::Count(50)),
            approval_threshold_disables: Some(Threshold::Percent(25_000)),
            approval_threshold_removals: Some(Threshold::Count(7)),
            protected: vec!["breakglass".into(), "cn=tier0,dc=example,dc=com".into()],
            notify: vec!["ops@example.com".into()],
            summary: vec!["ops-summary@example.com".into()],
            approval_expiry: "3d".into(),
            items: vec![SyncItem {
                kind: ItemKind::SecurityGroup,
                dn: "cn=mfa,dc=example,dc=com".into(),
                include_nested: false,
                when_removed: WhenRemoved::Remove,
                user: ItemUser {
                    enabled: false,
                    method: Method::OathToken,
                    phone: PhoneKind::Mobile,
                    backup_phone: Some(PhoneKind::Home),
                    country_code: "44".into(),
                    language: "en-GB".into(),
                    welcome_email: true,
                },
                id: Some("5c0a1e2f-0000-4000-8000-000000000001".into()),
                max_departures: Some(3),
            }],
            retention: "14d".into(),
        },
        smtp: Some(Smtp {
            server: "smtp://mail.example.com".into(),
            from: "mfa@example.com".into(),
            username: Some("mfa".into()),
            password: None,
            password_encrypted: None,
            password_file: Some("/etc/mfasync/smtp-pw".into()),
            password_env: Some("SMTP_PW".into()),
        }),
        portal: Some(Portal {
            admin_group: "cn=admins,dc=example,dc=com".into(),
        }),
        audit: AuditSettings {
            retention: "2y".into(),
        },
        email: EmailSettings {
            welcome_template: Some("/etc/mfasync/welcome.txt".into()),
            welcome_html_template: Some("/etc/mfasync/welcome.html".into()),
            update_template: Some("/etc/mfasync/update.txt".into()),
            update_html_template: Some("/etc/mfasync/update.html".into()),
            give_up_after: "1d".into(),
        },
        radius: Some(Radius {
            listen: "127.0.0.1:11812".into(),
            clients: vec![RadiusClient {
                name: "vpn".into(),
                address: "10.0.0.0/24".into(),
                secret_file: "/etc/mfasync/radius-vpn.secret".into(),
                require_message_authenticator: false,
                second_factor: SecondFactor::Append,
                separator: "::".into(),
                other_methods: OtherMethods::Password,
            }],
        }),
    }
}

fn read(text: &str) -> (Option<Config>, Vec<ConfigError>) {
    match text.parse() {
        Ok(doc) => typed::read(doc),
        Err(e) => (None, vec![super::syntax::error(text, &e)]),
    }
}

fn unknown(text: &str) -> Vec<String> {
    read(text)
        .1
        .into_iter()
        .filter(|e| e.message == "unknown key")
        .map(|e| e.key)
        .collect()
}

#[test]
fn every_key_the_types_write_is_read_back() {
    let full = every_key_set();
    let text = toml::to_string(&full).unwrap_or_else(|e| panic!("{e}"));
    let (back, errors) = read(&text);
    assert!(errors.is_empty(), "{errors:?} in\n{text}");
    assert_eq!(back, Some(full), "{text}");
    // and what `config export` writes
    let (back, errors) = read(&every_key_set().to_toml_redacted());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(back, Some(every_key_set()));
}

#[test]
fn secrets_are_accepted_keys() {
    let (cfg, errors) = read(
        "[directory.query_bind]\npassword = \"p\"\npassword_encrypted = \"v1:x\"\n\
         [smtp]\npassword = \"s\"\npassword_encrypted = \"v1:y\"\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let cfg = cfg.unwrap_or_default();
    assert_eq!(cfg.directory.query_bind.password.as_deref(), Some("p"));
    assert_eq!(
        cfg.smtp.and_then(|s| s.password_encrypted).as_deref(),
        Some("v1:y")
    );
}

#[test]
fn fields_that_are_not_keys_are_unknown() {
    // `Filters::blank` is `#[serde(skip)]`: set by `parse`, never read
    assert_eq!(
        unknown("[filters]\nblank = { user = true }\n"),
        vec!["filters.blank"]
    );
}

#[test]
fn unknown_keys_are_named_at_every_depth_in_file_order() {
    let k = unknown(
        "top = 1\n\
         [directory]\nservers = [\"ldap://a\"]\nsrvers = 1\n\
         query_bind = { type = \"simple\", dn = \"cn=a,dc=b\", bogus = 2 }\n\
         auth_bind.colour = 3\n\
         [[directory.domains]]\nname = \"b.test\"\nquery_bind = { type = \"windows\", kind = \"x\" }\nextra = 3\n\
         [sync]\nitems = [{ dn = \"ou=a,dc=b\" }, { dn = \"ou=c,dc=b\", colour = 1, user = { metod = 1 } }]\n\
         [smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npasword = \"x\"\n\
         [portal]\nadmin = 1\n[email]\nsender = 1\n[audit]\nkeep = 1\n\
         [attributes]\nphone = \"mobile\"\n",
    );
    assert_eq!(
        k,
        vec![
            "top",
            "directory.srvers",
            "directory.query_bind.bogus",
            "directory.auth_bind.colour",
            "directory.domains[0].query_bind.kind",
            "directory.domains[0].extra",
            "sync.items[1].colour",
            "sync.items[1].user.metod",
            "smtp.pasword",
            "portal.admin",
            "email.sender",
            "audit.keep",
            "attributes.phone",
        ]
    );
}

#[test]
fn unknown_keys_in_arrays_of_tables_and_their_sub_tables() {
    let k = unknown(
        "[[sync.items]]\ndn = \"ou=a,dc=b\"\nid = \"x\"\n\
         [[sync.items]]\ndn = \"ou=c,dc=b\"\nfoo = 1\n[sync.items.user]\nbar = 1\n\
         [[sync.items]]\ndn = \"ou=d,dc=b\"\n[sync.items.user.deeper]\nbaz = 1\n",
    );
    assert_eq!(
        k,
        vec![
            "sync.items[1].foo",
            "sync.items[1].user.bar",
            "sync.items[2].user.deeper"
        ]
    );
}

#[test]
fn unknown_keys_and_type_errors_are_listed_together() {
    let (cfg, errors) = read("[sync]\ninterval = 5\nbogus = 1\n[directory]\nstarttls = \"no\"\n");
    assert!(cfg.is_some());
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0], "sync.bogus: unknown key");
    assert!(
        listed[1].starts_with("sync.interval: invalid type"),
        "{listed:?}"
    );
    assert!(
        listed[2].starts_with("directory.starttls: invalid type"),
        "{listed:?}"
    );
}

#[test]
fn a_syntax_error_is_named_by_its_key_line_and_column() {
    let errors = parse("[sync]\ninterval = 5m\n").err().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "sync.interval");
    assert!(
        errors[0].message.starts_with("line 2, column 13: "),
        "{errors:?}"
    );
}
