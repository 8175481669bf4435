//! Attribute mapping (the seed's Attributes tab): a directory entry becomes the
//! directory part of an MFA user; a sync item then adds its MFA settings.

use crate::config::{Attributes, Method, PhoneKind, SyncItem, UniqueIdType};
use crate::entry::Entry;
use crate::phone;
use crate::user::{MfaUser, Source};

/// AD userAccountControl ACCOUNTDISABLE bit.
const UF_ACCOUNTDISABLE: u32 = 0x2;

/// The directory part of a user, before an item's settings are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// MfaUser with the mapped fields set; item-dependent fields still empty.
    pub user: MfaUser,
    /// The directory account is disabled (AD userAccountControl bit 2).
    pub account_disabled: bool,
    /// Extension split off each phone (business, home, pager, mobile, fax, ip, custom).
    pub phone_extensions: [Option<String>; 7],
    /// Extension from the configured extension attribute.
    pub extension_attr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{dn}: no value in {attr} (the unique identifier attribute)")]
    NoUniqueId { dn: String, attr: String },
    #[error("{dn}: {attr} is not a GUID (expected 16 bytes, got {len})")]
    BadGuid {
        dn: String,
        attr: String,
        len: usize,
    },
    #[error("{dn}: no username: none of {attrs} has a value")]
    NoUsername { dn: String, attrs: String },
}

/// The unique identifier as text, per `unique_id_type`.
pub fn unique_id_text(kind: UniqueIdType, raw: &[u8]) -> Result<String, usize> {
    match kind {
        UniqueIdType::Guid => {
            if let Ok(b) = <[u8; 16]>::try_from(raw) {
                return Ok(uuid::Uuid::from_bytes_le(b).hyphenated().to_string());
            }
            // some servers hand out the GUID as text already
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| uuid::Uuid::parse_str(s.trim().trim_matches(['{', '}'])).ok())
                .map(|u| u.hyphenated().to_string())
                .ok_or(raw.len())
        }
        UniqueIdType::ByteArray => {
            if !raw.is_empty() && raw.iter().all(|b| b.is_ascii_graphic()) {
                Ok(String::from_utf8_lossy(raw).into_owned())
            } else {
                Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
            }
        }
        UniqueIdType::String => Ok(String::from_utf8_lossy(raw).trim().to_string()),
    }
}

/// The DN from the configured DN attribute; an ADsPath ("LDAP://server/CN=…")
/// loses its "LDAP://server/" part. Falls back to the entry's own DN.
pub fn entry_dn(attrs: &Attributes, e: &Entry) -> String {
    let dn = match e.first_str(&attrs.distinguished_name) {
        Some(v) => strip_adspath(&v),
        None => e.dn.clone(),
    };
    crate::filter::canonical_escapes(&dn)
}

pub fn strip_adspath(v: &str) -> String {
    let Some(rest) = v
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("LDAP://"))
        .map(|_| &v[7..])
    else {
        return v.to_string();
    };
    // "server/DN" or just "DN": a server part has a '/' before any '='
    match (rest.find('/'), rest.find('=')) {
        (Some(slash), Some(eq)) if slash < eq => rest[slash + 1..].to_string(),
        (Some(slash), None) => rest[slash + 1..].to_string(),
        _ => rest.to_string(),
    }
}

/// The first container-name attribute present on a container entry.
pub fn container_name(attrs: &Attributes, e: &Entry) -> Option<String> {
    attrs.container_name.0.iter().find_map(|a| e.first_str(a))
}

/// The attribute names lower-cased (LDAP names are case-insensitive and
/// `Entry` keeps them lower-case): mapping many entries with these looks
/// attributes up without a copy of the name each time. Same mapping.
pub fn lowercase_names(a: &Attributes) -> Attributes {
    let mut a = a.clone();
    for s in [
        &mut a.unique_id,
        &mut a.distinguished_name,
        &mut a.security_group_name,
        &mut a.first_name,
        &mut a.last_name,
        &mut a.email,
        &mut a.user_group,
        &mut a.description,
        &mut a.phone_call_language,
        &mut a.text_message_language,
        &mut a.mobile_app_language,
        &mut a.oath_token_language,
        &mut a.business_phone,
        &mut a.home_phone,
        &mut a.pager,
        &mut a.mobile_phone,
        &mut a.fax,
        &mut a.ip_phone,
        &mut a.custom_phone,
        &mut a.extension,
    ] {
        s.make_ascii_lowercase();
    }
    for s in a.container_name.0.iter_mut().chain(a.username.0.iter_mut()) {
        s.make_ascii_lowercase();
    }
    a
}

/// Map a user entry (the seed's Attributes table).
pub fn map_user(attrs: &Attributes, e: &Entry) -> Result<DirectoryUser, MapError> {
    let dn = entry_dn(attrs, e);
    let raw_id = e
        .first_bytes(&attrs.unique_id)
        .ok_or_else(|| MapError::NoUniqueId {
            dn: dn.clone(),
            attr: attrs.unique_id.clone(),
        })?;
    let directory_id =
        unique_id_text(attrs.unique_id_type, raw_id).map_err(|len| MapError::BadGuid {
            dn: dn.clone(),
            attr: attrs.unique_id.clone(),
            len,
        })?;
    let username = attrs
        .username
        .0
        .iter()
        .find_map(|a| e.first_str(a))
        .ok_or_else(|| MapError::NoUsername {
            dn: dn.clone(),
            attrs: attrs.username.0.join(", "),
        })?;
    let get = |a: &str| e.first_str(a);
    let mut exts: [Option<String>; 7] = Default::default();
    let mut phones: [Option<String>; 7] = Default::default();
    for (i, a) in [
        &attrs.business_phone,
        &attrs.home_phone,
        &attrs.pager,
        &attrs.mobile_phone,
        &attrs.fax,
        &attrs.ip_phone,
        &attrs.custom_phone,
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = get(a) {
            let (num, ext) = phone::split_extension(&v);
            phones[i] = (!num.is_empty()).then_some(num);
            exts[i] = ext;
        }
    }
    let [business_phone, home_phone, pager, mobile_phone, fax, ip_phone, custom_phone] = phones;
    let uac = e
        .first_str("useraccountcontrol")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v as u32)
        .unwrap_or(0);
    Ok(DirectoryUser {
        user: MfaUser {
            username,
            directory_id: Some(directory_id),
            dn: Some(dn),
            first_name: get(&attrs.first_name),
            last_name: get(&attrs.last_name),
            email: get(&attrs.email),
            user_group: get(&attrs.user_group),
            description: get(&attrs.description),
            phone_call_language: get(&attrs.phone_call_language),
            text_message_language: get(&attrs.text_message_language),
            mobile_app_language: get(&attrs.mobile_app_language),
            oath_token_language: get(&attrs.oath_token_language),
            business_phone,
            home_phone,
            pager,
            mobile_phone,
            fax,
            ip_phone,
            custom_phone,
            primary_phone: None,
            extension: None,
            backup_phone: None,
            method: None,
            language: None,
            enabled: true,
            sync_item: None,
            source: Source::Directory,
        },
        account_disabled: uac & UF_ACCOUNTDISABLE != 0,
        phone_extensions: exts,
        extension_attr: get(&attrs.extension),
    })
}

fn phone_of(u: &MfaUser, k: PhoneKind) -> Option<&String> {
    match k {
        PhoneKind::Business => u.business_phone.as_ref(),
        PhoneKind::Home => u.home_phone.as_ref(),
        PhoneKind::Pager => u.pager.as_ref(),
        PhoneKind::Mobile => u.mobile_phone.as_ref(),
        PhoneKind::Fax => u.fax.as_ref(),
        PhoneKind::Ip => u.ip_phone.as_ref(),
        PhoneKind::Custom => u.custom_phone.as_ref(),
    }
}

/// The MFA user for a directory user governed by `item`.
pub fn apply_item(d: &DirectoryUser, item: &SyncItem) -> MfaUser {
    apply_item_with(d, item, &mut phone::E164Cache::default())
}

/// `apply_item`, with E.164 results remembered in `cache` across users.
pub fn apply_item_with(
    d: &DirectoryUser,
    item: &SyncItem,
    cache: &mut phone::E164Cache,
) -> MfaUser {
    apply_item_into(d.clone(), item, cache)
}

/// `apply_item_with`, consuming the directory user (no copy of its fields).
pub fn apply_item_into(d: DirectoryUser, item: &SyncItem, cache: &mut phone::E164Cache) -> MfaUser {
    let DirectoryUser {
        user: mut u,
        account_disabled,
        phone_extensions: [e0, e1, e2, e3, e4, e5, e6],
        extension_attr,
    } = d;
    let s = &item.user;
    u.primary_phone = phone_of(&u, s.phone).map(|p| cache.to_e164(p, &s.country_code));
    u.extension = extension_attr.or(match s.phone {
        PhoneKind::Business => e0,
        PhoneKind::Home => e1,
        PhoneKind::Pager => e2,
        PhoneKind::Mobile => e3,
        PhoneKind::Fax => e4,
        PhoneKind::Ip => e5,
        PhoneKind::Custom => e6,
    });
    u.backup_phone = s
        .backup_phone
        .and_then(|k| phone_of(&u, k))
        .map(|p| cache.to_e164(p, &s.country_code));
    u.method = Some(s.method.as_str().to_string());
    let lang_attr = match s.method {
        Method::PhoneCall => &u.phone_call_language,
        Method::TextMessage => &u.text_message_language,
        Method::MobileApp => &u.mobile_app_language,
        Method::OathToken => &u.oath_token_language,
    };
    u.language = Some(lang_attr.clone().unwrap_or_else(|| s.language.clone()));
    u.enabled = s.enabled && !account_disabled;
    u.sync_item = Some(item.dn.clone());
    u
}

/// A `DirectoryUser` packed into one allocation (length-prefixed fields), so a
/// full cycle that must hold every directory user until the items are
/// resolved keeps ~250 bytes per user instead of ~1.2 KB. `directory_id` is
/// first, readable without unpacking the rest (`Packed::directory_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

const ABSENT: u32 = u32::MAX;

fn put(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        Some(s) => {
            // a directory value over 4 GiB cannot arrive in one LDAP message
            let len = u32::try_from(s.len()).unwrap_or(ABSENT - 1);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..len as usize]);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn get(&mut self) -> Option<Option<String>> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len);
        if len == ABSENT {
            self.0 = rest;
            return Some(None);
        }
        let len = len as usize;
        let v = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(Some(String::from_utf8_lossy(v).into_owned()))
    }
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

impl Packed {
    pub fn pack(d: &DirectoryUser) -> Packed {
        let mut out = Vec::with_capacity(256);
        let u = &d.user;
        put(&mut out, u.directory_id.as_deref());
        put(&mut out, Some(&u.username));
        for (name, v) in u.text_fields() {
            if name != "directory_id" {
                put(&mut out, v.as_deref());
            }
        }
        for e in &d.phone_extensions {
            put(&mut out, e.as_deref());
        }
        put(&mut out, d.extension_attr.as_deref());
        out.push(u8::from(u.enabled) | u8::from(d.account_disabled) << 1);
        out.push(match u.source {
            Source::Directory => 0,
            Source::Manual => 1,
        });
        Packed(out.into_boxed_slice())
    }

    /// The directory id, without unpacking the rest.
    pub fn directory_id(&self) -> Option<String> {
        Reader(&self.0).get().flatten()
    }

    /// The `DirectoryUser` packed (None only if the bytes are not a `pack` result).
    pub fn unpack(&self) -> Option<DirectoryUser> {
        let mut r = Reader(&self.0);
        let mut u = MfaUser {
            directory_id: r.get()?,
            username: r.get()?.unwrap_or_default(),
            ..MfaUser::default()
        };
        for name in MfaUser::default().text_fields().map(|(n, _)| n) {
            if name != "directory_id" {
                let v = r.get()?;
                *u.text_field_mut(name)? = v;
            }
        }
        let mut exts: [Option<String>; 7] = Default::default();
        for e in &mut exts {
            *e = r.get()?;
        }
        let extension_attr = r.get()?;
        let flags = r.byte()?;
        u.enabled = flags & 1 != 0;
        u.source = match r.byte()? {
            0 => Source::Directory,
            _ => Source::Manual,
        };
        Some(DirectoryUser {
            user: u,
            account_disabled: flags & 2 != 0,
            phone_extensions: exts,
            extension_attr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ItemKind, ItemUser, WhenRemoved};

    fn guid_bytes() -> Vec<u8> {
        // GUID 01020304-0506-0708-090a-0b0c0d0e0f10 in AD's little-endian layout
        vec![4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16]
    }

    fn item() -> SyncItem {
        SyncItem {
            kind: ItemKind::Container,
            dn: "OU=Sales,DC=x".into(),
            include_nested: true,
            when_removed: WhenRemoved::Disable,
            user: ItemUser {
                phone: PhoneKind::Business,
                backup_phone: Some(PhoneKind::Mobile),
                ..ItemUser::default()
            },
            id: None,
            max_departures: None,
        }
    }

    #[test]
    fn ad_user_maps_field_by_field() {
        let e = Entry::new("CN=Smith\\, John,OU=Sales,DC=x")
            .with_bytes("objectGUID", guid_bytes())
            .with("distinguishedName", &["CN=Smith\\, John,OU=Sales,DC=x"])
            .with("sAMAccountName", &["jsmith"])
            .with("givenName", &["José"])
            .with("sn", &["Müller"])
            .with("mail", &["j@x"])
            .with("telephoneNumber", &["+1 425 555 0100 x123"])
            .with("mobile", &["(425) 555-0101"])
            .with("userAccountControl", &["512"]);
        let d = match map_user(&Attributes::default(), &e) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let u = apply_item(&d, &item());
        assert_eq!(
            u.directory_id.as_deref(),
            Some("01020304-0506-0708-090a-0b0c0d0e0f10")
        );
        assert_eq!(
            u.username, "jsmith",
            "sAMAccountName is the backup of userPrincipalName"
        );
        assert_eq!(u.dn.as_deref(), Some("CN=Smith\\, John,OU=Sales,DC=x"));
        assert_eq!(u.first_name.as_deref(), Some("José"));
        assert_eq!(u.last_name.as_deref(), Some("Müller"));
        assert_eq!(u.business_phone.as_deref(), Some("+1 425 555 0100"));
        assert_eq!(u.primary_phone.as_deref(), Some("+14255550100"));
        assert_eq!(u.extension.as_deref(), Some("123"));
        assert_eq!(u.mobile_phone.as_deref(), Some("(425) 555-0101"));
        assert_eq!(u.backup_phone.as_deref(), Some("+14255550101"));
        assert_eq!(u.method.as_deref(), Some("phone-call"));
        assert_eq!(u.language.as_deref(), Some("en"));
        assert_eq!(u.sync_item.as_deref(), Some("OU=Sales,DC=x"));
        assert!(u.enabled);
        assert_eq!(u.home_phone, None);
    }

    #[test]
    fn disabled_account_and_upn_first() {
        let e = Entry::new("CN=a,DC=x")
            .with_bytes("objectGUID", guid_bytes())
            .with("userPrincipalName", &["a@x.test"])
            .with("sAMAccountName", &["a"])
            .with("userAccountControl", &["514"]);
        let d = map_user(&Attributes::default(), &e).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.account_disabled);
        let u = apply_item(&d, &item());
        assert!(!u.enabled);
        assert_eq!(u.username, "a@x.test");
        assert_eq!(
            u.dn.as_deref(),
            Some("CN=a,DC=x"),
            "falls back to the entry DN"
        );
    }

    #[test]
    fn extension_attribute_wins_and_languages() {
        let attrs = Attributes {
            extension: "ext".into(),
            phone_call_language: "lang".into(),
            ..Attributes::default()
        };
        let e = Entry::new("CN=a,DC=x")
            .with_bytes("objectGUID", guid_bytes())
            .with("sAMAccountName", &["a"])
            .with("telephoneNumber", &["555-123-4567 x890"])
            .with("ext", &["42"])
            .with("lang", &["fr"]);
        let d = map_user(&attrs, &e).unwrap_or_else(|e| panic!("{e}"));
        let u = apply_item(&d, &item());
        assert_eq!(u.extension.as_deref(), Some("42"));
        assert_eq!(u.business_phone.as_deref(), Some("555-123-4567"));
        assert_eq!(u.language.as_deref(), Some("fr"));
    }

    #[test]
    fn errors_name_the_entry() {
        let e = Entry::new("CN=nobody,DC=x").with_bytes("objectGUID", guid_bytes());
        let err = map_user(&Attributes::default(), &e).err();
        assert!(matches!(err, Some(MapError::NoUsername { ref dn, .. }) if dn == "CN=nobody,DC=x"));
        let e = Entry::new("CN=b,DC=x")
            .with_bytes("objectGUID", vec![1, 2, 3])
            .with("sAMAccountName", &["b"]);
        assert!(matches!(
            map_user(&Attributes::default(), &e),
            Err(MapError::BadGuid { len: 3, .. })
        ));
        let e = Entry::new("CN=c,DC=x").with("sAMAccountName", &["c"]);
        assert!(matches!(
            map_user(&Attributes::default(), &e),
            Err(MapError::NoUniqueId { .. })
        ));
    }

    #[test]
    fn packed_round_trip() {
        let e = Entry::new("CN=Smith\\, John,OU=Sales,DC=x")
            .with_bytes("objectGUID", guid_bytes())
            .with("sAMAccountName", &["jsmith"])
            .with("givenName", &["José"])
            .with("telephoneNumber", &["+1 425 555 0100 x123"])
            .with("userAccountControl", &["514"]);
        let d = map_user(&Attributes::default(), &e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            map_user(&lowercase_names(&Attributes::default()), &e),
            Ok(d.clone())
        );
        let p = Packed::pack(&d);
        assert_eq!(p.unpack(), Some(d.clone()));
        assert_eq!(p.directory_id(), d.user.directory_id);
        let mut other = d.clone();
        other.extension_attr = Some(String::new());
        other.user.enabled = false;
        assert_eq!(Packed::pack(&other).unpack(), Some(other));
        // and apply_item with a cache gives what apply_item gives
        let mut cache = phone::E164Cache::default();
        assert_eq!(
            apply_item_with(&d, &item(), &mut cache),
            apply_item(&d, &item())
        );
        assert_eq!(
            apply_item_with(&d, &item(), &mut cache),
            apply_item(&d, &item())
        );
        for phone in [PhoneKind::Business, PhoneKind::Mobile, PhoneKind::Custom] {
            let mut it = item();
            it.user.phone = phone;
            assert_eq!(
                apply_item_into(d.clone(), &it, &mut cache),
                apply_item(&d, &it)
            );
        }
    }

    #[test]
    fn unique_id_kinds_and_adspath() {
        assert_eq!(
            unique_id_text(UniqueIdType::String, b"abc-1"),
            Ok("abc-1".into())
        );
        assert_eq!(
            unique_id_text(UniqueIdType::ByteArray, b"ABC"),
            Ok("ABC".into())
        );
        assert_eq!(
            unique_id_text(UniqueIdType::ByteArray, &[0, 255]),
            Ok("00ff".into())
        );
        assert_eq!(strip_adspath("LDAP://dc1.x.com/CN=a,DC=x"), "CN=a,DC=x");
        assert_eq!(strip_adspath("ldap://CN=a,DC=x"), "CN=a,DC=x");
        assert_eq!(strip_adspath("LDAP://dc1:389/CN=a/b,DC=x"), "CN=a/b,DC=x");
        assert_eq!(strip_adspath("CN=a,DC=x"), "CN=a,DC=x");
    }
}
